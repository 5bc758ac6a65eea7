"""JTSM end to end on CPU: one training step of the whole network (timm backbone from
methods.backbones) on a 64×64 image with 30 proposals, and the config's checks."""

import numpy as np
import pytest
import torch

from methods.backbones import feature_extractor, normalize_images
from methods.jtsm.config import JtsmConfig
from methods.jtsm.model import JtsmNet
from methods.jtsm.segments import SegmentBatch, superpixels_from_masks


def _scene():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.uint8)
    img[:] = (30, 90, 200)
    img[10:40, 12:44] = (220, 40, 30)
    masks = np.zeros((30, 64, 64), bool)
    boxes = np.zeros((30, 4), np.float32)
    for k in range(30):
        x0, y0 = rng.integers(0, 48, 2)
        x1, y1 = x0 + rng.integers(8, 65 - x0), y0 + rng.integers(8, 65 - y0)
        masks[k, y0:y1, x0:x1] = True
        boxes[k] = (x0, y0, x1, y1)
    masks[0, 10:40, 12:44] = True  # one proposal is the object, one the background
    boxes[0] = (12, 10, 44, 40)
    masks[1] = ~masks[0]
    boxes[1] = (0, 0, 64, 64)
    masks[0, :, :12] = masks[0, :10] = masks[0, 40:] = masks[0, :, 44:] = False
    sp, members = superpixels_from_masks(masks)
    return img, SegmentBatch.from_arrays([(sp, members, boxes, rng.random(30))])


@pytest.mark.parametrize("config", [JtsmConfig(fc_dim=32, mask_head_dim=8),
                                    JtsmConfig.release(fc_dim=32, mask_head_dim=8, pooling="moipool-interp")],
                         ids=["paper", "release-interp"])
def test_one_training_step_runs_forward_and_backward(config, one_thread):
    torch.manual_seed(0)
    img, seg = _scene()
    backbone = feature_extractor("resnet18", out_indices=(2,))  # stride 8, as the release's dilated C5
    net = JtsmNet(config, backbone=backbone, channels=backbone.feature_info.channels()[-1], num_things=2,
                  num_stuff=1)
    images = normalize_images(torch.from_numpy(img)[None].permute(0, 3, 1, 2))
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    losses = net.training_losses(images, seg, labels, img[None])
    assert set(losses) == {"mil", "refine1", "refine2", "refine3", "refine4", "instance", "semantic"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (net.backbone, net.proposal_features, net.mil, net.refine, net.instance):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    net.eval()
    with torch.no_grad():
        scores = net.proposal_scores(net(images, seg))
    assert scores.shape == (30, 3) and ((scores >= 0) & (scores <= 1)).all()


def test_config_rejects_bad_values_naming_the_key():
    with pytest.raises(ValueError, match="jtsm.pooling"):
        JtsmConfig(pooling="avgpool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jtsm.n_refine"):
        JtsmConfig(n_refine=-1)
    with pytest.raises(ValueError, match="jtsm.dropout"):
        JtsmConfig(dropout=1.5)
    release = JtsmConfig.release()
    assert (release.psi, release.score_scaling, release.grabcut_mode, release.refine_stuff) == ("release", True,
                                                                                                 "release", False)
    assert JtsmConfig().as_dict()["test_scales"] == [480, 576, 688, 864, 1200]

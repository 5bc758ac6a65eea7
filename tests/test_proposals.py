"""Segment proposals (the MCG stand-in): recall on two rectangles, determinism, the cap, the file format
and its checks."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from datasets.errors import DatasetError
from datasets.proposals import ProposalConfig, generate_proposals, read_proposals, recall, write_proposals

SMALL = ProposalConfig(colour_spaces=("rgb", "lab"), scales=(50.0, 100.0))


def _two_rectangles():
    img = np.zeros((96, 96, 3), np.uint8)
    img[:] = (40, 120, 200)
    img[10:40, 8:50] = (220, 50, 40)
    img[55:90, 45:90] = (30, 200, 60)
    img = np.clip(img.astype(int) + np.random.default_rng(0).integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
    gt = np.zeros((2, 96, 96), bool)
    gt[0, 10:40, 8:50] = True
    gt[1, 55:90, 45:90] = True
    return img, gt


@pytest.fixture(scope="module")
def proposals():
    return generate_proposals(_two_rectangles()[0], SMALL, image_id=7)


def test_recall_on_two_rectangles_is_one(proposals):
    rates, best = recall(proposals, _two_rectangles()[1])
    assert rates == {0.5: 1.0, 0.7: 1.0} and best.min() > 0.9


def test_proposals_are_deterministic_ranked_capped_and_consistent(proposals):
    again = generate_proposals(_two_rectangles()[0], SMALL, image_id=7)
    assert np.array_equal(again.indices, proposals.indices) and np.array_equal(again.boxes, proposals.boxes)
    assert (np.diff(proposals.scores) <= 0).all() and proposals.scores[0] == 1.0
    capped = generate_proposals(_two_rectangles()[0], ProposalConfig(colour_spaces=("rgb",), scales=(50.0,),
                                                                    max_proposals=5))
    assert len(capped) == 5
    k = 3
    mask = proposals.mask(k)
    ys, xs = np.nonzero(mask)
    assert proposals.boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert np.array_equal(mask_utils.decode(proposals.rle(k)).astype(bool), mask)


def test_file_round_trip(proposals, tmp_path):
    write_proposals(tmp_path / "p.npz", proposals)
    back = read_proposals(tmp_path / "p.npz", height=96, width=96)
    assert back.image_id == 7 and np.array_equal(back.superpixels, proposals.superpixels)
    assert np.array_equal(back.boxes, proposals.boxes) and np.array_equal(back.scores, proposals.scores)
    assert [m.tolist() for m in back.members()] == [m.tolist() for m in proposals.members()]


def _rewrite(path, **changes):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(changes)
    np.savez(path, **data)


def test_an_out_of_image_box_stops_naming_the_proposal(proposals, tmp_path):
    path = tmp_path / "p.npz"
    write_proposals(path, proposals)
    boxes = proposals.boxes.copy()
    boxes[4, 2] = 97
    _rewrite(path, boxes=boxes)
    with pytest.raises(DatasetError, match=r"p\.npz, proposal 4: box .* outside the 96x96 image"):
        read_proposals(path)


def test_a_box_that_is_not_its_masks_box_stops_naming_the_proposal(proposals, tmp_path):
    path = tmp_path / "p.npz"
    write_proposals(path, proposals)
    boxes = proposals.boxes.copy()
    boxes[2, 1] += 1
    _rewrite(path, boxes=boxes)
    with pytest.raises(DatasetError, match=r"proposal 2: box .* is not its mask's box"):
        read_proposals(path)


def test_other_bad_files(proposals, tmp_path):
    path = tmp_path / "p.npz"
    write_proposals(path, proposals)
    with pytest.raises(DatasetError, match="does not match the image size"):
        read_proposals(path, height=95, width=96)
    indices = proposals.indices.copy()
    indices[proposals.indptr[1]] = proposals.num_superpixels + 3
    _rewrite(path, indices=indices)
    with pytest.raises(DatasetError, match="proposal 1: superpixel ids"):
        read_proposals(path)
    _rewrite(path, indices=proposals.indices, scores=proposals.scores[::-1].copy())
    with pytest.raises(DatasetError, match="proposal 1: score"):
        read_proposals(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read proposals"):
        read_proposals(tmp_path / "junk.npz")

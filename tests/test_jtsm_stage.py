"""JTSM as a pipeline method: its params section is its config, the stages on smoke data write complete run
folders, a bad proposal file stops a run with the file and the proposal named and nothing half-written,
the training-free baselines' rules, resumable deterministic training, and the ``wsod`` metric family
(val AP@0.5, train CorLoc) on a hand case, cross-checked with the WSOD evaluator."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from bench.cli import main
from bench.config.loader import dump_params, render_profile

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- params


def test_the_jtsm_section_is_jtsm_config_field_for_field():
    """One source of truth: the section is generated from JtsmConfig and the config copies every field back."""
    from bench.config.schema import JTSM_EMBEDDED, JtsmParams
    from bench.jtsm_outputs import make_jtsm_config
    from methods.jtsm.config import JtsmConfig

    names = [f.name for f in dataclasses.fields(JtsmConfig)]
    assert set(names) <= set(JtsmParams.model_fields)
    changed = JtsmParams(pooling="roialign", n_refine=2, fc_dim=64, test_scales=[96, 160], reestimate=False)
    config = make_jtsm_config(changed)
    for name in names:
        value = getattr(changed, name)
        assert getattr(config, name) == (tuple(value) if isinstance(value, list) else value), name
    for field in dataclasses.fields(JtsmConfig):  # defaults: the paper's unless the embedded table changes them
        expected = JTSM_EMBEDDED.get(field.name, field.default)
        assert getattr(JtsmParams(), field.name) == expected, field.name
    assert "(paper: 4000)" in JtsmParams.model_fields["max_proposals"].description
    assert "shape-invariant" in JtsmParams.model_fields["pooling"].description  # the dataclass's docs


def test_the_paper_profiles_set_the_paper_values_back():
    from bench.config.schema import JTSM_EMBEDDED
    from methods.jtsm.config import JtsmConfig

    paper = JtsmConfig()
    for profile in ("voc", "coco"):
        section = yaml.safe_load((REPO / "configs" / "profiles" / f"{profile}.yaml").read_text())["jtsm"]
        for key in JTSM_EMBEDDED:
            if key in ("iterations", "lr_step") and profile == "coco":
                continue  # the 4x schedule
            value = getattr(paper, key)
            assert section[key] == (list(value) if isinstance(value, tuple) else value), (profile, key)


def test_a_bad_jtsm_value_names_the_key():
    from pydantic import ValidationError

    from bench.config.schema import JtsmParams

    with pytest.raises(ValidationError, match="jtsm.dropout"):
        JtsmParams(dropout=2.0)


# ------------------------------------------------------------------------------------------- rules


def _proposals():
    """A 20×20 image: superpixels left half (0), right top (1), right bottom (2); proposals: {0} (best
    ranked), {0, 1, 2} (largest), {1}."""
    sp = np.zeros((20, 20), np.int64)
    sp[:10, 10:] = 1
    sp[10:, 10:] = 2
    members = [np.array([0]), np.array([0, 1, 2]), np.array([1])]
    boxes = np.array([[0, 0, 10, 20], [0, 0, 20, 20], [10, 0, 20, 10]], np.float32)
    return sp, members, boxes, np.array([1.0, 0.6, 0.3], np.float32)


def test_the_baselines_take_the_best_ranked_or_the_largest_proposal_per_labelled_class():
    from methods.jtsm.config import JtsmConfig
    from methods.jtsm.train import baseline_prediction

    labels = np.array([1, 0, 1], np.float32)  # thing 0 and the stuff class present
    top = baseline_prediction(_proposals(), labels, num_things=2, rule="top", config=JtsmConfig())
    assert top.det_classes.tolist() == [0] and top.boxes.tolist() == [[0, 0, 10, 20]]
    assert top.det_scores.tolist() == [1.0] and top.masks[0].sum() == 200
    largest = baseline_prediction(_proposals(), labels, num_things=2, rule="largest", config=JtsmConfig())
    assert largest.det_proposals.tolist() == [1] and largest.boxes.tolist() == [[0, 0, 20, 20]]
    ids, segments = top.panoptic
    assert [(s.category, s.isthing) for s in segments] == [(0, True)]  # the stuff proposal is the thing's


def test_training_is_deterministic_and_resumes_to_the_same_weights(tmp_path, one_thread):
    from methods.jtsm.config import JtsmConfig
    from methods.jtsm.train import Checkpointing, Sample, predict, train_jtsm

    rng = np.random.default_rng(0)
    samples = [Sample(k, rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), _proposals(),
                      np.array([1, k % 2, 1], np.float32)) for k in range(3)]
    config = JtsmConfig(fc_dim=8, mask_head_dim=4, iterations=4, lr_step=3, batch_size=2, train_scales=(16, 20),
                        test_scales=(20,), mask_boxes_per_image=2, n_refine=1)
    kw = dict(config=config, backbone="resnet18", num_things=2, num_stuff=1, seed=3, progress=False)
    steps: list[int] = []
    a = train_jtsm(samples, on_step=lambda s, v: steps.append(s), **kw)
    assert steps == [1, 2, 3, 4]
    ckpt = Checkpointing(tmp_path / "train.pt", "f", every=2)
    b = train_jtsm(samples, checkpointing=ckpt, **kw)
    assert torch.load(ckpt.path, weights_only=True)["step"] == 4
    resumed: list[int] = []
    c = train_jtsm(samples, checkpointing=ckpt, on_step=lambda s, v: resumed.append(s), **kw)  # finished: loads
    assert resumed == []
    for other in (b, c):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), other.state_dict().values()))
    pred = predict(a, samples[0].image, samples[0].proposals)
    assert pred.masks.shape[1:] == (20, 20) and pred.panoptic is not None
    assert (pred.det_classes < 2).all() and len(pred.boxes) == len(pred.det_scores)


# ------------------------------------------------------------------------------------------- stages


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A smoke-profile folder with the VOC-like canonical data and its proposals (backbones from scratch)."""
    root = tmp_path_factory.mktemp("jtsm")
    params = render_profile("smoke")
    params["tracking"]["enabled"] = False
    params["jtsm"]["backbone_init"] = "scratch"
    (root / "params.yaml").write_text(dump_params(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["data", "prepare", "--dataset", "voc"]) == 0
        assert main(["jtsm", "--dataset", "voc", "--variant", "proposals"]) == 0
    return root


def test_the_stages_write_the_run_folders_and_evaluate_every_family(smoke, monkeypatch, one_thread):
    from bench.commands.evaluate import score_run
    from bench.config.loader import load_params

    monkeypatch.chdir(smoke)
    info = json.loads(Path("runs/voc/jtsm/proposals/seed0/run.json").read_text())
    assert set(info["proposals"]) == {"train_aug", "val"}
    assert 0 <= info["proposals"]["val"]["things"]["recall@0.5"] <= 100
    assert json.loads(Path("runs/voc/jtsm/proposals/seed0/timing.json").read_text())["val"]["proposals_per_second"] > 0
    assert len(list(Path("runs/voc/jtsm/proposals/seed0/val").glob("*.npz"))) == 6
    for variant in ("panoptic", "top-proposal"):
        assert main(["jtsm", "--dataset", "voc", "--variant", variant]) == 0
        run = Path(f"runs/voc/jtsm/{variant}/seed0")
        names = {p.name for p in run.iterdir()}
        assert {"run.json", "val_instances.json", "val_detections.json", "train_detections.json",
                "val_panoptic.json", "val_panoptic"} <= names
        assert ("model.pt" in names) == (variant == "panoptic")
        detections = json.loads((run / "val_detections.json").read_text())
        assert detections and set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
        assert len(json.loads((run / "val_panoptic.json").read_text())["annotations"]) == 6
        ctx = SimpleNamespace(params=load_params(Path("params.yaml")), profile="smoke")
        metrics = score_run(ctx, "voc", "jtsm", variant, 0, run)
        assert {"wsod.AP50", "wsod.AP50_07", "wsod.CorLoc", "pq.PQ", "voc.mAP50", "coco.bbox.AP"} <= set(metrics)
    kept = torch.load("runs/voc/jtsm/panoptic/seed0/model.pt", weights_only=True)
    assert kept["config"]["backbone"] == "regnetx_002" and kept["config"]["num_things"] == 3 and kept["model"]
    assert not Path("runs/voc/jtsm/panoptic/seed0.partial").exists()


def test_a_bad_proposal_file_stops_the_run_naming_file_and_proposal_with_nothing_written(smoke, monkeypatch,
                                                                                         capsys):
    from datasets.proposals import read_proposals, write_proposals

    monkeypatch.chdir(smoke)
    source = Path("runs/voc/jtsm/proposals/seed0")
    bad = Path("runs/voc/jtsm/bad/seed0")
    import shutil

    shutil.copytree(source, bad)
    victim = sorted((bad / "val").glob("*.npz"))[2]
    found = read_proposals(victim)
    found.boxes[3] = [0, 0, 999, 10]  # outside the 64×64 image
    write_proposals(victim, found)
    monkeypatch.setattr("bench.commands.jtsm.proposals_folder", lambda slot: bad)
    assert main(["jtsm", "--dataset", "voc", "--variant", "wsod"]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "proposal 3" in err and "outside" in err
    assert not Path("runs/voc/jtsm/wsod").exists() or not any(Path("runs/voc/jtsm/wsod").iterdir())


# ------------------------------------------------------------------------------------------- wsod family


def test_the_wsod_family_scores_val_ap_and_train_corloc_cross_checked(tmp_path, monkeypatch):
    """Val: class 1 has GT boxes in images 1 and 2; detections d1 (0.9, hits image 1), d2 (0.8, misses),
    d3 (0.7, hits image 2) → precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 → all-point AP = 1/2·1 + 1/2·2/3
    = 5/6. Train: images 1 and 2 hold class 1; the top detection of image 1 hits, of image 2 misses →
    CorLoc 1/2. The family stores AP from the val file and CorLoc from the train file."""
    from bench.commands.evaluate import FAMILIES, score_run
    from bench.config.schema import Params
    from bench.evaluation import WSODEvaluator
    from bench.evaluation.gt import CanonicalGT
    from bench.evaluation.synth import default_categories, write_split

    cats = default_categories(n_things=1, n_stuff=1)
    thing = next(c["id"] for c in cats if c["isthing"])
    stuff = next(c["id"] for c in cats if not c["isthing"])

    def image(k: int) -> dict:
        ids = np.full((40, 40), 10 * k + 1, np.int64)
        ids[5:15, 5:15] = 10 * k + 2  # the object: box [5, 5, 10, 10]
        return {"id": k, "ids": ids, "segments": [{"id": 10 * k + 1, "category_id": stuff},
                                                  {"id": 10 * k + 2, "category_id": thing}]}

    monkeypatch.chdir(tmp_path)
    for split in ("train", "val"):
        write_split(Path("data/canonical/voc"), split, cats, [image(1), image(2)])
    run = Path("runs/voc/jtsm/wsod/seed0")
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"train_split": "train", "val_split": "val"}))
    hit, miss = [5, 5, 10, 10], [25, 25, 10, 10]
    val = [{"image_id": 1, "category_id": thing, "bbox": hit, "score": 0.9},
           {"image_id": 1, "category_id": thing, "bbox": miss, "score": 0.8},
           {"image_id": 2, "category_id": thing, "bbox": hit, "score": 0.7}]
    train = [{"image_id": 1, "category_id": thing, "bbox": hit, "score": 0.9},
             {"image_id": 2, "category_id": thing, "bbox": miss, "score": 0.8},
             {"image_id": 2, "category_id": thing, "bbox": hit, "score": 0.3}]
    (run / "val_detections.json").write_text(json.dumps(val))
    (run / "train_detections.json").write_text(json.dumps(train))
    metrics = score_run(SimpleNamespace(params=Params(), profile="smoke"), "voc", "jtsm", "wsod", 0, run)
    assert metrics["wsod.AP50"] == pytest.approx(100 * 5 / 6)
    assert metrics["wsod.CorLoc"] == pytest.approx(50.0)
    assert set(metrics) == {"wsod.AP50", "wsod.AP50_07", "wsod.CorLoc"}
    for split, records, key in (("val", val, "wsod.AP50"), ("train", train, "wsod.CorLoc")):
        evaluator = WSODEvaluator(CanonicalGT.load(Path("data/canonical/voc"), split))
        for k in (1, 2):
            evaluator.process(k, [r for r in records if r["image_id"] == k])
        assert evaluator.summarize()[key] == pytest.approx(metrics[key])
    assert {f.name for f in FAMILIES if f.kind == "wsod"} == {"wsod", "wsod.train"}
    stored = json.loads(Path("metrics/voc/jtsm/wsod/seed0.json").read_text())
    assert set(stored["counts"]) == {"wsod", "wsod.train"}

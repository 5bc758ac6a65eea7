"""``bench segment`` end to end on tiny synthetic VOC-like data: run folder, evaluation, labels, resume."""

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.commands.data import prepare
from bench.config.loader import render_profile, validate_params
from bench.io import read_json
from bench.predictions import instance_records
from datasets.canonical import CanonicalDataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
#: On top of the smoke profile's tiny segmentor; random backbone weights (this workspace runs no pretrain stage:
#: the pipeline tests cover ``backbone_init: pretrain``).
TINY = {"iterations": 4, "lr_steps": [3], "checkpoint_every": 2, "backbone_init": "scratch"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A repo-like folder: smoke params with a tiny segmentor, prepared smoke VOC data, the report specs."""
    root = tmp_path_factory.mktemp("ws")
    raw = render_profile("smoke")
    raw["tracking"]["enabled"] = False
    raw["segmentor"].update(TINY)
    params = validate_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    (root / "reports").mkdir()
    (root / "reports" / "specs").symlink_to(REPO / "reports" / "specs")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        prepare(params.data.voc, root / "data" / "canonical" / "voc")
    finally:
        os.chdir(cwd)
    return root


def _segment(*extra: str) -> int:
    return main(["segment", "--dataset", "voc", "--seed", "0", *extra])


def test_ground_truth_row_writes_a_run_folder_that_bench_evaluate_scores(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    assert _segment("--labels", "ground-truth", "--row", "segmentor/mrcnn-gt") == 0
    out = Path("runs/voc/segmentor/mrcnn-gt/seed0")
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "run.json", "timing.json", "val_instances.json"]
    assert not Path("runs/voc/segmentor/mrcnn-gt/seed0.partial").exists()
    run = read_json(out / "run.json")
    assert (run["method"], run["variant"], run["seed"], run["val_split"]) == ("segmentor", "mrcnn-gt", 0, "val")
    assert run["labels"]["file"].endswith("instances.json") and run["labels"]["instances"] > 0
    assert run["training"]["iterations"] == 4 and run["training"]["resumed_from"] == 0
    gt = CanonicalDataset("data/canonical/voc").split("val").coco()
    with contextlib.redirect_stdout(io.StringIO()):
        gt.loadRes(str(out / "val_instances.json"))  # pycocotools accepts the file (an empty list too)

    assert main(["evaluate", "--dataset", "voc", "--method", "segmentor", "--variant", "mrcnn-gt", "--seed", "0"]) == 0
    metrics = read_json(Path("metrics/voc/segmentor/mrcnn-gt/seed0.json"))["metrics"]
    assert {"voc.mAP25", "voc.mAP50", "voc.mAP70", "voc.mAP75", "coco.segm.AP"} <= set(metrics)


def _write_pseudo(path: Path, category_shift: int = 0) -> None:
    """Pseudo labels in the format the methods write: the GT masks with scores, as COCO results."""
    split = CanonicalDataset("data/canonical/voc").split("train_aug")
    records = []
    for image in split.images:
        pairs = split.instance_masks(image.id)
        records += instance_records(image.id, [m for _, m in pairs],
                                    [a["category_id"] + category_shift for a, _ in pairs], [0.5] * len(pairs),
                                    point_annotation_ids=[a["id"] for a, _ in pairs])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))


def test_method_pseudo_labels_are_read_from_that_methods_run_folder(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    _write_pseudo(Path("runs/voc/bestie/points/seed0/train_pseudo.json"))
    assert _segment("--labels", "bestie/points", "--row", "bestie/points-mrcnn") == 0
    run = read_json(Path("runs/voc/bestie/points-mrcnn/seed0/run.json"))
    assert run["labels"]["file"] == "runs/voc/bestie/points/seed0/train_pseudo.json"


def test_missing_or_unreadable_or_wrong_pseudo_labels_stop_with_the_file_named(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    assert _segment("--labels", "nobody/none", "--row", "x/y") == 2
    assert "runs/voc/nobody/none/seed0/train_pseudo.json" in capsys.readouterr().err
    Path("broken.json").write_text("[{")
    assert _segment("--labels", "broken.json", "--row", "x/y") == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err
    _write_pseudo(Path("shifted.json"), category_shift=100)
    assert _segment("--labels", "shifted.json", "--row", "x/y") == 2
    assert "shifted.json, record 0: category id 10" in capsys.readouterr().err
    assert not Path("runs/voc/x").exists()


def test_an_interrupted_stage_keeps_its_checkpoint_and_the_rerun_resumes(workspace, monkeypatch):
    import methods.segmentor.engine as engine

    monkeypatch.chdir(workspace)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine, "predict", crash)  # training finishes, then the stage dies
        # the CLI turns the interrupt into one line and exit status 130 (128 + SIGINT)
        assert _segment("--labels", "ground-truth", "--row", "segmentor/resume-check") == 130
    partial = Path("runs/voc/segmentor/resume-check/seed0.partial")
    assert engine.load_checkpoint(partial / engine.CHECKPOINT_NAME)["iteration"] == 4
    assert not Path("runs/voc/segmentor/resume-check/seed0").exists()
    assert _segment("--labels", "ground-truth", "--row", "segmentor/resume-check") == 0
    assert read_json(Path("runs/voc/segmentor/resume-check/seed0/run.json"))["training"]["resumed_from"] == 4
    assert not partial.exists()


def test_solov2_trains_and_predicts_through_the_same_stage(workspace, monkeypatch):
    pytest.importorskip("methods.segmentor.solov2")
    monkeypatch.chdir(workspace)
    assert _segment("--labels", "ground-truth", "--row", "p2seg/gt-solov2", "--arch", "solov2") == 0
    run = read_json(Path("runs/voc/p2seg/gt-solov2/seed0/run.json"))
    assert run["segmentor"]["arch"] == "solov2"
    records = read_json(Path("runs/voc/p2seg/gt-solov2/seed0/val_instances.json"))
    assert all({"image_id", "category_id", "segmentation", "score"} <= set(r) for r in records)


def test_an_epoch_budget_becomes_iterations_with_the_lr_steps_scaled_alike():
    from bench.config.schema import SegmentorParams
    from bench.segmentation import schedule

    p = SegmentorParams(iterations=None, epochs=12, lr_steps=[8, 11], batch_size=16)
    assert schedule(p, 10582) == (12 * 662, (8 * 662, 11 * 662))  # VOC train_aug: ceil(10582 / 16) = 662 steps/epoch
    assert schedule(SegmentorParams(iterations=400, lr_steps=[300]), 10582) == (400, (300,))


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    for option in ("--dataset", "--labels", "--row", "--seed", "--labels-seed", "--backend", "--arch", "--backbone",
                   "--params"):
        assert option in text

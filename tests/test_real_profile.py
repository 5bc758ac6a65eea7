"""The paper profiles on data in the official formats: `bench params use voc` + the stages run on a
VOC 2012 + SBD folder and a COCO 2017 folder (tiny fixtures written in those formats), and the
ground truth scored as a prediction reads 100 — the real-data path through the same stages."""

import json
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from fixtures.official import coco_fixture, sbd_fixture, voc_fixture, write_voc


@pytest.fixture
def real_repo(tmp_path, monkeypatch):
    voc_root, coco_root = tmp_path / "raw" / "voc", tmp_path / "raw" / "coco"
    write_voc(voc_root, *voc_fixture())
    sbd_fixture(voc_root)
    coco_fixture(coco_root, split="train")
    coco_fixture(coco_root, split="val")
    monkeypatch.chdir(tmp_path)
    assert main(["params", "use", "voc", "--set", f"data.voc.root={voc_root}", "--set", f"data.coco.root={coco_root}",
                 "--set", "tracking.enabled=false"]) == 0
    return tmp_path


def _run_slot(slot: str) -> dict:
    for argv in (["data", "prepare", "--dataset", slot], ["points", "--dataset", slot],
                 ["reference", "--dataset", slot, "--variant", "ground-truth"],
                 ["evaluate", "--dataset", slot, "--method", "reference", "--variant", "ground-truth"]):
        assert main(argv) == 0, argv
    return json.loads(Path(f"metrics/{slot}/reference/ground-truth/seed0.json").read_text())


def test_switching_profile_is_one_command_and_names_the_profile(real_repo):
    params = yaml.safe_load((real_repo / "params.yaml").read_text())
    assert params["profile"] == "voc" and params["data"]["voc"]["source"] == "voc-sbd"
    assert params["data"]["voc"]["train_split"] == "train_aug"


def test_voc_sbd_folder_runs_through_the_stages(real_repo):
    metrics = _run_slot("voc")
    meta = json.loads(Path("data/canonical/voc/meta.json").read_text())
    assert meta["splits"] == {"train_aug": 4, "val": 1}  # (SBD train ∪ val ∪ VOC train) − VOC val
    assert metrics["metrics"]["voc.mAP50"] == 100.0 and metrics["metrics"]["pq.PQ"] == 100.0
    assert metrics["provenance"]["profile"] == "voc"


def test_coco_folder_runs_through_the_stages(real_repo):
    metrics = _run_slot("coco")
    assert metrics["metrics"]["pq.PQ"] == 100.0 and metrics["metrics"]["semantic.mIoU"] == 100.0
    # the zero-area annotation of the fixture is skipped and counted by the loader
    meta = json.loads(Path("data/canonical/coco/meta.json").read_text())
    assert meta["counts"]["val"]["skipped_zero_area"] == 1

"""Determinism of the pipeline: a forced re-run of the data, weak-label, pre-training, WSSS and reference
stages reproduces every output hash. (Training determinism is tested per method, e.g.
tests/test_wsss_point_train.py; re-training here would double the suite's time.) Its own smoke
repository, so it runs on another xdist worker than the end-to-end module."""

import pytest
import yaml

from smoke_repo import init_repo, run

pytestmark = pytest.mark.slow
# with what they depend on: prepare, points; pretrain (its weights' random init once escaped the seed: a
# fresh process drew other initial weights)
TARGETS = tuple(f"{kind}-{slot}" for kind in ("pretrain", "wsss-active", "reference") for slot in ("voc", "coco"))


def _outs(lock: dict, stages: list[str]) -> dict[str, list]:
    return {name: [(o["path"], o.get("md5")) for o in lock["stages"][name].get("outs", [])] for name in stages}


def test_same_params_twice_give_byte_identical_outputs(tmp_path):
    init_repo(tmp_path)
    run(["dvc", "repro", *TARGETS], tmp_path, timeout=900)
    before = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    stages = sorted(before["stages"])
    assert {s.split("@")[0] for s in stages} == {"prepare-voc", "prepare-coco", "points-voc", "points-coco", *TARGETS}
    assert len(stages) >= 12
    run(["dvc", "repro", "--force", "--single-item", *stages], tmp_path, timeout=900)
    after = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert _outs(after, stages) == _outs(before, stages)

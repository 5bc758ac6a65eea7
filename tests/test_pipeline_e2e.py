"""The whole pipeline on the smoke profile: `dvc repro` end to end, what `-S key=value` re-runs,
the evaluation self-check, and determinism (a forced re-run reproduces every output byte for byte)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.config.loader import dump_params, render_profile

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]  # one worker builds the fixture
REPO = Path(__file__).resolve().parents[1]
COPIED = ("bench", "datasets", "methods", "reports/specs", "configs", "dvc.yaml")
DETERMINISM_STAGES = ("prepare", "points", "wsss", "reference", "evaluate-reference", "evaluate-wsss")


def _run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _write_params(repo: Path, **changes: object) -> None:
    params = render_profile("smoke")
    params["tracking"]["enabled"] = False  # tracking has its own tests; keeps this one fast
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (repo / "params.yaml").write_text(dump_params(params))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    for rel in COPIED:
        src, dst = REPO / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    _write_params(repo)
    _run(["git", "init", "-q"], repo)
    _run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-q", "--allow-empty", "-m", "x"],
         repo)
    _run(["dvc", "init", "-q"], repo)
    _run(["dvc", "repro"], repo, timeout=1800)
    return repo


def _dry_run_stages(repo: Path) -> set[str]:
    out = _run(["dvc", "repro", "--dry"], repo).stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_repro_renders_every_table_and_the_index(pipeline):
    index = (pipeline / "reports" / "index.md").read_text()
    assert "29 tables" in index
    for paper, n in {"p2seg": 6, "point2mask": 7, "bestie": 8, "jtsm": 8}.items():
        assert sorted(p.name for p in (pipeline / "reports" / paper).glob("table*.md")) == sorted(
            f"table{i}.md" for i in range(1, n + 1))
    assert (pipeline / "reports" / "plots" / "p2seg_table5.png").stat().st_size > 1000


def test_ground_truth_row_reads_100_on_every_metric(pipeline):
    assert "**Self-check: PASS**" in (pipeline / "reports" / "index.md").read_text()
    for slot in ("voc", "coco"):
        data = json.loads((pipeline / "metrics" / slot / "reference" / "ground-truth" / "seed0.json").read_text())
        percent = {k: v for k, v in data["metrics"].items() if not k.startswith("pseudo.n_") and k != "pseudo.tp50"}
        # pycocotools averages in float64: 100 can come out as 99.99999999999997
        assert {k: v for k, v in percent.items() if v is not None and abs(v - 100.0) > 1e-9} == {}
        assert data["metrics"]["pq.PQ_st"] == 100.0 and data["metrics"]["voc.mAP75"] == 100.0


def test_oracle_grouping_is_below_the_ground_truth_on_touching_instances(pipeline):
    data = json.loads((pipeline / "metrics" / "coco" / "reference" / "oracle-grouping" / "seed0.json").read_text())
    assert 0 < data["metrics"]["pseudo.mean_iou"] < 100


def test_nothing_reruns_when_nothing_changed(pipeline):
    assert _dry_run_stages(pipeline) == set()


def test_hard_pixel_ratio_reruns_only_the_p2seg_runs_that_read_it(pipeline):
    """`repro --dry` lists the stages whose own params changed (their evaluations, the P2Seg
    segmentor rows and the report follow from the new outputs): the default run, the ablations and
    the ResNet row, never the fixed-ratio sweep or the S2I rule alone."""
    _write_params(pipeline, **{"mdm.hard_pixel_ratio": 0.4})
    try:
        stages = _dry_run_stages(pipeline)
    finally:
        _write_params(pipeline)
    ablations = ["s2i", "bestie-s2i", "bestie-s2i-i2s", "resnet"]
    assert stages == {"p2seg@0", "report", *(f"p2seg-ablation@{v}-0" for v in ablations)}


def test_a_voc_data_param_leaves_the_coco_chain_alone(pipeline):
    _write_params(pipeline, **{"data.voc.synthetic.seed": 5})
    try:
        stages = _dry_run_stages(pipeline)
    finally:
        _write_params(pipeline)
    assert "prepare@voc" in stages and "report" in stages
    assert not any("coco" in s for s in stages)


def test_same_params_twice_give_byte_identical_outputs(pipeline):
    """Forced re-runs of the data, reference and evaluation stages reproduce every output hash.
    (Training determinism is tested in tests/test_wsss_point_train.py; re-training here would
    double the suite's time.)"""
    lock_before = yaml.safe_load((pipeline / "dvc.lock").read_text())
    stages = [name for name in lock_before["stages"] if name.split("@")[0] in DETERMINISM_STAGES]
    _run(["dvc", "repro", "--force", "--single-item", *stages], pipeline, timeout=900)
    lock_after = yaml.safe_load((pipeline / "dvc.lock").read_text())

    def outs(lock):
        return {name: [(o["path"], o.get("md5")) for o in lock["stages"][name].get("outs", [])] for name in stages}

    assert len(stages) >= 12
    assert outs(lock_after) == outs(lock_before)

"""Faults a careful user meets on the smoke profile: a corrupt image, bad ground truth, a killed run, a sloppy
params file, a diverging training. Each stops with one line naming the file / record / key, and leaves no
half-written output behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.cli import main
from bench.config.loader import ParamsError, dump_params, load_params, render_profile, validate_params
from datasets.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]


def _bench(*argv: str) -> int:
    return main(list(argv))


@pytest.fixture(scope="module")
def smoke_voc(tmp_path_factory) -> Path:
    """A folder with a smoke params.yaml, the prepared VOC-like slot, its points and the ground-truth row."""
    root = tmp_path_factory.mktemp("smoke")
    (root / "params.yaml").write_text(dump_params(render_profile("smoke")))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for argv in (("data", "prepare", "--dataset", "voc"), ("points", "--dataset", "voc"),
                     ("reference", "--dataset", "voc", "--variant", "ground-truth")):
            assert _bench(*argv) == 0, argv
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def repo(smoke_voc, tmp_path, monkeypatch) -> Path:
    """A private copy of :func:`smoke_voc`, as the working directory."""
    work = tmp_path / "repo"
    shutil.copytree(smoke_voc, work, symlinks=True)
    monkeypatch.chdir(work)
    return work


def _buffered(root: Path, stage: str | None = None) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted((root / ".mlflow-buffer").glob("*.json"))]
    return [r for r in runs if stage is None or r["tags"]["stage"] == stage]


def _instances(root: Path, split: str = "val") -> tuple[Path, dict]:
    path = root / "data/canonical/voc" / split / "instances.json"
    return path, json.loads(path.read_text())


def _truncate_first_image(root: Path, split: str = "val") -> Path:
    _, data = _instances(root, split)
    image = root / "data/canonical/voc" / split / "images" / data["images"][0]["file_name"]
    blob = image.read_bytes()
    image.unlink()  # the canonical images are hard links to the generator's: do not write through them
    image.write_bytes(blob[: len(blob) // 2])
    return image.relative_to(root)  # as the stages name it (they run in the repository root)


# ------------------------------------------------------------------ 1. evaluate writes nothing unless it succeeds
def test_a_failed_evaluation_rewrites_no_metrics_file_and_logs_no_metrics(repo, capsys):
    assert _bench("evaluate", "--dataset", "voc", "--all") == 0
    metrics = repo / "metrics/voc/reference/ground-truth/seed0.json"
    before = metrics.read_bytes()
    shutil.rmtree(repo / ".mlflow-buffer")
    # the prediction changes (so the run is re-scored) and a second run's prediction is broken
    pred = repo / "runs/voc/reference/ground-truth/val_instances.json"
    records = json.loads(pred.read_text())
    records[0]["score"] = 0.5
    pred.write_text(json.dumps(records))
    broken = repo / "runs/voc/reference/oracle-grouping"
    shutil.copytree(repo / "runs/voc/reference/ground-truth", broken)
    (broken / "val_instances.json").write_text(json.dumps([{**records[0], "category_id": 999}]))
    assert _bench("evaluate", "--dataset", "voc", "--all") == 2
    assert "unknown category_id 999" in capsys.readouterr().err
    assert metrics.read_bytes() == before
    assert not (repo / "metrics/voc/reference/oracle-grouping").exists()
    [run] = _buffered(repo)
    assert run["status"] == "FAILED" and run["metrics"] == []


def test_a_truncated_image_fails_evaluate_before_the_metrics_file_is_written(repo, capsys):
    shutil.rmtree(repo / "metrics", ignore_errors=True)
    image = _truncate_first_image(repo)
    (repo / "reports/specs").mkdir(parents=True)
    assert _bench("evaluate", "--dataset", "voc", "--method", "reference", "--variant", "ground-truth") == 2
    err = capsys.readouterr().err
    assert str(image) in err and "truncated" in err
    assert not (repo / "metrics").exists() or not any((repo / "metrics").rglob("*.json"))
    [run] = _buffered(repo, "evaluate")
    assert run["status"] == "FAILED" and run["metrics"] == []


# --------------------------------------------------------------- 2. a corrupt image is named, and found up front
def test_loading_a_truncated_image_names_the_file(repo):
    from datasets.canonical import CanonicalDataset

    image = _truncate_first_image(repo)
    split = CanonicalDataset("data/canonical/voc").split("val")
    with pytest.raises(DatasetError, match="truncated") as info:
        split.load_image(split.images[0].id)
    assert info.value.path == str(image)
    with pytest.raises(DatasetError) as info:
        split.check_images()
    assert info.value.path == str(image)


def test_a_method_run_checks_every_image_before_training(repo):
    from bench.stages.base import declare_stage
    from bench.stages.run import method_run

    image = _truncate_first_image(repo, "train_aug")
    stage = declare_stage("faults-image-check", "data")
    entered = False
    with pytest.raises(DatasetError) as info:
        with method_run(stage, slot="voc", method="faults", variant="check", seed=0, params_path=Path("params.yaml")):
            entered = True
    assert not entered and info.value.path == str(image)
    assert not list((repo / "runs/voc").glob("faults/**/*")) or not any((repo / "runs/voc/faults").rglob("*.json"))


# -------------------------------------------------------------------- 3. one validation of the canonical GT
def _corrupt_gt(root: Path, change) -> Path:
    path, data = _instances(root, "train_aug")
    change(data)
    path.unlink()
    path.write_text(json.dumps(data))
    return path


def _empty_rle(data):
    from pycocotools import mask as mask_utils

    a = data["annotations"][0]
    h, w = a["segmentation"]["size"]
    a["segmentation"]["counts"] = mask_utils.encode(np.zeros((h, w), np.uint8, order="F"))["counts"].decode()


def _duplicate_id(data):
    data["annotations"][1]["id"] = data["annotations"][0]["id"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(image_id=123456), "image_id 123456"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="garbage!"), "RLE"),
    (_empty_rle, "mask is empty"),
    (lambda d: d["annotations"][0].update(area=0), "area 0"),
    (lambda d: d["annotations"][0].update(category_id=77), "77"),
    (_duplicate_id, "duplicate annotation id"),
])
@pytest.mark.parametrize("command", [("points", "--dataset", "voc"),
                                     ("reference", "--dataset", "voc", "--variant", "ground-truth")])
def test_points_and_reference_reject_bad_ground_truth_naming_file_and_record(repo, capsys, change, message,
                                                                             command):
    path = _corrupt_gt(repo, change)
    outputs = {"points": repo / "data/points/voc", "reference": repo / "runs/voc/reference/ground-truth"}
    output = outputs[command[0]]
    before = sorted((p.name, p.read_bytes()) for p in output.rglob("*") if p.is_file())
    assert _bench(*command) == 2
    err = capsys.readouterr().err
    assert str(Path("data/canonical/voc/train_aug/instances.json")) in err and message in err
    assert str(path.name) in err
    assert sorted((p.name, p.read_bytes()) for p in output.rglob("*") if p.is_file()) == before
    assert not list(output.parent.glob(f".{output.name}.tmp-*"))


def test_evaluate_blames_the_ground_truth_not_the_prediction(repo, capsys):
    _corrupt_gt(repo, lambda d: d["annotations"][0]["segmentation"].update(counts="garbage!"))
    assert _bench("evaluate", "--dataset", "voc", "--all") == 2
    err = capsys.readouterr().err
    assert "train_aug/instances.json" in err and "val_instances" not in err and "train_pseudo" not in err


# --------------------------------------------------------------------------------- 4. killed runs
def test_an_exception_leaves_no_temporary_and_a_stale_one_of_a_dead_process_is_swept(tmp_path):
    from bench.io import atomic_path, write_json

    out = tmp_path / "seed0"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".seed0.tmp-{int(dead.stdout)}-abc"
    legacy = tmp_path / ".seed0.tmp-k2j3h4"  # the older name, which names no process
    stale.mkdir()
    legacy.mkdir()
    other = tmp_path / f".other.tmp-{int(dead.stdout)}-abc"
    other.mkdir()
    with pytest.raises(RuntimeError):
        with atomic_path(out, directory=True) as tmp:
            assert not stale.exists() and not legacy.exists() and other.exists()
            write_json(tmp / "a.json", {})
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


_KILLABLE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bench.cli import main
    from bench.commands import COMMANDS, Command
    from bench.io import atomic_path
    from bench.stages.base import declare_stage, run_stage

    STAGE = declare_stage("faults-sleep", "data")

    def handle(args):
        with run_stage(STAGE, params_path=Path("params.yaml"), dataset="voc"):
            with atomic_path(Path("runs/voc/faults/sleep/seed0"), directory=True) as tmp:
                (tmp / "half.json").write_text("{")
                print("ready", flush=True)
                time.sleep(60)
        return 0

    COMMANDS.add("faults-sleep", Command("sleep", lambda parser: None, handle))
    sys.exit(main(["faults-sleep"]))
""")


def _start_killable(root: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.mark.parametrize("signum, status, code", [(signal.SIGTERM, "KILLED", 143), (signal.SIGINT, "KILLED", 130)])
def test_sigterm_and_sigint_remove_the_temporary_and_end_the_run_killed(repo, signum, status, code):
    proc = _start_killable(repo)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "interrupted" in err
    assert not (repo / "runs/voc/faults/sleep").exists() or not any((repo / "runs/voc/faults/sleep").iterdir())
    [run] = [r for r in _buffered(repo) if r["run_name"].startswith("faults-sleep")]
    assert run["status"] == status
    assert not list((repo / ".mlflow-buffer").glob("*.running"))


def test_after_sigkill_the_next_run_sweeps_the_temporary_and_the_run_ends_killed(repo):
    from bench.io import atomic_path
    from bench.tracking import recover_killed

    proc = _start_killable(repo)
    proc.kill()
    proc.wait(timeout=60)
    parent = repo / "runs/voc/faults/sleep"
    assert list(parent.glob(".seed0.tmp-*"))  # what SIGKILL leaves
    assert recover_killed()
    [run] = [r for r in _buffered(repo) if r["run_name"].startswith("faults-sleep")]
    assert run["status"] == "KILLED" and "killed" in run["tags"]["error"]
    with atomic_path(parent / "seed0", directory=True) as tmp:
        (tmp / "done.json").write_text("{}")
    assert sorted(p.name for p in parent.iterdir()) == ["seed0"]


# ------------------------------------------------------- 5. the training checkpoints folder after an interruption
def test_the_docs_say_what_happens_to_seed_partial_after_a_kill():
    text = (REPO / "docs/pipeline.md").read_text()
    section = text[text.index("## Errors and interrupted runs"):]
    assert "seed<k>.partial" in section and "run cache" in section


def test_a_completed_method_run_removes_its_partial_folder(repo):
    from bench.stages.base import declare_stage
    from bench.stages.run import method_run

    stage = declare_stage("faults-partial", "data")
    partial = repo / "runs/voc/faults/partial/seed0.partial"
    partial.mkdir(parents=True)
    (partial / "step.pt").write_bytes(b"x" * 10)
    with method_run(stage, slot="voc", method="faults", variant="partial", seed=0,
                    params_path=Path("params.yaml")) as (_, run):
        assert (repo / run.partial) == partial
    assert not partial.exists() and (repo / "runs/voc/faults/partial/seed0/run.json").is_file()


# ------------------------------------------------------------------------------------ 6. params
def _params(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(dump_params(render_profile("smoke")))
    change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("change, key", [
    (lambda r: r["bestie"].update(iterations=True), "bestie.iterations"),
    (lambda r: r["bestie"].update(hflip="yes"), "bestie.hflip"),
    (lambda r: r["points"].update(seed="1"), "points.seed"),
])
def test_params_are_not_silently_converted(tmp_path, change, key):
    with pytest.raises(ParamsError, match=key):
        load_params(_params(tmp_path, change))


@pytest.mark.parametrize("change, key", [
    (lambda r: r.pop("segmentor"), "segmentor"),
    (lambda r: r["bestie"].pop("iterations"), "bestie.iterations"),
    (lambda r: r["data"]["voc"].pop("val_split"), "data.voc.val_split"),
])
def test_a_params_file_missing_a_section_or_key_is_refused(tmp_path, capsys, change, key):
    path = _params(tmp_path, change)
    with pytest.raises(ParamsError, match=f"missing {key}"):
        load_params(path)
    assert _bench("params", "validate", "--params", str(path)) == 2
    assert key in capsys.readouterr().err


def test_an_integer_for_a_float_and_every_profile_still_validate(tmp_path):
    load_params(_params(tmp_path, lambda r: r["segmentor"].update(lr=1)))
    # the committed file's types (its completeness follows the schema: `bench params use` re-renders it)
    validate_params(yaml.safe_load((REPO / "params.yaml").read_text()), source="params.yaml")
    for profile in ("embedded", "embedded-full", "smoke", "voc", "coco"):
        out = tmp_path / f"{profile}.yaml"
        assert _bench("params", "use", profile, "--out", str(out)) == 0
        assert load_params(out).profile == profile


# ---------------------------------------------------------------------------------- 7. permissions
def test_outputs_follow_the_umask(tmp_path):
    from bench.io import atomic_path, write_json

    old = os.umask(0o002)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_path(tmp_path / "run", directory=True) as tmp:
            (tmp / "x").write_text("")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o775


# ------------------------------------------------------------------- 8. the SegmentationClass PNG error
def test_a_bad_class_index_names_the_segmentation_class_png(tmp_path):
    from bench.commands.data import prepare
    from bench.config.schema import DatasetSlot
    from datasets.synthetic import generate
    from datasets.voc import load_voc_sbd

    raw = tmp_path / "raw"
    slot = render_profile("smoke")["data"]["voc"]
    generated = generate("synth-voc", raw, **slot["synthetic"])
    cls_png = sorted((raw / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))[0]
    with Image.open(cls_png) as im:
        palette, arr = im.getpalette(), np.array(im)
    arr[0, 0] = 77
    out_im = Image.fromarray(arr, mode="P")
    out_im.putpalette(palette)
    cls_png.unlink()
    out_im.save(cls_png)
    names = [c["name"] for c in generated.categories if c["isthing"]]
    with pytest.raises(DatasetError, match="unknown class index 77") as info:
        load_voc_sbd(root=raw, out=tmp_path / "out", class_names=names, progress=False)
    assert info.value.path == str(cls_png)
    assert prepare and DatasetSlot  # the stage's own path goes through the same loader


# ------------------------------------------------------------------------------ 9. help and prediction scores
@pytest.mark.parametrize("argv, words", [
    (("data", "prepare", "--help"), "canonical form"),
    (("data", "generate", "--help"), "folder layout of the real one"),
    (("params", "use", "--help"), "complete params file"),
    (("params", "validate", "--help"), "strict types"),
    (("params", "show", "--help"), "section.key = value"),
    (("evaluate", "--help"), "Reads:"),
])
def test_help_describes_each_command(capsys, argv, words):
    with pytest.raises(SystemExit):
        _bench(*argv)
    out = " ".join(capsys.readouterr().out.split())
    assert words in out


def test_a_negative_prediction_score_is_scored_as_given_and_said_naming_file_and_record(repo, caplog):
    """pycocotools and chainercv rank any finite score, so a negative one is scored as the references score it,
    not refused (a centre-heatmap regression can dip below 0) — but never silently."""
    pred = repo / "runs/voc/reference/ground-truth/val_instances.json"
    records = json.loads(pred.read_text())
    records[2]["score"] = -0.5
    pred.write_text(json.dumps(records))
    with caplog.at_level("WARNING", logger="bench.evaluation.records"):
        assert _bench("evaluate", "--dataset", "voc", "--all") == 0
    said = [r.getMessage() for r in caplog.records if "negative score" in r.getMessage()]
    assert said and "runs/voc/reference/ground-truth/val_instances.json: 1 record(s)" in said[0]
    assert "record 2 (image_id=" in said[0] and "-0.5" in said[0]


# ----------------------------------------------------------------------------- 10. a diverging training
def test_a_diverging_segmentor_stops_with_one_line_naming_step_loss_and_params(monkeypatch, capsys):
    import torch
    from torch import nn

    from methods.segmentor.engine import EngineConfig, train

    class Diverging(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, images, targets=None):
            return {"loss_mask": self.w * (float("nan") if self.calls() >= 3 else 1.0)}

        def calls(self) -> int:
            self.n = getattr(self, "n", 0) + 1
            return self.n

    class Data:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index):
            return torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                                          "masks": torch.zeros(0, 8, 8, dtype=torch.uint8)}

    config = EngineConfig(iterations=5, batch_size=1, lr=0.02, warmup_iters=0, device="cpu", amp=False)
    with pytest.raises(FloatingPointError) as info:
        train(Diverging(), Data(), config, progress=False)
    message = str(info.value)
    assert "iteration 3" in message and "loss_mask=nan" in message and "segmentor.lr" in message

    import bench.cli as cli
    from bench.commands import Command

    def diverge(args):
        raise info.value

    monkeypatch.setattr(cli, "build_parser", lambda: _parser_with(Command("diverge", lambda p: None, diverge)))
    assert cli.main(["diverge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "iteration 3" in err


def _parser_with(command):
    import argparse

    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    command.add_parser(sub, "diverge")
    return parser

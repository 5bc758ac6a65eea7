"""A run's record: ``run.json`` holds what ran and what it produced, ``timing.json`` its wall times,
and DVC hashes only the former (so re-running a stage that reproduces its outputs does not re-run
the stages after it)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.io import RUN_TIMING, write_run_record
from bench.predictions import RUN_INFO

ROOT = Path(__file__).resolve().parents[1]


def test_timing_is_split_from_the_record(tmp_path):
    record = {"method": "bestie", "seed": 0, "timing": {"stage_seconds": 12.5}}
    write_run_record(tmp_path / RUN_INFO, record)
    assert json.loads((tmp_path / RUN_INFO).read_text()) == {"method": "bestie", "seed": 0}
    assert json.loads((tmp_path / RUN_TIMING).read_text()) == {"stage_seconds": 12.5}
    assert "timing" in record  # the caller's record is left as it was


def test_a_record_without_timing_writes_no_timing_file(tmp_path):
    write_run_record(tmp_path / RUN_INFO, {"method": "reference"})
    assert not (tmp_path / RUN_TIMING).exists()


@pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc CLI not on PATH")
def test_dvc_ignores_timing_files_under_runs_and_nothing_else():
    def ignored(path: str) -> bool:
        return subprocess.run(["dvc", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored(f"runs/voc/bestie/points/seed0/{RUN_TIMING}")
    assert ignored(f"runs/coco/wsss/cam/seed0/{RUN_TIMING}")
    assert not ignored(f"runs/voc/bestie/points/seed0/{RUN_INFO}")
    assert not ignored(f"metrics/voc/bestie/points/{RUN_TIMING}")

"""Packaging guards."""

import subprocess
import sys
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parents[1]


def test_datasets_is_our_package_not_hugging_face():
    assert datasets.WSIS_BENCH_DATASETS is True
    assert Path(datasets.__file__).resolve().parent == REPO / "datasets"


def test_the_cli_fails_loudly_when_datasets_is_another_package(tmp_path):
    fake = tmp_path / "datasets"
    fake.mkdir()
    (fake / "__init__.py").write_text("")  # a package named datasets without our marker
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from bench.cli import main; main(['--help'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "not WSIS-Bench's datasets package" in result.stderr


def test_hugging_face_datasets_is_not_in_the_lock_file():
    assert '\nname = "datasets"\n' not in (REPO / "uv.lock").read_text()

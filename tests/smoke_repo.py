"""A throw-away git + DVC repository of the project on the smoke profile, for the pipeline tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.config.loader import dump_params, render_profile

REPO = Path(__file__).resolve().parents[1]
COPIED = ("bench", "datasets", "methods", "reports/specs", "configs", "dvc.yaml")


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    # One thread per stage process: the smoke stages are tiny, and under `pytest -n 2` on 2 cores the other
    # worker's tests keep one core busy — two-thread stages would oversubscribe it (see conftest.one_thread).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def write_params(repo: Path, **changes: object) -> None:
    params = render_profile("smoke")
    params["tracking"]["enabled"] = False  # tracking has its own tests; keeps this one fast
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    (repo / "params.yaml").write_text(dump_params(params))


def init_repo(repo: Path) -> None:
    """A git + DVC repository holding the code, specs, configs, dvc.yaml and smoke params."""
    for rel in COPIED:
        src, dst = REPO / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    write_params(repo)
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-q", "--allow-empty", "-m", "x"],
         repo)
    run(["dvc", "init", "-q"], repo)

"""A throw-away git + DVC repository of the project on the smoke profile, for the pipeline tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bench.config.loader import dump_params, render_profile

REPO = Path(__file__).resolve().parents[1]
COPIED = ("bench", "datasets", "methods", "reports/specs", "configs", "dvc.yaml", ".dvcignore")


def _env(repo: Path | None = None) -> dict[str, str]:
    # One thread per stage process: the smoke stages are tiny, and under `pytest -n 2` on 2 cores the other
    # worker's tests keep one core busy — two-thread stages would oversubscribe it (see conftest.one_thread).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    # Python's default: imports write __pycache__/ into the code folders that stages depend on (.dvcignore must
    # keep them out of the hashes; test_nothing_reruns_when_nothing_changed fails otherwise).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if repo is not None:  # the copy's own code runs (the code DVC hashes), not the installed checkout's
        env["PYTHONPATH"] = str(repo)
    return env


def _check(cmd: list[str], result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def run(cmd: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return _check(cmd, subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, **kw))


#: Stages whose name holds one of these run in the copy of :func:`repro_on_two_cores`: the COCO-like slot and
#: the P2Seg chain, about half the smoke stages.
TWIN_STAGES = ("coco", "p2seg")


def repro_on_two_cores(repo: Path, timeout: float) -> None:
    """``dvc repro`` of the whole pipeline in two halves side by side: `dvc repro` runs one stage at a time and
    holds the repository lock, so the stages named in :data:`TWIN_STAGES` run in a copy of the repository, in
    parallel with the others (what both halves need upstream runs in both, deterministically). Their
    outputs, cache and lock entries then move into ``repo``, and a last plain ``dvc repro`` there must find
    them up to date (it checks every hash), scores every run and renders the report."""
    stages = run(["dvc", "stage", "list", "--name-only"], repo).stdout.split()
    last = [s for s in stages if s == "report" or s.startswith("evaluate-")]  # read both halves' runs
    twin_stages = [s for s in stages if any(key in s for key in TWIN_STAGES) and s not in last]
    own_stages = [s for s in stages if s not in twin_stages and s not in last]
    twin = repo.with_name(repo.name + "-twin")
    shutil.copytree(repo, twin, symlinks=True)
    cmd = ["dvc", "repro", *twin_stages]
    other = subprocess.Popen(cmd, cwd=twin, env=_env(twin), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run(["dvc", "repro", *own_stages], repo, timeout=timeout)
        out, err = other.communicate(timeout=timeout)
    finally:
        other.kill()
    _check(cmd, subprocess.CompletedProcess(cmd, other.returncode, out, err))
    lock, twin_lock = (yaml.safe_load((r / "dvc.lock").read_text()) for r in (repo, twin))
    for stage in twin_stages:
        entry = twin_lock["stages"][stage]
        for output in entry.get("outs", []):
            src, dst = twin / output["path"], repo / output["path"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        lock["stages"][stage] = entry
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.copytree(twin / ".dvc" / "cache", repo / ".dvc" / "cache", dirs_exist_ok=True)
    shutil.rmtree(twin)
    run(["dvc", "repro"], repo, timeout=timeout)


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
    run(["git", "init", "-q"], repo)
    run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-q", "--allow-empty", "-m", "x"],
         repo)
    run(["dvc", "init", "-q"], repo)  # before the copy: it writes a default .dvcignore that ours replaces
    for rel in COPIED:
        src, dst = REPO / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    write_params(repo)

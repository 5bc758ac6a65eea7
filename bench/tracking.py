"""MLflow tracking: one run per stage execution.

Experiment = ``<tracking.experiment_prefix>/<profile>``. Tags: stage, method, variant,
the table rows a run feeds, git commit and dirty flag, DVC stage and experiment name,
host and device. Params are flattened (``mdm.hard_pixel_ratio``). An exception ends the
run FAILED with the error as a tag.

The default store is ``sqlite:///<repo root>/mlflow.db``; ``MLFLOW_TRACKING_URI``
overrides it (a team server). Under ``dvc exp run --queue`` stages run in a temporary
copy of the repo; DVC passes the real root in ``DVC_ROOT``, so queued runs land in the
same store. Concurrent stages serialise store creation with a file lock and retry writes
that hit SQLite's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRIES = 8


def repo_root() -> Path:
    """The repository the user works in (the parent repo when DVC runs a queued experiment in a temp copy)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return cwd


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file ``mlflow.db`` at the repo root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_state(root: Path | None = None) -> dict[str, str]:
    """Commit hash and dirty flag of the working tree (``unknown`` outside git)."""
    root = root or Path.cwd()

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _with_retry(fn: Callable[[], T]) -> T:
    """Call ``fn``, retrying with back-off while SQLite reports the database as locked."""
    for attempt in range(_RETRIES):
        try:
            return fn()
        except Exception as exc:  # mlflow wraps sqlalchemy errors in MlflowException
            if "locked" not in str(exc).lower() or attempt == _RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@dataclass
class Run:
    """A handle to log into the active stage run; does nothing when tracking is disabled."""

    active: bool
    run_id: str | None = None
    _step_buffer: list[Any] = field(default_factory=list)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        if not self.active:
            return
        import mlflow

        clean = {k.replace("@", "_"): float(v) for k, v in metrics.items() if v is not None}
        _with_retry(lambda: mlflow.log_metrics(clean, step=step))

    def log_artifact(self, path: Path, *, subdir: str | None = None) -> None:
        if not self.active:
            return
        import mlflow

        _with_retry(lambda: mlflow.log_artifact(str(path), artifact_path=subdir))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        import mlflow

        _with_retry(lambda: mlflow.set_tags({k: str(v) for k, v in tags.items()}))


@contextlib.contextmanager
def _store_lock() -> Iterator[None]:
    """Serialise creation/migration of a local SQLite store across processes."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///")).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def stage_run(
    *,
    enabled: bool,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
) -> Iterator[Run]:
    """One MLflow run around a stage execution; FAILED with the error when the body raises."""
    if not enabled:
        yield Run(active=False)
        return
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    with _store_lock():
        exp = _with_retry(lambda: mlflow.set_experiment(experiment))
        active = _with_retry(lambda: mlflow.start_run(run_name=run_name, experiment_id=exp.experiment_id))
    run = Run(active=True, run_id=active.info.run_id)
    all_tags = {
        **tags,
        **git_state(repo_root()),
        "host": platform.node(),
        "device": device_name(),
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
    }
    try:
        run.set_tags(all_tags)
        items = [(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            chunk = dict(items[start : start + 100])
            _with_retry(lambda chunk=chunk: mlflow.log_params(chunk))
        yield run
    except BaseException as exc:
        with contextlib.suppress(Exception):
            run.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
        _with_retry(lambda: mlflow.end_run(status="FAILED"))
        raise
    else:
        _with_retry(lambda: mlflow.end_run(status="FINISHED"))

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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


def _artifact_location(experiment: str) -> str | None:
    """With the default SQLite store, artifacts go to ``<repo root>/mlruns`` (not the cwd of a queued run)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None  # the server decides
    return (repo_root() / "mlruns" / experiment.replace("/", "_")).as_uri()


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), "" when unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def device_name() -> str:
    """The accelerator a stage used; on CPU the model and torch's thread count, since trained weights
    depend on both (docs/pipeline.md). Does not import torch in stages that never load it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu (torch not loaded)"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu: {cpu_model() or 'unknown model'}, {torch.get_num_threads()} torch threads"


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


class Run:
    """The MLflow run of one stage execution.

    Connecting to MLflow (its import alone takes seconds) happens in a background thread
    while the stage works; what the stage logs before the connection is ready is buffered
    with its original timestamps and written as soon as it is. Inactive when tracking is off.
    """

    def __init__(self, *, active: bool, experiment: str = "", run_name: str = "",
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        self.active = active
        self.run_id: str | None = None
        self._client: Any = None
        self._pending: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if active:
            self._start_ms = int(time.time() * 1000)
            self._thread = threading.Thread(
                target=self._connect, args=(experiment, run_name, dict(params or {}), dict(tags or {})), daemon=True
            )
            self._thread.start()

    def _connect(self, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, Any]) -> None:
        try:
            from mlflow.entities import Param, RunTag
            from mlflow.tracking import MlflowClient

            logging.getLogger("alembic").setLevel(logging.WARNING)
            with _store_lock():  # the first client of a new SQLite store creates its tables
                client = MlflowClient(tracking_uri=tracking_uri())
                exp = _with_retry(lambda: client.get_experiment_by_name(experiment))
                exp_id = exp.experiment_id if exp else _with_retry(
                    lambda: client.create_experiment(experiment, artifact_location=_artifact_location(experiment)))
                run = _with_retry(lambda: client.create_run(exp_id, start_time=self._start_ms,
                                                            tags={"mlflow.runName": run_name}, run_name=run_name))
            self.run_id = run.info.run_id
            items = [Param(k, str(v)[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                chunk = items[start : start + 100]
                _with_retry(lambda chunk=chunk: client.log_batch(self.run_id, params=chunk))
            tag_list = [RunTag(k, str(v)) for k, v in tags.items()]
            _with_retry(lambda: client.log_batch(self.run_id, tags=tag_list))
            with self._lock:
                self._client = client
            self._flush()
        except BaseException as exc:  # reported by finish()
            self._error = exc

    def _flush(self) -> None:
        with self._lock:
            if self._client is None:
                return
            pending, self._pending = self._pending, []
        from mlflow.entities import Metric, RunTag

        metrics = [Metric(*item) for kind, item in pending if kind == "metric"]
        tags = [RunTag(*item) for kind, item in pending if kind == "tag"]
        for start in range(0, len(metrics), 1000):
            chunk = metrics[start : start + 1000]
            _with_retry(lambda chunk=chunk: self._client.log_batch(self.run_id, metrics=chunk))
        if tags:
            _with_retry(lambda: self._client.log_batch(self.run_id, tags=tags))
        for kind, item in pending:
            if kind == "artifact":
                path, subdir = item
                _with_retry(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path=subdir))

    def _queue(self, kind: str, item: Any) -> None:
        if not self.active:
            return
        with self._lock:
            self._pending.append((kind, item))
            ready = self._client is not None
        if ready:
            self._flush()

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is not None:
                self._queue("metric", (key.replace("@", "_"), float(value), now, step or 0))

    def log_artifact(self, path: Path, *, subdir: str | None = None) -> None:
        """Log a file; it is copied at once (the stage may replace it later)."""
        if not self.active:
            return
        staged = Path(tempfile.mkdtemp(prefix="mlflow-artifact-")) / Path(path).name
        shutil.copy2(path, staged)
        self._queue("artifact", (staged, subdir))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._queue("tag", (key, str(value)))

    def finish(self, status: str) -> None:
        """Wait for the connection, write everything buffered, and end the run with ``status``."""
        if not self.active or self._thread is None:
            return
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"MLflow tracking at {tracking_uri()} failed: {self._error}") from self._error
        self._flush()
        _with_retry(lambda: self._client.set_terminated(self.run_id, status=status,
                                                        end_time=int(time.time() * 1000)))


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
    all_tags = {
        **tags,
        **git_state(repo_root()),
        "host": platform.node(),
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
    }
    run = Run(active=True, experiment=experiment, run_name=run_name, params=params, tags=all_tags)
    try:
        yield run
    except BaseException as exc:
        run.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000], "device": device_name()})
        with contextlib.suppress(Exception):
            run.finish("FAILED")
        raise
    run.set_tags({"device": device_name()})
    run.finish("FINISHED")

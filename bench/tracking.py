"""MLflow tracking: one run per stage execution.

Experiment = ``<tracking.experiment_prefix>/<profile>``. Tags: stage, method, variant,
the table rows a run feeds, git commit and dirty flag, DVC stage and experiment name,
host and device. Params are flattened (``mdm.hard_pixel_ratio``). An exception ends the
run FAILED with the error as a tag; an interruption (Ctrl-C, SIGTERM) ends it KILLED. A run whose process
was killed outright (SIGKILL, a power cut) leaves its start marker ``<run>.running`` in the buffer: the next
stage start or flush on the same host finds its process gone and buffers the run as KILLED.

A stage never waits for MLflow (its import and connection alone take seconds): it records its run in
a local buffer, ``<repo root>/.mlflow-buffer/<run>.json`` (+ the artifacts beside it), written when the
stage ends. :func:`flush` sends buffered runs to the store with their original timestamps and removes each
once it is stored; the ``report`` stage flushes at the end of every ``dvc repro``, and ``bench tracking
flush`` does by hand. A run that cannot be sent stays buffered: none is lost.

The default store is ``sqlite:///<repo root>/mlflow.db``; ``MLFLOW_TRACKING_URI``
overrides it (a team server). Under ``dvc exp run --queue`` stages run in a temporary
copy of the repo; DVC passes the real root in ``DVC_ROOT``, so queued runs land in the
same buffer and store. Concurrent flushes claim each buffered run by an atomic rename,
serialise store creation with a file lock and retry writes that hit SQLite's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
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


#: The tracked paths whose uncommitted edits change what a run computes (outputs such as dvc.lock, metrics/ and
#: reports/ change during every ``dvc repro`` and are not counted).
CODE_PATHS = ("bench", "methods", "datasets", "configs", "pyproject.toml", "uv.lock")


def code_dirty(root: Path | None = None) -> str:
    """``"true"`` when the working tree has uncommitted edits to :data:`CODE_PATHS`, ``"false"`` when not,
    ``"unknown"`` outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                             cwd=root or Path.cwd(), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return str(bool(out.strip())).lower()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), "" when unknown."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def environment_record() -> dict[str, Any]:
    """What a run's numbers depend on besides code and params, for its run.json (as lm-evaluation-harness
    records it): the installed torch / torchvision / timm / numpy versions and the device."""
    from importlib import metadata

    return {"versions": {name: metadata.version(name) for name in ("torch", "torchvision", "timm", "numpy")},
            "device": device_name()}


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


def buffer_dir() -> Path:
    """Where stages record their runs until :func:`flush` sends them (git-ignored)."""
    return repo_root() / ".mlflow-buffer"


class Run:
    """The MLflow run of one stage execution, recorded locally (:func:`buffer_dir`) and sent by :func:`flush`.
    Inactive when tracking is off."""

    def __init__(self, *, active: bool, experiment: str = "", run_name: str = "",
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        self.active = active
        self.key = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}"
        self.record: dict[str, Any] = {
            "experiment": experiment, "run_name": run_name, "start_ms": int(time.time() * 1000),
            "params": {k: str(v)[:6000] for k, v in (params or {}).items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()}, "metrics": [], "artifacts": [],
        }

    @property
    def _artifacts(self) -> Path:
        return buffer_dir() / f"{self.key}.artifacts"

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        if not self.active:
            return
        now = int(time.time() * 1000)
        self.record["metrics"] += [[key.replace("@", "_"), float(value), now, step or 0]
                                   for key, value in metrics.items() if value is not None]

    def log_artifact(self, path: Path, *, subdir: str | None = None) -> None:
        """Log a file; it is copied at once (the stage may replace it later)."""
        if not self.active:
            return
        staged = self._artifacts / str(len(self.record["artifacts"])) / Path(path).name
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, staged)
        self.record["artifacts"].append([str(staged.relative_to(buffer_dir())), subdir])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            self.record["tags"].update({k: str(v) for k, v in tags.items()})

    @property
    def _marker(self) -> Path:
        return buffer_dir() / f"{self.key}{RUNNING}"

    def start(self) -> None:
        """Leave a marker (the run so far, this process's id and host) that says the run is in progress: if the
        process is killed before :meth:`finish`, :func:`recover_killed` buffers the run as KILLED."""
        if not self.active:
            return
        marker = self._marker
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(), "record": self.record}),
                       encoding="utf-8")
        os.replace(tmp, marker)

    def finish(self, status: str) -> None:
        """Write the run to the buffer (atomically: a half-written run is never sent)."""
        if not self.active:
            return
        self.record.update(status=status, end_ms=int(time.time() * 1000))
        _write_buffered(self.key, self.record)
        self._marker.unlink(missing_ok=True)


#: Suffix of the marker of a run in progress (not ``.json``: flush never sends it).
RUNNING = ".running"


def _write_buffered(key: str, record: dict[str, Any]) -> None:
    path = buffer_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_killed() -> list[str]:
    """Buffer as KILLED every run whose marker (:meth:`Run.start`) outlived its process on this host (killed
    with SIGKILL, or the machine went down); returns their keys. Markers of live processes, or of other hosts
    sharing the folder, are left alone."""
    recovered = []
    for marker in sorted(buffer_dir().glob(f"*{RUNNING}")):
        try:
            state = json.loads(marker.read_text(encoding="utf-8"))
            pid, host, record = int(state["pid"]), state["host"], state["record"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours to judge
        if host != platform.node() or pid == os.getpid() or not _process_gone(pid):
            continue
        key = marker.name[: -len(RUNNING)]
        record["tags"]["error"] = "the stage's process ended without finishing its run (killed, e.g. SIGKILL)"
        record.update(status="KILLED", end_ms=int(marker.stat().st_mtime * 1000))
        _write_buffered(key, record)
        marker.unlink(missing_ok=True)
        recovered.append(key)
    return recovered


def buffered_runs() -> list[Path]:
    return sorted(buffer_dir().glob("*.json"))


def flush() -> tuple[int, list[str]]:
    """Send every buffered run to the tracking store; returns how many were stored and the errors of those
    that stay buffered (a later flush retries them)."""
    recover_killed()
    pending = buffered_runs()
    if not pending:
        return 0, []
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _store_lock():  # the first client of a new SQLite store creates its tables
        client = MlflowClient(tracking_uri=tracking_uri())
    sent, errors = 0, []
    experiments: dict[str, str] = {}
    for path in pending:
        claimed = path.with_suffix(".sending")
        try:
            os.replace(path, claimed)  # another flush got it first
        except FileNotFoundError:
            continue
        try:
            record = json.loads(claimed.read_text(encoding="utf-8"))
            name = record["experiment"]
            if name not in experiments:
                exp = _with_retry(lambda: client.get_experiment_by_name(name))
                experiments[name] = exp.experiment_id if exp else _with_retry(
                    lambda: client.create_experiment(name, artifact_location=_artifact_location(name)))
            run = _with_retry(lambda: client.create_run(experiments[name], start_time=record["start_ms"],
                                                        tags={"mlflow.runName": record["run_name"]},
                                                        run_name=record["run_name"]))
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in record["params"].items()]
            for start in range(0, len(params), 100):  # MLflow caps a batch at 100 params
                _with_retry(lambda chunk=params[start:start + 100]: client.log_batch(run_id, params=chunk))
            _with_retry(lambda: client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()]))
            metrics = [Metric(*m) for m in record["metrics"]]
            for start in range(0, len(metrics), 1000):
                _with_retry(lambda chunk=metrics[start:start + 1000]: client.log_batch(run_id, metrics=chunk))
            for staged, subdir in record["artifacts"]:
                _with_retry(lambda: client.log_artifact(run_id, str(buffer_dir() / staged), artifact_path=subdir))
            _with_retry(lambda: client.set_terminated(run_id, status=record["status"], end_time=record["end_ms"]))
        except Exception as exc:  # stays buffered for the next flush
            os.replace(claimed, path)
            errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        claimed.unlink()
        shutil.rmtree(buffer_dir() / f"{path.stem}.artifacts", ignore_errors=True)
        sent += 1
    return sent, errors


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
    """One MLflow run around a stage execution; FAILED with the error when the body raises, KILLED when it is
    interrupted (``KeyboardInterrupt``: Ctrl-C, or SIGTERM, which the CLI turns into one)."""
    if not enabled:
        yield Run(active=False)
        return
    with contextlib.suppress(OSError):
        recover_killed()
    all_tags = {
        **tags,
        **git_state(repo_root()),
        "host": platform.node(),
        "dvc.stage": os.environ.get("DVC_STAGE", ""),
        "dvc.experiment": os.environ.get("DVC_EXP_NAME", ""),
    }
    run = Run(active=True, experiment=experiment, run_name=run_name, params=params, tags=all_tags)
    run.start()
    try:
        yield run
    except BaseException as exc:
        killed = isinstance(exc, KeyboardInterrupt)
        error = f"interrupted ({exc or 'SIGINT'})" if killed else f"{type(exc).__name__}: {exc}"
        run.set_tags({"error": error[:5000], "device": device_name()})
        with contextlib.suppress(Exception):
            run.finish("KILLED" if killed else "FAILED")
        raise
    run.set_tags({"device": device_name()})
    run.finish("FINISHED")

"""Atomic file and directory writes: an interrupted stage never leaves a half-written output.

Every output goes to a temporary sibling first and is moved into place with ``os.replace``
only when complete, so DVC can never cache a partial file as valid. The temporary is named
``.<name>.tmp-<pid>-<random>``: one left by a process that no longer runs (a SIGKILL, a power cut) is
removed when the same output is next written. Outputs get the permissions of the umask, as ``open`` gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (read without changing it where ``/proc`` tells it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` (``.<name>.tmp-<pid>-*``) whose process no longer runs (and those
    of the older ``.<name>.tmp-<random>`` form, which name no process); returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f"{_tmp_prefix(path)}*"):
        owner = tmp.name[len(_tmp_prefix(path)):].split("-", 1)[0]
        if owner.isdigit() and (int(owner) == os.getpid() or _pid_alive(int(owner))):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (a second Ctrl-C cannot interrupt a clean-up half-way)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):  # not the main thread's business on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_path(path: Path) -> None:
    """Remove a file or folder if present; never raises (a clean-up must not hide the error it cleans up after)."""
    with signals_deferred():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    Stale temporaries of ``path`` (left by killed processes) are removed first; the temporary gets the
    permissions the umask gives a new file or folder (not ``mkstemp``'s 0600 / ``mkdtemp``'s 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(path)
    prefix = f"{_tmp_prefix(path)}{os.getpid()}-"
    umask = current_umask()
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        os.chmod(tmp, 0o777 & ~umask)
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with signals_deferred():  # the old output goes and the new one comes in one go
            if directory and path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically (NaN is written as ``NaN``, which Python's json reads back)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, sort_keys=False)
            f.write("\n")


RUN_TIMING = "timing.json"  # wall times beside a run's record; excluded from DVC's output hashes by /.dvcignore


def write_run_record(path: Path, record: dict[str, Any]) -> None:
    """Write a run's record (``run.json``: what ran and what it produced — byte-identical whenever the
    outputs are) at ``path`` and its ``timing`` entry (wall times, different on every run) as
    ``timing.json`` beside it. ``/.dvcignore`` keeps ``timing.json`` out of DVC's output hashes, so a
    stage that reproduces its outputs does not make the stages after it re-run."""
    record = dict(record)
    timing = record.pop("timing", None)
    write_json(path, record)
    if timing is not None:
        write_json(path.with_name(RUN_TIMING), timing)


def write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc

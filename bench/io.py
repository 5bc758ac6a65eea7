"""Atomic file and directory writes: an interrupted stage never leaves a half-written output.

Every output goes to a temporary sibling first and is moved into place with ``os.replace``
only when complete, so DVC can never cache a partial file as valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
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

"""Dataset input errors and the path-safety check every loader and reader applies to file names."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

__all__ = ["DatasetError", "safe_relpath", "safe_join"]

_DRIVE = re.compile(r"^[A-Za-z]:")


class DatasetError(ValueError):
    """Bad dataset input. The message names the file (``path``) and the record (``record``).

    Picklable with its fields, so an error raised in a worker process reaches the caller intact.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, record: str | None = None) -> None:
        self.reason = message
        self.path = None if path is None else str(path)
        self.record = record
        where = ", ".join(p for p in (self.path, record) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self):
        return (_rebuild_error, (self.reason, self.path, self.record))


def _rebuild_error(message: str, path: str | None, record: str | None) -> DatasetError:
    return DatasetError(message, path=path, record=record)


def safe_relpath(name: object, *, path: str | Path | None = None, record: str | None = None) -> PurePosixPath:
    """``name`` as a relative POSIX path that cannot leave the folder it is joined to.

    Rejects (with a :class:`DatasetError` naming ``path`` and ``record``) anything that is not a
    non-empty string, absolute paths (``/x``, ``C:x``), backslashes, NUL bytes and ``..``
    components. ``.`` components are dropped. The check is lexical: symbolic links the user
    placed inside a dataset folder are followed as the user made them.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"file name must be a non-empty string, got {name!r}", path=path, record=record)
    if "\x00" in name or "\\" in name:
        raise DatasetError(f"file name {name!r} contains a NUL byte or a backslash", path=path, record=record)
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(f"file name {name!r} is absolute; it must be relative to the dataset root",
                           path=path, record=record)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"file name {name!r} has a '..' component and would escape the dataset root",
                           path=path, record=record)
    if not parts:
        raise DatasetError(f"file name {name!r} names no file", path=path, record=record)
    return PurePosixPath(*parts)


def safe_join(root: str | Path, name: object, *, path: str | Path | None = None, record: str | None = None) -> Path:
    """``root / name`` after :func:`safe_relpath` accepted ``name``."""
    return Path(root).joinpath(*safe_relpath(name, path=path, record=record).parts)

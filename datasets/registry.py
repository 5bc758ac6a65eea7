"""Registry of dataset sources: name → loader that writes the canonical form.

A loader is called with keyword arguments only, ``loader(root=..., out=..., splits=..., **options)``,
and returns a :class:`PrepareSummary`. The prepare stage does ``load_source(name)(...)`` —
no if/elif over dataset kinds. Built-in sources (``voc``, ``voc-sbd``, ``coco``) register on
import of their modules, which :func:`load_source` performs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from datasets.writer import SplitSummary

__all__ = ["DATASET_SOURCES", "register_source", "load_source", "PrepareSummary", "SourceLoader"]

_BUILTIN_MODULES = ("datasets.voc", "datasets.coco")


@dataclass
class PrepareSummary:
    """What a loader wrote: the dataset folder and one :class:`SplitSummary` per split."""

    name: str
    out: Path
    splits: dict[str, SplitSummary] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "out": str(self.out), "splits": {k: v.to_json() for k, v in self.splits.items()}}


class SourceLoader(Protocol):
    def __call__(self, *, root: str | Path, out: str | Path, splits: tuple[str, ...] | list[str] | None = None,
                 **options) -> PrepareSummary: ...


DATASET_SOURCES: dict[str, SourceLoader] = {}


def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Decorator: register a loader under ``name`` (a second loader with the same name raises)."""

    def deco(fn: SourceLoader) -> SourceLoader:
        if name in DATASET_SOURCES and DATASET_SOURCES[name] is not fn:
            raise ValueError(f"dataset source {name!r} is already registered")
        DATASET_SOURCES[name] = fn
        return fn

    return deco


def load_source(name: str) -> SourceLoader:
    """The loader registered under ``name``; unknown names raise with the known ones listed."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    try:
        return DATASET_SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown dataset source {name!r}; known: {', '.join(sorted(DATASET_SOURCES))}") from None

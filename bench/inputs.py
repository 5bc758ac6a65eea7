"""Readers of the inputs a method run declares: point / peak cues, WSSS maps, image labels, other runs.

No command owns these: every method stage and benchmark reads its inputs through them, so a points file
or a map folder is validated the same way everywhere (a bad record stops with the file and the record).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import predictions as P
from bench.io import read_json
from bench.paths import run_dir
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.errors import DatasetError
from datasets.imageio import read_index_png


@dataclass
class Cues:
    """Point cues of one image: (y, x), semantic index, GT annotation id (None for peaks)."""

    yx: np.ndarray
    classes: np.ndarray
    annotation_ids: list[int | None]


def load_cues(path: Path, split: CanonicalSplit, dataset: CanonicalDataset, *, stuff: bool = False) -> dict[int, Cues]:
    """Cues per image of ``split`` from a points file (or a peaks file: the same records plus ``score``):
    the thing points, and the stuff points too with ``stuff`` (Point2Mask's one point per stuff segment).

    A cue on an unknown image, outside its image or of an unknown category stops with a message naming
    the file and record."""
    data = read_json(path)
    records = data["points"] if isinstance(data, dict) else data
    by_image: dict[int, list[tuple[int, int, int, int | None]]] = defaultdict(list)
    for k, p in enumerate(records):
        where = f"record {k} (id {p.get('id')})"
        image_id = int(p["image_id"])
        try:
            info = split.image(image_id)
        except DatasetError:
            raise DatasetError(f"image {image_id} is not in split {split.name!r}", path=path, record=where) from None
        cat = int(p["category_id"])
        if cat not in dataset.category_by_id:
            raise DatasetError(f"unknown category {cat}", path=path, record=where)
        if not (stuff or dataset.category_by_id[cat].isthing):
            continue
        x, y = int(p["x"]), int(p["y"])
        if not (0 <= x < info.width and 0 <= y < info.height):
            raise DatasetError(f"point ({x}, {y}) outside the {info.width}x{info.height} image",
                               path=path, record=where)
        aid = p.get("annotation_id")
        by_image[image_id].append((y, x, dataset.semantic_index(cat), None if aid is None else int(aid)))
    out = {}
    for image in split.images:
        rows = by_image.get(image.id, [])
        out[image.id] = Cues(np.array([(r[0], r[1]) for r in rows], dtype=np.int64).reshape(-1, 2),
                             np.array([r[2] for r in rows], dtype=np.int64), [r[3] for r in rows])
    return out


def load_semantic_maps(folder: Path, split: CanonicalSplit) -> dict[int, np.ndarray]:
    """The semantic-index PNG of every image of ``split`` in ``folder`` (``<stem>.png``), checked for size."""
    maps = {}
    for image in split.images:
        path = folder / f"{image.stem}.png"
        if not path.is_file():
            raise DatasetError("WSSS map is missing", path=path, record=f"image {image.id}")
        m = read_index_png(path, record=f"image {image.id}")
        if m.shape != (image.height, image.width):
            raise DatasetError(f"map is {m.shape}, image {image.height}x{image.width}", path=path)
        maps[image.id] = m
    return maps


def resolve_wsss_run(slot: str, spec: str) -> Path:
    """A wsss run folder: an existing directory path, else ``runs/<slot>/wsss/<spec>``."""
    path = Path(spec)
    if path.is_dir() and (path / P.TRAIN_SEMANTIC_DIR).is_dir():
        return path
    path = run_dir(slot, "wsss", spec)
    if not (path / P.TRAIN_SEMANTIC_DIR).is_dir():
        raise FileNotFoundError(f"wsss run {spec!r}: {path / P.TRAIN_SEMANTIC_DIR} does not exist; "
                                f"run `bench wsss --dataset {slot} --variant ...` or pass --wsss <run folder>")
    return path


def resolve_peaks(slot: str, spec: str) -> Path:
    """A peaks JSON: a file path, else ``runs/<slot>/wsss/<spec>/train_peaks.json``."""
    path = Path(spec)
    if path.is_file():
        return path
    path = run_dir(slot, "wsss", spec) / P.TRAIN_PEAKS
    if not path.is_file():
        raise FileNotFoundError(f"peaks {spec!r}: {path} does not exist (written by the wsss pam/cam variants); "
                                f"pass --peaks <file>")
    return path


def thing_classes(dataset: CanonicalDataset) -> list[int]:
    """Semantic indices of the thing categories, in order: centre channel c ↔ ``thing_classes[c]``."""
    return [i for i, cat in enumerate(dataset.semantic_classes)
            if cat != dataset.void_label and dataset.category_by_id[cat].isthing]


def image_label_classes(split: CanonicalSplit) -> dict[int, list[int]]:
    """Image id → the semantic indices of the classes its image labels name (``image_labels.json``)."""
    labels = split.image_labels
    return {im.id: [split.dataset.semantic_index(c) for c in labels[im.id]] for im in split.images}

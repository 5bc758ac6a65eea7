"""Tiny canonical datasets and prediction files, written from label maps (tests and benchmarks).

Everything here writes the real on-disk formats of docs/formats.md, so the evaluators are
exercised through the same loaders real data goes through.

- :func:`make_gt` — in-memory ground truth from binary masks (overlaps allowed).
- :func:`write_split` — a canonical split on disk from panoptic id maps + segment infos:
  ``meta.json``, ``<split>/instances.json`` (thing segments), ``panoptic.json`` + PNGs,
  ``semantic/`` PNGs.
- :func:`write_panoptic_predictions`, :func:`write_semantic_predictions`, :func:`write_json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from bench.evaluation.gt import CanonicalGT
from bench.evaluation.rle import encode

_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array, _PNG):
        raise OSError(f"{path}: cannot write PNG")


def default_categories(n_things: int = 3, n_stuff: int = 1) -> list[dict]:
    cats = [{"id": i + 1, "name": f"thing{i + 1}", "isthing": 1, "color": [i, 0, 0], "supercategory": "thing"}
            for i in range(n_things)]
    cats += [{"id": n_things + j + 1, "name": f"stuff{j + 1}", "isthing": 0, "color": [0, j, 0],
              "supercategory": "stuff"} for j in range(n_stuff)]
    return cats


def make_gt(categories: list[dict], images: Sequence[tuple[int, int, int]],
            annotations: Iterable[dict], *, panoptic: dict | None = None) -> CanonicalGT:
    """In-memory ground truth. ``images``: ``(id, height, width)``; ``annotations``: dicts with
    ``image_id, category_id, mask`` (bool array) and optional ``id, iscrowd, difficult, bbox``."""
    things = [c for c in categories if c.get("isthing", 1)]
    anns = []
    for k, a in enumerate(annotations):
        m = np.asarray(a["mask"], bool)
        anns.append({"id": a.get("id", k + 1), "image_id": a["image_id"], "category_id": a["category_id"],
                     "segmentation": encode(m), "area": int(m.sum()), "bbox": a.get("bbox", _bbox(m)),
                     "iscrowd": a.get("iscrowd", 0), "difficult": a.get("difficult", 0)})
    ims = [{"id": i, "file_name": f"{i:06d}.jpg", "height": h, "width": w} for i, h, w in images]
    stuff = [c["id"] for c in categories if not c.get("isthing", 1)]
    meta = {"format_version": 1, "name": "memory", "categories": categories,
            "semantic_classes": stuff + [c["id"] for c in things], "void_label": 255}
    return CanonicalGT.from_dicts(meta=meta, instances={"images": ims, "annotations": anns, "categories": things},
                                  panoptic=panoptic)


def write_split(root: Path, split: str, categories: list[dict], images: Iterable[dict], *,
                name: str = "synth", semantic_classes: list[int] | None = None) -> Path:
    """Write a canonical split. Each image: ``{"id", "ids": (H, W) int panoptic ids (0 = void),
    "segments": [{"id", "category_id", "iscrowd"?, "difficult"?}]}`` and optional ``"file_name"``.

    Thing segments become instances (annotation id = segment id); semantic PNGs map each pixel's
    category to its index in ``semantic_classes`` (default: stuff first, then things), void → 255.
    """
    root = Path(root)
    split_dir = root / split
    stuff = [c["id"] for c in categories if not c["isthing"]]
    things = [c["id"] for c in categories if c["isthing"]]
    sem_classes = semantic_classes or stuff + things
    sem_index = {cid: i for i, cid in enumerate(sem_classes)}
    isthing = {c["id"]: bool(c["isthing"]) for c in categories}
    imgs, anns, pan = [], [], []
    n = 0
    for im in images:
        n += 1
        ids = np.asarray(im["ids"], np.int64)
        h, w = ids.shape
        file_name = im.get("file_name", f"{im['id']:06d}.jpg")
        stem = str(Path(file_name).with_suffix(""))
        imgs.append({"id": im["id"], "file_name": file_name, "height": h, "width": w})
        sem = np.full((h, w), 255, np.uint8)
        infos = []
        for s in im["segments"]:
            m = ids == s["id"]
            area = int(m.sum())
            infos.append({"id": s["id"], "category_id": s["category_id"], "area": area, "bbox": _bbox(m),
                          "iscrowd": s.get("iscrowd", 0)})
            sem[m] = sem_index[s["category_id"]]
            if isthing[s["category_id"]]:
                anns.append({"id": s["id"], "image_id": im["id"], "category_id": s["category_id"],
                             "segmentation": encode(m), "area": area, "bbox": _bbox(m),
                             "iscrowd": s.get("iscrowd", 0), "difficult": s.get("difficult", 0)})
        pan.append({"image_id": im["id"], "file_name": stem + ".png", "segments_info": infos})
        _write_png(split_dir / "panoptic" / (stem + ".png"), id2rgb(ids)[..., ::-1])
        _write_png(split_dir / "semantic" / (stem + ".png"), sem)
    write_json(split_dir / "instances.json", {"images": imgs, "annotations": anns,
                                              "categories": [c for c in categories if c["isthing"]]})
    write_json(split_dir / "panoptic.json", {"images": imgs, "annotations": pan, "categories": categories})
    meta_path = root / "meta.json"
    splits = json.loads(meta_path.read_text())["splits"] if meta_path.is_file() else {}
    splits[split] = n
    write_json(meta_path, {"format_version": 1, "name": name, "source": "synthetic", "splits": splits,
                           "categories": categories, "semantic_classes": sem_classes, "void_label": 255})
    return split_dir


def write_panoptic_predictions(json_path: Path, items: Iterable[tuple[int, np.ndarray, list[dict]]],
                               categories: list[dict] | None = None) -> Path:
    """Prediction JSON + PNG folder (``<json without .json>/``): items ``(image_id, ids, segments_info)``."""
    json_path = Path(json_path)
    folder = json_path.with_suffix("")
    anns = []
    for image_id, ids, segs in items:
        name = f"{image_id:06d}.png"
        _write_png(folder / name, id2rgb(ids)[..., ::-1])
        anns.append({"image_id": image_id, "file_name": name, "segments_info": segs})
    return write_json(json_path, {"annotations": anns, "categories": categories or []})


def write_semantic_predictions(folder: Path, maps: dict[str, np.ndarray]) -> Path:
    """A folder of ``<stem>.png`` 8-bit index maps."""
    folder = Path(folder)
    for stem, m in maps.items():
        _write_png(folder / f"{stem}.png", np.asarray(m, np.uint8))
    return folder

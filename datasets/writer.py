"""Atomic writer of the canonical dataset form (docs/formats.md, "Canonical dataset").

A loader opens a :class:`CanonicalWriter` on the destination folder and hands it, per split,
a sequence of items and a ``build`` function turning an item into an :class:`ImageRecord`.
Each image is built and encoded (image decode check and link, RLE masks, panoptic layout,
semantic PNG) by :func:`encode_record` — in a pool of worker processes when ``workers > 1`` —
and the main process numbers annotations and segments in input order, writes the panoptic PNG
and collects the JSON files. Everything goes into a temporary folder beside the destination,
renamed into place only when every split succeeded; on any error it is removed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage
from tqdm import tqdm

from datasets.errors import DatasetError, safe_relpath
from datasets.imageio import MAX_PANOPTIC_ID, check_image, link_or_copy, write_index_png, write_panoptic_png
from datasets.records import (
    FORMAT_VERSION,
    VOID_LABEL,
    Category,
    ImageRecord,
    Instance,
    check_categories,
    semantic_classes,
)

__all__ = ["CanonicalWriter", "SplitSummary", "encode_record", "EncodedImage", "write_json_atomic"]

_SPLIT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass
class SplitSummary:
    """What one split holds, and what was skipped on the way (``counts``, e.g. ``skipped_zero_area``)."""

    split: str
    images: int = 0
    annotations: int = 0
    crowd_annotations: int = 0
    segments: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"images": self.images, "annotations": self.annotations,
                "crowd_annotations": self.crowd_annotations, "segments": self.segments,
                **dict(sorted(self.counts.items()))}


@dataclass
class _Context:
    """Per-split constants the encoder needs (picklable: sent to worker processes)."""

    split_dir: Path
    categories: dict[int, Category]
    semantic_index: dict[int, int]
    build: Callable[[Any], ImageRecord] | None = None


@dataclass
class EncodedImage:
    """One encoded image: JSON parts with ids still open, and the panoptic map in local ids."""

    image: dict
    rel_png: str
    instances: list[dict]  # annotation fields; "id" may be None (numbered by the writer)
    segments: list[dict]   # local, category_id, iscrowd, area, bbox, id (or None), instance (index or None)
    local: np.ndarray      # uint16 (H, W): local segment number, 0 = void
    counts: dict[str, int]


def _where(rec: ImageRecord) -> str:
    return f"image {rec.image_id} ({rec.file_name})"


def _instance_rle(inst: Instance, rec: ImageRecord) -> dict:
    what = f"{_where(rec)} {inst.record or 'instance'}"
    h, w = rec.height, rec.width
    if inst.rle is not None:
        size = [int(s) for s in inst.rle.get("size", ())]
        if size != [h, w]:
            raise DatasetError(f"mask size {size} different from image size {[h, w]}", path=rec.source, record=what)
        counts = inst.rle["counts"]
        if not isinstance(counts, (bytes, str)):
            raise DatasetError("instance RLE must be compressed (counts a string)", path=rec.source, record=what)
        return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if inst.mask is None or inst.mask.shape != (h, w):
        shape = None if inst.mask is None else list(inst.mask.shape)
        raise DatasetError(f"mask size {shape} different from image size {[h, w]}", path=rec.source, record=what)
    return mask_utils.encode(np.asfortranarray(inst.mask, dtype=np.uint8))


def _encode_instances(rec: ImageRecord, ctx: _Context) -> tuple[list[dict], list[dict]]:
    out, rles = [], []
    for inst in rec.instances:
        cat = ctx.categories.get(inst.category_id)
        if cat is None or not cat.isthing:
            raise DatasetError(f"unknown thing category id {inst.category_id}", path=rec.source,
                               record=f"{_where(rec)} {inst.record or 'instance'}")
        rle = _instance_rle(inst, rec)
        area = int(mask_utils.area(rle))
        if area == 0:
            raise DatasetError("instance mask has zero area", path=rec.source,
                               record=f"{_where(rec)} {inst.record or 'instance'}")
        x, y, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
        out.append({"id": inst.id, "image_id": rec.image_id, "category_id": inst.category_id,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "area": area, "bbox": [x, y, bw, bh], "iscrowd": int(bool(inst.iscrowd)),
                    "difficult": int(bool(inst.difficult))})
        rles.append(rle)
    return out, rles


def _explicit_panoptic(rec: ImageRecord, ctx: _Context) -> tuple[np.ndarray, list[dict]]:
    ids, segs = rec.panoptic, rec.panoptic_segments or []
    src = rec.panoptic_source or str(rec.source)
    if ids.shape != (rec.height, rec.width):
        raise DatasetError(f"panoptic PNG is {ids.shape[1]}x{ids.shape[0]} (WxH) but the image is "
                           f"{rec.width}x{rec.height}: mask size different from image size",
                           path=src, record=_where(rec))
    seg_ids = [s.id for s in segs]
    if len(segs) >= 2**16:
        raise DatasetError(f"{len(segs)} segments in one image; at most 65535 are supported", path=src,
                           record=_where(rec))
    if len(set(seg_ids)) != len(seg_ids):
        raise DatasetError(f"duplicate segment ids in segments_info: {sorted(seg_ids)}", path=src, record=_where(rec))
    segments = []
    for local, s in enumerate(segs, start=1):
        if not 0 < s.id <= MAX_PANOPTIC_ID:
            raise DatasetError(f"segment id {s.id} outside 1..{MAX_PANOPTIC_ID}", path=src, record=_where(rec))
        if s.category_id not in ctx.categories:
            raise DatasetError(f"unknown category id {s.category_id}", path=src, record=f"{_where(rec)} segment {s.id}")
        segments.append({"local": local, "category_id": s.category_id, "iscrowd": int(bool(s.iscrowd)),
                         "id": s.id, "instance": None, "kind": "explicit"})
    known = np.array([0, *seg_ids], dtype=np.int64)
    order = np.argsort(known)
    pos = np.clip(np.searchsorted(known[order], ids), 0, len(known) - 1)
    found = known[order][pos]
    if (bad := found != ids).any():
        raise DatasetError(f"segment id {int(ids[bad][0])} is in the PNG but not in segments_info",
                           path=src, record=_where(rec))
    local_of_sorted = np.arange(len(known), dtype=np.uint16)[order]  # known[i] has local number i (0 = void)
    return np.take(local_of_sorted, pos), segments


def _derived_panoptic(rec: ImageRecord, ctx: _Context, rles: list[dict],
                      areas: list[int]) -> tuple[np.ndarray, list[dict]]:
    h, w = rec.height, rec.width
    local = np.zeros((h, w), dtype=np.uint16)
    segments: list[dict] = []

    def paint(mask: np.ndarray | None, category_id: int, kind: str, *, iscrowd: int = 0,
              seg_id: int | None = None, index: int = 0, instance: int | None = None) -> None:
        n = len(segments) + 1
        if mask is None:
            local[:] = n
        else:
            local[mask] = n
        segments.append({"local": n, "category_id": category_id, "iscrowd": iscrowd, "id": seg_id,
                         "instance": instance, "kind": kind, "index": index})

    for cid in ([rec.fill_stuff] if rec.fill_stuff is not None else []) + [s.category_id for s in rec.stuff]:
        cat = ctx.categories.get(cid)
        if cat is None or cat.isthing:
            raise DatasetError(f"unknown stuff category id {cid}", path=rec.source, record=_where(rec))
    if rec.fill_stuff is not None:
        paint(None, rec.fill_stuff, "fill")
    for s in rec.stuff:
        if s.mask.shape != (h, w):
            raise DatasetError(f"stuff mask size {list(s.mask.shape)} different from image size {[h, w]}",
                               path=rec.source, record=_where(rec))
        paint(s.mask.astype(bool), s.category_id, "stuff", seg_id=s.id)
    crowd = [k for k, inst in enumerate(rec.instances) if inst.iscrowd]
    things = sorted((k for k, inst in enumerate(rec.instances) if not inst.iscrowd), key=lambda k: -areas[k])
    for k in crowd + things:
        inst = rec.instances[k]
        mask = inst.mask.astype(bool) if inst.mask is not None else mask_utils.decode(rles[k]).astype(bool)
        # link_things: the segment id is the annotation id (non-overlapping data); else a fresh id
        paint(mask, inst.category_id, "thing", iscrowd=int(bool(inst.iscrowd)), index=k,
              instance=k if rec.link_things else None)
    if rec.void is not None:
        if rec.void.shape != (h, w):
            raise DatasetError(f"void mask size {list(rec.void.shape)} different from image size {[h, w]}",
                               path=rec.source, record=_where(rec))
        local[rec.void.astype(bool)] = 0
    return local, segments


def encode_record(rec: ImageRecord, ctx: _Context) -> EncodedImage:
    """Check and link the image, encode masks, lay out the panoptic map, write the semantic PNG."""
    rel = safe_relpath(rec.file_name, path=rec.source, record=_where(rec))
    check_image(Path(rec.source), height=rec.height, width=rec.width, record=_where(rec))
    try:
        link_or_copy(Path(rec.source), ctx.split_dir / "images" / rel)
    except FileExistsError as e:
        raise DatasetError("duplicate image file name in the split", path=rec.source, record=_where(rec)) from e
    instances, rles = _encode_instances(rec, ctx)
    if rec.panoptic is not None:
        local, segments = _explicit_panoptic(rec, ctx)
    else:
        local, segments = _derived_panoptic(rec, ctx, rles, [a["area"] for a in instances])
    counts = dict(rec.counts)
    area = np.bincount(local.ravel(), minlength=len(segments) + 1)
    boxes = ndimage.find_objects(local, max_label=len(segments))
    kept = []
    for seg in segments:
        n = seg["local"]
        seg["area"] = int(area[n])
        if seg["area"] == 0:  # fully covered by later segments or void, or listed but absent from the PNG
            key = {"thing": "occluded_instances", "fill": None}.get(seg["kind"], "empty_segments")
            if key:
                counts[key] = counts.get(key, 0) + 1
            continue
        ys, xs = boxes[n - 1]
        seg["bbox"] = [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start]
        kept.append(seg)
    if rec.panoptic is None:  # list things (in instance order) before stuff
        kept.sort(key=lambda seg: (seg["kind"] != "thing", seg["index"]))
    sem_lut = np.full(len(segments) + 1, VOID_LABEL, dtype=np.uint8)
    for seg in kept:
        if not seg["iscrowd"]:
            sem_lut[seg["local"]] = ctx.semantic_index[seg["category_id"]]
    rel_png = rel.with_suffix(".png").as_posix()
    write_index_png(ctx.split_dir / "semantic" / rel_png, np.take(sem_lut, local))
    image = {"id": rec.image_id, "file_name": rel.as_posix(), "height": rec.height, "width": rec.width}
    return EncodedImage(image, rel_png, instances, kept, local, counts)


def _encode_item(item: Any, ctx: _Context) -> EncodedImage:
    rec = item if ctx.build is None else ctx.build(item)
    return encode_record(rec, ctx)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, separators=(",", ":"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _SplitAssembler:
    """Main-process half of a split: numbers ids in input order, writes panoptic PNGs, collects JSON."""

    def __init__(self, split: str, split_dir: Path) -> None:
        self.summary = SplitSummary(split)
        self.split_dir = split_dir
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.panoptic: list[dict] = []
        self.labels: list[dict] = []
        self._image_ids: set[int] = set()
        self._pngs: set[str] = set()
        self._ann_ids: set[int] = set()
        self._next_id = 1

    def _fresh(self) -> int:
        """A new id from the split's counter (annotation ids and derived segment ids share it)."""
        while self._next_id in self._ann_ids:
            self._next_id += 1
        self._next_id += 1
        return self._next_id - 1

    def add(self, enc: EncodedImage) -> None:
        image_id = enc.image["id"]
        where = f"image {image_id} ({enc.image['file_name']})"
        if image_id in self._image_ids:
            raise DatasetError("duplicate image id in the split", record=where)
        self._image_ids.add(image_id)
        if enc.rel_png in self._pngs:
            raise DatasetError(f"a second image maps to {enc.rel_png} (file names differing only in the "
                               "extension)", record=where)
        self._pngs.add(enc.rel_png)
        ann_ids = []
        for ann in enc.instances:
            if ann["id"] is None:
                ann["id"] = self._fresh()
            elif ann["id"] in self._ann_ids:
                raise DatasetError(f"duplicate annotation id {ann['id']}", record=where)
            self._ann_ids.add(ann["id"])
            ann_ids.append(ann["id"])
        lut = np.zeros(int(enc.local.max(initial=0)) + 1, dtype=np.int64)
        segments_info, seg_ids = [], set()
        for seg in enc.segments:
            sid = ann_ids[seg["instance"]] if seg["instance"] is not None else seg["id"]
            if sid is None:
                sid = self._fresh()
            if not 0 < sid <= MAX_PANOPTIC_ID or sid in seg_ids:
                raise DatasetError(f"segment id {sid} is not a unique id in 1..{MAX_PANOPTIC_ID} "
                                   "(a panoptic PNG holds 24-bit ids)", record=where)
            seg_ids.add(sid)
            lut[seg["local"]] = sid
            segments_info.append({"id": sid, "category_id": seg["category_id"], "area": seg["area"],
                                  "bbox": seg["bbox"], "iscrowd": seg["iscrowd"]})
        write_panoptic_png(self.split_dir / "panoptic" / enc.rel_png, enc.local, lut)
        self.images.append(enc.image)
        self.annotations.extend(enc.instances)
        self.panoptic.append({"image_id": image_id, "file_name": enc.rel_png, "segments_info": segments_info})
        present = sorted({s["category_id"] for s in segments_info if not s["iscrowd"]})
        self.labels.append({"image_id": image_id, "category_ids": present})
        s = self.summary
        s.images += 1
        s.annotations += len(enc.instances)
        s.crowd_annotations += sum(a["iscrowd"] for a in enc.instances)
        s.segments += len(segments_info)
        for k, v in enc.counts.items():
            s.counts[k] = s.counts.get(k, 0) + v


class CanonicalWriter:
    """Write a canonical dataset to ``out`` atomically.

    >>> with CanonicalWriter(out, name="voc", source="voc", categories=cats) as w:
    ...     w.write_split("val", tasks, build=build_voc_record)

    ``workers > 1`` encodes images in that many ``spawn``-ed processes (the calling script
    needs an ``if __name__ == "__main__":`` guard); ids are numbered in input order either way,
    so the output does not depend on ``workers``. The default is 1: on the 2-core reference
    machine two workers took VOC-sized images from 12.6 to 9.8 ms/image when the machine was
    otherwise idle, and were slower than one when it was shared (docs/datasets.md).
    """

    def __init__(self, out: str | Path, *, name: str, source: str, categories: list[Category],
                 workers: int = 1, progress: bool = True) -> None:
        check_categories(categories)
        self.out = Path(out)
        self.name, self.source = name, source
        self.categories = list(categories)
        self.workers, self.progress = workers, progress
        self.summaries: dict[str, SplitSummary] = {}
        self._tmp: Path | None = None
        self._pool = None

    @property
    def staging(self) -> Path:
        """The temporary folder being written (only inside the ``with`` block)."""
        if self._tmp is None:
            raise RuntimeError("CanonicalWriter is used outside its 'with' block")
        return self._tmp

    def __enter__(self) -> "CanonicalWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        self._tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        tmp, self._tmp = self._tmp, None
        if self._pool is not None:
            self._pool.terminate() if exc_type is not None else self._pool.close()
            self._pool.join()
            self._pool = None
        try:
            if exc_type is None:
                self._commit(tmp)
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return False

    def write_split(self, split: str, items: Iterable[Any], *, build: Callable[[Any], ImageRecord] | None = None,
                    total: int | None = None) -> SplitSummary:
        """Encode every item (an :class:`ImageRecord`, or what ``build`` turns into one) into ``split``."""
        if not split or not set(split) <= _SPLIT_CHARS or split.startswith("."):
            raise ValueError(f"bad split name {split!r}")
        if split in self.summaries:
            raise ValueError(f"split {split!r} written twice")
        split_dir = self.staging / split
        for sub in ("images", "panoptic", "semantic"):
            (split_dir / sub).mkdir(parents=True)
        cats = {c.id: c for c in self.categories}
        ctx = _Context(split_dir, cats, {cid: i for i, cid in enumerate(semantic_classes(self.categories))}, build)
        asm = _SplitAssembler(split, split_dir)
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        bar = tqdm(total=total, desc=f"{self.name}/{split}", unit="img", disable=not self.progress)
        with bar, contextlib.closing(self._encode_all(items, ctx)) as encoded:
            for enc in encoded:
                asm.add(enc)
                bar.update()
        things = [c.to_json() for c in self.categories if c.isthing]
        info = {"description": f"{self.name} {split} (WSIS-Bench canonical form)", "version": str(FORMAT_VERSION)}
        write_json_atomic(split_dir / "instances.json", {"info": info, "images": asm.images,
                                                         "annotations": asm.annotations, "categories": things})
        write_json_atomic(split_dir / "panoptic.json", {"info": info, "images": asm.images, "annotations": asm.panoptic,
                                                        "categories": [c.to_json() for c in self.categories]})
        write_json_atomic(split_dir / "image_labels.json", {"images": asm.labels})
        self.summaries[split] = asm.summary
        return asm.summary

    def _encode_all(self, items: Iterable[Any], ctx: _Context) -> Iterator[EncodedImage]:
        fn = functools.partial(_encode_item, ctx=ctx)
        if self.workers <= 1:
            yield from map(fn, items)
            return
        if self._pool is None:  # one pool for all splits
            # spawn, not fork: the caller may hold threads (tracking clients, OpenCV pools) that fork would copy
            # mid-lock
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        yield from self._pool.imap(fn, items, chunksize=4)

    def _commit(self, tmp: Path) -> None:
        meta = {
            "format_version": FORMAT_VERSION, "name": self.name, "source": self.source,
            "splits": {k: s.images for k, s in self.summaries.items()},
            "categories": [c.to_json() for c in self.categories],
            "semantic_classes": semantic_classes(self.categories),
            "void_label": VOID_LABEL,
            "counts": {k: s.to_json() for k, s in self.summaries.items()},
        }
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
        old = None
        if self.out.exists() or self.out.is_symlink():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(self.out, old)
        os.rename(tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()

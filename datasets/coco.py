"""COCO 2017 instances and panoptic → canonical form.

Official layout under ``root``: ``annotations/instances_<split>2017.json`` (polygons, uncompressed
RLE for crowd regions, compressed RLE), ``annotations/panoptic_<split>2017.json`` with the PNG
folder ``annotations/panoptic_<split>2017/``, images in ``<split>2017/``. Either annotation file
may be missing (not both):

- both: instances from the instance file (ids kept), panoptic from the panoptic files (ids kept),
  categories from the panoptic file (instance categories must be its things);
- instances only: things only, plus one stuff category ``background`` (id = largest thing id + 1)
  filling every pixel no instance covers; the panoptic map is painted crowd first, then instances
  by decreasing area (smaller on top), with fresh segment ids;
- panoptic only: instances are the thing segments (fresh annotation ids).

Masks are rasterised by pycocotools (``frPyObjects`` / ``merge``, as ``COCO.annToRLE``).
Annotations whose mask has no pixel are skipped and counted (``skipped_zero_area``).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path

from pycocotools import mask as mask_utils

from datasets.errors import DatasetError, safe_join, safe_relpath
from datasets.imageio import read_panoptic_png
from datasets.records import Category, ImageRecord, Instance, PanopticSegment
from datasets.registry import PrepareSummary, register_source
from datasets.voc import voc_colormap
from datasets.writer import CanonicalWriter

__all__ = ["CocoLayout", "CocoTask", "ann_to_rle", "build_coco_record", "coco_split_tasks", "load_coco"]

#: Tolerance (pixels) of the box-inside-image check of COCO ``bbox`` fields.
BOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class CocoLayout:
    """Paths under the COCO root (``{split}`` and ``{year}`` are substituted)."""

    instances: str = "annotations/instances_{split}{year}.json"
    panoptic: str = "annotations/panoptic_{split}{year}.json"
    panoptic_dir: str = "annotations/panoptic_{split}{year}"
    images: str = "{split}{year}"


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read JSON: {e}", path=path) from e
    if not isinstance(data, dict):
        raise DatasetError("expected a JSON object", path=path)
    return data


def _records(data: dict, key: str, path: Path) -> list[dict]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise DatasetError(f"'{key}' must be a list of objects", path=path)
    return value


def _categories(data: dict, path: Path, *, panoptic: bool) -> list[Category]:
    cats, seen = [], set()
    for c in _records(data, "categories", path):
        cid = c.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool) or cid <= 0:
            raise DatasetError(f"category id must be a positive integer, got {cid!r}", path=path,
                               record=f"category {c.get('name')!r}")
        if cid in seen:
            raise DatasetError(f"duplicate category id {cid}", path=path, record=f"category {cid}")
        if panoptic and "isthing" not in c:
            raise DatasetError("panoptic category without 'isthing'", path=path, record=f"category {cid}")
        seen.add(cid)
        color = tuple(int(v) for v in c.get("color", voc_colormap()[len(cats) + 1]))
        cats.append(Category(cid, str(c.get("name", cid)), bool(c.get("isthing", 1)) if panoptic else True,
                             color, str(c.get("supercategory", ""))))
    return cats


def _new_id(rec: dict, kind: str, seen: Container[int], path: Path) -> tuple[int, str]:
    """``rec``'s id and its record name ``"<kind> <id>"``, once the id is known to be an integer not in ``seen``."""
    rid = rec.get("id")
    record = f"{kind} {rid}"
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise DatasetError(f"{kind} id must be an integer, got {rid!r}", path=path, record=record)
    if rid in seen:
        raise DatasetError(f"duplicate {kind} id", path=path, record=record)
    return rid, record


def _images(data: dict, path: Path) -> dict[int, dict]:
    images, names = {}, set()
    for im in _records(data, "images", path):
        iid, record = _new_id(im, "image", images, path)
        name = safe_relpath(im.get("file_name"), path=path, record=record).as_posix()
        if name in names:
            raise DatasetError(f"duplicate image file name {name!r}", path=path, record=record)
        h, w = im.get("height"), im.get("width")
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            raise DatasetError(f"image size must be positive integers, got {w}x{h}", path=path, record=record)
        names.add(name)
        images[iid] = {"id": iid, "file_name": name, "height": h, "width": w}
    return images


def _check_annotation(ann: dict, images: dict[int, dict], cats: dict[int, Category], ids: set, path: Path) -> None:
    aid, record = _new_id(ann, "annotation", ids, path)
    ids.add(aid)
    im = images.get(ann.get("image_id"))
    if im is None:
        raise DatasetError(f"unknown image id {ann.get('image_id')!r}", path=path, record=record)
    cat = cats.get(ann.get("category_id"))
    if cat is None or not cat.isthing:
        raise DatasetError(f"unknown thing category id {ann.get('category_id')!r}", path=path, record=record)
    if ann.get("iscrowd", 0) not in (0, 1):
        raise DatasetError(f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}", path=path, record=record)
    box = ann.get("bbox")
    if box is not None:
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"malformed bbox {box!r}", path=path, record=record) from e
        t = BOX_TOLERANCE
        if w < 0 or h < 0 or x < -t or y < -t or x + w > im["width"] + t or y + h > im["height"] + t:
            raise DatasetError(f"box {box} outside its image ({im['width']}x{im['height']})", path=path,
                               record=f"{record} (image {im['id']})")


def ann_to_rle(segm: object, h: int, w: int, *, path: str | Path, record: str) -> dict | None:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as compressed RLE, or
    ``None`` when nothing is left (no polygon with 3+ points). Rasterisation is pycocotools'."""
    if isinstance(segm, list):
        for p in segm:
            if not isinstance(p, list) or len(p) % 2 or not all(isinstance(v, (int, float)) for v in p):
                raise DatasetError("malformed polygon (not an even-length list of numbers)", path=path, record=record)
        polys = [p for p in segm if len(p) >= 6]  # fewer than 3 points enclose nothing
        if not polys:
            return None
        try:
            return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        except (TypeError, ValueError) as e:
            raise DatasetError(f"malformed polygon: {e}", path=path, record=record) from e
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = [int(v) for v in segm["size"]]
        if size != [h, w]:
            raise DatasetError(f"mask size {size} different from image size {[h, w]}", path=path, record=record)
        counts = segm["counts"]
        if isinstance(counts, list):
            if sum(counts) != h * w or any(c < 0 for c in counts):
                raise DatasetError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}*{w}", path=path,
                                   record=record)
            return mask_utils.frPyObjects({"size": size, "counts": counts}, h, w)
        if isinstance(counts, (str, bytes)):
            return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise DatasetError(f"unrecognised segmentation of type {type(segm).__name__}", path=path, record=record)


@dataclass(frozen=True)
class CocoTask:
    """One image to convert, with its annotations from either file (``None``: that file is absent)."""

    image: dict
    image_path: Path
    annotations: tuple[dict, ...] | None
    instances_file: str
    panoptic_png: Path | None
    segments_info: tuple[dict, ...] | None
    panoptic_file: str
    thing_ids: frozenset[int]
    background_id: int | None


def build_coco_record(task: CocoTask) -> ImageRecord:
    """Rasterise one image's annotations into an :class:`ImageRecord` (runs in worker processes)."""
    im = task.image
    h, w = im["height"], im["width"]
    counts: dict[str, int] = {}
    instances: list[Instance] = []
    for ann in task.annotations or ():
        record = f"annotation {ann['id']} (image {im['id']})"
        rle = ann_to_rle(ann.get("segmentation"), h, w, path=task.instances_file, record=record)
        if rle is None or int(mask_utils.area(rle)) == 0:
            counts["skipped_zero_area"] = counts.get("skipped_zero_area", 0) + 1
            continue
        instances.append(Instance(category_id=ann["category_id"], rle=rle, iscrowd=int(ann.get("iscrowd", 0)),
                                  id=ann["id"], record=f"annotation {ann['id']}"))
    rec = ImageRecord(image_id=im["id"], file_name=im["file_name"], source=task.image_path, height=h, width=w,
                      instances=instances, counts=counts)
    if task.panoptic_png is None:
        rec.fill_stuff, rec.link_things = task.background_id, False
        return rec
    ids = read_panoptic_png(task.panoptic_png, record=f"image {im['id']}")
    rec.panoptic, rec.panoptic_source = ids, str(task.panoptic_png)
    rec.panoptic_segments = [PanopticSegment(int(s["id"]), int(s["category_id"]), int(s.get("iscrowd", 0)))
                             for s in task.segments_info]
    if task.annotations is None:  # panoptic only: the thing segments are the instances
        for s in rec.panoptic_segments:
            if s.category_id in task.thing_ids and ids.shape == (h, w):
                mask = ids == s.id
                if mask.any():
                    instances.append(Instance(category_id=s.category_id, mask=mask, iscrowd=s.iscrowd,
                                              record=f"segment {s.id}"))
    return rec


def _panoptic_index(data: dict, images: dict[int, dict], cats: dict[int, Category], path: Path,
                    png_dir: Path) -> dict[int, tuple[Path, tuple[dict, ...]]]:
    out = {}
    for ann in _records(data, "annotations", path):
        iid = ann.get("image_id")
        record = f"image {iid}"
        if iid not in images:
            raise DatasetError(f"unknown image id {iid!r}", path=path, record=record)
        if iid in out:
            raise DatasetError("duplicate panoptic annotation for the image", path=path, record=record)
        png = safe_join(png_dir, ann.get("file_name"), path=path, record=record)
        segs = ann.get("segments_info")
        if not isinstance(segs, list):
            raise DatasetError("'segments_info' must be a list", path=path, record=record)
        seen = set()
        for s in segs:
            sid, cid = s.get("id"), s.get("category_id")
            if not isinstance(sid, int) or sid in seen:
                raise DatasetError(f"missing or duplicate segment id {sid!r}", path=path, record=record)
            if cid not in cats:
                raise DatasetError(f"unknown category id {cid!r}", path=path, record=f"{record} segment {sid}")
            seen.add(sid)
        out[iid] = (png, tuple(segs))
    return out


def coco_split_tasks(root: Path, split: str, *, year: str, layout: CocoLayout) -> tuple[list[Category], list[CocoTask]]:
    """Categories and per-image tasks of one split (sorted by image id); all JSON checks happen here."""
    fmt = {"split": split, "year": year}
    inst_path, pan_path = root / layout.instances.format(**fmt), root / layout.panoptic.format(**fmt)
    if not inst_path.is_file() and not pan_path.is_file():
        raise DatasetError(f"split {split!r}: neither instance nor panoptic annotations exist "
                           f"(looked for {inst_path.name} and {pan_path.name})", path=inst_path.parent)
    inst = _read_json(inst_path) if inst_path.is_file() else None
    pan = _read_json(pan_path) if pan_path.is_file() else None
    if pan is not None:
        categories = _categories(pan, pan_path, panoptic=True)
        by_id = {c.id: c for c in categories}
        if inst is not None:
            for c in _categories(inst, inst_path, panoptic=False):
                if c.id not in by_id or not by_id[c.id].isthing or by_id[c.id].name != c.name:
                    raise DatasetError(f"instance category {c.id} ({c.name!r}) is not a thing category of "
                                       f"{pan_path.name}", path=inst_path, record=f"category {c.id}")
    else:
        categories = _categories(inst, inst_path, panoptic=False)
        if any(c.name == "background" for c in categories):
            raise DatasetError("a thing category is named 'background'", path=inst_path)
        categories.append(Category(max(c.id for c in categories) + 1, "background", False, (0, 0, 0), "stuff"))
    by_id = {c.id: c for c in categories}
    images = _images(inst if inst is not None else pan, inst_path if inst is not None else pan_path)
    per_image: dict[int, list[dict]] = defaultdict(list)
    if inst is not None:
        ann_ids: set[int] = set()
        for ann in _records(inst, "annotations", inst_path):
            _check_annotation(ann, images, by_id, ann_ids, inst_path)
            per_image[ann["image_id"]].append(ann)
    panoptic = None
    if pan is not None:
        if inst is not None:
            pan_images = _images(pan, pan_path)
            for iid in images.keys() ^ pan_images.keys():
                raise DatasetError(f"image {iid} is in only one of {inst_path.name} and {pan_path.name}",
                                   path=pan_path, record=f"image {iid}")
            for iid, im in pan_images.items():
                if (im["height"], im["width"]) != (images[iid]["height"], images[iid]["width"]):
                    raise DatasetError("image size differs from the instance file's", path=pan_path,
                                       record=f"image {iid}")
        panoptic = _panoptic_index(pan, images, by_id, pan_path, root / layout.panoptic_dir.format(**fmt))
        if missing := images.keys() - panoptic.keys():
            iid = min(missing)
            raise DatasetError("image has no panoptic annotation", path=pan_path, record=f"image {iid}")
    image_dir = root / layout.images.format(**fmt)
    things = frozenset(c.id for c in categories if c.isthing)
    background = None if pan is not None else categories[-1].id
    tasks = []
    for iid in sorted(images):
        im = images[iid]
        png, segs = panoptic[iid] if panoptic is not None else (None, None)
        tasks.append(CocoTask(im, safe_join(image_dir, im["file_name"]),
                              tuple(per_image.get(iid, ())) if inst is not None else None, str(inst_path),
                              png, segs, str(pan_path), things, background))
    return categories, tasks


@register_source("coco")
def load_coco(*, root: str | Path, out: str | Path, splits: Sequence[str] | None = None, year: str = "2017",
              layout: CocoLayout | None = None, name: str = "coco", source: str = "coco",
              workers: int = 1, progress: bool = True) -> PrepareSummary:
    """Convert COCO instances and/or panoptic annotations (``splits`` default ``train, val``) to ``out``."""
    root, layout = Path(root), layout or CocoLayout()
    splits = tuple(splits or ("train", "val"))
    plans, categories = {}, None
    for split in splits:
        cats, tasks = coco_split_tasks(root, split, year=year, layout=layout)
        if categories is not None and cats != categories:
            raise DatasetError(f"split {split!r} has other categories than split {splits[0]!r}",
                               path=root / layout.instances.format(split=split, year=year))
        categories, plans[split] = cats, tasks
    summary = PrepareSummary(name=name, out=Path(out))
    with CanonicalWriter(out, name=name, source=source, categories=categories or [],
                         workers=workers, progress=progress) as writer:
        for split, tasks in plans.items():
            summary.splits[split] = writer.write_split(split, tasks, build=build_coco_record)
            if n := summary.splits[split].counts.get("skipped_zero_area"):
                warnings.warn(f"{name}/{split}: skipped {n} annotations with zero-area masks", stacklevel=2)
    return summary

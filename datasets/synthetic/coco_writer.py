"""``synth-coco``: a COCO 2017 shaped synthetic dataset (instances + panoptic) in the official formats.

Layout under the dataset root::

    coco/train2017/<012d id>.jpg, coco/val2017/<012d id>.jpg          JPEG q95
    coco/annotations/instances_{train,val}2017.json                   things only
    coco/annotations/panoptic_{train,val}2017.json                    things + stuff
    coco/annotations/panoptic_{train,val}2017/<012d id>.png           id = R + 256·G + 256²·B, 0 = void
    synthetic_manifest.json

Instance masks: polygons (``cv2.findContours`` of the visible mask upsampled ×2, external contours;
a mask in several parts gives several polygons) for most ``iscrowd=0`` instances; compressed RLE
for a random ``rle_fraction`` of them and for masks a polygon cannot represent (holes, e.g. rings:
when the polygon rasterises to IoU < 0.95 with the mask); uncompressed RLE for crowd regions
(``iscrowd=1``). ``area`` is the pixel count of the rasterised ``segmentation``; ``bbox`` its
pycocotools box. The panoptic PNG is the exact ground truth; polygons are a lossy view of it.

Ids: image ids are sparse (``1 + 3·p + p mod 2`` for the image's position ``p`` in the interleaved
train/val order). Annotation id = ``image_id·100 + k`` (k = 1.. in depth order), and the panoptic
segment of a thing (or crowd) has the *same id* as its instance annotation; a stuff segment has id
``image_id·100 + 90 + stuff index``. Categories: things ``1..K``, stuff from 92 on (as COCO).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import scipy.ndimage
from pycocotools import mask as mask_utils

from .appearance import STUFF_TABLE, thing_appearance
from .base import (
    ImageOutput,
    PresetWriter,
    WorkItem,
    encode_jpeg,
    encode_rgb_png,
    image_rng,
    size_class,
)
from .params import SynthCOCOParams
from .scene import SceneConfig, render_scene, stuff_names, touching_pairs

__all__ = ["SynthCOCOWriter", "COCO_ROOT", "STUFF_ID_OFFSET", "mask_polygons", "uncompressed_rle"]

COCO_ROOT = "coco"
STUFF_ID_OFFSET = 92
POLYGON_MIN_IOU = 0.95
_INFO = {
    "description": "WSIS-Bench synthetic COCO-like dataset (synth-coco)",
    "url": "",
    "version": "1.0",
    "year": 2017,
    "contributor": "WSIS-Bench procedural generator",
    "date_created": "2017/09/01",
}
_LICENSES = [{"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0 1.0 (synthetic)"}]


def _image_id(pos: int) -> int:
    return 1 + 3 * pos + pos % 2


def mask_polygons(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[list[float]]:
    """COCO polygons ``[x1, y1, x2, y2, ...]`` of the external contours of a boolean mask.

    Contours are traced on the mask upsampled ×2 (nearest) and mapped back with
    ``(c + 0.5) / 2``, which pycocotools rasterises back to the same pixels for hole-free masks.
    ``offset`` = (y0, x0) of ``mask`` in the image.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    oy, ox = offset
    for c in contours:
        if len(c) < 3:
            continue
        pts = (c[:, 0, :].astype(np.float64) + 0.5) / 2.0 + np.array([ox, oy], np.float64)
        polys.append([float(v) for v in pts.ravel()])
    return polys


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE ``{"counts": [ints], "size": [h, w]}`` (column-major, zeros first)."""
    h, w = mask.shape
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = [int(c) for c in np.diff(bounds)]
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": [int(h), int(w)]}


def _rle(mask: np.ndarray) -> dict[str, Any]:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


class SynthCOCOWriter(PresetWriter):
    """Writer of the ``synth-coco`` preset (see the module docstring for layout and ids)."""

    name = "synth-coco"
    params_cls = SynthCOCOParams

    def __init__(self, params: SynthCOCOParams) -> None:
        super().__init__(params)
        p = params
        h, w = p.image_size
        self.things = tuple(thing_appearance(i) for i in range(p.num_thing_classes))
        self.stuff = stuff_names(p.num_stuff_classes)
        self.cfg = SceneConfig(
            height=h, width=w, things=self.things, stuff=self.stuff, instances=p.instances,
            size_range=(0.045, 0.45), large_image_prob=p.large_image_prob,
            touching_fraction=p.touching_fraction, crowd_prob=p.crowd_prob, min_area=p.effective_min_area,
            clutter=(3, 10), blur_prob=p.blur_prob, void_sliver_prob=p.void_sliver_prob,
        )

    def extra_summary(self) -> dict[str, Any]:
        p = self.params
        return {"min_area": p.effective_min_area, "stuff_id_offset": STUFF_ID_OFFSET,
                "empty_period": p.empty_period, "paths": {"coco": COCO_ROOT}}

    def categories(self) -> list[dict[str, Any]]:
        cats = [{"supercategory": "shape", "isthing": 1, "id": k + 1, "name": a.name, "color": a.color}
                for k, a in enumerate(self.things)]
        cats += [{"supercategory": "texture", "isthing": 0, "id": STUFF_ID_OFFSET + j, "name": s.name,
                  "color": list(s.color)} for j, s in enumerate(STUFF_TABLE[:len(self.stuff)])]
        return cats

    def plan(self) -> list[WorkItem]:
        p = self.params
        counts = {"train": p.num_train, "val": p.num_val}
        total = sum(counts.values())
        perm = np.random.default_rng([p.seed, 0xC0C0]).permutation(total)
        items, start = [], 0
        for split, n in counts.items():
            for i, pos in enumerate(sorted(int(x) for x in perm[start:start + n])):
                items.append(WorkItem(split=split, index=i, image_id=_image_id(pos)))
            start += n
        return items

    def produce(self, item: WorkItem) -> ImageOutput:
        p = self.params
        h, w = p.image_size
        iid = int(item.image_id)
        period = p.empty_period
        empty = bool(period) and item.index % period == period - 1
        rng = image_rng(p.seed, item.split, item.index)
        scene = render_scene(self.cfg, rng, empty=empty)
        L, objs = scene.labels, scene.objects
        kept = [o for o in objs if o.kept]
        n = len(objs) + 1
        lut = np.zeros(n, np.int64)
        for k, o in enumerate(kept, start=1):
            lut[o.label] = iid * 100 + k
        pan = lut[L]
        stuff_ids = iid * 100 + 90 + np.arange(len(self.stuff), dtype=np.int64)
        bg = L == 0
        pan[bg] = stuff_ids[scene.stuff[bg]]
        pan[scene.void] = 0
        boxes = scipy.ndimage.find_objects(L, max_label=n - 1)
        touching: set[int] = set()
        keep = np.zeros(n, bool)
        keep[[o.label for o in kept]] = True
        for a, b in touching_pairs(L):
            oa, ob = objs[a - 1], objs[b - 1]
            if keep[a] and keep[b] and oa.category == ob.category and not oa.crowd and not ob.crowd:
                touching.update((a, b))

        annotations, segments = [], []
        stats = {"images": 1, "instances": 0, "crowd_regions": 0, "touching_same_class": 0,
                 "dropped_instances": sum(1 for o in objs if not o.kept and not o.crowd),
                 "truncated": 0, "small": 0, "medium": 0, "large": 0, "polygon_masks": 0, "rle_masks": 0,
                 "empty_images": 0}
        for k, o in enumerate(kept, start=1):
            aid = iid * 100 + k
            sy, sx = boxes[o.label - 1]
            mask = L == o.label
            exact = _rle(mask)
            if o.crowd:
                segm: Any = uncompressed_rle(mask)
                rle = exact
                stats["crowd_regions"] += 1
            else:
                polys = mask_polygons(mask[sy, sx], (sy.start, sx.start)) if rng.random() >= p.rle_fraction else []
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w)) if polys else None
                if rle is not None and float(mask_utils.iou([rle], [exact], [0])[0, 0]) >= POLYGON_MIN_IOU:
                    segm = polys
                    stats["polygon_masks"] += 1
                else:
                    rle = exact
                    segm = {"size": [h, w], "counts": exact["counts"].decode("ascii")}
                    stats["rle_masks"] += 1
                stats["instances"] += 1
                stats["truncated"] += int(o.truncated)
                stats["touching_same_class"] += int(o.label in touching)
                stats[size_class(o.visible_area)] += 1
            annotations.append({
                "id": aid, "image_id": iid, "category_id": o.category + 1, "segmentation": segm,
                "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": int(o.crowd),
            })
        if stats["instances"] == 0:
            stats["empty_images"] = 1
        ids, inv, areas = np.unique(pan, return_inverse=True, return_counts=True)
        seg_boxes = scipy.ndimage.find_objects(inv.reshape(pan.shape).astype(np.int32) + 1)
        where = {int(v): j for j, v in enumerate(ids.tolist())}
        seg_list = [(iid * 100 + k, o.category + 1, int(o.crowd)) for k, o in enumerate(kept, start=1)]
        seg_list += [(int(stuff_ids[j]), STUFF_ID_OFFSET + j, 0) for j in range(len(self.stuff))]
        for sid, cid, crowd in seg_list:
            j = where.get(sid)
            if j is None:
                continue
            by, bx = seg_boxes[j]
            segments.append({"id": sid, "category_id": cid, "iscrowd": crowd, "area": int(areas[j]),
                             "bbox": [bx.start, by.start, bx.stop - bx.start, by.stop - by.start]})
        rgb = np.stack([pan % 256, pan // 256 % 256, pan // 65536 % 256], axis=-1).astype(np.uint8)
        stem = f"{iid:012d}"
        files = {
            f"{COCO_ROOT}/{item.split}2017/{stem}.jpg": encode_jpeg(scene.image),
            f"{COCO_ROOT}/annotations/panoptic_{item.split}2017/{stem}.png": encode_rgb_png(rgb),
        }
        record = {
            "split": item.split,
            "image": {"license": 1, "file_name": f"{stem}.jpg", "height": h, "width": w, "id": iid},
            "annotations": annotations,
            "panoptic": {"segments_info": segments, "file_name": f"{stem}.png", "image_id": iid},
        }
        return ImageOutput(files=files, record=record, stats=stats)

    def finalize(self, results: Sequence[tuple[WorkItem, dict[str, Any]]]) -> dict[str, bytes]:
        cats = self.categories()
        thing_cats = [{"supercategory": c["supercategory"], "id": c["id"], "name": c["name"]}
                      for c in cats if c["isthing"]]
        out: dict[str, bytes] = {}
        for split in ("train", "val"):
            recs = [r for _, r in results if r["split"] == split]
            images = [r["image"] for r in recs]
            inst = {"info": _INFO, "licenses": _LICENSES, "images": images,
                    "annotations": [a for r in recs for a in r["annotations"]], "categories": thing_cats}
            pan = {"info": _INFO, "licenses": _LICENSES, "images": images,
                   "annotations": [r["panoptic"] for r in recs], "categories": cats}
            out[f"{COCO_ROOT}/annotations/instances_{split}2017.json"] = _dumps(inst)
            out[f"{COCO_ROOT}/annotations/panoptic_{split}2017.json"] = _dumps(pan)
        return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")

"""``synth-voc``: a VOC 2012 + SBD shaped synthetic dataset written in the official formats.

Layout under the dataset root::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg                 every image (VOC seg + SBD-only), JPEG q95
    VOCdevkit/VOC2012/Annotations/<id>.xml                every image; segmented=1 for VOC seg images
    VOCdevkit/VOC2012/SegmentationObject/<id>.png         VOC seg images: palette PNG, 1..N = XML order,
                                                          0 background, 255 void
    VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG, 1..K class, 0 background, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    SBD/benchmark_RELEASE/dataset/{img/<id>.jpg, cls/<id>.mat, inst/<id>.mat, train.txt, val.txt}
    class_names.txt                                       background, then the thing names in index order
    synthetic_manifest.json                               preset, params, categories, summary

Image ids are ``YYYY_NNNNNN`` (year 2007..2012 rising with the number); VOC seg train, val and the
SBD-only images are interleaved in id order. SBD holds all SBD-only images, a fraction of VOC
train and a fraction of VOC val (which ``train_aug`` must exclude), split into its own train/val.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

import cv2
import numpy as np
import scipy.ndimage
import scipy.sparse

from datasets.voc import voc_colormap

from .appearance import thing_appearance
from .base import (
    ImageOutput,
    PresetWriter,
    WorkItem,
    encode_jpeg,
    encode_mat,
    encode_palette_png,
    image_rng,
    size_class,
)
from .params import SynthVOCParams
from .scene import Scene, SceneConfig, render_scene, touching_pairs

__all__ = ["SynthVOCWriter", "VOC_ROOT", "SBD_ROOT", "voc_palette"]

VOC_ROOT = "VOCdevkit/VOC2012"
SBD_ROOT = "SBD/benchmark_RELEASE/dataset"
VOID = 255


def voc_palette() -> np.ndarray:
    """The standard VOC colormap (256, 3) of :func:`datasets.voc.voc_colormap`; index 255 is (224, 224, 192)."""
    return voc_colormap(256)


_PALETTE = voc_palette()


def _voc_id(pos: int, total: int) -> str:
    return f"{2007 + min(5, pos * 6 // max(total, 1))}_{pos + 1:06d}"


def _xml(image_id: str, h: int, w: int, objects: list[dict[str, Any]], segmented: int) -> bytes:
    out = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{escape(image_id)}.jpg</filename>",
        "\t<source>",
        "\t\t<database>WSIS-Bench synthetic VOC-like database (synth-voc)</database>",
        "\t\t<annotation>PASCAL VOC2012</annotation>",
        "\t\t<image>synthetic</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{w}</width>",
        f"\t\t<height>{h}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        f"\t<segmented>{segmented}</segmented>",
    ]
    for o in objects:
        x0, y0, x1, y1 = o["bndbox"]
        out += [
            "\t<object>",
            f"\t\t<name>{escape(o['name'])}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{o['truncated']}</truncated>",
            f"\t\t<difficult>{o['difficult']}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    out.append("</annotation>")
    return ("\n".join(out) + "\n").encode("utf-8")


def _boundary(mask: np.ndarray) -> scipy.sparse.csc_matrix:
    """Inner boundary (4-connectivity) of a mask as a sparse logical matrix (SBD style)."""
    m = mask.astype(np.uint8)
    er = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), borderType=cv2.BORDER_REPLICATE)
    return scipy.sparse.csc_matrix((m > er))


def _cell(items: list[Any]) -> np.ndarray:
    arr = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        arr[i, 0] = x
    return arr


def void_band(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within the void band of ``width`` px along every boundary between different labels
    (instance/background and instance/instance), as in VOC annotations; not along the image border."""
    if width <= 0:
        return np.zeros(labels.shape, bool)
    lab = labels.astype(np.uint16)
    k = np.ones((width + 1, width + 1), np.uint8)
    return cv2.dilate(lab, k) != cv2.erode(lab, k)


class SynthVOCWriter(PresetWriter):
    """Writer of the ``synth-voc`` preset (see the module docstring for the layout)."""

    name = "synth-voc"
    params_cls = SynthVOCParams

    def __init__(self, params: SynthVOCParams) -> None:
        super().__init__(params)
        p = params
        h, w = p.image_size
        self.things = tuple(thing_appearance(i) for i in range(p.num_thing_classes))
        self.cfg = SceneConfig(
            height=h, width=w, things=self.things, stuff=None, instances=p.instances,
            size_range=(0.14, 0.65), large_image_prob=p.large_image_prob,
            touching_fraction=p.touching_fraction, crowd_prob=0.0, min_area=p.effective_min_area,
            clutter=(0, 4), blur_prob=p.blur_prob,
        )
        self._extra: dict[str, Any] = {}

    # ------------------------------------------------------------------ categories / plan
    def categories(self) -> list[dict[str, Any]]:
        cats = [{"id": k + 1, "name": a.name, "supercategory": a.family.name, "isthing": 1,
                 "color": [int(v) for v in _PALETTE[k + 1]]} for k, a in enumerate(self.things)]
        cats.append({"id": len(self.things) + 1, "name": "background", "supercategory": "background",
                     "isthing": 0, "color": [0, 0, 0]})
        return cats

    def plan(self) -> list[WorkItem]:
        p = self.params
        counts = {"train": p.num_train, "val": p.num_val, "sbd_only": p.num_sbd_only}
        total = sum(counts.values())
        perm = np.random.default_rng([p.seed, 0x1D5]).permutation(total)
        positions: dict[str, list[int]] = {}
        start = 0
        for split, n in counts.items():
            positions[split] = sorted(int(x) for x in perm[start:start + n])
            start += n
        rs = np.random.default_rng([p.seed, 0x5BD])
        in_sbd = {
            "train": set(int(i) for i in rs.permutation(p.num_train)[:round(p.num_train * p.sbd_train_overlap)]),
            "val": set(int(i) for i in rs.permutation(p.num_val)[:round(p.num_val * p.sbd_val_overlap)]),
            "sbd_only": set(range(p.num_sbd_only)),
        }
        members = [(s, i) for s in counts for i in range(counts[s]) if i in in_sbd[s]]
        n_val = round(len(members) * p.sbd_val_fraction)
        sbd_val = {members[int(j)] for j in rs.permutation(len(members))[:n_val]}
        items = []
        for split in counts:
            for i, pos in enumerate(positions[split]):
                sbd = "" if i not in in_sbd[split] else ("val" if (split, i) in sbd_val else "train")
                items.append(WorkItem(split=split, index=i, image_id=_voc_id(pos, total),
                                      extra=(split != "sbd_only", sbd)))
        sbd_tr = sum(1 for it in items if it.extra[1] == "train")
        sbd_va = sum(1 for it in items if it.extra[1] == "val")
        self._extra = {
            "sbd_train": sbd_tr,
            "sbd_val": sbd_va,
            "voc_train_in_sbd": len(in_sbd["train"]),
            "voc_val_in_sbd": len(in_sbd["val"]),
            "sbd_only": p.num_sbd_only,
            "train_aug": p.num_train + p.num_sbd_only,
            "void_width": p.effective_void_width,
            "min_area": p.effective_min_area,
            "paths": {"voc": VOC_ROOT, "sbd": SBD_ROOT, "sbd_parent": "SBD", "class_names": "class_names.txt"},
        }
        return items

    def extra_summary(self) -> dict[str, Any]:
        return dict(self._extra)

    # ------------------------------------------------------------------ one image
    def _annotate(self, scene: Scene) -> dict[str, Any] | None:
        p = self.params
        L = scene.labels
        objs = scene.objects
        band = void_band(L, p.effective_void_width)
        core = np.bincount(L[~band].ravel(), minlength=len(objs) + 1)
        min_area = p.effective_min_area
        core_min = max(1, min_area // 4)
        final = [o for o in objs if o.kept and not o.crowd and core[o.label] >= core_min]
        if not final:
            return None
        n = len(objs) + 1
        keep = np.zeros(n, bool)
        lut_obj = np.zeros(n, np.uint8)
        lut_cls = np.zeros(n, np.uint8)
        for i, o in enumerate(final, start=1):
            keep[o.label] = True
            lut_obj[o.label] = i
            lut_cls[o.label] = o.category + 1
        void = band | scene.void | ((L > 0) & ~keep[L])
        inst = lut_obj[L]
        cls = lut_cls[L]
        obj_png = inst.copy()
        obj_png[void] = VOID
        cls_png = cls.copy()
        cls_png[void] = VOID
        touching: set[int] = set()
        for a, b in touching_pairs(L):
            if keep[a] and keep[b] and objs[a - 1].category == objs[b - 1].category:
                touching.update((a, b))
        boxes = scipy.ndimage.find_objects(L, max_label=n - 1)
        xml_objects = []
        stats = {"images": 1, "instances": len(final), "touching_same_class": 0, "difficult": 0,
                 "truncated": 0, "dropped_instances": sum(1 for o in objs if not o.crowd) - len(final),
                 "small": 0, "medium": 0, "large": 0}
        for o in final:
            sy, sx = boxes[o.label - 1]
            annotated = int(core[o.label])
            difficult = int(o.visible_area < 0.3 * o.full_area or annotated < 3 * min_area)
            xml_objects.append({"name": self.things[o.category].name, "truncated": int(o.truncated),
                                "difficult": difficult,
                                "bndbox": (sx.start + 1, sy.start + 1, sx.stop, sy.stop)})
            stats["difficult"] += difficult
            stats["truncated"] += int(o.truncated)
            stats["touching_same_class"] += int(o.label in touching)
            stats[size_class(annotated)] += 1
        return {"obj_png": obj_png, "cls_png": cls_png, "inst": inst, "cls": cls, "objects": xml_objects,
                "categories": [o.category + 1 for o in final], "stats": stats}

    def produce(self, item: WorkItem) -> ImageOutput:
        p = self.params
        in_voc, sbd_split = item.extra
        rng = image_rng(p.seed, item.split, item.index)
        ann = None
        while ann is None:
            scene = render_scene(self.cfg, rng, require_object=True)
            ann = self._annotate(scene)
        h, w = p.image_size
        iid = str(item.image_id)
        jpg = encode_jpeg(scene.image)
        files: dict[str, bytes] = {
            f"{VOC_ROOT}/JPEGImages/{iid}.jpg": jpg,
            f"{VOC_ROOT}/Annotations/{iid}.xml": _xml(iid, h, w, ann["objects"], int(in_voc)),
        }
        if in_voc:
            files[f"{VOC_ROOT}/SegmentationObject/{iid}.png"] = encode_palette_png(ann["obj_png"], _PALETTE)
            files[f"{VOC_ROOT}/SegmentationClass/{iid}.png"] = encode_palette_png(ann["cls_png"], _PALETTE)
        if sbd_split:
            inst, cls = ann["inst"], ann["cls"]
            k = len(self.things)
            present = sorted(set(ann["categories"]))
            gt_cls = {
                "Boundaries": _cell([_boundary(cls == c) for c in range(1, k + 1)]),
                "Segmentation": cls,
                "CategoriesPresent": np.array(present, np.uint8).reshape(-1, 1),
            }
            gt_inst = {
                "Segmentation": inst,
                "Boundaries": _cell([_boundary(inst == i) for i in range(1, len(ann["categories"]) + 1)]),
                "Categories": np.array(ann["categories"], np.uint8).reshape(-1, 1),
            }
            files[f"{SBD_ROOT}/img/{iid}.jpg"] = jpg
            files[f"{SBD_ROOT}/cls/{iid}.mat"] = encode_mat({"GTcls": gt_cls})
            files[f"{SBD_ROOT}/inst/{iid}.mat"] = encode_mat({"GTinst": gt_inst})
        return ImageOutput(files=files, record={"id": iid, "split": item.split, "sbd": sbd_split},
                           stats=ann["stats"])

    # ------------------------------------------------------------------ split files
    def finalize(self, results: Sequence[tuple[WorkItem, dict[str, Any]]]) -> dict[str, bytes]:
        def listing(ids: list[str]) -> bytes:
            return "".join(f"{i}\n" for i in sorted(ids)).encode("ascii")

        by_split: dict[str, list[str]] = {"train": [], "val": []}
        sbd: dict[str, list[str]] = {"train": [], "val": []}
        for _, rec in results:
            if rec["split"] in by_split:
                by_split[rec["split"]].append(rec["id"])
            if rec["sbd"]:
                sbd[rec["sbd"]].append(rec["id"])
        seg = f"{VOC_ROOT}/ImageSets/Segmentation"
        names = ["background"] + [a.name for a in self.things]
        return {
            f"{seg}/train.txt": listing(by_split["train"]),
            f"{seg}/val.txt": listing(by_split["val"]),
            f"{seg}/trainval.txt": listing(by_split["train"] + by_split["val"]),
            f"{SBD_ROOT}/train.txt": listing(sbd["train"]),
            f"{SBD_ROOT}/val.txt": listing(sbd["val"]),
            "class_names.txt": "".join(f"{n}\n" for n in names).encode("utf-8"),
        }

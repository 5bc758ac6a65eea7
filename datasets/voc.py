"""PASCAL VOC 2012 instance segmentation (+ SBD, ``train_aug``) → canonical form.

Official layout (``VOCdevkit/VOC2012``): ``JPEGImages/<stem>.jpg``; ``SegmentationObject/<stem>.png``
(palette PNG: instance index 1..N in the order of the XML objects, 0 background, 255 void);
``SegmentationClass/<stem>.png`` (class index, 255 void); ``Annotations/<stem>.xml``;
``ImageSets/Segmentation/{train,val,...}.txt``. SBD: see :mod:`datasets.sbd`.

Categories: things ``1..K`` in ``layout.class_names`` order (real VOC: aeroplane…tvmonitor),
one stuff category ``background`` with id ``K+1``. An instance's class is the majority of the
non-void ``SegmentationClass`` pixels under its mask and must equal the XML object's name
(SBD: ``GTinst.Categories``). Background = index 0 in ``SegmentationObject``; void = 255.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.errors import DatasetError
from datasets.imageio import read_index_png
from datasets.records import Category, ImageRecord, Instance
from datasets.registry import PrepareSummary, register_source
from datasets.sbd import find_sbd_root, read_sbd_instances
from datasets.writer import CanonicalWriter

__all__ = [
    "VOC_CLASSES", "VocLayout", "voc_colormap", "find_voc_root", "read_split_list", "parse_voc_xml",
    "voc_image_ids", "VocTask", "voc_split_tasks", "build_voc_record", "instances_from_maps",
    "load_voc", "load_voc_sbd",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_VOC_STEM = re.compile(r"^(\d{4})_(\d{6})$")


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC palette (``uint8 (n, 3)``): colour of class index ``i`` (bit-interleaved, as the devkit)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


@dataclass(frozen=True)
class VocLayout:
    """The class list of a VOC-format dataset: index ``k`` in SegmentationClass is ``class_names[k-1]``."""

    class_names: tuple[str, ...] = VOC_CLASSES
    background: str = "background"

    @classmethod
    def from_names(cls, names: Sequence[str] | str | Path | None) -> "VocLayout":
        """From a list of names, a text file with one name per line, or ``None`` (real VOC)."""
        if names is None:
            return cls()
        if isinstance(names, (str, Path)):
            path = Path(names)
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise DatasetError(f"cannot read class names: {e}", path=path) from e
            names = [ln.strip() for ln in lines if ln.strip()]
            if names and names[0] == cls.background:  # a "background, class1, ..." list
                names = names[1:]
        names = tuple(str(n) for n in names)
        if not names or len(set(names)) != len(names) or cls.background in names or len(names) > 254:
            raise ValueError(f"class names must be 1..254 unique names other than 'background', got {names}")
        return cls(class_names=names)

    @property
    def background_id(self) -> int:
        return len(self.class_names) + 1

    def categories(self) -> list[Category]:
        cmap = voc_colormap()
        things = [Category(k, name, True, tuple(int(v) for v in cmap[k]), "thing")
                  for k, name in enumerate(self.class_names, start=1)]
        return things + [Category(self.background_id, self.background, False, (0, 0, 0), "stuff")]


def find_voc_root(root: str | Path) -> Path | None:
    """The ``VOC2012`` folder at or under ``root`` (``.``, ``VOC2012``, ``VOCdevkit/VOC2012``)."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return None


def read_split_list(path: Path) -> list[str]:
    """Image stems of an ImageSets / SBD list file; duplicates and path-like stems are errors."""
    if not path.is_file():
        raise DatasetError("split list file is missing", path=path)
    stems, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stem = line.strip()
        if not stem:
            continue
        if "/" in stem or "\\" in stem or stem in (".", "..") or "\x00" in stem:
            raise DatasetError(f"image name {stem!r} would escape the dataset root", path=path, record=f"line {lineno}")
        if stem in seen:
            raise DatasetError(f"duplicate image {stem!r}", path=path, record=f"line {lineno}")
        seen.add(stem)
        stems.append(stem)
    return stems


@dataclass(frozen=True)
class VocObject:
    name: str
    difficult: int
    bbox: tuple[float, float, float, float] | None  # xmin, ymin, xmax, ymax (1-based, inclusive)


@dataclass(frozen=True)
class VocAnnotation:
    width: int | None
    height: int | None
    objects: tuple[VocObject, ...]


def _text(el: ET.Element, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def parse_voc_xml(path: Path) -> VocAnnotation:
    """Objects of a VOC annotation XML, in file order; a box outside the image is an error."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError as e:
        raise DatasetError("annotation XML is missing", path=path) from e
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"cannot parse annotation XML: {e}", path=path) from e
    try:
        size = root.find("size")
        width = int(float(_text(size, "width"))) if size is not None and _text(size, "width") else None
        height = int(float(_text(size, "height"))) if size is not None and _text(size, "height") else None
        objects = []
        for i, obj in enumerate(root.findall("object"), start=1):
            name, diff = _text(obj, "name"), _text(obj, "difficult")
            if not name:
                raise DatasetError("object without a <name>", path=path, record=f"object {i}")
            box = obj.find("bndbox")
            bbox = None
            if box is not None:
                bbox = tuple(float(_text(box, k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                x0, y0, x1, y1 = bbox
                if (x0 > x1 or y0 > y1 or x0 < 0 or y0 < 0
                        or (width and x1 > width + 1) or (height and y1 > height + 1)):
                    raise DatasetError(f"box {list(bbox)} outside its image ({width}x{height})",
                                       path=path, record=f"object {i} ({name})")
            objects.append(VocObject(name, int(float(diff)) if diff else 0, bbox))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"malformed annotation XML: {e}", path=path) from e
    return VocAnnotation(width, height, tuple(objects))


def voc_image_ids(stems: Sequence[str]) -> dict[str, int]:
    """Image ids: ``YYYY_NNNNNN`` → ``int("YYYYNNNNNN")`` when every stem has that form (real VOC,
    SBD); otherwise the 1-based position in the sorted list of all stems."""
    uniq = sorted(set(stems))
    if all(_VOC_STEM.match(s) for s in uniq):
        return {s: int(s.replace("_", "")) for s in uniq}
    return {s: i for i, s in enumerate(uniq, start=1)}


def instances_from_maps(obj: np.ndarray, cls: np.ndarray, declared: Sequence[tuple[int, str, int]], *,
                        class_names: Sequence[str], void: int | None, path: Path, record: str,
                        class_path: Path | None = None) -> list[Instance]:
    """Instances of one image from an instance index map (read from ``path``) and a class index map (read
    from ``class_path``; errors about the class map alone name that file).

    ``declared[i-1] = (category id or 0 if unknown, name, difficult)`` for instance index ``i``
    (XML objects; SBD ``Categories``). Every declared index must have pixels and every index in
    the map must be declared; the class is the majority of the non-void class pixels under the
    mask and must equal the declared one.
    """
    n_cls = len(class_names)
    class_path = path if class_path is None else class_path
    cls_counts = np.bincount(cls.ravel(), minlength=256)
    bad = [v for v in np.flatnonzero(cls_counts) if v > n_cls and v != void]
    if bad:
        raise DatasetError(f"unknown class index {int(bad[0])} in the class map (classes 0..{n_cls}"
                           f"{'' if void is None else f', {void} void'})", path=class_path, record=record)
    obj_counts = np.bincount(obj.ravel(), minlength=256)
    present = [int(v) for v in np.flatnonzero(obj_counts) if v != 0 and v != void]
    for v in present:
        if v > len(declared):
            raise DatasetError(f"instance index {v} in the instance PNG has no annotation object "
                               f"(the annotation lists {len(declared)})", path=path, record=record)
    joint = np.bincount(obj.ravel().astype(np.int32) * 256 + cls.ravel(), minlength=65536).reshape(256, 256)
    if void is not None:
        joint[:, void] = 0
    out = []
    for i, (declared_cat, name, difficult) in enumerate(declared, start=1):
        what = f"{record} object {i} ({name})"
        if obj_counts[i] == 0:
            raise DatasetError("object is in the annotation but has no pixels in the instance PNG",
                               path=path, record=what)
        row = joint[i]
        if row.sum() == 0:
            raise DatasetError("the class map is void under the whole instance", path=path, record=what)
        cat = int(np.argmax(row))
        if cat == 0:
            raise DatasetError("the class map is mostly background under the instance", path=path, record=what)
        if cat != declared_cat:
            raise DatasetError(f"the annotation says {name!r} but the class map says {class_names[cat - 1]!r} "
                               "under the instance", path=path, record=what)
        out.append(Instance(category_id=cat, mask=obj == i, difficult=difficult, record=f"object {i} ({name})"))
    return out


@dataclass(frozen=True)
class VocTask:
    """One image to convert: from VOC (``kind="voc"``) or SBD (``kind="sbd"``) annotations."""

    stem: str
    image_id: int
    image: Path
    kind: str
    instance_file: Path  # SegmentationObject PNG | inst/<stem>.mat
    class_file: Path     # SegmentationClass PNG | cls/<stem>.mat
    xml: Path | None
    class_names: tuple[str, ...]


def build_voc_record(task: VocTask) -> ImageRecord:
    """Read one image's annotation files into an :class:`ImageRecord` (runs in worker processes)."""
    record = f"image {task.stem}"
    names = task.class_names
    ids_of = {n: k for k, n in enumerate(names, start=1)}
    if task.kind == "voc":
        obj = read_index_png(task.instance_file, record=record)
        cls = read_index_png(task.class_file, record=record)
        if cls.shape != obj.shape:
            raise DatasetError(f"class PNG is {cls.shape[1]}x{cls.shape[0]} but the instance PNG is "
                               f"{obj.shape[1]}x{obj.shape[0]}: mask size different from image size",
                               path=task.class_file, record=record)
        ann = parse_voc_xml(task.xml)
        if (ann.width, ann.height) != (obj.shape[1], obj.shape[0]) and ann.width and ann.height:
            raise DatasetError(f"XML size {ann.width}x{ann.height} but the instance PNG is "
                               f"{obj.shape[1]}x{obj.shape[0]}: mask size different from image size",
                               path=task.xml, record=record)
        for i, o in enumerate(ann.objects, start=1):
            if o.name not in ids_of:
                raise DatasetError(f"unknown class name {o.name!r} (known: {', '.join(names)})",
                                   path=task.xml, record=f"{record} object {i}")
        declared = [(ids_of[o.name], o.name, o.difficult) for o in ann.objects]
        instances = instances_from_maps(obj, cls, declared, class_names=names, void=255, path=task.instance_file,
                                        record=record, class_path=task.class_file)
        void = obj == 255
    else:
        obj, cls, cats = read_sbd_instances(task.instance_file, task.class_file, record=record)
        for i, c in enumerate(cats, start=1):
            if not 1 <= c <= len(names):
                raise DatasetError(f"unknown category id {c} (1..{len(names)})", path=task.instance_file,
                                   record=f"{record} object {i}")
        declared = [(c, names[c - 1], 0) for c in cats]
        instances = instances_from_maps(obj, cls, declared, class_names=names, void=None, path=task.instance_file,
                                        record=record, class_path=task.class_file)
        void = None
    h, w = obj.shape
    return ImageRecord(image_id=task.image_id, file_name=task.image.name, source=task.image, height=h, width=w,
                       instances=instances, fill_stuff=len(names) + 1, void=void, link_things=True)


def _require(path: Path, what: str, record: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what} is missing", path=path, record=record)
    return path


def voc_split_tasks(voc: Path, sbd: Path | None, split: str, layout: VocLayout, ids: dict[str, int]) -> list[VocTask]:
    """The images of one split, sorted by image id. ``train_aug`` = (SBD train ∪ SBD val ∪ VOC train)
    − VOC val, each image annotated by VOC where it has a SegmentationObject PNG, else by SBD."""
    seg_lists = voc / "ImageSets" / "Segmentation"
    if split == "train_aug":
        if sbd is None:
            raise DatasetError("split 'train_aug' needs SBD (benchmark_RELEASE/dataset); pass sbd_root", path=voc)
        val = set(read_split_list(seg_lists / "val.txt"))
        union = set(read_split_list(sbd / "train.txt")) | set(read_split_list(sbd / "val.txt"))
        stems = sorted((union | set(read_split_list(seg_lists / "train.txt"))) - val)
    else:
        stems = read_split_list(seg_lists / f"{split}.txt")
    tasks = []
    for stem in sorted(stems, key=lambda s: ids[s]):
        record = f"image {stem} (split {split})"
        jpg = voc / "JPEGImages" / f"{stem}.jpg"
        obj_png = voc / "SegmentationObject" / f"{stem}.png"
        if split != "train_aug" or obj_png.is_file():
            tasks.append(VocTask(stem, ids[stem], _require(jpg, "image file", record), "voc",
                                 _require(obj_png, "SegmentationObject PNG", record),
                                 _require(voc / "SegmentationClass" / f"{stem}.png", "SegmentationClass PNG", record),
                                 _require(voc / "Annotations" / f"{stem}.xml", "annotation XML", record),
                                 layout.class_names))
        else:
            image = jpg if jpg.is_file() else _require(sbd / "img" / f"{stem}.jpg", "image file", record)
            tasks.append(VocTask(stem, ids[stem], image, "sbd",
                                 _require(sbd / "inst" / f"{stem}.mat", "SBD inst .mat", record),
                                 _require(sbd / "cls" / f"{stem}.mat", "SBD cls .mat", record), None,
                                 layout.class_names))
    return tasks


def _all_stems(voc: Path, sbd: Path | None) -> list[str]:
    lists = sorted((voc / "ImageSets" / "Segmentation").glob("*.txt"))
    if sbd is not None:
        lists += [p for p in (sbd / "train.txt", sbd / "val.txt") if p.is_file()]
    return [s for p in lists for s in read_split_list(p)]


@register_source("voc")
def load_voc(*, root: str | Path, out: str | Path, splits: Sequence[str] | None = None,
             sbd_root: str | Path | None = None, class_names: Sequence[str] | str | Path | None = None,
             name: str = "voc", source: str = "voc", workers: int = 1,
             progress: bool = True) -> PrepareSummary:
    """Convert VOC 2012 (``splits`` from ImageSets/Segmentation, default ``train, val``; ``train_aug``
    with SBD) to the canonical form at ``out``. ``class_names``: list or file (default: real VOC)."""
    voc = find_voc_root(root)
    if voc is None:
        raise DatasetError("no VOC2012 folder (with JPEGImages/) at or under this path", path=root)
    sbd = find_sbd_root(sbd_root) if sbd_root is not None else None
    if sbd_root is not None and sbd is None:
        raise DatasetError("no SBD dataset folder (with inst/ and cls/) at or under this path", path=sbd_root)
    layout = VocLayout.from_names(class_names)
    splits = tuple(splits or ("train", "val"))
    ids = voc_image_ids(_all_stems(voc, sbd))
    plans = {split: voc_split_tasks(voc, sbd, split, layout, ids) for split in splits}
    summary = PrepareSummary(name=name, out=Path(out))
    with CanonicalWriter(out, name=name, source=source, categories=layout.categories(),
                         workers=workers, progress=progress) as writer:
        for split, tasks in plans.items():
            summary.splits[split] = writer.write_split(split, tasks, build=build_voc_record)
    return summary


@register_source("voc-sbd")
def load_voc_sbd(*, root: str | Path, out: str | Path, splits: Sequence[str] | None = None,
                 sbd_root: str | Path | None = None, **options) -> PrepareSummary:
    """VOC 2012 + SBD: ``train_aug`` and ``val`` by default. ``root`` holds both ``VOCdevkit`` and
    ``benchmark_RELEASE`` unless ``sbd_root`` points at SBD."""
    options.setdefault("name", "voc-sbd")
    return load_voc(root=root, out=out, splits=splits or ("train_aug", "val"),
                    sbd_root=sbd_root if sbd_root is not None else root, **options)

"""Reading canonical ground truth (docs/formats.md) and prediction files for evaluation.

Self-contained on purpose: evaluation depends on the on-disk formats only, never on the
code that wrote them (nor on methods/ or the pipeline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from bench.evaluation.base import EvaluationError

VOID_LABEL = 255


def read_json(path: Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or malformed file is an :class:`EvaluationError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: {what} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvaluationError(f"{path}: malformed JSON ({what}): {e}") from e


def safe_join(root: Path, name: Any, *, source: Path, record: str) -> Path:
    """``root / name`` where ``name`` must be a relative path that stays inside ``root``."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise EvaluationError(f"{source}: {record}: invalid file name {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise EvaluationError(f"{source}: {record}: file name {name!r} leaves its folder")
    return root.joinpath(*[part for part in p.parts if part != "."])


def stem_of(file_name: str) -> str:
    """Name of an image's semantic/panoptic PNG without ``.png`` (sub-folders kept)."""
    return str(PurePosixPath(file_name).with_suffix(""))


def read_index_png(path: Path, *, record: str) -> np.ndarray:
    """An 8-bit single-channel PNG as ``uint8 (H, W)``."""
    im = _open(path, record)
    with im:
        if im.mode not in ("L", "P"):
            raise EvaluationError(f"{path}: {record}: expected an 8-bit single-channel PNG, got mode {im.mode}")
        return np.asarray(im, dtype=np.uint8) if im.mode == "L" else np.asarray(im).astype(np.uint8)


def _open(path: Path, record: str) -> Image.Image:
    if not path.is_file():
        raise EvaluationError(f"{path}: {record}: PNG file is missing")
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:  # PIL raises many types for corrupt files
        raise EvaluationError(f"{path}: {record}: PNG cannot be decoded: {e}") from e
    return im


def panoptic_png_path(json_path: Path, file_name: Any, *, record: str, folder: Path | None = None) -> Path:
    """Where the PNG of a COCO panoptic annotation lives.

    panopticapi's convention: ``<json path without .json>/<file_name>`` (or ``folder/<file_name>``
    when a folder is given). docs/formats.md also writes ``file_name`` as ``panoptic/<stem>.png``
    relative to the JSON's folder; when the first location does not exist, that one is tried.
    """
    base = folder if folder is not None else json_path.with_suffix("")
    first = safe_join(base, file_name, source=json_path, record=record)
    if first.is_file() or folder is not None:
        return first
    second = safe_join(json_path.parent, file_name, source=json_path, record=record)
    return second if second.is_file() else first


@dataclass
class CanonicalGT:
    """One split of a canonical dataset, as the evaluators need it."""

    root: Path
    split: str
    meta: dict
    instances: dict
    instances_path: Path
    _panoptic: dict | None = field(default=None, repr=False)

    @classmethod
    def load(cls, gt_root: Path, split: str) -> "CanonicalGT":
        gt_root = Path(gt_root)
        meta = read_json(gt_root / "meta.json", "canonical meta.json")
        if not isinstance(meta, dict) or "categories" not in meta:
            raise EvaluationError(f"{gt_root / 'meta.json'}: not a canonical meta.json (no 'categories')")
        split_dir = gt_root / split
        if not split_dir.is_dir():
            raise EvaluationError(f"{split_dir}: split {split!r} is missing")
        inst_path = split_dir / "instances.json"
        instances = read_json(inst_path, "canonical instances.json")
        gt = cls(root=gt_root, split=split, meta=meta, instances=instances, instances_path=inst_path)
        validate_instances_gt(instances, inst_path)
        return gt

    @classmethod
    def from_dicts(cls, *, meta: dict, instances: dict, panoptic: dict | None = None,
                   root: Path | None = None, split: str = "val") -> "CanonicalGT":
        """In-memory ground truth (tests, callers that already hold the dicts)."""
        root = Path(root) if root is not None else Path("<memory>")
        gt = cls(root=root, split=split, meta=meta, instances=instances,
                 instances_path=root / split / "instances.json", _panoptic=panoptic)
        validate_instances_gt(instances, gt.instances_path)
        return gt

    @property
    def split_dir(self) -> Path:
        return self.root / self.split

    @property
    def panoptic_path(self) -> Path:
        return self.split_dir / "panoptic.json"

    @property
    def panoptic(self) -> dict:
        if self._panoptic is None:
            self._panoptic = read_json(self.panoptic_path, "canonical panoptic.json")
        return self._panoptic

    @cached_property
    def categories(self) -> dict[int, dict]:
        """All categories (things and stuff) of meta.json, by id."""
        return {int(c["id"]): c for c in self.meta["categories"]}

    @cached_property
    def thing_categories(self) -> dict[int, dict]:
        """Thing categories (instances.json ``categories``), by id."""
        return {int(c["id"]): c for c in self.instances.get("categories", [])}

    @cached_property
    def images(self) -> list[dict]:
        return list(self.instances["images"])

    @cached_property
    def image_index(self) -> dict[int, int]:
        """Image id → position in instances.json (the dataset order evaluators keep)."""
        return {int(im["id"]): i for i, im in enumerate(self.images)}

    @cached_property
    def image_by_id(self) -> dict[int, dict]:
        return {int(im["id"]): im for im in self.images}

    @cached_property
    def annotations_by_image(self) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {int(im["id"]): [] for im in self.images}
        for a in self.instances["annotations"]:
            out[int(a["image_id"])].append(a)
        return out

    @cached_property
    def annotation_by_id(self) -> dict[int, dict]:
        return {int(a["id"]): a for a in self.instances["annotations"]}

    def category_name(self, cat_id: int) -> str:
        c = self.categories.get(cat_id) or self.thing_categories.get(cat_id)
        return str(c["name"]) if c and "name" in c else str(cat_id)

    def fingerprint(self) -> tuple:
        """Cheap identity of the ground truth, used to refuse merging evaluators of different GT."""
        return (str(self.root), self.split, len(self.images), len(self.instances["annotations"]),
                sum(int(im["id"]) for im in self.images))


def validate_instances_gt(instances: Any, path: Path) -> None:
    """Structural checks of a canonical instances.json: ids present and unique, references valid."""
    if not isinstance(instances, dict):
        raise EvaluationError(f"{path}: not a COCO instances dict")
    for key in ("images", "annotations", "categories"):
        if not isinstance(instances.get(key), list):
            raise EvaluationError(f"{path}: missing list {key!r}")
    seen: set[int] = set()
    for i, im in enumerate(instances["images"]):
        _check_new_id(im, seen, path, f"images[{i}]", "image")
        if not (_is_int(im.get("height")) and _is_int(im.get("width"))):
            raise EvaluationError(f"{path}: image {im['id']}: missing height/width")
    cats: set[int] = set()
    for i, c in enumerate(instances["categories"]):
        _check_new_id(c, cats, path, f"categories[{i}]", "category")
    sizes = {im["id"]: (im["height"], im["width"]) for im in instances["images"]}
    ann_ids: set[int] = set()
    for i, a in enumerate(instances["annotations"]):
        _check_new_id(a, ann_ids, path, f"annotations[{i}]", "annotation")
        where = f"annotation {a['id']}"
        if a.get("image_id") not in sizes:
            raise EvaluationError(f"{path}: {where}: image_id {a.get('image_id')!r} is not an image of the file")
        if a.get("category_id") not in cats:
            raise EvaluationError(f"{path}: {where}: unknown category_id {a.get('category_id')!r}")
        seg = a.get("segmentation")
        if isinstance(seg, dict):
            h, w = sizes[a["image_id"]]
            if list(seg.get("size", [])) != [h, w]:
                raise EvaluationError(f"{path}: {where}: RLE size {seg.get('size')} differs from image size [{h}, {w}]")


def _check_new_id(record: Any, seen: set[int], path: Path, where: str, kind: str) -> None:
    """``record`` (``where`` in ``path``) is a dict with an integer ``id`` not in ``seen``, which it joins."""
    if not isinstance(record, dict) or not _is_int(record.get("id")):
        raise EvaluationError(f"{path}: {where}: missing or non-integer 'id'")
    if record["id"] in seen:
        raise EvaluationError(f"{path}: {where}: duplicate {kind} id {record['id']}")
    seen.add(record["id"])


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

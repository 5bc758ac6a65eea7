"""The canonical writer/reader used directly, path safety, errors across processes, the source registry."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from datasets.canonical import (
    CanonicalDataset,
    CanonicalWriter,
    Category,
    ImageRecord,
    Instance,
    StuffSegment,
    semantic_classes,
)
from datasets.errors import DatasetError, safe_join, safe_relpath
from datasets.registry import DATASET_SOURCES, load_source, register_source
from fixtures.official import box_mask, write_jpeg

CATS = [Category(1, "a", True), Category(2, "b", True), Category(7, "sky", False), Category(5, "road", False)]


def _record(tmp_path: Path, image_id: int = 1, **kw) -> ImageRecord:
    src = write_jpeg(tmp_path / "src" / f"im{image_id}.jpg", 4, 6, seed=image_id)
    return ImageRecord(image_id=image_id, file_name=f"sub/im{image_id}.jpg", source=src, height=4, width=6, **kw)


def test_semantic_classes_stuff_first() -> None:
    assert semantic_classes(CATS) == [5, 7, 1, 2]


def test_writer_records_crowd_stuff_void(tmp_path: Path) -> None:
    rec = _record(tmp_path, instances=[
        Instance(1, mask=box_mask(4, 6, slice(0, 2), slice(0, 2))),
        Instance(2, mask=box_mask(4, 6, slice(0, 4), slice(4, 6)), iscrowd=1),
        Instance(2, mask=box_mask(4, 6, slice(2, 4), slice(0, 3)), difficult=1)],
        stuff=[StuffSegment(5, box_mask(4, 6, slice(0, 4), slice(2, 4)))], fill_stuff=7,
        void=box_mask(4, 6, slice(3, 4), slice(3, 4)))
    with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
        summary = w.write_split("val", [rec])
    assert summary.images == 1 and summary.annotations == 3 and summary.crowd_annotations == 1
    val = CanonicalDataset(tmp_path / "out").split("val")
    (im,) = val
    assert im.file_name == "sub/im1.jpg" and im.stem == "sub/im1"
    assert (tmp_path / "out/val/semantic/sub/im1.png").is_file()
    assert [(a["id"], a["category_id"], a["area"], a["iscrowd"], a["difficult"]) for a in val.annotations(1)] == [
        (1, 1, 4, 0, 0), (2, 2, 8, 1, 0), (3, 2, 6, 0, 1)]
    ids, segs = val.panoptic_map(1)
    # paint order: fill sky, stuff road, crowd, then non-crowd by decreasing area; void last
    assert [(s["id"], s["category_id"], s["area"], s["iscrowd"]) for s in segs] == [
        (1, 1, 4, 0), (2, 2, 8, 1), (3, 2, 6, 0), (4, 5, 5, 0)]  # the sky fill has no pixel left: no segment
    assert ids[3, 3] == 0
    sem = val.semantic(1)
    exp = np.array([[2, 2, 0, 0, 255, 255],
                    [2, 2, 0, 0, 255, 255],
                    [3, 3, 3, 0, 255, 255],
                    [3, 3, 3, 255, 255, 255]], np.uint8)
    assert (sem == exp).all()
    assert val.image_labels == {1: [1, 2, 5]}  # 'b' present non-crowd; a crowd-only class would not be


def test_crowd_only_class_not_in_labels(tmp_path: Path) -> None:
    rec = _record(tmp_path, instances=[Instance(2, mask=box_mask(4, 6, slice(0, 2), slice(0, 2)), iscrowd=1)],
                  fill_stuff=7)
    with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
        w.write_split("train", [rec])
    assert CanonicalDataset(tmp_path / "out").split("train").image_labels == {1: [7]}


def test_an_image_without_an_image_labels_record_is_an_error_naming_the_file(tmp_path: Path) -> None:
    import json

    with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
        w.write_split("train", [_record(tmp_path, 1, fill_stuff=7), _record(tmp_path, 2, fill_stuff=7)])
    path = tmp_path / "out" / "train" / "image_labels.json"
    labels = json.loads(path.read_text())
    path.write_text(json.dumps({"images": [r for r in labels["images"] if r["image_id"] != 2]}))
    with pytest.raises(DatasetError, match=r"image_labels\.json.*no record for 1 image.*image_id 2"):
        CanonicalDataset(tmp_path / "out").split("train").image_labels


@pytest.mark.parametrize("bad,msg", [
    (dict(instances=[Instance(1, mask=np.zeros((4, 6), bool), record="object 1")]),
     "object 1: instance mask has zero area"),
    (dict(instances=[Instance(9, mask=box_mask(4, 6, slice(0, 1), slice(0, 1)))]), "unknown thing category id 9"),
    (dict(instances=[Instance(7, mask=box_mask(4, 6, slice(0, 1), slice(0, 1)))]), "unknown thing category id 7"),
    (dict(instances=[Instance(1, mask=np.ones((5, 6), bool))]), "mask size [5, 6] different from image size [4, 6]"),
    (dict(fill_stuff=1), "unknown stuff category id 1"),
])
def test_writer_rejects_bad_records(tmp_path: Path, bad: dict, msg: str) -> None:
    with pytest.raises(DatasetError) as info:
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
            w.write_split("val", [_record(tmp_path, **bad)])
    assert msg in str(info.value) and "image 1 (sub/im1.jpg)" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_duplicate_image_ids_and_escaping_names(tmp_path: Path) -> None:
    recs = [_record(tmp_path, 1, fill_stuff=7), _record(tmp_path, 2, fill_stuff=7)]
    recs[1].image_id = 1
    with pytest.raises(DatasetError, match="image 1 .*duplicate image id"):
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
            w.write_split("val", recs)
    recs[1].image_id, recs[1].file_name = 2, "sub/im1.png"
    with pytest.raises(DatasetError, match=r"image 2 .*second image maps to sub/im1\.png"):
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
            w.write_split("val", recs)
    recs[1].file_name = "../../outside.jpg"
    with pytest.raises(DatasetError, match=r"image 2 \(\.\./\.\./outside\.jpg\).*escape"):
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
            w.write_split("val", recs)
    assert not (tmp_path / "outside.jpg").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_exception_inside_with_block_removes_staging(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS, progress=False) as w:
            w.write_split("val", [_record(tmp_path, fill_stuff=7)])
            assert (w.staging / "val" / "instances.json").is_file()
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _fail_in_worker(item: int) -> ImageRecord:
    raise DatasetError("boom", path=f"/data/file{item}.png", record=f"image {item}")


def test_build_error_reaches_caller_intact(tmp_path: Path) -> None:
    # worker processes (workers > 1, exercised in test_loaders_voc) send errors back pickled
    with pytest.raises(DatasetError) as info:
        with CanonicalWriter(tmp_path / "out", name="t", source="test", categories=CATS,
                             progress=False) as w:
            w.write_split("val", [3, 4], build=_fail_in_worker)
    assert info.value.path == "/data/file3.png" and info.value.record == "image 3" and info.value.reason == "boom"
    assert str(info.value) == "/data/file3.png, image 3: boom"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    err = pickle.loads(pickle.dumps(DatasetError("x", path="p", record="r")))
    assert (err.path, err.record, str(err)) == ("p", "r", "p, r: x")


@pytest.mark.parametrize("name", ["../a.jpg", "a/../../b.jpg", "/abs.jpg", "C:evil.jpg", "a\\..\\b.jpg", "", ".",
                                  "a/\x00.jpg", None, 3])
def test_safe_relpath_rejects(name) -> None:
    with pytest.raises(DatasetError, match="ann.json, image 7"):
        safe_relpath(name, path="ann.json", record="image 7")


def test_safe_relpath_accepts(tmp_path: Path) -> None:
    assert safe_relpath("a/./b.jpg").as_posix() == "a/b.jpg"
    assert safe_relpath("..a/b..jpg").as_posix() == "..a/b..jpg"
    assert safe_join(tmp_path, "x/y.png") == tmp_path / "x" / "y.png"


def test_registry() -> None:
    assert load_source("voc").__name__ == "load_voc" and load_source("coco").__name__ == "load_coco"
    with pytest.raises(KeyError, match="unknown dataset source 'nope'; known: coco, voc, voc-sbd"):
        load_source("nope")
    assert {"voc", "voc-sbd", "coco"} <= set(DATASET_SOURCES)
    with pytest.raises(ValueError, match="already registered"):
        register_source("voc")(lambda **kw: None)

    @register_source("test-src")
    def loader(*, root, out, splits=None):
        return (root, out, splits)

    try:
        assert load_source("test-src")(root=1, out=2, splits=["x"]) == (1, 2, ["x"])
    finally:
        del DATASET_SOURCES["test-src"]

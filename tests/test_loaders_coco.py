"""COCO instances / panoptic loader on a tiny official-format fixture: exact output and bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from datasets.canonical import CanonicalDataset
from datasets.coco import load_coco
from datasets.errors import DatasetError
from datasets.imageio import read_panoptic_png
from fixtures.official import box_mask, coco_fixture

INST = "annotations/instances_val2017.json"
PAN = "annotations/panoptic_val2017.json"


def _load(src: Path, out: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_coco(root=src, out=out, splits=["val"], progress=False)


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[Path, CanonicalDataset, object]:
    tmp = tmp_path_factory.mktemp("coco_both")
    src = coco_fixture(tmp / "src")
    with pytest.warns(UserWarning, match="skipped 1 annotations with zero-area masks"):
        summary = load_coco(root=src, out=tmp / "out", splits=["val"], progress=False)
    return src, CanonicalDataset(tmp / "out"), summary


def test_categories_from_panoptic(both) -> None:
    _, ds, _ = both
    assert [(c.id, c.name, c.isthing) for c in ds.categories] == [
        (1, "person", True), (3, "car", True), (100, "sky", False), (101, "grass", False)]
    assert ds.semantic_classes == [100, 101, 1, 3]
    assert ds.categories[0].color == (220, 20, 60)
    assert [c["id"] for c in ds.split("val").instances["categories"]] == [1, 3]


def test_instances_exact(both) -> None:
    _, ds, summary = both
    val = ds.split("val")
    anns = val.instances["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"], a["area"], a["bbox"], a["iscrowd"], a["difficult"])
            for a in anns] == [(10, 1, 1, 12, [1, 1, 4, 3], 0, 0),   # polygon
                               (11, 1, 3, 6, [6, 5, 3, 2], 0, 0),    # compressed RLE
                               (12, 1, 1, 6, [7, 0, 3, 2], 1, 0),    # uncompressed RLE, crowd
                               (13, 2, 3, 9, [0, 0, 3, 3], 0, 0)]    # 14 (zero area) skipped
    masks = dict((a["id"], m) for a, m in val.instance_masks(1))
    assert (masks[10] == box_mask(8, 10, slice(1, 4), slice(1, 5))).all()
    assert (masks[11] == box_mask(8, 10, slice(5, 7), slice(6, 9))).all()
    assert (masks[12] == box_mask(8, 10, slice(0, 2), slice(7, 10))).all()
    assert val.annotations(3) == []  # image without annotations is kept
    assert summary.splits["val"].counts == {"skipped_zero_area": 1}
    assert summary.splits["val"].annotations == 4 and summary.splits["val"].crowd_annotations == 1
    assert ds.meta["counts"]["val"]["skipped_zero_area"] == 1


def test_panoptic_ids_kept_and_semantic(both) -> None:
    src, ds, _ = both
    val = ds.split("val")
    ids, segs = val.panoptic_map(1)
    assert (ids == read_panoptic_png(src / "annotations/panoptic_val2017/000000000001.png")).all()
    assert segs == [{"id": 3226956, "category_id": 1, "area": 12, "bbox": [1, 1, 4, 3], "iscrowd": 0},
                    {"id": 1000, "category_id": 3, "area": 6, "bbox": [6, 5, 3, 2], "iscrowd": 0},
                    {"id": 77, "category_id": 1, "area": 6, "bbox": [7, 0, 3, 2], "iscrowd": 1},
                    {"id": 5, "category_id": 100, "area": 42, "bbox": [0, 0, 10, 7], "iscrowd": 0},
                    {"id": 6, "category_id": 101, "area": 10, "bbox": [0, 7, 10, 1], "iscrowd": 0}]
    sem = val.semantic(1)
    exp = np.zeros((8, 10), np.uint8)            # sky = index 0
    exp[7, :] = 1                                # grass
    exp[1:4, 1:5] = 2                            # person
    exp[5:7, 6:9] = 3                            # car
    exp[0:2, 7:10] = 255                         # crowd
    exp[5:7, 0:2] = 255                          # void
    assert (sem == exp).all()
    assert val.image_labels == {1: [1, 3, 100, 101], 2: [3, 101], 3: [100]}
    assert val.panoptic["annotations"][2] == {
        "image_id": 3, "file_name": "000000000003.png",
        "segments_info": [{"id": 1, "category_id": 100, "area": 35, "bbox": [0, 0, 7, 5], "iscrowd": 0}]}


def test_pycocotools_reads_output(both) -> None:
    _, ds, _ = both
    coco = ds.coco("val")
    assert sorted(coco.getImgIds()) == [1, 2, 3] and coco.getAnnIds(imgIds=[1]) == [10, 11, 12]
    assert int(coco.annToMask(coco.loadAnns([13])[0]).sum()) == 9


def test_instances_only(tmp_path: Path) -> None:
    src = coco_fixture(tmp_path / "src", panoptic=False)
    _load(src, tmp_path / "out")
    ds = CanonicalDataset(tmp_path / "out")
    assert [(c.id, c.name, c.isthing) for c in ds.categories] == [(1, "person", True), (3, "car", True),
                                                                  (4, "background", False)]
    assert ds.semantic_classes == [4, 1, 3]
    val = ds.split("val")
    assert [a["id"] for a in val.instances["annotations"]] == [10, 11, 12, 13]
    ids, segs = val.panoptic_map(1)
    assert [(s["id"], s["category_id"], s["area"], s["iscrowd"]) for s in segs] == [
        (1, 1, 12, 0), (2, 3, 6, 0), (3, 1, 6, 1), (4, 4, 80 - 24, 0)]
    sem = val.semantic(1)
    assert sem[0, 0] == 0 and sem[2, 2] == 1 and sem[5, 6] == 2 and sem[0, 8] == 255
    assert (val.semantic(3) == 0).all()
    assert val.panoptic_map(3)[1] == [{"id": 7, "category_id": 4, "area": 35, "bbox": [0, 0, 7, 5], "iscrowd": 0}]
    assert val.image_labels[1] == [1, 3, 4]


def test_instances_only_overlap_smaller_on_top(tmp_path: Path) -> None:
    src = coco_fixture(tmp_path / "src", panoptic=False)
    data = json.loads((src / INST).read_text())
    data["annotations"][1]["segmentation"] = [[0, 0, 6, 0, 6, 6, 0, 6]]  # car 36 px, covers most of person
    (src / INST).write_text(json.dumps(data))
    _load(src, tmp_path / "out")
    ids, segs = CanonicalDataset(tmp_path / "out").split("val").panoptic_map(1)
    assert ids[2, 2] == 1 and ids[5, 5] == 2  # person (12 px) painted over car (36 px)
    assert [s["area"] for s in segs[:2]] == [12, 36 - 12]  # car loses the 12 pixels under the person


def test_panoptic_only(tmp_path: Path) -> None:
    src = coco_fixture(tmp_path / "src", instances=False)
    _load(src, tmp_path / "out")
    val = CanonicalDataset(tmp_path / "out").split("val")
    assert [(a["id"], a["image_id"], a["category_id"], a["area"], a["bbox"], a["iscrowd"])
            for a in val.instances["annotations"]] == [
        (1, 1, 1, 12, [1, 1, 4, 3], 0), (2, 1, 3, 6, [6, 5, 3, 2], 0), (3, 1, 1, 6, [7, 0, 3, 2], 1),
        (4, 2, 3, 9, [0, 0, 3, 3], 0)]
    assert [s["id"] for s in val.panoptic_map(1)[1]] == [3226956, 1000, 77, 5, 6]


def test_listed_segment_absent_from_png_is_counted(tmp_path: Path) -> None:
    src = coco_fixture(tmp_path / "src")
    data = json.loads((src / PAN).read_text())
    data["annotations"][1]["segments_info"].append({"id": 99, "category_id": 100, "iscrowd": 0})
    (src / PAN).write_text(json.dumps(data))
    summary = _load(src, tmp_path / "out")
    assert summary.splits["val"].counts["empty_segments"] == 1
    assert [s["id"] for s in CanonicalDataset(tmp_path / "out").split("val").panoptic_map(2)[1]] == [13, 2]


# --- bad input ----------------------------------------------------------------------------------

def _mutate(src: Path, rel: str, fn) -> None:
    data = json.loads((src / rel).read_text())
    fn(data)
    (src / rel).write_text(json.dumps(data))


def _fails(tmp_path: Path, rel: str | None, fn, *patterns: str, **fixture) -> None:
    src = coco_fixture(tmp_path / "src", **fixture)
    if rel is not None:
        _mutate(src, rel, fn)
    else:
        fn(src)
    with pytest.raises(DatasetError) as info:
        _load(src, tmp_path / "out")
    for p in patterns:
        assert p in str(info.value), (p, str(info.value))
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unknown_category(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][1].update(category_id=7),
           "instances_val2017.json", "annotation 11", "unknown thing category id 7")


def test_unknown_panoptic_category(tmp_path: Path) -> None:
    _fails(tmp_path, PAN, lambda d: d["annotations"][0]["segments_info"][3].update(category_id=55),
           "panoptic_val2017.json", "image 1 segment 5", "unknown category id 55")


def test_duplicate_ids(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["images"][1].update(id=1), "instances_val2017.json", "image 1",
           "duplicate image id")


def test_duplicate_annotation_ids(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][3].update(id=10), "instances_val2017.json",
           "annotation 10", "duplicate annotation id")


@pytest.mark.parametrize("name,why", [("../evil.jpg", "escape the dataset root"), ("/etc/passwd", "absolute"),
                                      ("a/../../b.jpg", "escape the dataset root")])
def test_file_name_escaping_root(tmp_path: Path, name: str, why: str) -> None:
    _fails(tmp_path, INST, lambda d: d["images"][0].update(file_name=name), "instances_val2017.json", "image 1", why)


def test_panoptic_png_name_escaping_root(tmp_path: Path) -> None:
    _fails(tmp_path, PAN, lambda d: d["annotations"][0].update(file_name="../../x.png"),
           "panoptic_val2017.json", "image 1", "escape the dataset root")


def test_box_outside_image(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][0].update(bbox=[5, 5, 20, 3]), "instances_val2017.json",
           "annotation 10 (image 1)", "outside its image")


def test_rle_size_differs(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][1]["segmentation"].update(size=[9, 10]),
           "instances_val2017.json", "annotation 11 (image 1)", "mask size [9, 10] different from image size [8, 10]")


def test_bad_uncompressed_rle(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][2]["segmentation"]["counts"].append(5),
           "instances_val2017.json", "annotation 12", "counts sum to 85")


def test_malformed_polygon(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5]]),
           "instances_val2017.json", "annotation 10 (image 1)", "malformed polygon")


def test_duplicate_segment_ids(tmp_path: Path) -> None:
    _fails(tmp_path, PAN, lambda d: d["annotations"][1]["segments_info"][1].update(id=13),
           "panoptic_val2017.json", "image 2", "duplicate segment id 13")


def test_image_size_differs_from_json(tmp_path: Path) -> None:
    _fails(tmp_path, INST, lambda d: (d["images"][2].update(height=6), d["annotations"].clear()),
           "val2017/000000000003.jpg", "image 3", "mask size different from image size", panoptic=False)


def test_panoptic_png_size_differs(tmp_path: Path) -> None:
    from fixtures.official import write_panoptic_png

    _fails(tmp_path, None, lambda src: write_panoptic_png(src / "annotations/panoptic_val2017/000000000003.png",
                                                          np.ones((5, 8))),
           "000000000003.png", "image 3", "mask size different from image size")


def test_png_id_not_in_segments_info(tmp_path: Path) -> None:
    _fails(tmp_path, PAN, lambda d: d["annotations"][0]["segments_info"].pop(),
           "000000000001.png", "image 1", "segment id 6 is in the PNG but not in segments_info")


def test_truncated_panoptic_png(tmp_path: Path) -> None:
    def cut(src: Path) -> None:
        png = src / "annotations/panoptic_val2017/000000000002.png"
        png.write_bytes(png.read_bytes()[:40])

    _fails(tmp_path, None, cut, "000000000002.png", "image 2", "cannot be decoded")


def test_missing_and_corrupt_image(tmp_path: Path) -> None:
    _fails(tmp_path, None, lambda src: (src / "val2017/000000000002.jpg").unlink(), "val2017/000000000002.jpg",
           "image 2", "missing")


def test_corrupt_image(tmp_path: Path) -> None:
    _fails(tmp_path, None, lambda src: (src / "val2017/000000000003.jpg").write_bytes(b"garbage"),
           "val2017/000000000003.jpg", "image 3", "cannot be decoded")


def test_image_in_one_file_only(tmp_path: Path) -> None:
    _fails(tmp_path, PAN, lambda d: (d["images"].pop(), d["annotations"].pop()), "panoptic_val2017.json",
           "image 3", "only one of")


def test_no_annotation_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither instance nor panoptic"):
        load_coco(root=tmp_path, out=tmp_path / "out", splits=["val"], progress=False)


def test_reader_rejects_escaping_file_name(both, tmp_path: Path) -> None:
    import shutil

    _, ds, _ = both
    copy = tmp_path / "copy"
    shutil.copytree(ds.root, copy)
    _mutate(copy, "val/instances.json", lambda d: d["images"][0].update(file_name="../../../etc/passwd"))
    with pytest.raises(DatasetError, match=r"instances\.json, image 1: .*escape the dataset root"):
        CanonicalDataset(copy).split("val").images

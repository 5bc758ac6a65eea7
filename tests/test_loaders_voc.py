"""VOC 2012 / SBD loaders on tiny official-format fixtures: exact canonical output and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.canonical import CanonicalDataset
from datasets.errors import DatasetError
from datasets.registry import load_source
from datasets.voc import VOC_CLASSES, load_voc, load_voc_sbd
from fixtures.official import VocImage, VocObj, sbd_fixture, voc_fixture, write_palette_png, write_voc, write_voc_xml

PERSON, DOG, CAT = (VOC_CLASSES.index(n) + 1 for n in ("person", "dog", "cat"))
HORSE, BIRD = VOC_CLASSES.index("horse") + 1, VOC_CLASSES.index("bird") + 1
BG = 21


@pytest.fixture
def voc_src(tmp_path: Path) -> Path:
    images, splits = voc_fixture()
    write_voc(tmp_path / "src", images, splits)
    return tmp_path / "src"


@pytest.fixture
def voc_out(voc_src: Path, tmp_path: Path) -> CanonicalDataset:
    load_voc(root=voc_src, out=tmp_path / "out", splits=["train", "val"], progress=False)
    return CanonicalDataset(tmp_path / "out")


def _voc(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def test_meta_and_categories(voc_out: CanonicalDataset) -> None:
    meta = voc_out.meta
    assert meta["format_version"] == 1 and meta["source"] == "voc" and meta["name"] == "voc"
    assert meta["splits"] == {"train": 2, "val": 1}
    assert meta["semantic_classes"] == [BG, *range(1, 21)] and meta["void_label"] == 255
    cats = meta["categories"]
    assert [c["id"] for c in cats] == list(range(1, 22))
    assert [c["name"] for c in cats[:20]] == list(VOC_CLASSES) and cats[20]["name"] == "background"
    assert all(c["isthing"] == 1 for c in cats[:20]) and cats[20]["isthing"] == 0
    assert cats[0]["color"] == [128, 0, 0] and cats[20]["color"] == [0, 0, 0]


def test_instances_exact(voc_out: CanonicalDataset, voc_src: Path) -> None:
    train = voc_out.split("train")
    assert [(im.id, im.file_name, im.height, im.width) for im in train] == [
        (2007000001, "2007_000001.jpg", 6, 8), (2007000003, "2007_000003.jpg", 4, 4)]
    src = _voc(voc_src) / "JPEGImages" / "2007_000001.jpg"
    assert train.image(2007000001).path.read_bytes() == src.read_bytes()
    assert os.stat(train.image(2007000001).path).st_ino == os.stat(src).st_ino  # hard link
    anns = train.instances["annotations"]
    assert [(a["id"], a["image_id"], a["category_id"], a["area"], a["bbox"], a["iscrowd"], a["difficult"])
            for a in anns] == [(1, 2007000001, PERSON, 6, [1, 1, 3, 2], 0, 0),
                               (2, 2007000001, DOG, 6, [4, 3, 3, 2], 0, 1)]
    masks = train.instance_masks(2007000001)
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True
    assert (masks[0][1] == expected).all()
    assert isinstance(anns[0]["segmentation"]["counts"], str) and anns[0]["segmentation"]["size"] == [6, 8]
    assert [c["id"] for c in train.instances["categories"]] == list(range(1, 21))
    assert train.coco().getAnnIds(imgIds=[2007000003]) == []


def test_semantic_panoptic_void(voc_out: CanonicalDataset) -> None:
    train = voc_out.split("train")
    sem = train.semantic(2007000001)
    exp = np.zeros((6, 8), np.uint8)
    exp[1:3, 1:4] = PERSON
    exp[3:5, 4:7] = DOG
    exp[0, 0:2] = 255
    exp[3:5, 7] = 255
    assert (sem == exp).all()
    ids, segs = train.panoptic_map(2007000001)
    exp_ids = np.full((6, 8), 3)
    exp_ids[1:3, 1:4] = 1
    exp_ids[3:5, 4:7] = 2
    exp_ids[exp == 255] = 0
    assert (ids == exp_ids).all()
    assert segs == [{"id": 1, "category_id": PERSON, "area": 6, "bbox": [1, 1, 3, 2], "iscrowd": 0},
                    {"id": 2, "category_id": DOG, "area": 6, "bbox": [4, 3, 3, 2], "iscrowd": 0},
                    {"id": 3, "category_id": BG, "area": 32, "bbox": [0, 0, 8, 6], "iscrowd": 0}]
    ids3, segs3 = train.panoptic_map(2007000003)
    assert segs3 == [{"id": 4, "category_id": BG, "area": 15, "bbox": [0, 0, 4, 4], "iscrowd": 0}]
    assert ids3[3, 3] == 0 and train.semantic(2007000003)[3, 3] == 255
    pan = train.panoptic
    assert pan["annotations"][0]["file_name"] == "2007_000001.png"
    assert [c["id"] for c in pan["categories"]] == list(range(1, 22))
    assert train.image_labels == {2007000001: [DOG, PERSON, BG], 2007000003: [BG]}


def test_majority_class_under_instance(voc_out: CanonicalDataset) -> None:
    val = voc_out.split("val")
    (ann,) = val.annotations(2007000002)
    assert ann["category_id"] == CAT and ann["area"] == 10  # one of its 10 class pixels says dog
    assert val.semantic(2007000002)[4, 1] == CAT


def test_workers_give_identical_output(voc_src: Path, tmp_path: Path) -> None:
    load_voc(root=voc_src, out=tmp_path / "a", splits=["train", "val"], workers=1, progress=False)
    load_voc(root=voc_src, out=tmp_path / "b", splits=["train", "val"], workers=2, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_train_aug_composition(tmp_path: Path) -> None:
    images, splits = voc_fixture()
    write_voc(tmp_path, images, splits)
    sbd_fixture(tmp_path)
    summary = load_source("voc-sbd")(root=tmp_path, out=tmp_path / "out", progress=False)
    assert set(summary.splits) == {"train_aug", "val"}
    ds = CanonicalDataset(tmp_path / "out")
    assert ds.name == "voc-sbd"
    aug = ds.split("train_aug")
    assert [im.id for im in aug] == [2007000001, 2007000003, 2008000010, 2008000011]
    # 2007_000001 is annotated by VOC (person + difficult dog), not by SBD (one aeroplane)
    assert [(a["id"], a["category_id"], a["difficult"]) for a in aug.annotations(2007000001)] == [
        (1, PERSON, 0), (2, DOG, 1)]
    # SBD image: no void, instances from GTinst, image from SBD img/
    anns = aug.annotations(2008000010)
    assert [(a["id"], a["category_id"], a["area"], a["bbox"], a["difficult"]) for a in anns] == [
        (5, HORSE, 4, [0, 0, 2, 2], 0), (6, PERSON, 6, [2, 2, 3, 2], 0)]
    sem = aug.semantic(2008000010)
    assert (sem != 255).all() and sem[0, 0] == HORSE and sem[3, 4] == PERSON and sem[3, 0] == 0
    sbd_img = tmp_path / "benchmark_RELEASE" / "dataset" / "img" / "2008_000010.jpg"
    assert aug.image(2008000010).path.read_bytes() == sbd_img.read_bytes()
    # image in both VOC JPEGImages and SBD img/: VOC's is used
    voc_img = _voc(tmp_path) / "JPEGImages" / "2008_000011.jpg"
    assert aug.image(2008000011).path.read_bytes() == voc_img.read_bytes()
    ids, segs = aug.panoptic_map(2008000011)
    assert segs == [{"id": 8, "category_id": BIRD, "area": 1, "bbox": [1, 1, 1, 1], "iscrowd": 0},
                    {"id": 9, "category_id": BG, "area": 8, "bbox": [0, 0, 3, 3], "iscrowd": 0}]
    assert [im.id for im in ds.split("val")] == [2007000002]


def test_class_names_parameter(tmp_path: Path) -> None:
    obj = np.zeros((4, 4), np.uint8)
    obj[0:2, 0:2] = 1
    obj[2:4, 2:4] = 2
    cls = np.select([obj == 1, obj == 2], [2, 1], 0).astype(np.uint8)
    write_voc(tmp_path / "src", [VocImage("img_a", obj, cls, [VocObj("square"), VocObj("circle")])],
              {"train": ["img_a"]})
    names = tmp_path / "classes.txt"
    names.write_text("background\ncircle\nsquare\n")
    for i, class_names in enumerate((["circle", "square"], names)):
        out = tmp_path / f"out{i}"
        load_voc(root=tmp_path / "src", out=out, splits=["train"], class_names=class_names, name="synth-voc",
                 source="synthetic-voc", progress=False)
        ds = CanonicalDataset(out)
        assert [(c.id, c.name, c.isthing) for c in ds.categories] == [(1, "circle", True), (2, "square", True),
                                                                        (3, "background", False)]
        assert ds.semantic_classes == [3, 1, 2] and ds.meta["source"] == "synthetic-voc"
        (im,) = ds.split("train")
        assert im.id == 1  # stems not of the VOC form: position in the sorted list of all stems
        assert [a["category_id"] for a in ds.split("train").annotations(1)] == [2, 1]


# --- atomicity ----------------------------------------------------------------------------------

def test_failure_leaves_nothing(voc_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dest" / "voc"
    (_voc(voc_src) / "SegmentationObject" / "2007_000002.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError):
        load_voc(root=voc_src, out=out, splits=["train", "val"], progress=False)  # val fails after train
    assert list((tmp_path / "dest").iterdir()) == []


def test_failure_keeps_previous_output(voc_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    load_voc(root=voc_src, out=out, splits=["train"], progress=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    jpg = _voc(voc_src) / "JPEGImages" / "2007_000003.jpg"
    jpg.unlink()  # replaced, not edited in place: the canonical image is a hard link to the source
    jpg.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DatasetError, match="2007_000003"):
        load_voc(root=voc_src, out=out, splits=["train"], progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "voc"]


def test_rerun_replaces_output(voc_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    load_voc(root=voc_src, out=out, splits=["train", "val"], progress=False)
    load_voc(root=voc_src, out=out, splits=["val"], progress=False)
    assert CanonicalDataset(out).split_names == ["val"] and not (out / "train").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "voc"]


# --- bad input ----------------------------------------------------------------------------------

def _rewrite(voc_src: Path, img: VocImage) -> None:
    voc = _voc(voc_src)
    write_palette_png(voc / "SegmentationObject" / f"{img.stem}.png", img.obj)
    write_palette_png(voc / "SegmentationClass" / f"{img.stem}.png", img.cls)
    write_voc_xml(voc / "Annotations" / f"{img.stem}.xml", img)


def _image_a() -> VocImage:
    return voc_fixture()[0][0]


def _fails(voc_src: Path, tmp_path: Path, *patterns: str, splits=("train",)) -> str:
    with pytest.raises(DatasetError) as info:
        load_voc(root=voc_src, out=tmp_path / "out", splits=list(splits), progress=False)
    msg = str(info.value)
    for p in patterns:
        assert p in msg, (p, msg)
    assert not (tmp_path / "out").exists()
    return msg


def test_xml_object_without_pixels(voc_src: Path, tmp_path: Path) -> None:
    a = _image_a()
    a.objects.append(VocObj("cat", bbox=(1, 1, 2, 2)))
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "2007_000001.png", "object 3 (cat)", "no pixels")


def test_png_index_without_xml_object(voc_src: Path, tmp_path: Path) -> None:
    a = _image_a()
    a.obj[5, 0], a.cls[5, 0] = 3, PERSON
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "2007_000001.png", "image 2007_000001", "instance index 3")


def test_class_mismatch_with_xml(voc_src: Path, tmp_path: Path) -> None:
    a = _image_a()
    a.objects[1] = VocObj("cat")
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "2007_000001", "object 2 (cat)", "'dog'")


def test_unknown_class_index_and_name(voc_src: Path, tmp_path: Path) -> None:
    a = _image_a()
    a.cls[5, 5] = 40
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "SegmentationClass/2007_000001.png", "unknown class index 40")
    a = _image_a()
    a.objects[0] = VocObj("martian")
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "2007_000001.xml", "object 1", "unknown class name 'martian'")


def test_box_outside_image(voc_src: Path, tmp_path: Path) -> None:
    a = _image_a()
    a.objects[0] = VocObj("person", bbox=(2, 2, 30, 3))
    _rewrite(voc_src, a)
    _fails(voc_src, tmp_path, "2007_000001.xml", "object 1 (person)", "outside its image")


def test_truncated_png(voc_src: Path, tmp_path: Path) -> None:
    png = _voc(voc_src) / "SegmentationClass" / "2007_000001.png"
    png.write_bytes(png.read_bytes()[:-30])
    _fails(voc_src, tmp_path, "SegmentationClass/2007_000001.png", "truncated")


def test_rgb_png_rejected(voc_src: Path, tmp_path: Path) -> None:
    png = _voc(voc_src) / "SegmentationObject" / "2007_000001.png"
    Image.open(png).convert("RGB").save(png)
    _fails(voc_src, tmp_path, "SegmentationObject/2007_000001.png", "mode RGB")


def test_missing_and_corrupt_image(voc_src: Path, tmp_path: Path) -> None:
    jpg = _voc(voc_src) / "JPEGImages" / "2007_000003.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    _fails(voc_src, tmp_path, "2007_000003.jpg", "image 2007000003", "truncated")
    jpg.unlink()
    _fails(voc_src, tmp_path, "JPEGImages/2007_000003.jpg", "image 2007_000003", "missing")


def test_mask_size_differs_from_image(voc_src: Path, tmp_path: Path) -> None:
    voc = _voc(voc_src)
    Image.new("RGB", (9, 6)).save(voc / "JPEGImages" / "2007_000001.jpg")
    _fails(voc_src, tmp_path, "2007_000001.jpg", "mask size different from image size")
    Image.new("RGB", (8, 6)).save(voc / "JPEGImages" / "2007_000001.jpg")
    c = voc_fixture()[0][2]
    c.cls = np.zeros((4, 5), np.uint8)
    write_palette_png(voc / "SegmentationClass" / "2007_000003.png", c.cls)
    _fails(voc_src, tmp_path, "SegmentationClass/2007_000003.png", "mask size different from image size")


def test_split_list_errors(voc_src: Path, tmp_path: Path) -> None:
    lst = _voc(voc_src) / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text("2007_000001\n2007_000001\n")
    _fails(voc_src, tmp_path, "train.txt", "line 2", "duplicate image '2007_000001'")
    lst.write_text("../../../etc/passwd\n")
    _fails(voc_src, tmp_path, "train.txt", "line 1", "escape the dataset root")


def test_sbd_errors(tmp_path: Path) -> None:
    images, splits = voc_fixture()
    write_voc(tmp_path, images, splits)
    sbd = sbd_fixture(tmp_path)
    from fixtures.official import write_sbd_image

    inst = np.zeros((4, 5), np.uint8)
    inst[0, 0] = 1
    write_sbd_image(sbd, "2008_000010", inst, inst * 3, [30])
    with pytest.raises(DatasetError, match=r"inst/2008_000010\.mat.*object 1.*unknown category id 30"):
        load_voc_sbd(root=tmp_path, out=tmp_path / "out", progress=False)
    (sbd / "cls" / "2008_000010.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DatasetError, match=r"cls/2008_000010\.mat"):
        load_voc_sbd(root=tmp_path, out=tmp_path / "out", progress=False)
    with pytest.raises(DatasetError, match="needs SBD"):
        load_voc(root=tmp_path, out=tmp_path / "out", splits=["train_aug"], progress=False)
    assert not (tmp_path / "out").exists()

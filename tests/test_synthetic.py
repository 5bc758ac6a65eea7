"""Synthetic dataset generator: determinism, the phenomena it must contain, and the exact official
formats of what it writes (checked from the files, independently of the generator's bookkeeping)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from pycocotools import mask as mask_utils

from datasets.synthetic import (
    MANIFEST,
    PRESETS,
    SynthCOCOParams,
    SynthVOCParams,
    SynthVOCWriter,
    generate,
    register_preset,
    voc_palette,
)

VOC = "VOCdevkit/VOC2012"
SBD = "SBD/benchmark_RELEASE/dataset"
SMALL_VOC = dict(image_size=(64, 64), num_train=6, num_val=4, num_sbd_only=5, sbd_val_overlap=0.5)
SMALL_COCO = dict(image_size=(64, 64), num_train=8, num_val=6, crowd_prob=0.5, empty_fraction=0.2,
                  rle_fraction=0.2)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def voc_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc") / "small"
    generate("synth-voc", root, progress=False, **SMALL_VOC)
    return root


@pytest.fixture(scope="module")
def coco_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "small"
    generate("synth-coco", root, progress=False, **SMALL_COCO)
    return root


@pytest.fixture(scope="module")
def voc_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default parameters (128×128), a 20-image sample."""
    root = tmp_path_factory.mktemp("vocd") / "default"
    generate("synth-voc", root, progress=False, num_train=20, num_val=0, num_sbd_only=0)
    return root


@pytest.fixture(scope="module")
def coco_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default parameters (128×128), a 20-image sample."""
    root = tmp_path_factory.mktemp("cocod") / "default"
    generate("synth-coco", root, progress=False, num_train=0, num_val=20)
    return root


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("preset,params", [("synth-voc", SMALL_VOC), ("synth-coco", SMALL_COCO)])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, preset: str, params: dict) -> None:
    small = {**params, "num_train": 3, "num_val": 2}
    generate(preset, tmp_path / "a", progress=False, seed=7, **small)
    generate(preset, tmp_path / "b", progress=False, seed=7, workers=2, **small)
    generate(preset, tmp_path / "c", progress=False, seed=8, **small)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    images = [n for n in a if n.endswith(".jpg")]
    assert images and all(a[n] != c.get(n) for n in images if n in c)
    assert a != c
    assert not list(tmp_path.glob("*.tmp-*"))


def test_images_do_not_depend_on_split_sizes(tmp_path: Path) -> None:
    generate("synth-coco", tmp_path / "a", progress=False, image_size=(64, 64), num_train=2, num_val=1)
    generate("synth-coco", tmp_path / "b", progress=False, image_size=(64, 64), num_train=4, num_val=1)
    ja = json.loads((tmp_path / "a/coco/annotations/instances_train2017.json").read_text())
    jb = json.loads((tmp_path / "b/coco/annotations/instances_train2017.json").read_text())
    for k in range(2):  # image k of train is the same picture whatever the split sizes
        fa = (tmp_path / "a/coco/train2017" / ja["images"][k]["file_name"]).read_bytes()
        fb = (tmp_path / "b/coco/train2017" / jb["images"][k]["file_name"]).read_bytes()
        assert fa == fb


# ----------------------------------------------------------------------------- touching instances


def test_voc_touching_fraction_from_pngs(voc_default: Path) -> None:
    w = SynthVOCParams().effective_void_width
    k = np.ones((2 * (w + 1) + 1, 2 * (w + 1) + 1), np.uint8)  # dilation by void_width + 1
    touching = total = 0
    for stem in _lines(voc_default / VOC / "ImageSets/Segmentation/train.txt"):
        obj = _png(voc_default / VOC / f"SegmentationObject/{stem}.png")
        cls = _png(voc_default / VOC / f"SegmentationClass/{stem}.png")
        ids = [i for i in np.unique(obj) if 0 < i < 255]
        cat = {i: np.bincount(cls[obj == i]).argmax() for i in ids}
        for i in ids:
            grown = cv2.dilate((obj == i).astype(np.uint8), k).astype(bool)
            others = [j for j in ids if j != i and cat[j] == cat[i]]
            touching += any((grown & (obj == j)).any() for j in others)
            total += 1
    assert total > 40
    assert touching / total >= 0.30


def test_coco_touching_fraction_from_panoptic(coco_default: Path) -> None:
    ann = json.loads((coco_default / "coco/annotations/panoptic_val2017.json").read_text())
    things = {c["id"] for c in ann["categories"] if c["isthing"]}
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    touching = total = 0
    for a in ann["annotations"]:
        rgb = _png(coco_default / "coco/annotations/panoptic_val2017" / a["file_name"]).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        segs = [s for s in a["segments_info"] if s["category_id"] in things and not s["iscrowd"]]
        for s in segs:
            grown = cv2.dilate((ids == s["id"]).astype(np.uint8), cross).astype(bool)
            others = [t for t in segs if t["id"] != s["id"] and t["category_id"] == s["category_id"]]
            touching += any((grown & (ids == t["id"])).any() for t in others)
            total += 1
    assert total > 100
    assert touching / total >= 0.30


# ----------------------------------------------------------------------------- VOC formats


def test_voc_pngs_are_palette_with_void_band(voc_small: Path) -> None:
    pal = voc_palette()
    assert tuple(pal[0]) == (0, 0, 0) and tuple(pal[255]) == (224, 224, 192) and tuple(pal[1]) == (128, 0, 0)
    stems = _lines(voc_small / VOC / "ImageSets/Segmentation/trainval.txt")
    assert len(stems) == 10
    for stem in stems:
        for kind in ("SegmentationObject", "SegmentationClass"):
            img = Image.open(voc_small / VOC / kind / f"{stem}.png")
            assert img.mode == "P" and img.size == (64, 64)
            assert np.array_equal(np.array(img.getpalette()[:768], np.uint8).reshape(-1, 3)[:256], pal)
        obj = _png(voc_small / VOC / f"SegmentationObject/{stem}.png")
        cls = _png(voc_small / VOC / f"SegmentationClass/{stem}.png")
        assert np.array_equal(obj == 255, cls == 255)
        assert (obj == 255).any() and 0 < (obj == 255).mean() < 0.3
        # every boundary between two different labels (background included) lies in the void band
        for a, b in ((obj[:, :-1], obj[:, 1:]), (obj[:-1, :], obj[1:, :])):
            assert not ((a != b) & (a != 255) & (b != 255)).any(), stem
        # class map is constant on each instance
        for i in np.unique(obj):
            if 0 < i < 255:
                assert len(np.unique(cls[obj == i])) == 1 and cls[obj == i][0] > 0
        assert not ((obj == 0) & (cls != 0)).any()


def test_voc_xml_boxes_contain_masks_and_are_one_based(voc_small: Path) -> None:
    names = _lines(voc_small / "class_names.txt")
    assert names[0] == "background" and len(names) == 1 + SynthVOCParams().num_thing_classes
    seg = set(_lines(voc_small / VOC / "ImageSets/Segmentation/trainval.txt"))
    for xml in sorted((voc_small / VOC / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        stem = xml.stem
        assert root.findtext("folder") == "VOC2012" and root.findtext("filename") == f"{stem}.jpg"
        assert (int(root.findtext("size/width")), int(root.findtext("size/height")),
                int(root.findtext("size/depth"))) == (64, 64, 3)
        assert int(root.findtext("segmented")) == int(stem in seg)
        objects = root.findall("object")
        assert objects
        for o in objects:
            assert o.findtext("name") in names[1:] and o.findtext("pose") == "Unspecified"
            assert o.findtext("truncated") in ("0", "1") and o.findtext("difficult") in ("0", "1")
        if stem not in seg:
            continue
        obj = _png(voc_small / VOC / f"SegmentationObject/{stem}.png")
        cls = _png(voc_small / VOC / f"SegmentationClass/{stem}.png")
        assert obj[obj < 255].max() == len(objects)  # indices 1..N in XML order
        for i, o in enumerate(objects, start=1):
            x0, y0, x1, y1 = (int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 <= x1 <= 64 and 1 <= y0 <= y1 <= 64
            ys, xs = np.nonzero(obj == i)
            assert x0 - 1 <= xs.min() and xs.max() <= x1 - 1 and y0 - 1 <= ys.min() and ys.max() <= y1 - 1
            # tight: each box edge meets the object or its void band (the box is of the visible
            # object, the annotated mask is that minus the band)
            region = (obj[y0 - 1:y1, x0 - 1:x1] == i) | (obj[y0 - 1:y1, x0 - 1:x1] == 255)
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
            assert names[int(cls[obj == i][0])] == o.findtext("name")


def test_sbd_mat_structure_and_splits(voc_small: Path) -> None:
    sbd = voc_small / SBD
    k = SynthVOCParams().num_thing_classes
    tr, va = _lines(sbd / "train.txt"), _lines(sbd / "val.txt")
    assert not set(tr) & set(va)
    voc_train = set(_lines(voc_small / VOC / "ImageSets/Segmentation/train.txt"))
    voc_val = set(_lines(voc_small / VOC / "ImageSets/Segmentation/val.txt"))
    all_sbd = set(tr) | set(va)
    assert all_sbd & voc_val, "SBD must hold some VOC val images (train_aug must drop them)"
    assert all_sbd & voc_train
    sbd_only = all_sbd - voc_train - voc_val
    assert len(sbd_only) == SMALL_VOC["num_sbd_only"]
    train_aug = (all_sbd | voc_train) - voc_val
    assert len(train_aug) > len(voc_train)
    for stem in sorted(all_sbd):
        assert (sbd / f"img/{stem}.jpg").read_bytes() == (voc_small / VOC / f"JPEGImages/{stem}.jpg").read_bytes()
        raw = (sbd / f"cls/{stem}.mat").read_bytes()
        assert raw.startswith(b"MATLAB 5.0 MAT-file")
        gcls = scipy.io.loadmat(str(sbd / f"cls/{stem}.mat"))["GTcls"]
        ginst = scipy.io.loadmat(str(sbd / f"inst/{stem}.mat"))["GTinst"]
        assert gcls.shape == (1, 1) and gcls.dtype.names == ("Boundaries", "Segmentation", "CategoriesPresent")
        assert ginst.dtype.names == ("Segmentation", "Boundaries", "Categories")
        seg = gcls[0, 0]["Segmentation"]
        assert seg.dtype == np.uint8 and seg.shape == (64, 64) and seg.max() <= k  # no void
        present = gcls[0, 0]["CategoriesPresent"]
        assert present.shape[1] == 1
        assert sorted(present.ravel().tolist()) == sorted(set(np.unique(seg).tolist()) - {0})
        bnd = gcls[0, 0]["Boundaries"]
        assert bnd.shape == (k, 1)
        assert all(scipy.sparse.issparse(bnd[c, 0]) and bnd[c, 0].shape == (64, 64) for c in range(k))
        inst = ginst[0, 0]["Segmentation"]
        cats = ginst[0, 0]["Categories"]
        n = int(inst.max())
        assert inst.dtype == np.uint8 and cats.shape == (n, 1) and ginst[0, 0]["Boundaries"].shape == (n, 1)
        for i in range(1, n + 1):
            assert (inst == i).any() and np.all(seg[inst == i] == cats[i - 1, 0])
            assert ginst[0, 0]["Boundaries"][i - 1, 0].nnz > 0
        if stem in voc_train | voc_val:  # same instances as the VOC PNG where that is not void
            obj = _png(voc_small / VOC / f"SegmentationObject/{stem}.png")
            assert np.array_equal(inst[obj != 255], obj[obj != 255])


# ----------------------------------------------------------------------------- COCO formats


def _ann_rle(segm: object, h: int, w: int) -> dict:
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, h, w)
    return {"size": segm["size"], "counts": segm["counts"].encode("ascii")}


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_instances_rasterise_to_panoptic_segments(coco_small: Path, split: str) -> None:
    base = coco_small / "coco/annotations"
    inst = json.loads((base / f"instances_{split}2017.json").read_text())
    pan = json.loads((base / f"panoptic_{split}2017.json").read_text())
    assert set(inst) >= {"info", "licenses", "images", "annotations", "categories"}
    assert all(c["id"] in {p["id"] for p in pan["categories"] if p["isthing"]} for c in inst["categories"])
    pan_by_image = {a["image_id"]: a for a in pan["annotations"]}
    kinds = {"polygon": 0, "rle": 0, "crowd": 0}
    for im in inst["images"]:
        assert (coco_small / f"coco/{split}2017" / im["file_name"]).is_file()
        assert im["file_name"] == f"{im['id']:012d}.jpg"
    for a in inst["annotations"]:
        im = next(i for i in inst["images"] if i["id"] == a["image_id"])
        h, w = im["height"], im["width"]
        p = pan_by_image[a["image_id"]]
        rgb = _png(base / f"panoptic_{split}2017" / p["file_name"]).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        seg = next(s for s in p["segments_info"] if s["id"] == a["id"])
        assert seg["category_id"] == a["category_id"] and seg["iscrowd"] == a["iscrowd"]
        m = mask_utils.decode(_ann_rle(a["segmentation"], h, w)).astype(bool)
        ref = ids == a["id"]
        iou = (m & ref).sum() / (m | ref).sum()
        assert iou > 0.9, (a["id"], iou)
        assert a["area"] == pytest.approx(m.sum())
        x, y, bw, bh = a["bbox"]
        ys, xs = np.nonzero(m)
        assert (x, y, bw, bh) == pytest.approx((xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
        if a["iscrowd"]:
            assert isinstance(a["segmentation"]["counts"], list) and a["segmentation"]["size"] == [h, w]
            assert np.array_equal(m, ref)
            kinds["crowd"] += 1
        elif isinstance(a["segmentation"], list):
            kinds["polygon"] += 1
        else:
            assert isinstance(a["segmentation"]["counts"], str)
            kinds["rle"] += 1
    if split == "train":
        assert kinds["polygon"] > kinds["rle"] > 0 and kinds["crowd"] > 0


def test_panoptic_ids_unique_areas_and_void(coco_small: Path) -> None:
    void = total = 0
    for split in ("train", "val"):
        base = coco_small / "coco/annotations"
        pan = json.loads((base / f"panoptic_{split}2017.json").read_text())
        cats = {c["id"]: c for c in pan["categories"]}
        assert sorted(c for c in cats if cats[c]["isthing"]) == list(range(1, 11))
        assert all(c >= 92 for c in cats if not cats[c]["isthing"])
        assert all({"id", "name", "supercategory", "isthing", "color"} <= set(c) for c in cats.values())
        for a in pan["annotations"]:
            rgb = _png(base / f"panoptic_{split}2017" / a["file_name"])
            assert rgb.ndim == 3 and rgb.dtype == np.uint8
            rgb64 = rgb.astype(np.int64)
            ids = rgb64[..., 0] + 256 * rgb64[..., 1] + 65536 * rgb64[..., 2]
            sids = [s["id"] for s in a["segments_info"]]
            assert len(sids) == len(set(sids)) and 0 not in sids
            assert set(np.unique(ids).tolist()) - {0} == set(sids)
            for s in a["segments_info"]:
                m = ids == s["id"]
                ys, xs = np.nonzero(m)
                assert s["area"] == int(m.sum()) and s["category_id"] in cats
                assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            void += int((ids == 0).sum())
            total += ids.size
    assert 0 < void / total < 0.05  # unlabelled pixels occur, a little


def test_coco_empty_images_and_voc_never_empty(coco_small: Path, voc_small: Path) -> None:
    for split, n in (("train", 8), ("val", 6)):
        inst = json.loads((coco_small / f"coco/annotations/instances_{split}2017.json").read_text())
        assert len(inst["images"]) == n
        with_things = {a["image_id"] for a in inst["annotations"] if not a["iscrowd"]}
        assert any(im["id"] not in with_things for im in inst["images"])  # empty_fraction=0.2 → index 4
    for stem in _lines(voc_small / VOC / "ImageSets/Segmentation/trainval.txt"):
        obj = _png(voc_small / VOC / f"SegmentationObject/{stem}.png")
        assert obj[obj < 255].max() >= 1


def test_coco_default_has_all_size_classes(coco_default: Path) -> None:
    pan = json.loads((coco_default / "coco/annotations/panoptic_val2017.json").read_text())
    things = {c["id"] for c in pan["categories"] if c["isthing"]}
    areas = np.array([s["area"] for a in pan["annotations"] for s in a["segments_info"]
                      if s["category_id"] in things and not s["iscrowd"]])
    assert (areas < 32 ** 2).sum() > 0
    assert ((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() > 0
    assert (areas >= 96 ** 2).sum() > 0


# ----------------------------------------------------------------------------- appearance


def test_class_colour_varies_within_class_but_separates_classes(voc_default: Path) -> None:
    feats, labels = [], []
    er = np.ones((3, 3), np.uint8)
    for stem in _lines(voc_default / VOC / "ImageSets/Segmentation/train.txt"):
        img = np.array(Image.open(voc_default / VOC / f"JPEGImages/{stem}.jpg").convert("RGB")).astype(np.float64)
        obj = _png(voc_default / VOC / f"SegmentationObject/{stem}.png")
        cls = _png(voc_default / VOC / f"SegmentationClass/{stem}.png")
        for i in np.unique(obj):
            if not 0 < i < 255:
                continue
            m = cv2.erode((obj == i).astype(np.uint8), er).astype(bool)
            if m.sum() < 20:
                continue
            px = img[m]
            feats.append(np.concatenate([px.mean(0), px.std(0)]))
            labels.append(int(cls[obj == i][0]))
    x, y = np.array(feats), np.array(labels)
    classes = sorted(set(y.tolist()))
    assert len(classes) >= 4
    # intra-class variation: instances of a class differ in mean colour
    spread = [x[y == c, :3].std(0).mean() for c in classes if (y == c).sum() >= 3]
    assert spread and np.median(spread) > 8.0
    # a nearest-centroid rule on (mean, std) colour, leave-one-out, beats chance clearly
    correct = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        cents = {c: x[keep & (y == c)].mean(0) for c in classes if (keep & (y == c)).any()}
        pred = min(cents, key=lambda c: np.linalg.norm(x[i] - cents[c]))
        correct += pred == y[i]
    assert correct / len(y) > 2.0 / len(classes)


# ----------------------------------------------------------------------------- API


def test_summary_matches_files_and_manifest(voc_small: Path) -> None:
    man = json.loads((voc_small / MANIFEST).read_text())
    assert man["preset"] == "synth-voc" and man["params"]["image_size"] == [64, 64]
    sp = man["summary"]["splits"]
    assert sp["train"]["images"] == 6 and sp["val"]["images"] == 4 and sp["sbd_only"]["images"] == 5
    n_xml = sum(len(ET.parse(voc_small / VOC / f"Annotations/{s}.xml").getroot().findall("object"))
                for s in _lines(voc_small / VOC / "ImageSets/Segmentation/trainval.txt"))
    assert sp["train"]["instances"] + sp["val"]["instances"] == n_xml
    assert man["summary"]["extra"]["train_aug"] == 6 + 5
    assert [c["name"] for c in man["categories"]][-1] == "background"


def test_generate_existing_root_and_params_validation(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    s1 = generate("synth-voc", root, progress=False, image_size=(48, 48), num_train=2, num_val=1, num_sbd_only=0)
    with pytest.raises(FileExistsError):
        generate("synth-voc", root, progress=False, image_size=(48, 48), num_train=2, num_val=1, num_sbd_only=0)
    s2 = generate("synth-voc", root, progress=False, if_exists="reuse", image_size=(48, 48), num_train=2,
                  num_val=1, num_sbd_only=0)
    assert s2.to_dict() == s1.to_dict()
    with pytest.raises(FileExistsError):
        generate("synth-voc", root, progress=False, if_exists="reuse", image_size=(48, 48), num_train=3,
                 num_val=1, num_sbd_only=0)
    s3 = generate("synth-voc", root, progress=False, if_exists="overwrite", image_size=(48, 48), num_train=3,
                  num_val=1, num_sbd_only=0)
    assert s3.splits["train"].images == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old folders left
    with pytest.raises(ValueError, match="allowed"):
        generate("synth-voc", tmp_path / "x", bogus=1)
    with pytest.raises(ValueError, match="num_thing_classes"):
        SynthVOCParams(num_thing_classes=0)
    with pytest.raises(ValueError, match="instances"):
        SynthCOCOParams(instances=(5, 2))
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        generate("synth-nope", tmp_path / "y")
    assert SynthVOCParams(instances=[1, 3]).instances == (1, 3)  # YAML lists accepted
    assert not (tmp_path / "x").exists()


def test_registry() -> None:
    assert {"synth-voc", "synth-coco"} <= set(PRESETS)
    assert PRESETS["synth-voc"].params_cls is SynthVOCParams
    with pytest.raises(ValueError, match="already registered"):
        register_preset(SynthVOCWriter)

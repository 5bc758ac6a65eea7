"""`bench point-filter`: the training-free baseline's one-point rule applied to predicted val masks."""

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.bestie_family import one_point_instances, points_held
from bench.cli import main
from bench.commands.data import prepare
from bench.config.loader import render_profile, validate_params
from bench.evaluation.records import InstancePredictions
from bench.evaluation.rle import encode
from bench.inputs import Cues
from bench.io import read_json, write_json
from bench.predictions import instance_records
from datasets.canonical import CanonicalDataset

A, B = 1, 2  # two thing classes (semantic index = category id here)


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((8, 8), dtype=bool)
    mask[rows, cols] = True
    return mask


def _record(index: int, image_id: int, category: int, mask: np.ndarray) -> dict:
    return {"index": index, "image_id": image_id, "category_id": category, "score": 0.5,
            "segmentation": encode(mask)}


def _cues(points: list[tuple[int, int, int]]) -> Cues:
    return Cues(np.array([(y, x) for y, x, _ in points], dtype=np.int64).reshape(-1, 2),
                np.array([c for *_, c in points], dtype=np.int64), [None] * len(points))


def test_points_held_counts_the_points_of_the_class_on_the_mask():
    mask = _mask(slice(0, 4), slice(0, 4))
    cues = _cues([(0, 0, A), (3, 3, A), (4, 4, A), (7, 0, A), (1, 1, B)])
    assert points_held(mask, cues, A) == 2
    assert points_held(mask, cues, B) == 1
    assert points_held(mask, _cues([]), A) == 0


def test_only_masks_holding_exactly_one_point_of_their_class_are_kept():
    left, right = _mask(slice(0, 4), slice(0, 4)), _mask(slice(0, 4), slice(4, 8))
    bottom = _mask(slice(4, 8), slice(0, 8))
    predictions = InstancePredictions(by_image={
        10: [_record(0, 10, A, left),     # one A point: kept
             _record(1, 10, A, right),    # two A points (two touching objects merged): dropped
             _record(2, 10, B, bottom)],  # only an A point on it: no point of its class, dropped
        11: [_record(3, 11, A, left)],    # an image without points: dropped
    }, n_records=4)
    points = {10: _cues([(1, 1, A), (1, 5, A), (2, 6, A), (6, 3, A)]), 11: _cues([])}
    kept, held = one_point_instances(predictions, points, semantic_index=lambda category: category)
    assert kept == [0]
    assert held == {"none": 2, "one": 1, "several": 1}


def test_kept_positions_follow_the_file_order_across_images():
    mask = _mask(slice(0, 4), slice(0, 4))
    predictions = InstancePredictions(by_image={
        20: [_record(2, 20, A, mask)],
        10: [_record(0, 10, A, mask), _record(1, 10, B, mask)],
    }, n_records=3)
    points = {10: _cues([(0, 0, A), (1, 1, B)]), 20: _cues([(3, 3, A)])}
    kept, _ = one_point_instances(predictions, points, semantic_index=lambda category: category)
    assert kept == [0, 1, 2]


def test_a_row_that_would_overwrite_its_source_is_refused(capsys):
    code = main(["point-filter", "--dataset", "voc", "--source", "bestie/points", "--row", "bestie/points"])
    assert code == 2
    assert "would overwrite its --source" in capsys.readouterr().err


# --- the command on the smoke profile's VOC-like val split --------------------------------------------------------
@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Smoke VOC data, a points file with one point inside every val thing instance, and a source run whose
    val predictions are built from the ground truth: every instance alone (one point each), the union of two
    same-class instances of one image (two points) and one instance labelled with a class it is not (none)."""
    root = tmp_path_factory.mktemp("point-filter")
    raw = render_profile("smoke")
    raw["tracking"]["enabled"] = False
    params = validate_params(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        prepare(params.data.voc, root / "data" / "canonical" / "voc")
        val = CanonicalDataset(root / "data" / "canonical" / "voc").split(params.data.voc.val_split)
        points, singles, merged = [], [], None
        for image in val.images:
            by_class: dict[int, list[np.ndarray]] = {}
            for ann, mask in val.instance_masks(image.id):
                if ann.get("iscrowd", 0):
                    continue
                y, x = np.argwhere(mask)[0]
                points.append({"image_id": image.id, "annotation_id": ann["id"], "category_id": ann["category_id"],
                               "isthing": 1, "x": int(x), "y": int(y)})
                singles.append((image.id, mask, ann["category_id"]))
                by_class.setdefault(ann["category_id"], []).append(mask)
            pairs = [(c, m) for c, m in by_class.items() if len(m) >= 2]
            if merged is None and pairs:
                merged = (image.id, pairs[0][1][0] | pairs[0][1][1], pairs[0][0])
        assert merged is not None, "the smoke val split needs an image with two instances of one class"
        other = next(c for c in val.dataset.thing_ids if c != singles[0][2])
        wrong_class = (singles[0][0], singles[0][1], other)
        write_json(Path("data/points/voc") / f"{val.name}_center.json", {"points": points})
        source = Path("runs/voc/src/points/seed0")
        source.mkdir(parents=True)
        write_json(source / "run.json", {"val_split": val.name, "points_mode": "center"})
        predictions = [merged, wrong_class, *singles]
        records = []
        for image_id, mask, category in predictions:
            records += instance_records(image_id, [mask], [category], [0.5])
        write_json(source / "val_instances.json", records)
    finally:
        os.chdir(cwd)
    return root, len(singles)


def _filter(*extra: str) -> int:
    return main(["point-filter", "--dataset", "voc", "--seed", "0", *extra])


def test_the_command_keeps_each_single_instance_and_drops_merged_and_mislabelled_masks(workspace, monkeypatch):
    root, singles = workspace
    monkeypatch.chdir(root)
    assert _filter("--source", "src/points", "--row", "src/one-point") == 0
    source = read_json(Path("runs/voc/src/points/seed0/val_instances.json"))
    kept = read_json(Path("runs/voc/src/one-point/seed0/val_instances.json"))
    assert kept == source[2:]  # the merged pair (record 0) and the mislabelled instance (record 1) are dropped
    info = read_json(Path("runs/voc/src/one-point/seed0/run.json"))
    assert info["val_instances_held_points"] == {"none": 1, "one": singles, "several": 1}
    assert info["points_file"] == "data/points/voc/val_center.json"


def test_a_source_without_a_point_mode_or_with_a_bad_record_stops_and_writes_nothing(workspace, monkeypatch, capsys):
    root, _ = workspace
    monkeypatch.chdir(root)
    bare = Path("runs/voc/src/bare/seed0")
    bare.mkdir(parents=True, exist_ok=True)
    write_json(bare / "run.json", {"val_split": "val"})
    assert _filter("--source", "src/bare", "--row", "src/bare-one-point") == 2
    assert "runs/voc/src/bare/seed0/run.json: no 'points_mode'" in capsys.readouterr().err
    broken = Path("runs/voc/src/broken/seed0")
    broken.mkdir(parents=True, exist_ok=True)
    write_json(broken / "run.json", read_json(Path("runs/voc/src/points/seed0/run.json")))
    records = read_json(Path("runs/voc/src/points/seed0/val_instances.json"))
    write_json(broken / "val_instances.json", [*records[:3], dict(records[3], category_id=999)])
    assert _filter("--source", "src/broken", "--row", "src/broken-one-point") == 2
    assert "runs/voc/src/broken/seed0/val_instances.json: record 3" in capsys.readouterr().err
    assert not Path("runs/voc/src/bare-one-point").exists() and not Path("runs/voc/src/broken-one-point").exists()

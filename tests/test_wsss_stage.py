"""The wsss stage: oracle maps are the ground truth; external maps are validated; cam / pam write maps + peaks."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from bench.commands.wsss import VARIANTS, WsssJob, validate_external_maps
from datasets.canonical import CanonicalDataset
from datasets.errors import DatasetError
from datasets.voc import load_voc
from fixtures.official import voc_fixture, write_voc


@pytest.fixture
def train_split(tmp_path):
    raw = tmp_path / "raw"
    write_voc(raw, *voc_fixture())
    load_voc(root=raw, out=tmp_path / "canonical", splits=("train", "val"), progress=False)
    return CanonicalDataset(tmp_path / "canonical").split("train")


def _build(name: str, split, out: Path, external_dir=None) -> None:
    dataset = split.dataset
    job = WsssJob("voc", dataset, split, dataset.split("val"), out, SimpleNamespace(external_dir=external_dir), 0,
                  None)
    out.mkdir()
    VARIANTS.get(name).build(job, {})


def _write_maps(folder: Path, split, value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image in split.images:
        Image.fromarray(np.full((image.height, image.width), value, np.uint8), mode="L").save(
            folder / f"{image.stem}.png")


def test_oracle_maps_are_the_ground_truth(train_split, tmp_path):
    _build("oracle", train_split, tmp_path / "out")
    for image in train_split.images:
        got = np.asarray(Image.open(tmp_path / "out" / "train_semantic" / f"{image.stem}.png"))
        assert np.array_equal(got, train_split.semantic(image.id))


def test_external_maps_are_copied_when_valid_and_val_maps_are_optional(train_split, tmp_path):
    _write_maps(tmp_path / "maps", train_split, value=255)
    _build("external", train_split, tmp_path / "out", external_dir=str(tmp_path / "maps"))
    written = sorted(p.name for p in (tmp_path / "out" / "train_semantic").iterdir())
    assert written == sorted(f"{i.stem}.png" for i in train_split.images)
    assert not (tmp_path / "out" / "val_semantic").exists()


def test_a_missing_map_is_named(train_split, tmp_path):
    _write_maps(tmp_path / "maps", train_split)
    (tmp_path / "maps" / "2007_000003.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 train images have no map, e\.g\. \['2007_000003.png'\]"):
        validate_external_maps(train_split, tmp_path / "maps")


def test_a_map_for_no_image_is_named(train_split, tmp_path):
    _write_maps(tmp_path / "maps", train_split)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "maps" / "stray.png")
    with pytest.raises(DatasetError, match="stray.png"):
        validate_external_maps(train_split, tmp_path / "maps")


def test_a_map_of_the_wrong_size_names_file_and_image(train_split, tmp_path):
    _write_maps(tmp_path / "maps", train_split)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "maps" / "2007_000001.png")
    with pytest.raises(DatasetError, match=r"2007_000001.png.*3x3 \(WxH\), image is 8x6"):
        validate_external_maps(train_split, tmp_path / "maps")


def test_values_outside_the_semantic_indices_are_rejected(train_split, tmp_path):
    _write_maps(tmp_path / "maps", train_split, value=21)  # VOC: indices 0..20, then 255
    with pytest.raises(DatasetError, match=r"values \[21\] are neither semantic indices 0\.\.20 nor 255"):
        validate_external_maps(train_split, tmp_path / "maps")


def test_external_without_a_folder_says_which_param_to_set(train_split, tmp_path):
    with pytest.raises(ValueError, match="wsss.external_dir"):
        _build("external", train_split, tmp_path / "out")


# ------------------------------------------------------------------ cam / pam (image-level)

class _Run:
    """Collects what a variant logs (the stage's MLflow run in production)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)


def _build_cam(name: str, split, out: Path, **cam) -> WsssJob:
    from bench.config.schema import WsssCamParams

    dataset = split.dataset
    fast = dict(iterations=2, batch_size=2, input_size=16, feature_index=1, extra_channels=8)
    job = WsssJob("voc", dataset, split, dataset.split("val"), out,
                  SimpleNamespace(cam=WsssCamParams(**{**fast, **cam})), 0, _Run())
    out.mkdir()
    VARIANTS.get(name).build(job, VARIANTS.get(name).options)
    return job


def test_image_labels_are_the_thing_classes_present(train_split):
    from bench.commands.wsss import image_label_matrix

    things = train_split.dataset.thing_ids
    labels = image_label_matrix(train_split, things)
    person, dog = things.index(15), things.index(12)  # VOC ids: person 15, dog 12 (difficult still counts)
    assert labels.shape == (2, 20)
    assert np.flatnonzero(labels[0]).tolist() == sorted([person, dog])
    assert labels[1].sum() == 0  # 2007_000003: background only; the stuff class is not a label


def test_background_is_the_single_stuff_class_else_ignore(train_split):
    from bench.commands.wsss import background_index

    assert background_index(train_split.dataset) == 0  # VOC: background
    coco_like = SimpleNamespace(stuff_ids=[92, 93], semantic_index=lambda c: c - 92)
    assert background_index(coco_like) == 255  # several stuff classes: a thing classifier cannot name them


def test_peak_records_are_gt_points_records_plus_score_and_read_by_the_same_reader(train_split, tmp_path):
    from bench.commands.points import write_points
    from bench.commands.wsss import peak_point_records
    from methods.wsss.peaks import Peak
    from methods.wsss.point_train import point_label_maps

    write_points(train_split, tmp_path / "gt.json", mode="center", seed=0, count=1)
    gt = json.loads((tmp_path / "gt.json").read_text())
    things = train_split.dataset.thing_ids
    first = train_split.images[0].id
    records = peak_point_records(train_split, {first: [Peak(things.index(15), 2, 1, 0.9)]}, things)
    assert set(records[0]) == set(gt["points"][0]) | {"score"}
    assert records[0] == {"id": 1, "image_id": first, "annotation_id": None, "point_index": 0, "category_id": 15,
                          "isthing": 1, "x": 2, "y": 1, "score": 0.9}
    maps = point_label_maps({"points": records}, train_split, train_split.dataset)
    assert maps[first][1, 2] == train_split.dataset.semantic_index(15)


def test_peak_quality_counts_peaks_on_an_instance_of_their_class(train_split):
    from bench.commands.wsss import peak_quality

    first = train_split.images[0].id
    on_person = {"image_id": first, "category_id": 15, "x": 2, "y": 1}
    wrong_class = {"image_id": first, "category_id": 12, "x": 3, "y": 2}  # dog peak on the person
    q = peak_quality(train_split, [on_person, on_person, wrong_class])
    assert q["n_peaks"] == 3 and q["gt_instances"] == 2
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == 0.5 and q["duplicates"] == 1


@pytest.mark.parametrize("name", ["cam", "pam"])
def test_cam_variants_write_train_and_val_maps_and_the_peak_file(name, train_split, tmp_path):
    job = _build_cam(name, train_split, tmp_path / "out", peak_threshold=0.0)
    out = tmp_path / "out"
    for split, folder in ((train_split, "train_semantic"), (job.val, "val_semantic")):
        for image in split.images:
            sem = np.asarray(Image.open(out / folder / f"{image.stem}.png"))
            assert sem.shape == (image.height, image.width)
            assert set(np.unique(sem).tolist()) <= {0, 12, 15, 8}  # background + the labelled classes only
    peaks = json.loads((out / "train_peaks.json").read_text())
    assert peaks["info"]["mode"] == f"{name}-peaks" and peaks["info"]["split"] == "train"
    assert all(p["category_id"] in (12, 15) and p["image_id"] == train_split.images[0].id for p in peaks["points"])
    assert job.info["config"]["use_pam"] is (name == "pam")
    assert job.info["peaks"]["n_peaks"] == len(peaks["points"])
    assert "train.loss" in job.run.metrics and "peaks.precision" in job.run.metrics


@pytest.mark.parametrize("name, expected", [("pam-alpha-0.3", {"pam_alpha": 0.3, "pam_layers": [-1]}),
                                            ("pam-alpha-0.5", {"pam_alpha": 0.5, "pam_layers": [-1]}),
                                            ("pam-l4", {"pam_alpha": 0.7, "pam_layers": [1]}),
                                            ("pam-l5", {"pam_alpha": 0.7, "pam_layers": [2]}),
                                            ("pam-l4-l5", {"pam_alpha": 0.7, "pam_layers": [1, 2]}),
                                            ("pam-l5-l6", {"pam_alpha": 0.7, "pam_layers": [2, 3]}),
                                            ("pam-l4-l5-l6", {"pam_alpha": 0.7, "pam_layers": [1, 2, 3]}),
                                            ("pam-l4-l6", {"pam_alpha": 0.7, "pam_layers": [1, 3]})])
def test_bestie_table7_and_8_variants_override_alpha_or_pam_layers(name, expected, train_split, tmp_path):
    # params say α 0.7 on the last layer only; the variant's option wins, the rest stays the params'
    job = _build_cam(name, train_split, tmp_path / "out", pam_alpha=0.7, pam_layers=[-1], peak_threshold=0.0)
    config = job.info["config"]
    assert config["use_pam"] is True and {k: config[k] for k in expected} == expected
    assert config["extra_channels"] == 8 and (tmp_path / "out" / "train_peaks.json").is_file()

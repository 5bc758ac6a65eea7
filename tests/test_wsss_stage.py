"""The wsss stage's non-learned modes: oracle maps are the ground truth; external maps are validated."""

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
        Image.fromarray(np.full((image.height, image.width), value, np.uint8), mode="L").save(folder / f"{image.stem}.png")


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

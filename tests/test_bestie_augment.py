"""The release's augmentation: photometric distortion, discrete random scale, random padding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from method_configs import bestie_config
from methods.bestie.augment import Distortion, distort, sample_distortion, sample_scale
from methods.bestie.train import Sample, _augment, build_pseudo_targets


def _pixels(*rgb: tuple[int, int, int]) -> np.ndarray:
    return np.array([rgb], dtype=np.uint8)


def test_brightness_adds_to_every_channel_and_clips_at_255() -> None:
    out = distort(_pixels((10, 250, 100)), Distortion(brightness=10.0))
    assert out.tolist() == [[[20, 255, 110]]]


def test_contrast_multiplies_every_channel_and_clips() -> None:
    assert distort(_pixels((100, 40, 2)), Distortion(contrast=0.5)).tolist() == [[[50, 20, 1]]]
    assert distort(_pixels((200, 100, 0)), Distortion(contrast=1.5)).tolist() == [[[255, 150, 0]]]


def test_a_hue_shift_of_120_degrees_turns_red_into_green_and_back_wraps_to_blue() -> None:
    red = _pixels((255, 0, 0))
    assert distort(red, Distortion(hue=120.0)).tolist() == [[[0, 255, 0]]]
    assert distort(red, Distortion(hue=-120.0)).tolist() == [[[0, 0, 255]]]


def test_contrast_after_the_hue_shift_scales_the_shifted_colour() -> None:
    red = _pixels((200, 0, 0))
    assert distort(red, Distortion(hue=120.0, contrast=0.5, contrast_first=False)).tolist() == [[[0, 100, 0]]]
    assert distort(red, Distortion(hue=120.0, contrast=0.5, contrast_first=True)).tolist() == [[[0, 100, 0]]]


def test_grey_stays_grey_under_every_sampled_distortion() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(np.arange(0, 256, 5, dtype=np.uint8)[:, None], 3, axis=1)[None]
    for _ in range(50):
        out = distort(grey, sample_distortion(rng)).astype(int)
        assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 1] - out[..., 2]).max() <= 1


def test_each_operation_fires_half_the_time_within_the_release_ranges() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_distortion(rng) for _ in range(4000)]
    for name, (lo, hi) in {"brightness": (-16, 16), "contrast": (0.5, 1.5), "hue": (-36, 36)}.items():
        values = [getattr(d, name) for d in draws if getattr(d, name) is not None]
        assert 0.46 < len(values) / len(draws) < 0.54, name
        assert lo <= min(values) and max(values) <= hi, name
    assert 0.46 < np.mean([d.contrast_first for d in draws]) < 0.54


def test_the_random_scale_is_one_of_the_seven_release_steps() -> None:
    rng = np.random.default_rng(0)
    scales = {round(sample_scale(0.7, 1.3, 0.1, rng), 6) for _ in range(500)}
    assert scales == {0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3}


def test_step_zero_draws_uniformly_and_equal_bounds_give_that_scale() -> None:
    rng = np.random.default_rng(0)
    scales = [sample_scale(0.7, 1.3, 0.0, rng) for _ in range(200)]
    assert len(set(scales)) == 200 and 0.7 <= min(scales) and max(scales) < 1.3
    assert sample_scale(1.0, 1.0, 0.1, rng) == 1.0


@pytest.fixture()
def small_sample() -> Sample:
    """An 8×8 image, grey 50 with one white pixel at (2, 3); class 1 on rows 1–3, cols 2–4; its point at (2, 3)."""
    image = np.full((8, 8, 3), 50, np.uint8)
    image[2, 3] = 255
    semantic = np.zeros((8, 8), np.uint8)
    semantic[1:4, 2:5] = 1
    targets, _ = build_pseudo_targets(semantic, np.array([[2, 3]]), np.array([1]),
                                      bestie_config(min_area=1, flip_tta=False))
    return Sample(image, semantic, targets)


def test_padding_to_the_crop_falls_on_random_sides_and_the_point_follows_the_image(small_sample: Sample) -> None:
    config = bestie_config(flip_tta=False, crop_size=12, scale_range=(1.0, 1.0), hflip=False,
                           photometric_distort=False, min_area=1)
    offsets = set()
    for seed in range(20):
        aug = _augment(small_sample, config, np.random.default_rng(seed))
        (y,), (x,) = np.nonzero(aug.image[..., 0] == 255)
        assert aug.cues.tolist() == [[y, x]]
        top, left = y - 2, x - 3
        offsets.add((top, left))
        assert np.array_equal(aug.semantic[top:top + 8, left:left + 8], small_sample.semantic)
        assert aug.semantic.sum() == small_sample.semantic.sum()  # the padding is background (0)
        assert (aug.instance_map > 0).sum() == 9
    assert len(offsets) > 5


def test_without_photometric_distortion_the_image_keeps_its_colours(small_sample: Sample) -> None:
    config = bestie_config(flip_tta=False, crop_size=8, scale_range=(1.0, 1.0), hflip=False,
                           photometric_distort=False, min_area=1)
    aug = _augment(small_sample, config, np.random.default_rng(0))
    assert np.array_equal(aug.image, small_sample.image)
    distorted = [_augment(small_sample, replace(config, photometric_distort=True), np.random.default_rng(s)).image
                 for s in range(10)]
    assert any(not np.array_equal(d, small_sample.image) for d in distorted)

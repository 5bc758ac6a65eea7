"""The head-fit probe of ``bench.benchmarks.bench_bestie_schedule`` on hand-made network outputs."""

from __future__ import annotations

import numpy as np
import pytest

import methods.bestie.train as bestie_train
from bench.benchmarks.bench_bestie_schedule import head_fit
from methods.bestie.train import Sample, targets_from_instances
from methods.bestie.transfer import offset_field

THINGS = [1, 2]


def _sample() -> Sample:
    """One 9×9 image with a 3×3 instance of class 2 centred at (4, 4) and its GT point there."""
    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True
    targets = targets_from_instances((9, 9), [mask], [(4.0, 4.0)], [2], np.array([[4, 4]]), np.array([2]))
    return Sample(np.zeros((9, 9, 3), np.uint8), mask.astype(np.uint8) * 2, targets)


def _fit(monkeypatch: pytest.MonkeyPatch, offset: np.ndarray, centre_at_point: float) -> dict[str, float]:
    centre = np.zeros((len(THINGS), 9, 9), np.float32)
    centre[THINGS.index(2), 4, 4] = centre_at_point
    outputs = {"prob": np.zeros((3, 9, 9), np.float32), "center": centre, "offset": offset}
    monkeypatch.setattr(bestie_train, "predict_outputs", lambda model, images, **kw: [outputs for _ in images])
    return head_fit(model=None, samples=[_sample()], things=THINGS, threshold=0.1)


def test_perfect_offsets_have_zero_error_and_cosine_one(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _sample()
    fit = _fit(monkeypatch, offset_field(s.targets.instance_map, s.targets.centers), 0.5)
    # 3×3 box around its centre: eight pixels at |dy| + |dx| of 1, 1, 1, 1, 2, 2, 2, 2 and the centre at 0
    assert fit["target"] == pytest.approx(12 / 9)
    assert fit["pred"] == pytest.approx(12 / 9)
    assert fit["l1"] == pytest.approx(0.0)
    # the centre pixel's zero vector counts as cosine 0 (undefined direction), the other eight as 1
    assert fit["cosine"] == pytest.approx(8 / 9)
    assert fit["centre_median"] == pytest.approx(0.5) and fit["centre_share"] == 1.0


def test_zero_offsets_cost_the_targets_length_and_a_low_centre_is_below_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fit = _fit(monkeypatch, np.zeros((2, 9, 9), np.float32), 0.05)
    assert fit["pred"] == 0.0
    assert fit["l1"] == pytest.approx(12 / 9)
    assert fit["cosine"] == 0.0
    assert fit["centre_median"] == pytest.approx(0.05) and fit["centre_share"] == 0.0


def test_reversed_offsets_have_cosine_minus_one_on_every_off_centre_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _sample()
    fit = _fit(monkeypatch, -offset_field(s.targets.instance_map, s.targets.centers), 0.5)
    assert fit["cosine"] == pytest.approx(-8 / 9)
    assert fit["l1"] == pytest.approx(2 * 12 / 9)

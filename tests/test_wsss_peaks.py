"""BESTIE peak extraction from CAMs: NMS window, top-k, threshold, plateaus, helpers."""

import numpy as np
import pytest
import torch

from methods.wsss.peaks import Peak, extract_peaks, flip_average, local_maxima, normalize_cam


def _gauss(h, w, cx, cy, sigma, amp=1.0):
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return amp * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))


def test_two_gaussians_give_two_peaks_at_their_centres():
    cam = torch.zeros(3, 64, 80)
    cam[1] = _gauss(64, 80, 20, 30, 4) + _gauss(64, 80, 60, 12, 5, amp=0.8)
    peaks = extract_peaks(cam)
    assert [(p.cls, p.x, p.y) for p in peaks] == [(1, 20, 30), (1, 60, 12)]  # score order
    assert peaks[0].score > peaks[1].score > 0.5
    assert isinstance(peaks[0], Peak) and peaks[0].score == pytest.approx(1.0, abs=0.05)  # 3x3 mean


def test_peaks_closer_than_the_nms_window_merge():
    cam = (_gauss(40, 40, 15, 20, 2) + _gauss(40, 40, 21, 20, 2, amp=0.9))[None]
    # 6 px apart: inside a 15x15 window only the higher survives; a 5x5 window keeps both
    assert [(p.x, p.y) for p in extract_peaks(cam, kernel=15)] == [(15, 20)]
    assert [(p.x, p.y) for p in extract_peaks(cam, kernel=5)] == [(15, 20), (21, 20)]


def test_threshold_is_strict_and_top_k_keeps_the_highest():
    cam = torch.zeros(1, 20, 60)
    for i, amp in enumerate([0.5, 0.6, 0.7, 0.8, 0.9]):
        cam[0, 10, 5 + 12 * i] = amp  # isolated single-pixel maxima
    got = extract_peaks(cam, threshold=0.5, smooth_kernel=None)
    assert [p.score for p in got] == pytest.approx([0.9, 0.8, 0.7, 0.6])  # 0.5 is not > 0.5
    top2 = extract_peaks(cam, threshold=0.5, top_k=2, smooth_kernel=None)
    assert [(p.x, p.score) for p in top2] == [(53, pytest.approx(0.9)), (41, pytest.approx(0.8))]
    # the release's training threshold
    assert len(extract_peaks(cam, threshold=0.7, smooth_kernel=None)) == 2


def test_plateau_pixels_are_all_peaks_in_raster_order():
    cam = torch.zeros(1, 10, 10)
    cam[0, 4:6, 6:8] = 1.0  # a flat 2x2 top: every pixel equals its window max
    got = extract_peaks(cam, smooth_kernel=None)
    assert [(p.x, p.y) for p in got] == [(6, 4), (7, 4), (6, 5), (7, 5)]
    assert [(p.x, p.y) for p in extract_peaks(cam, top_k=1, smooth_kernel=None)] == [(6, 4)]


def test_border_maxima_count_and_classes_filter_channels():
    cam = torch.zeros(2, 12, 12)
    cam[0, 0, 11] = 0.9
    cam[1, 6, 6] = 0.9
    got = extract_peaks(cam, smooth_kernel=None)
    assert [(p.cls, p.x, p.y) for p in got] == [(0, 11, 0), (1, 6, 6)]
    assert [p.cls for p in extract_peaks(cam, smooth_kernel=None, classes=[1])] == [1]


def test_numpy_and_batched_inputs_are_accepted():
    cam = np.zeros((1, 2, 9, 9), np.float32)
    cam[0, 1, 4, 4] = 1.0
    assert extract_peaks(cam, smooth_kernel=None) == [Peak(1, 4, 4, 1.0)]


def test_default_smoothing_is_the_release_3x3_mean():
    cam = torch.zeros(1, 9, 9)
    cam[0, 4, 4] = 1.0  # a single spike is averaged to 1/9 and falls below the threshold
    assert extract_peaks(cam) == []
    assert extract_peaks(cam, threshold=0.1)[0].score == pytest.approx(1 / 9)


def test_local_maxima_map():
    cam = torch.tensor([[[0.0, 1.0, 0.0, 0.0, 2.0]]])
    assert local_maxima(cam, kernel=3).tolist() == [[[False, True, False, False, True]]]
    assert local_maxima(cam, kernel=7).tolist() == [[[False, False, False, False, True]]]  # window 7 reaches x=4


def test_normalize_and_flip_average():
    cam = torch.tensor([[[-1.0, 2.0, 4.0]], [[0.0, 0.0, 0.0]]])
    norm = normalize_cam(cam)
    assert torch.allclose(norm[0], torch.tensor([[0.0, 0.5, 1.0]]), atol=1e-5)
    assert torch.all(norm[1] == 0)
    cam_flipped_image = torch.tensor([[[3.0, 2.0, 1.0]]])  # the CAM of the mirrored image
    assert torch.equal(flip_average(torch.tensor([[[1.0, 2.0, 3.0]]]), cam_flipped_image),
                       torch.tensor([[[1.0, 2.0, 3.0]]]))

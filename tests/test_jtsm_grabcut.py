"""GrabCut re-estimation (Sec. 3.4) in its two modes, on a synthetic two-colour image."""

import numpy as np
import pytest

from methods.jtsm.grabcut import reestimate


def _image():
    img = np.zeros((60, 80, 3), np.uint8)
    img[:] = (0, 0, 255)
    img[20:40, 30:55] = (255, 0, 0)  # a red object on blue
    noise = np.random.default_rng(0).integers(-10, 10, img.shape)
    obj = np.zeros((60, 80), bool)
    obj[20:40, 30:55] = True
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8), obj


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_release_mode_cuts_the_object_out_of_its_rectangle():
    img, obj = _image()
    assert _iou(reestimate(img, (25, 15, 60, 45), mode="release"), obj) == 1.0


def test_paper_mode_keeps_the_top_proposal_as_firm_foreground():
    img, obj = _image()
    proposal = obj.copy()
    proposal[20:40, 26:30] = True  # the mined segment leaks into 4 blue columns
    paper = reestimate(img, (25, 15, 60, 45), proposal, mode="paper")
    release = reestimate(img, (25, 15, 60, 45), mode="release")
    assert paper[proposal].all()  # firm foreground stays
    assert not paper[:, :25].any() and not paper[:, 60:].any()  # outside the box: firm background
    assert _iou(paper, proposal) == 1.0 and not release[20:40, 26:30].any()


def test_paper_mode_grows_a_partial_proposal_to_the_object():
    img, obj = _image()
    proposal = np.zeros_like(obj)
    proposal[25:35, 35:45] = True  # the object's centre only
    assert _iou(reestimate(img, (25, 15, 60, 45), proposal, mode="paper"), obj) == 1.0


def test_degenerate_inputs():
    img, obj = _image()
    assert reestimate(img, (10, 10, 12, 14), mode="release").sum() == 8  # under 9 pixels: the box itself
    whole = reestimate(img, (0, 0, 80, 60), obj, mode="paper")  # no background sample: the proposal
    assert np.array_equal(whole, obj)
    with pytest.raises(ValueError, match="needs the proposal mask"):
        reestimate(img, (25, 15, 60, 45), mode="paper")
    with pytest.raises(ValueError, match="empty"):
        reestimate(img, (90, 10, 95, 20), mode="release")

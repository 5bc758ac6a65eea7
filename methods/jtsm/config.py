"""Every hyper-parameter of JTSM (paper 003, "Toward Joint Thing-and-Stuff Mining") in one frozen dataclass.

Plain scalars and tuples only, so the pipeline can expose it as a ``params.yaml`` section field by field.
Defaults are the paper's (Sec. 4.1); where the official release (shenyunhang/JTSM, project WSL) does
something else, a field selects which to follow and its doc names both (docs/jtsm.md, "Switches").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

__all__ = ["JtsmConfig", "Pooling", "Psi", "GrabCutMode", "RefineIoU"]

Pooling = Literal["moipool", "moipool-interp", "roipool", "roialign"]
Psi = Literal["paper", "release", "none"]
GrabCutMode = Literal["paper", "release"]
RefineIoU = Literal["box", "mask"]

_CHOICES = {
    "pooling": ("moipool", "moipool-interp", "roipool", "roialign"),
    "psi": ("paper", "release", "none"),
    "grabcut_mode": ("paper", "release"),
    "refine_iou": ("box", "mask"),
}


@dataclass(frozen=True)
class JtsmConfig:
    """JTSM's hyper-parameters (paper defaults; ``release`` = what the official code does instead)."""

    # --- segment proposals (Sec. 4.1: MCG, at most 4000 per image) -------------------------------------
    max_proposals: int = 4000
    """Proposals kept per image, best score first (paper 4000)."""

    # --- proposal pooling (Sec. 3.3, Table 1) --------------------------------------------------------
    pooling: Pooling = "moipool"
    """``moipool`` shape-invariant MoIPool (Eq. 5-8, the paper's default); ``moipool-interp`` the
    shape-interpolation variant (TPS warp of the mask to its box, then max pooling; not in the release);
    ``roipool`` / ``roialign`` torchvision's box poolers (Table 1 rows)."""
    pooled_size: int = 7
    """h^p = w^p, the pooled grid (paper and release 7)."""
    feature_stride: int = 8
    """s, the backbone stride the proposals are pooled at (release: ResNet-WS with dilated C5, stride 8)."""
    psi: Psi = "paper"
    """Compensation ψ of Eq. 7-8 (shape-invariant MoIPool only). ``paper``: h^p·w^p / number of bins that
    hold a valid cell (Eq. 7's Σ read over the pooled indicator); ``release``: h^p·w^p / (that number + 1);
    ``none``: ψ = 1."""
    score_scaling: bool = False
    """Release: multiply every pooled proposal feature by (proposal score + 1). The paper does not."""
    moipool_bin_samples: int = 0
    """Cells read per bin side. 0: every cell of every bin (Eq. 5 exactly, cost ∝ the largest bin);
    k > 0: at most k×k evenly spaced cells per bin (fixed cost per proposal, like RoIAlign's sampling)."""
    tps_control_points: int = 16
    """Shape-interpolation MoIPool: contour control points of the thin-plate spline (paper silent)."""
    tps_samples: int = 2
    """Shape-interpolation MoIPool: warped samples per bin side, max-pooled into each bin (paper silent)."""
    roialign_sampling_ratio: int = 2
    """RoIAlign's sampling points per bin side (the ``roialign`` row and the instance branch's input)."""

    # --- panoptic mining branch (Sec. 3.2) -----------------------------------------------------------
    fc_dim: int = 4096
    """Width of the two fully-connected layers after pooling (paper 4096)."""
    dropout: float = 0.5
    """Dropout after each of the two FC layers (paper 0.5)."""
    n_refine: int = 4
    """n^r, the OICR refinement heads of Eq. 4 (paper 4; Table 3 sweeps 0-5)."""
    refine_iou_threshold: float = 0.5
    """A proposal overlapping a pseudo ground truth by at least this IoU takes its class (OICR 0.5)."""
    refine_iou: RefineIoU = "box"
    """Overlap used by the refinement labels: ``box`` IoU (the paper's wording and the release) or the
    segments' ``mask`` IoU."""
    refine_stuff: bool = True
    """Refinement heads cover thing and stuff classes (paper). Release: thing classes only."""

    # --- segmentation refinement (Sec. 3.4) ----------------------------------------------------------
    grabcut_mode: GrabCutMode = "paper"
    """``paper``: the top proposal's pixels are firm foreground and outside its box firm background;
    ``release``: rectangle initialisation only."""
    grabcut_iterations: int = 5
    """GrabCut iterations (release 5; paper silent)."""
    mask_head_dim: int = 256
    """Channels of the instance branch's 4 convs and of the semantic branch's 2 convs (paper 256)."""
    mask_size: int = 28
    """Side of the instance branch's predicted mask (RoIAlign 14 → deconv ×2, Mask R-CNN)."""
    mask_boxes_per_image: int = 128
    """Proposals per image the instance branch trains on (IoU ≥ ``refine_iou_threshold`` with a thing
    pseudo ground truth, highest first); Mask R-CNN's 512 sampled RoIs × 0.25 foreground. Paper silent."""
    loss_instance: bool = True
    """Train the instance branch, L_IS of Eq. 9 (Table 2)."""
    loss_semantic: bool = True
    """Train the semantic branch, L_SS of Eq. 10 (Table 2)."""
    reestimate: bool = True
    """Re-estimate the mined masks with GrabCut before they supervise Eq. 9-10 (Table 2)."""

    # --- training and test (Sec. 4.1) ----------------------------------------------------------------
    lr: float = 0.01
    momentum: float = 0.9
    iterations: int = 100_000
    lr_step: int = 70_000
    batch_size: int = 4
    train_scales: tuple[int, ...] = tuple(range(480, 1217, 32))
    """Shorter-side training scales, one drawn per batch (paper: "480 to 1,216 with stride 32")."""
    train_flip: bool = True
    """Random horizontal flip of each training image (p = 0.5; the release's detectron2 default)."""
    test_scales: tuple[int, ...] = (480, 576, 688, 864, 1200)
    """Shorter-side test scales, each also flipped (paper); scores are averaged."""
    test_flip: bool = True
    nms_threshold: float = 0.5
    """Per-class NMS of the detections (paper 0.5; release 0.3)."""
    panoptic_overlap: float = 0.5
    """A thing segment is dropped when less than this fraction of it stays visible in the panoptic merge."""
    panoptic_score_threshold: float = 0.05
    """Thing segments below this score do not enter the panoptic merge."""
    stuff_area_limit: int = 64
    """Stuff regions of fewer pixels are left void in the panoptic merge."""

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"jtsm.{name}: {getattr(self, name)!r} is not one of {allowed}")
        positive = ("max_proposals", "pooled_size", "feature_stride", "tps_control_points", "tps_samples",
                    "roialign_sampling_ratio", "fc_dim", "grabcut_iterations", "mask_head_dim", "mask_size", "mask_boxes_per_image",
                    "iterations", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"jtsm.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_refine", "moipool_bin_samples", "lr_step", "stuff_area_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"jtsm.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("dropout", "refine_iou_threshold", "panoptic_overlap", "panoptic_score_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"jtsm.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.tps_control_points < 4:
            raise ValueError("jtsm.tps_control_points must be >= 4")
        for name in ("train_scales", "test_scales"):
            if not getattr(self, name) or any(s < 1 for s in getattr(self, name)):
                raise ValueError(f"jtsm.{name} must be positive sizes, got {getattr(self, name)}")

    @classmethod
    def release(cls, **overrides: object) -> JtsmConfig:
        """The official release's behaviour wherever it differs from the paper."""
        values: dict[str, object] = dict(psi="release", score_scaling=True, refine_stuff=False,
                                         grabcut_mode="release", nms_threshold=0.3)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        """Field name → value (tuples as lists), the shape of a params section."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

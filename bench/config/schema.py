"""The schema of ``params.yaml``: one section per concern, unknown keys rejected, ranges checked.

Defaults here are the embedded profile (synthetic data, CPU, minutes). Paper profiles
(``configs/profiles/voc.yaml``, ``coco.yaml``) override them. Where a paper and its
official release disagree, a parameter selects which one to follow (paper by default).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Ratio = Annotated[float, Field(gt=0.0, le=1.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data
class DatasetSlot(Section):
    """One benchmark slot: ``voc`` (VOC-like instance data) or ``coco`` (COCO-like panoptic data)."""

    source: str = Field(description="dataset source: synth-voc | synth-coco | voc-sbd | coco")
    root: str | None = Field(default=None, description="raw dataset folder for real sources (VOCdevkit/.. or coco/)")
    train_split: str = Field(default="train", description="split used for training (VOC + SBD: train_aug)")
    val_split: str = Field(default="val", description="split used for evaluation")
    synthetic: dict[str, Any] = Field(default_factory=dict, description="generator params for synthetic sources")

    @model_validator(mode="after")
    def _synthetic_params_valid(self) -> "DatasetSlot":
        """Generator params are checked here, at params load, not when the generator starts."""
        from datasets.synthetic import PRESETS, make_params

        if self.source in PRESETS:
            make_params(self.source, **self.synthetic)  # raises ValueError naming the bad key
        elif self.synthetic:
            raise ValueError(f"'synthetic' params are only for synthetic sources ({', '.join(sorted(PRESETS))})")
        return self


class DataParams(Section):
    voc: DatasetSlot = DatasetSlot(
        source="synth-voc",
        train_split="train_aug",
        synthetic={"image_size": [128, 128], "num_train": 160, "num_val": 80, "num_sbd_only": 100,
                   "num_thing_classes": 6, "seed": 0},
    )
    coco: DatasetSlot = DatasetSlot(
        source="synth-coco",
        synthetic={"image_size": [128, 128], "num_train": 240, "num_val": 80, "num_thing_classes": 10,
                   "num_stuff_classes": 4, "seed": 1},
    )


# ------------------------------------------------------------------------- points
class PointsParams(Section):
    seed: int = Field(default=0, ge=0, description="points depend only on (seed, image id, annotation id)")
    modes: list[Literal["uniform", "center", "p10"]] = Field(
        default=["uniform", "center", "p10"], min_length=1, description="point files to write"
    )
    p10_count: int = Field(default=10, ge=1, le=100, description="points per target in p10 mode")


# --------------------------------------------------------------------------- wsss
class WsssPointsParams(Section):
    """Point-supervised semantic maps (Point2Mask's category-wise map, Eq. 5)."""

    point_mode: Literal["uniform", "center", "p10"] = Field(default="uniform", description="points file used")
    iterations: int = Field(default=200, ge=1, description="optimizer steps (docs/wsss.md measured 200)")
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0, description="AdamW lr (paper 1e-4 with ImageNet weights; from scratch here)")
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW weight decay (paper, VOC: 0.1)")
    alpha_lab: float = Field(default=3.0, ge=0, description="alpha_1 of Eq. 5 (paper: 3)")
    alpha_rgb: float = Field(default=3.0, ge=0, description="alpha_2 of Eq. 5 (paper: 3)")
    point_square: int = Field(default=5, ge=1, description="side of the square a point is expanded to (odd)")
    loss_stride: int = Field(default=2, ge=1, description="losses on the map downsampled by this factor")
    backbone: str = Field(default="resnet18", description="timm backbone (no pretrained weights)")
    rgb_sigma: float = Field(default=0.02, gt=0, description="tree-filter sigma of L_RGB (paper: 0.02)")
    rgb_guide_normalized: bool = Field(
        default=True, description="MST on the mean/std-normalised image",
        json_schema_extra={"switch": "release: normalised image (the paper does not say); false = [0, 1] colours"},
    )
    rgb_mask_numerator: bool = Field(
        default=True, description="L_RGB numerator over unlabelled pixels only",
        json_schema_extra={"switch": "true: mean over unlabelled pixels (TEL); false: Point2Mask release's "
                                     "numerator over all pixels"},
    )


class WsssParams(Section):
    method: Literal["oracle", "external", "points-partial", "points-partial-lab", "points-partial-rgb",
                    "points-all"] = Field(default="oracle", description="how the train semantic maps are made")
    external_dir: str | None = Field(default=None, description="folder of <stem>.png maps for method=external")
    points: WsssPointsParams = WsssPointsParams()


# --------------------------------------------------------------------- methods
class BestieParams(Section):
    """BESTIE (filled when the method lands; section name fixed)."""


class MdmParams(Section):
    """P2Seg's Mutual Distillation Module."""

    hard_pixel_ratio: Ratio = Field(
        default=0.2, description="fraction of highest-loss pixels kept in the segmentation CE (paper: 0.2)"
    )


class Point2MaskParams(Section):
    """Point2Mask (filled when the method lands; section name fixed)."""


class JtsmParams(Section):
    """JTSM (filled when the method lands; section name fixed)."""


class SegmentorParams(Section):
    """Segmentor fine-tuning (filled when the stage lands; section name fixed)."""


# --------------------------------------------------------------------------- eval
class EvalParams(Section):
    voc_iou_thresholds: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default=[0.25, 0.5, 0.7, 0.75], min_length=1, description="IoU thresholds of the VOC instance mAP"
    )
    coco_iou_types: list[Literal["segm", "bbox"]] = Field(default=["segm", "bbox"], min_length=1)
    workers: int = Field(default=2, ge=1, le=64, description="processes for PQ / IoU computation")


# ----------------------------------------------------------------------- tracking
class TrackingParams(Section):
    enabled: bool = Field(default=True, description="log stage runs to MLflow")
    experiment_prefix: str = Field(default="wsis-bench", min_length=1, description="MLflow experiment = prefix/profile")
    overlays: int = Field(default=4, ge=0, le=64, description="prediction overlay PNGs logged per evaluation")


# ------------------------------------------------------------------------- report
class ReportParams(Section):
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default=[0], min_length=1, description="seeds each trained row runs with (mean ± std over them)"
    )
    decimals: int = Field(default=1, ge=0, le=4, description="decimals printed in tables")


class Params(Section):
    profile: Literal["embedded", "smoke", "voc", "coco"] = "embedded"
    data: DataParams = DataParams()
    points: PointsParams = PointsParams()
    wsss: WsssParams = WsssParams()
    bestie: BestieParams = BestieParams()
    mdm: MdmParams = MdmParams()
    point2mask: Point2MaskParams = Point2MaskParams()
    jtsm: JtsmParams = JtsmParams()
    segmentor: SegmentorParams = SegmentorParams()
    eval: EvalParams = EvalParams()
    tracking: TrackingParams = TrackingParams()
    report: ReportParams = ReportParams()

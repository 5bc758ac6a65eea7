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
#: BESTIE / P2Seg decoders (methods.bestie.model.DECODERS; a test checks the two lists agree).
Decoder = Literal["fuse", "panoptic-deeplab"]


#: Where a method's backbone starts (``bestie.backbone_init``, ``mdm.backbone_init``, ``mdm.resnet_backbone_init``).
BackboneInit = Annotated[str, Field(
    min_length=1, description="scratch: random weights; pretrain: the pretrain stage's classification weights of "
                              "the backbone for the slot, runs/<slot>/pretrain/<backbone>.pt (the synthetic profiles' "
                              "stand-in for ImageNet weights; the backbone must be in pretrain.backbones); any other "
                              "value: a folder holding <backbone>.pt checkpoints of the timm backbones (e.g. ImageNet "
                              "weights for the paper profiles)")]


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
    pairwise_warmup: Probability = Field(
        default=0.5, description="fraction of the iterations over which alpha_1 and alpha_2 ramp up linearly from 0",
        json_schema_extra={"switch": "paper: constant alpha (0) with an ImageNet-initialised network; 0.5 here, "
                                     "where the network starts from random weights (BoxInst's warm-up of its "
                                     "pairwise term; docs/wsss.md: without it +LAB collapses)"},
    )
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


class WsssCamParams(Section):
    """Image-level maps and instance cues: CAM / PAM classifier (BESTIE Sec. 3.1, appendix; modes cam, pam)."""

    iterations: int = Field(default=150, ge=1, description="optimizer steps (release: 15 epochs of batch 5)")
    batch_size: int = Field(default=16, ge=1, description="images per step (release: 5)")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="optimizer",
        json_schema_extra={"switch": "sgd: the paper's SGD (momentum 0.9, extra layers 10x lr, lr x0.1 after 1/3 "
                                     "and 2/3 of the steps); adamw: constant lr, for from-scratch training here"},
    )
    lr: float = Field(default=1e-3, gt=0, description="base learning rate (paper: 0.001 with SGD)")
    weight_decay: float = Field(default=1e-4, ge=0, description="weight decay (paper: 0.0005)")
    backbone: str = Field(default="resnet18", description="timm backbone (no pretrained weights; release: VGG-16)")
    feature_index: int = Field(default=2, ge=0, le=5,
                               description="timm out_indices level fed to the extra convs (resnet18: 2 = layer2)")
    output_stride: Literal[8, 16] | None = Field(
        default=8, description="backbone output stride by dilation (release: 8); null = the backbone's own "
                               "(timm vgg16 cannot dilate; its feature_index 3 is at stride 8)")
    extra_convs: int = Field(default=3, ge=1, le=8, description="3x3 convs before the 1x1 classifier (release: 3)")
    extra_channels: int = Field(default=128, ge=1, description="width of the extra convs (release: 512)")
    input_size: int = Field(default=128, ge=16, description="images resized to this square (release: 321 crops)")
    pam_alpha: Probability = Field(default=0.7, description="PAM controller alpha (paper: 0.7; Table 7: 0.3-0.7)")
    pam_layers: list[int] = Field(
        default=[-1], min_length=1,
        description="mode pam: the extra convs followed by PAM, 1-based or from the end (-1 = the last); Table 8's "
                    "layer 4/5/6 = extra conv 1/2/3",
        json_schema_extra={"switch": "[-1]: last layer only (paper Table 8, best); [1, 2, 3]: all three extra "
                                     "convs (appendix Fig. 10 and the release)"},
    )
    bg_threshold: Probability = Field(default=0.25, description="background score of the CAM argmax")
    unsure_margin: Probability = Field(
        default=0.0, description="pixels whose top CAM is within this of bg_threshold are written 255 (0 = off)"
    )
    val_labels: Literal["ground-truth", "predicted"] = Field(
        default="ground-truth",
        description="classes kept in the val CAMs: the GT image labels (as for train) or sigmoid(logit) > 0.5",
    )
    peak_kernel: int = Field(default=15, ge=1, description="NMS window of the peak search, odd (paper: 15)")
    peak_top_k: int = Field(default=25, ge=1, description="peaks kept per class (release: 25)")
    peak_threshold: Probability = Field(
        default=0.5, description="peaks kept with normalised CAM score > this",
        json_schema_extra={"switch": "paper: 0.5; release: 0.7 (its training loader's filter)"},
    )
    smooth_kernel: int = Field(
        default=3, ge=1, description="mean filter before the peak search (release: 3; 1 = off; paper silent)"
    )

    @model_validator(mode="after")
    def _odd_kernels(self) -> "WsssCamParams":
        for name in ("peak_kernel", "smooth_kernel"):
            if getattr(self, name) % 2 != 1:
                raise ValueError(f"{name} must be odd, got {getattr(self, name)}")
        n = self.extra_convs
        positions = {k if k > 0 else n + 1 + k for k in self.pam_layers}
        if not all(1 <= abs(k) <= n for k in self.pam_layers) or len(positions) != len(self.pam_layers):
            raise ValueError(f"pam_layers {self.pam_layers} must list distinct extra convs, 1..{n} or -{n}..-1 "
                             f"(extra_convs = {n})")
        return self


class WsssParams(Section):
    method: Literal["oracle", "external", "points-partial", "points-partial-lab", "points-partial-rgb",
                    "points-all", "cam", "pam"] = Field(default="oracle",
                                                        description="how the train semantic maps are made")
    external_dir: str | None = Field(default=None, description="folder of <stem>.png maps for method=external")
    points: WsssPointsParams = WsssPointsParams()
    cam: WsssCamParams = WsssCamParams()


# --------------------------------------------------------------------- methods
class BestieParams(Section):
    """BESTIE (paper 002; docs/bestie.md). Embedded defaults: the paper's pixel sizes scaled by
    128 / 416 (the embedded images vs the paper's crops), a small network trained from scratch."""

    point_mode: Literal["uniform", "center", "p10"] = Field(
        default="center", description="points file of the point setting (BESTIE / P2Seg: centre points)")
    backbone: str = Field(default="regnetx_002", description="timm backbone (paper: hrnet_w48, ImageNet weights)")
    backbone_init: BackboneInit = "pretrain"
    out_indices: list[Annotated[int, Field(ge=0, le=5)]] = Field(
        default=[1, 2, 3], min_length=1, description="backbone levels fused at the finest (stride-4) level")
    decoder: Decoder = Field(
        default="fuse", description="fuse: every level resized to stride 4 and concatenated (release HRNet-W48 path); "
                                    "panoptic-deeplab: Panoptic-DeepLab's semantic + instance decoders "
                                    "(release ResNet path)")
    decoder_channels: int = Field(default=48, ge=8, description="fuse decoder width (release: 48-ch HRNet branches)")
    head_channels: int = Field(default=48, ge=8, description="hidden width of each head (release: 256); the "
                                                             "panoptic-deeplab decoder's widths scale with it")
    iterations: int = Field(default=200, ge=1, description="optimizer steps per training round")
    batch_size: int = Field(default=8, ge=1, description="images per step (paper 32, release 16)")
    lr: float = Field(default=1e-3, gt=0, description="Adam lr (paper 5e-5 with a pretrained HRNet; from scratch here)")
    weight_decay: float = Field(default=0.0, ge=0, description="Adam weight decay (release: 0)")
    warmup_iterations: int = Field(default=20, ge=0, description="linear warm-up steps (release: 2000)")
    warmup_factor: Ratio = Field(default=0.001, description="warm-up start lr factor (release: 0.001)")
    poly_power: float = Field(default=0.9, gt=0, description="poly LR power (paper and release: 0.9)")
    crop_size: int = Field(default=128, ge=16, description="random crop (paper 416)")
    scale_min: float = Field(default=0.7, gt=0, description="random scale lower bound (release: 0.7)")
    scale_max: float = Field(default=1.3, gt=0, description="random scale upper bound (release: 1.3)")
    scale_step: float = Field(default=0.1, ge=0, description="random scale drawn from scale_min..scale_max in "
                                                             "this step (release: 0.1); 0 = uniform")
    hflip: bool = Field(default=True, description="random horizontal flip (release)")
    photometric_distort: bool = Field(
        default=True, description="the release's photometric distortion of each training image (brightness ± 16, "
                                  "contrast × 0.5–1.5, hue ± 36°, each with p = 0.5)",
        json_schema_extra={"switch": "paper silent; release: PhotometricDistort in BESTIE's and P2Seg's training"})
    sigma: float = Field(default=2.0, gt=0, description="centre Gaussian sigma in px (paper 6 at 416 px)")
    min_area: int = Field(default=5, ge=1, description="components smaller than this are skipped (release: 50 px)")
    offset_target: Literal["centroid", "centroid-int", "point"] = Field(
        default="centroid", description="where a pseudo instance's offsets point",
        json_schema_extra={"switch": "paper: mask centroid (Sec. 3.3, Listing 4); release: int-truncated "
                                     "centroid (centroid-int); point: the annotated point / peak"})
    center_map_source: Literal["instances", "cues"] = Field(
        default="instances", description="image setting: pseudo centre map at the pseudo instances' centres or at "
                                         "every cue (the point setting always uses the GT point map, Sec. 4.3)",
        json_schema_extra={"switch": "paper: centroid of each pseudo instance (Sec. 3.3); release: the same "
                                     "(instances), at the int-truncated centroid with offset_target = "
                                     "centroid-int (pseudo_label_generation, sup = 'cls'); cues: a Gaussian at "
                                     "every cue (the release's point-setting map; neither in the image setting)"})
    iag: bool = Field(default=True, description="instance-aware guidance (Sec. 3.4); false: centre/offset losses "
                                                "on every pixel (Table 3/6 ablations)")
    refine: bool = Field(default=True, description="online self-refinement (Sec. 3.5)")
    refine_start: float = Field(
        default=0.0, ge=0, lt=1, description="fraction of the iterations before self-refinement starts",
        json_schema_extra={"switch": "paper silent ('as training progresses'); release: from the first step (0)"})
    refine_border_points: Literal["keep", "drop"] = Field(
        default="keep", description="point-setting self-refinement during training: every point of the crop, or "
                                    "none on row 0 or column 0 (the release's zero-padding sentinel); inference, "
                                    "export and the Fig. 6 labels always keep every point",
        json_schema_extra={"switch": "paper: the GT points (Sec. 4.3; keep); release: refine_label_generation_"
                                     "with_point skips gt_y == 0 or gt_x == 0 (drop)"})
    refine_threshold: Probability = Field(default=0.3, description="image-setting refinement centre threshold (0.3)")
    refine_max_per_component: int = Field(
        default=5, ge=1, description="image-setting refinement: a component with more centres is left unlabelled "
                                     "(release MAXIMUM_NUM_INST: 5)")
    refined_offset_target: Literal["centroid", "center"] = Field(
        default="centroid", description="refined offsets point to the grouped mask's centroid or to its centre",
        json_schema_extra={"switch": "paper: centroid of each grouped mask (Listing 5); release (center): the GT "
                                     "point the pixels were grouped to (point setting), the mask's centre-map "
                                     "maximum or, below the refinement threshold, the contour's int centroid "
                                     "(image setting)"})
    refined_center_loss: bool = Field(
        default=True, description="centre loss on the refined labels",
        json_schema_extra={"switch": "paper: refined centre map term (Eq. 3; GT centre map in the point setting); "
                                     "release (point setting): no refined centre loss (false)"})
    nms_kernel: int = Field(default=13, ge=1, description="centre NMS kernel, odd (paper/release 41 at 416 px)")
    infer_threshold: Probability = Field(default=0.1, description="inference centre threshold (release: 0.1)")
    score: Literal["center-class", "class"] = Field(
        default="center-class",
        description="confidence of an inferred instance: its centre score × its mean class probability (a clustered "
                    "centre counting as the mean class probability), or the mean class probability alone",
        json_schema_extra={"switch": "paper silent; release: centre score × mean class probability, get_ins_map "
                                     "(center-class); class: the score of its --val_clean point inference"})
    cluster: bool = Field(default=True, description="centre clustering (appendix; Table 3 'cluster')")
    cluster_magnitude: float = Field(default=2.5, gt=0, description="offset magnitude threshold of clustering (2.5)")
    cluster_area: int = Field(default=21, ge=1, description="expected cluster area (21 px for 2.5)")
    cluster_epsilon: int = Field(default=3, ge=0, description="cluster area tolerance (3)")
    cluster_bounds: Literal["inclusive", "strict"] = Field(
        default="inclusive", description="area within 21 ± 3 with bounds included or excluded",
        json_schema_extra={"switch": "paper: 'between 21 − ε and 21 + ε' (inclusive); release: strict"})
    cluster_center: Literal["centroid", "centroid-int"] = Field(
        default="centroid", description="a clustered centre: the cluster's centroid or its int truncation",
        json_schema_extra={"switch": "paper: the cluster's centroid (appendix); release: np.int32 of it "
                                     "(get_instance_segmentation; centroid-int)"})
    cluster_min_distance: float = Field(
        default=0.0, ge=0, description="clustered centres are added only farther than this (px) from every "
                                       "detected centre; 0 = always",
        json_schema_extra={"switch": "paper: every cluster complements the centres (0); release: only clusters "
                                     "> 100 px (at 416 px) from every detected peak"})
    export: Literal["network", "refined"] = Field(
        default="network", description="the train labels a finished run exports (train_pseudo.json: segmentor, "
                                       "next re-training round, Table 6): the network's inference with each "
                                       "image's weak labels, or the self-refinement's final labels",
        json_schema_extra={"switch": "paper: 'pseudo labels generated by our network' (Sec. 4.2, MRCNN "
                                     "refinement; Sec. 4.3, iterative training); the release ships no code for "
                                     "it; refined: the online refinement's labels (Fig. 6 always counts these)"})
    cluster_min_center: float = Field(
        default=0.05, description="a clustered centre is kept only where the component's centre map exceeds this",
        json_schema_extra={"switch": "paper silent; release: 0.05 (get_instance_segmentation)"})
    lambda_center: float = Field(default=200.0, ge=0, description="λ_center (Eq. 6: 200)")
    lambda_offset: float = Field(default=0.01, ge=0, description="λ_offset (Eq. 6: 0.01)")
    lambda_semantic: float = Field(default=1.0, ge=0, description="λ_sem (Eq. 6: 1)")
    loss_combine: Literal["sum", "mean"] = Field(
        default="sum", description="pseudo and refined centre/offset terms summed or averaged",
        json_schema_extra={"switch": "paper: summed (Eqs. 3-4, Listing 1); release: averaged, 0.5 each (mean)"})
    semantic_loss: Literal["ce", "hard-pixel"] = Field(
        default="ce", description="semantic CE over all pixels or over the hardest hard_pixel_ratio of them",
        json_schema_extra={"switch": "paper: plain CE (Eq. 5); release: DeepLab hard-pixel CE, top 20% (hard-pixel)"})
    hard_pixel_ratio: Ratio = Field(default=0.2, description="kept fraction for semantic_loss = hard-pixel (0.2)")
    hard_pixel_pool: Literal["all", "labelled"] = Field(
        default="all", description="the hard-pixel CE (BESTIE's semantic_loss = hard-pixel, P2Seg's Eq. 4) keeps "
                                   "int(r·N) of all N pixels of the batch, ignored ones at loss 0, or ceil(r·N_l) "
                                   "of the N_l labelled ones",
        json_schema_extra={"switch": "paper silent (P2Seg Eq. 4: P_seg = all pixels of the map); release: "
                                     "DeepLabCE, int(r · numel) over all pixels (all)"})
    flip_tta: Literal["none", "points", "all"] = Field(
        default="points", description="horizontal-flip test-time augmentation: never, point setting only, always",
        json_schema_extra={"switch": "paper silent; release: flip TTA in the point setting (points)"})
    flip_tta_offsets: Literal["unflipped", "average"] = Field(
        default="unflipped", description="with flip TTA: the offsets of the unflipped pass, or averaged with the "
                                         "flipped pass's (dx negated back); probabilities and centres are always averaged",
        json_schema_extra={"switch": "paper silent; release: get_ins_map* average only the probabilities and centres "
                                     "(unflipped)"})
    val_clean: bool = Field(
        default=False,
        description="val inference reads val annotations: the probabilities of classes absent from the image's "
                    "image-level labels are zeroed and, in the point setting, each class's semantic foreground is "
                    "grouped to the image's val points by the offsets instead of detecting centres (BESTIE never "
                    "sees these at test time; the transfer-only baseline reads the same val points); P2Seg's val "
                    "inference, which is BESTIE's, follows it too",
        json_schema_extra={"switch": "paper silent; release: --val_clean, False in its scripts (true: "
                                     "get_ins_map_with_point in the point setting)"})
    checkpoint_every: int = Field(
        default=100, ge=0,
        description="resumable training checkpoint every N steps (BESTIE and P2Seg stages; 0 = none): re-running an "
                    "interrupted stage continues from it, to the same weights")
    pseudo_curve_points: int = Field(
        default=4, ge=0, le=100,
        description="train pseudo labels exported at this many evenly spaced training steps (the last is the final "
                    "step) for BESTIE Fig. 6's true positives over training; 0 = none")

    @model_validator(mode="after")
    def _consistent(self) -> "BestieParams":
        if self.nms_kernel % 2 != 1:
            raise ValueError(f"bestie.nms_kernel must be odd, got {self.nms_kernel}")
        if self.scale_min > self.scale_max:
            raise ValueError(f"bestie.scale_min ({self.scale_min}) > bestie.scale_max ({self.scale_max})")
        return self


class MdmParams(Section):
    """P2Seg's Mutual Distillation Module (paper 000; docs/p2seg.md). P2Seg runs on BESTIE's network
    and point setting: the ``bestie`` section gives the network widths, augmentation, centre targets,
    refinement and inference; this section what P2Seg changes. Embedded defaults scale the paper's
    pixel sizes by 128 / 416 and train from scratch (no pretrained weights)."""

    hard_pixel_ratio: Ratio = Field(
        default=0.2, description="fraction of highest-loss pixels kept in the segmentation CE (Eq. 4; paper: 0.2)"
    )
    stages: int = Field(default=1, ge=1, le=5,
                        description="recurrent MDM stages: stage k+1 trains on stage k's I2S semantic map",
                        json_schema_extra={"switch": "paper: recurrent stages (count not given); release: 1"})
    backbone: str = Field(default="regnetx_002", description="timm backbone of the default run "
                                                             "(paper: hrnet_w48; the HRNet-style row)")
    backbone_init: BackboneInit = "pretrain"
    decoder: Decoder = Field(default="fuse", description="decoder of the default run (the HRNet-style row: the "
                                                          "release's HRNet path, fuse)")
    resnet_backbone: str = Field(default="resnet18", description="timm backbone of the ResNet row (paper: resnet101)")
    resnet_backbone_init: BackboneInit = Field(
        default="scratch", description="where the ResNet row's backbone starts (values as backbone_init). Embedded: "
                                       "scratch — pre-training resnet18 costs ~4x regnetx_002's CPU time")
    resnet_decoder: Decoder = Field(default="panoptic-deeplab",
                                    description="decoder of the ResNet row (BESTIE's release, which P2Seg builds on: "
                                                "the Panoptic-DeepLab decoder for ResNets)")
    iterations: int = Field(default=200, ge=1, description="optimizer steps per stage (paper: 50k VOC, 100k COCO; "
                                                          "embedded: BESTIE's budget)")
    batch_size: int = Field(default=8, ge=1, description="images per step (paper 8)")
    warmup_iterations: int = Field(default=20, ge=0, description="linear warm-up steps (paper: 2k VOC, 5k COCO)")
    optimizer: Literal["adamw", "adam"] = Field(
        default="adamw", description="optimizer",
        json_schema_extra={"switch": "paper: AdamW (Sec. 4.1); release: Adam (BESTIE's trainer)"})
    lr: float = Field(default=1e-3, gt=0, description="learning rate (paper 5e-5 with a pretrained HRNet; from "
                                                      "scratch here)")
    weight_decay: float = Field(default=1e-4, ge=0, description="weight decay (paper silent; release 0)")
    offset_loss: Literal["smooth-l1", "l1"] = Field(
        default="smooth-l1", description="offset regression loss",
        json_schema_extra={"switch": "paper: smooth L1 (Eq. 3); release: L1 (BESTIE's)"})
    lambda_offset: float = Field(default=0.01, ge=0, description="λ of L_off (paper 0.01)")
    lambda_semantic: float = Field(default=1.0, ge=0, description="λ of L_seg (paper 1.0)")
    lambda_i2s: float = Field(default=1.0, ge=0, description="λ_I2S (paper 1.0)")
    single_point_target: Literal["point", "centroid-int", "centroid"] = Field(
        default="point", description="offset target of a component holding exactly one point",
        json_schema_extra={"switch": "paper: the annotated point (Eq. 2); release: BESTIE's int-truncated "
                                     "component centroid (centroid-int)"})
    default_box: int | None = Field(
        default=5, ge=1, description="side (px) of the default pseudo box of a point with no region (paper 16 "
                                     "at 416 px → 5; release 64 → 20); null = none")
    default_box_in_training: bool = Field(
        default=True, description="default boxes also in the S2I training targets (else only in the export)",
        json_schema_extra={"switch": "paper: in the S2I labels (Sec. 3.1); release: only at export (false)"})
    export_box_score: Probability = Field(default=0.5, description="score of an exported default box (release 0.5)")
    export_empty_points: Literal["box", "release"] = Field(
        default="box", description="exported points without pixels: box — a default box (minus other "
                                   "instances' pixels, score export_box_score) for each; release — an empty mask "
                                   "of score 0 for a point of a class present in the map, a whole clipped box "
                                   "(score export_box_score) for the others only when the point's x or y is "
                                   "missing from the points recorded so far",
        json_schema_extra={"switch": "paper: 'for points without clear instance predictions, a default "
                                     "pseudo-box' (Sec. 3.1; box); release: get_ins_map_with_point_forallpoint "
                                     "(release)"})
    embed_dim: int = Field(default=64, ge=1, description="affinity embedding width (release 256)")
    affinity_pool: int = Field(default=1, ge=1, description="max-pool of the affinity grid beyond stride 4 "
                                                            "(1 = the stride-4 grid, as the release)")
    affinity_loss: Literal["paper", "release"] = Field(
        default="paper", description="Eq. 5 as printed, or the release's aff_loss",
        json_schema_extra={"switch": "paper: Eq. 5 against the instance affinity; release: same-class + "
                                     "instance targets averaged, 0.5/0.5 weights, double sigmoid (release)"})
    affinity_labels: Literal["max-pool", "sample"] = Field(
        default="max-pool", description="the affinity targets on the stride-4 grid: each class / instance mask "
                                        "max-pooled over the cell (a cell may hold several; a pair is positive "
                                        "when they share one) or the cell's top-left pixel",
        json_schema_extra={"switch": "paper silent; release: MaxPool2d(4, 4) of the masks before mask_to_aff "
                                     "(max-pool)"})
    affinity_ignore: Literal["background", "drop"] = Field(
        default="background", description="pixels the semantic map ignores (255) in the affinity loss: "
                                          "background (in no mask) or in no pair",
        json_schema_extra={"switch": "paper silent; release: in no class mask, so background negatives "
                                     "(background)"})
    affinity_background: Literal["negative", "negative-to-instances", "ignore"] = Field(
        default="negative", description="pairs with background pixels: negatives (paper's 'otherwise 0'), "
                                        "only background-instance negatives, or no pairs")
    chunk_size: int | None = Field(default=None, ge=1, description="rows of the hw×hw affinity computed at once "
                                                                   "(memory bound); null = dense")
    max_pairs: int | None = Field(default=None, ge=2, description="sample this many pairs per image instead of "
                                                                 "all pairs; null = all")
    beta: float = Field(default=8.0, gt=0, description="Hadamard power β of S = A^∘β·C",
                        json_schema_extra={"switch": "paper: β not given (8 here, AffinityNet's); release: no "
                                                     "power (1)"})
    affinity_normalize: Literal["row", "release", "none"] = Field(
        default="row", description="S = D⁻¹A^∘βC (row), A^∘βD⁻¹C (release) or A^∘βC (none; same argmax as row)",
        json_schema_extra={"switch": "paper: A^∘β·C (none; argmax-equal to row); release: release"})
    semantic_from_affinity: bool = Field(
        default=False, description="the semantic branch outputs S = A^∘β·C in training and inference, so the "
                                   "segmentation loss trains the affinity and the online regrouping, inference and "
                                   "export read S; false: the semantic head alone, S only after training "
                                   "(docs/p2seg.md measures both on the embedded budget)",
        json_schema_extra={"switch": "paper: the affinity 'is used by the semantic segmentation branch' (Sec. "
                                     "3.3; read as true); release: forward overwrites pred['seg'] with S (true); "
                                     "embedded profile: false"})
    export_semantic: Literal["i2s", "input"] = Field(
        default="i2s", description="the semantic map the exported instances are grouped on: the last stage's "
                                   "I2S map (paper Sec. 3.1) or its input map")


def dataclass_section(config: type, defaults: dict[str, Any], name: str) -> type[Section]:
    """A params section with one field per field of the dataclass ``config``, of the same name, type and
    documentation (the attribute docstrings under each field), defaulting to ``defaults`` where given, else
    to the dataclass's own default — so a method's config and its section cannot drift apart. Each field's
    description ends with the dataclass default (the paper's value) where ``defaults`` changes it."""
    import ast
    import dataclasses
    import inspect
    import typing

    from pydantic import create_model

    hints = typing.get_type_hints(config)
    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(config)).body[0].body  # type: ignore[attr-defined]
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        description = docs.get(f.name, "")
        if f.name in defaults:
            paper = list(f.default) if isinstance(f.default, tuple) else f.default
            description = f"{description} (paper: {paper})".strip()
        fields[f.name] = (hints[f.name], Field(default=defaults.get(f.name, f.default), description=description))
    return create_model(name, __base__=Section, **fields)


def _jtsm_config() -> type:
    from methods.jtsm.config import JtsmConfig

    return JtsmConfig


#: The embedded values of JTSM's config fields (128 px synthetic images, 2 CPU cores: the main run in about
#: two minutes per slot, docs/jtsm.md); every other field is the paper's (methods/jtsm/config.py), and the
#: VOC / COCO profiles set the paper's values back.
#: The embedded values (128 px images, 2 CPU cores; docs/jtsm.md, "Does it learn?"): lr 0.003 — at the paper's
#: 0.01 the MIL loss stays at a constant guess over the 200 steps the budget allows, at 0.003 CorLoc and AP@0.5
#: clearly beat the training-free baselines; no GrabCut re-estimation and no test flip (cost).
JTSM_EMBEDDED: dict[str, Any] = {
    "max_proposals": 150, "moipool_bin_samples": 1, "fc_dim": 256, "mask_head_dim": 32,
    "mask_boxes_per_image": 16, "iterations": 200, "lr_step": 150, "lr": 0.003, "grabcut_iterations": 2,
    "reestimate": False, "test_flip": False, "train_scales": (128,), "test_scales": (128,),
}


class JtsmParams(dataclass_section(_jtsm_config(), JTSM_EMBEDDED, "JtsmConfigFields")):  # type: ignore[misc]
    """JTSM (paper 003; docs/jtsm.md). Every field of ``methods.jtsm.config.JtsmConfig`` under its own name
    (generated from the dataclass: its types, docs and paper defaults, with the embedded values of
    :data:`JTSM_EMBEDDED`), plus what the harness adds: the backbone and where it starts, and the settings
    of the segment-proposal generator that stands in for MCG (``datasets.proposals``)."""

    backbone: str = Field(default="regnetx_002", min_length=1,
                          description="timm backbone; its level at stride feature_stride is pooled (paper: "
                                      "ResNet18-WS, a ResNet-18 with a dilated C5 at stride 8)")
    backbone_init: BackboneInit = "pretrain"
    proposal_colour_spaces: list[Literal["rgb", "hsv", "lab"]] = Field(
        default=["rgb", "lab"], min_length=1,
        description="colour spaces of the selective-search grouping (MCG stand-in; full: rgb, hsv, lab)")
    proposal_scales: list[Annotated[float, Field(gt=0)]] = Field(
        default=[100.0, 200.0], min_length=1,
        description="Felzenszwalb-Huttenlocher scales k (× image side / 500) of the grouping (full: 50, 100, 200)")
    proposal_sigma: float = Field(default=0.8, gt=0, description="Gaussian pre-smoothing of the superpixels")
    checkpoint_every: int = Field(default=100, ge=0, description="resumable training checkpoint every N steps "
                                                                 "(0 = none)")

    @model_validator(mode="after")
    def _a_valid_config(self) -> "JtsmParams":
        """The config's own checks (ranges, choices), naming the key: ``jtsm.pooling: 'x' is not one of ...``."""
        import dataclasses

        config = _jtsm_config()
        config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(config)})
        return self



def _point2mask_configs() -> tuple[type, type]:
    from methods.point2mask.config import Point2MaskConfig
    from methods.point2mask.train import TrainConfig

    return Point2MaskConfig, TrainConfig


#: The embedded values of Point2Mask's config fields (128 px synthetic images, 2 CPU cores; docs/point2mask.md
#: "Stage"); every other field is the paper's (methods/point2mask/config.py, train.py), and the VOC / COCO
#: profiles set the paper's values back.
POINT2MASK_EMBEDDED: dict[str, Any] = {
    "point_square": 5, "grid_stride": 2, "backbone": "regnetx_002", "iterations": 60, "batch_size": 4,
    "lr": 1e-3, "weight_decay": 1e-4, "sem_loss_stride": 2, "center_sigma": 4.0, "pairwise_warmup": 0.5,
}


class Point2MaskParams(dataclass_section(_point2mask_configs()[0], POINT2MASK_EMBEDDED,  # type: ignore[misc]
                                         "Point2MaskPseudoFields"),
                       dataclass_section(_point2mask_configs()[1], POINT2MASK_EMBEDDED,  # type: ignore[misc]
                                         "Point2MaskTrainFields")):
    """Point2Mask (paper 001; docs/point2mask.md). Every field of ``methods.point2mask.config.Point2MaskConfig``
    (the pseudo-label branch) and of ``methods.point2mask.train.TrainConfig`` (network and training loop) under
    its own name — generated from the dataclasses (types, docs, paper defaults), with the embedded values of
    :data:`POINT2MASK_EMBEDDED` — plus what the harness adds: the backbones of the Table 1 / 2 rows, where they
    start, and the points file."""

    backbone_r101: str = Field(default="regnetx_004", min_length=1,
                               description="timm backbone of the r101 rows (paper: ResNet-101); `backbone` is r50's")
    backbone_swinl: str = Field(default="regnetx_006", min_length=1,
                                description="timm backbone of the swinl rows (paper: Swin-L)")
    backbone_init: BackboneInit = "pretrain"
    point_mode: Literal["uniform"] = Field(
        default="uniform", description="points file read (data/points/<slot>/<split>_<mode>.json): uniform = one "
                                       "random point per thing and stuff target (the paper's P; the P10 rows of "
                                       "Tables 1-2 are other methods', reported only)")

    @model_validator(mode="after")
    def _a_valid_config(self) -> "Point2MaskParams":
        """The configs' own checks (choices, ranges; the unimplemented Panoptic SegFormer head), naming the key."""
        import dataclasses

        for config in _point2mask_configs():
            config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(config)})
        return self

class MaskRCNNParams(Section):
    """Mask R-CNN architecture and sampling (``segmentor.arch = mask_rcnn``); the VOC/COCO profiles use
    torchvision's ``maskrcnn_resnet50_fpn`` values, the embedded defaults are sized for 128 px images."""

    anchor_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default=[16, 32, 64, 96, 128], min_length=5, max_length=5,
        description="anchor size per pyramid level (strides 4, 8, 16, 32, pool); torchvision: 32..512")
    aspect_ratios: list[Annotated[float, Field(gt=0)]] = Field(default=[0.5, 1.0, 2.0], min_length=1)
    rpn_pre_nms_top_n_train: int = Field(default=600, ge=1, description="per level (torchvision 2000)")
    rpn_post_nms_top_n_train: int = Field(default=300, ge=1, description="proposals kept (torchvision 2000)")
    rpn_pre_nms_top_n_test: int = Field(default=300, ge=1, description="per level (torchvision 1000)")
    rpn_post_nms_top_n_test: int = Field(default=100, ge=1, description="proposals kept (torchvision 1000)")
    rpn_batch_size_per_image: int = Field(default=128, ge=1, description="anchors sampled per image (256)")
    box_batch_size_per_image: int = Field(default=64, ge=1, description="RoIs sampled per image (512)")
    representation_size: int = Field(default=256, ge=1, description="box-head MLP width (1024)")
    mask_head_layers: int = Field(default=2, ge=1, description="3x3 convs of the mask head (4)")
    box_nms_thresh: float = Field(default=0.5, gt=0, le=1, description="per-class NMS IoU at test time")


class SegmentorParams(Section):
    """Segmentor fine-tuning (stage ``segment``, docs/segmentor.md): a fully supervised instance
    segmentor trained on a method's train pseudo labels (or the ground truth), predicting val."""

    backend: Literal["torchvision", "detectron2"] = Field(
        default="torchvision",
        description="training framework: torchvision (built in) or detectron2 (when installed; Mask R-CNN only)")
    arch: Literal["mask_rcnn", "solov2"] = Field(default="mask_rcnn", description="model (torchvision backend)")
    backbone: str = Field(default="regnetx_002", min_length=1, description="timm backbone of the FPN (no download)")
    backbone_init: BackboneInit = Field(
        default="pretrain", description="where the FPN backbone starts (values as bestie.backbone_init). Embedded: the "
                                        "pretrain stage's weights, like the methods' backbones, so the fully "
                                        "supervised row is an upper bound of theirs (docs/segmentor.md)")
    fpn_channels: int = Field(default=64, ge=8, description="FPN width (torchvision / detectron2: 256)")
    iterations: int | None = Field(default=600, ge=1, description="optimizer steps (or set epochs instead)")
    epochs: float | None = Field(default=None, gt=0, description="passes over the training images; converted "
                                                                  "to iterations with batch_size; overrides iterations")
    batch_size: int = Field(default=4, ge=1, description="images per step (paper: 16)")
    lr: float = Field(default=0.02, gt=0, description="SGD learning rate (paper: 0.02)")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_iters: int = Field(default=50, ge=0, description="linear warm-up steps (detectron2: 1000)")
    warmup_factor: float = Field(default=0.001, gt=0, le=1, description="LR factor at the first step")
    lr_steps: list[Annotated[float, Field(gt=0)]] = Field(
        default=[450, 555], description="LR x lr_gamma at these points, in iterations (in epochs when epochs is set; "
                                         "paper: epochs 8 and 11)")
    lr_gamma: float = Field(default=0.1, gt=0, le=1)
    min_size: list[Annotated[int, Field(ge=16)]] = Field(
        default=[128], min_length=1,
        description="shorter side when training, one sampled per image (multi-scale); the last is the test size")
    max_size: int = Field(default=128, ge=16, description="cap on the longer side (detectron2: 1333)")
    hflip: bool = Field(default=True, description="random horizontal flip (p = 0.5)")
    soft_weights: bool = Field(
        default=False, description="weight each instance's losses by its 'score' when it has no 'weight' field")
    min_mask_area: int = Field(default=4, ge=1, description="training masks with fewer pixels are dropped (counted)")
    mask_threshold: float = Field(default=0.5, gt=0, lt=1, description="predicted mask probability threshold")
    score_threshold: float = Field(default=0.05, ge=0, lt=1, description="detections below this score are dropped")
    detections_per_image: int = Field(default=100, ge=1, description="best-scoring detections kept per val image")
    checkpoint_every: int = Field(default=100, ge=0, description="resumable checkpoint every N steps (0 = end only)")
    amp: bool = Field(default=True, description="mixed precision on CUDA (never on CPU)")
    mask_rcnn: MaskRCNNParams = MaskRCNNParams()
    solov2: dict[str, Any] = Field(
        default_factory=lambda: {"grids": [16, 12, 8], "scale_ranges": [[1, 32], [16, 64], [32, 128]],
                                 "head_channels": 128, "head_convs": 2, "mask_feat_channels": 64,
                                 "mask_out_channels": 64, "norm_groups": 16},
        description="SOLOv2Config options (methods/segmentor/solov2.py) for arch = solov2; {} = the paper's; "
                    "checked when the stage builds the model")
    detectron2_config: str = Field(
        default="COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        description="detectron2 model-zoo config name (backend = detectron2)")

    @model_validator(mode="after")
    def _consistent(self) -> "SegmentorParams":
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError("set exactly one of iterations and epochs (the other null)")
        budget = self.epochs if self.epochs is not None else self.iterations
        if list(self.lr_steps) != sorted(self.lr_steps) or any(s >= budget for s in self.lr_steps):
            raise ValueError(f"lr_steps {self.lr_steps} must increase and stay below the budget ({budget})")
        if self.backend == "detectron2" and self.arch != "mask_rcnn":
            raise ValueError("backend detectron2 trains Mask R-CNN only (arch = mask_rcnn)")
        if max(self.min_size) > self.max_size:
            raise ValueError(f"min_size {self.min_size} exceeds max_size {self.max_size}")
        return self


# --------------------------------------------------------------------------- eval
class EvalParams(Section):
    voc_iou_thresholds: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        default=[0.25, 0.5, 0.7, 0.75], min_length=1, description="IoU thresholds of the VOC instance mAP"
    )
    coco_iou_types: list[Literal["segm", "bbox"]] = Field(default=["segm", "bbox"], min_length=1)
    coco_backend: Literal["hotcoco", "faster-coco-eval", "pycocotools"] = Field(
        default="hotcoco", description="COCOeval implementation for COCO AP (pycocotools: the reference; hotcoco: "
        "bit-identical, ~70x faster); hotcoco also computes PQ, the others use the native PQ (docs/evaluation.md)"
    )
    workers: int = Field(default=2, ge=1, le=64, description="processes of the native PQ backend (2: measured faster than 1 at 5,000 images on 2 cores)")


# ----------------------------------------------------------------------- tracking
class TrackingParams(Section):
    enabled: bool = Field(default=True, description="log stage runs to MLflow")
    experiment_prefix: str = Field(default="wsis-bench", min_length=1, description="MLflow experiment = prefix/profile")
    overlays: int = Field(default=4, ge=0, le=64, description="prediction overlay PNGs logged per evaluation")


# ------------------------------------------------------------------------- report
VariantName = Annotated[str, Field(min_length=1)]


class ReportParams(Section):
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default=[0], min_length=1, description="seeds each trained row runs with (mean ± std over them)"
    )
    variants: dict[Annotated[str, Field(min_length=1)], list[VariantName]] = Field(
        default_factory=dict,
        description="stage group → the variants its dvc.yaml matrix runs (the groups are registered by the "
                    "bench.commands modules, bench/methods.py; a group left out runs none of its variants). The "
                    "profiles set them: embedded runs each table's headline rows, embedded-full every row")
    decimals: int = Field(default=1, ge=0, le=4, description="decimals printed in tables")


class PretrainParams(Section):
    """Backbone pre-training (stage ``pretrain``, methods/backbones.py, docs/pretrain.md): multi-label image
    classification on a separate image stream of a synthetic slot's generator — the synthetic profiles'
    stand-in for the ImageNet weights every paper starts from (image-level labels of images no split
    contains). Read by ``backbone_init: pretrain``; real-data slots point ``backbone_init`` at a checkpoint."""

    backbones: list[Annotated[str, Field(min_length=1)]] = Field(
        default=["regnetx_002"],
        description="timm backbones pre-trained for every slot (those a method's backbone_init: pretrain reads); "
                    "[] for real-data profiles, whose methods read ImageNet checkpoints")
    images: int = Field(default=3000, ge=1, description="training images rendered from the pretrain stream")
    val_images: int = Field(default=256, ge=1, description="held-out images (the next indices of the stream) scored "
                                                           "for mAP / accuracy")
    iterations: int = Field(default=600, ge=1, description="optimizer steps per backbone (held-out mAP at 600 / 1,500 "
                                                         "steps: VOC-like 95.0 / 96.9, COCO-like 72.4 / 81.1; "
                                                         "docs/pretrain.md)")
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=2e-3, gt=0, description="AdamW peak learning rate (linear warm-up, cosine decay)")
    weight_decay: float = Field(default=1e-4, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="share of the steps spent warming up")
    seed: int = Field(default=0, ge=0, description="training seed (the images depend on the slot's data seed only)")


class RuntimeParams(Section):
    """How a training stage lays out its processes (docs/scaling.md), not what it computes: no DVC dependency, as
    ``tracking``. Above one process in all, the stage re-launches itself under ``torchrun`` (DDP, one GPU per
    process on CUDA, gloo on CPU; methods/distributed.py); the schedule stays the single-process one (each rank
    trains on its share of the global batch), equal up to floating-point summation order. Stages with DDP so far:
    pretrain; the others run one process whatever these say."""

    nproc_per_node: int = Field(default=1, ge=1, le=64, description="training processes per machine (its GPUs on "
                                                                    "CUDA); the batch size must split evenly")
    nnodes: int = Field(default=1, ge=1, le=1024, description="machines; above 1 the rendezvous comes from the "
                                                              "environment (MASTER_ADDR, MASTER_PORT, NODE_RANK or "
                                                              "PET_RDZV_ENDPOINT, PET_RDZV_ID)")


class Params(Section):
    profile: Literal["embedded", "embedded-full", "smoke", "voc", "coco"] = "embedded"
    data: DataParams = DataParams()
    points: PointsParams = PointsParams()
    wsss: WsssParams = WsssParams()
    pretrain: PretrainParams = PretrainParams()
    bestie: BestieParams = BestieParams()
    mdm: MdmParams = MdmParams()
    point2mask: Point2MaskParams = Point2MaskParams()
    jtsm: JtsmParams = JtsmParams()
    segmentor: SegmentorParams = SegmentorParams()
    eval: EvalParams = EvalParams()
    tracking: TrackingParams = TrackingParams()
    runtime: RuntimeParams = RuntimeParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _pretrained_backbones_exist(self) -> "Params":
        """``backbone_init: pretrain`` reads the pretrain stage's weights of that backbone: it must be pre-trained."""
        trained = set(self.pretrain.backbones)
        users = {"bestie.backbone_init": (self.bestie.backbone_init, self.bestie.backbone),
                 "mdm.backbone_init": (self.mdm.backbone_init, self.mdm.backbone),
                 "mdm.resnet_backbone_init": (self.mdm.resnet_backbone_init, self.mdm.resnet_backbone),
                 "jtsm.backbone_init": (self.jtsm.backbone_init, self.jtsm.backbone),
                 "segmentor.backbone_init": (self.segmentor.backbone_init, self.segmentor.backbone),
                 "point2mask.backbone_init": (self.point2mask.backbone_init, self.point2mask.backbone)}
        for key, (init, name) in users.items():
            if init == "pretrain" and name not in trained:
                raise ValueError(f"{key}: pretrain needs backbone {name!r} in pretrain.backbones (now "
                                 f"{sorted(trained)}); add it there, or set {key} to scratch or a checkpoint folder")
        return self

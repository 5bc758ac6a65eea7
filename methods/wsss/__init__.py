"""Differentiable building blocks of the WSSS stage (no pipeline imports; see docs/wsss.md).

- :mod:`.losses` — Point2Mask Eq. 5 terms: :func:`partial_cross_entropy`, :func:`expand_points`,
  :func:`rgb_to_lab`, :func:`lab_pairwise_loss` (L_LAB).
- :mod:`.tree_filter` — exact linear-time MST filter (:func:`build_grid_mst`, :func:`tree_filter`)
  and :func:`rgb_tree_loss` (L_RGB).
- :mod:`.peaks` — BESTIE peak extraction from CAMs (:func:`extract_peaks`).
- :mod:`.pam` — BESTIE peak attention module (:class:`PeakAttention`).
- :mod:`.model` / :mod:`.point_train` — a small timm + FPN segmentation network trained from
  point labels with Eq. 5 (:func:`train_point_wsss`, :func:`predict_semantic`,
  :func:`point_label_maps`, :class:`PointWsssConfig`); timm and tqdm are imported lazily.
- :mod:`.cam` — image-level CAM / PAM classifier (BESTIE Sec. 3.1): :func:`train_cam`,
  :func:`iter_cams`, :func:`semantic_from_cam`, :func:`cam_peaks`, :class:`CamConfig`.
"""

from .cam import CamConfig, CamNet, cam_peaks, iter_cams, semantic_from_cam, train_cam
from .losses import (
    IGNORE_INDEX,
    expand_points,
    lab_pairwise_loss,
    partial_cross_entropy,
    rgb_to_lab,
    to_unit_float,
)
from .pam import PeakAttention, peak_attention
from .peaks import Peak, extract_peaks, flip_average, local_maxima, normalize_cam
from .point_train import PointWsssConfig, point_label_maps, predict_semantic, train_point_wsss
from .tree_filter import GridTree, build_grid_mst, rgb_tree_loss, tree_filter, tree_filter_dense

__all__ = [
    "CamConfig",
    "CamNet",
    "cam_peaks",
    "iter_cams",
    "semantic_from_cam",
    "train_cam",
    "IGNORE_INDEX",
    "GridTree",
    "Peak",
    "PeakAttention",
    "PointWsssConfig",
    "build_grid_mst",
    "expand_points",
    "extract_peaks",
    "flip_average",
    "lab_pairwise_loss",
    "local_maxima",
    "normalize_cam",
    "partial_cross_entropy",
    "peak_attention",
    "point_label_maps",
    "predict_semantic",
    "rgb_to_lab",
    "rgb_tree_loss",
    "to_unit_float",
    "train_point_wsss",
    "tree_filter",
    "tree_filter_dense",
]

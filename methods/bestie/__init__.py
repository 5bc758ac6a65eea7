"""BESTIE (Kim et al., CVPR 2022; paper 002): weakly-supervised instance segmentation by semantic
knowledge transfer and self-refinement, with image-level labels (PAM peaks) or points.

Building blocks, reusable by methods built on BESTIE (P2Seg):

- :mod:`.transfer` — pseudo instances from a WSSS map and instance cues (Sec. 3.3), offset and
  Gaussian centre targets;
- :mod:`.grouping` — centre extraction, centre clustering (appendix), instance grouping (Eq. 1);
- :mod:`.instances` — point-setting refinement (grouping to points), image-setting refinement and
  inference (Sec. 3.2, 3.5);
- :mod:`.losses` — Eq. 3–6 with instance-aware guidance, :func:`~.losses.topk_cross_entropy`;
- :mod:`.model` — :class:`~.model.BestieNet` (timm backbone + decoder (:data:`~.model.DECODERS`) +
  semantic / centre / offset heads);
- :mod:`.train` — :class:`~.train.BestieConfig`, :func:`~.train.train_bestie`, prediction, export.

No pipeline imports (numpy, scipy, opencv, torch, timm only). See docs/bestie.md.
"""

from .grouping import Center, cluster_centers, find_centers, group_pixels, merge_centers
from .instances import ClusterConfig, Instance, group_to_points, segment_instances
from .losses import InstanceTargets, LossWeights, bestie_loss, topk_cross_entropy
from .model import DECODERS, BestieNet
from .transfer import ImageTargets, PseudoInstance, TransferStats, gaussian_center_map, offset_field, pseudo_instances

__all__ = [
    "Center", "cluster_centers", "find_centers", "group_pixels", "merge_centers",
    "ClusterConfig", "Instance", "group_to_points", "segment_instances",
    "InstanceTargets", "LossWeights", "bestie_loss", "topk_cross_entropy",
    "BestieNet", "DECODERS", "ImageTargets", "PseudoInstance", "TransferStats", "gaussian_center_map", "offset_field",
    "pseudo_instances",
]

"""Point2Mask (paper 001): optimal-transport panoptic pseudo masks from one point per target.

Library code only (no pipeline imports); see docs/point2mask.md for the paper-section map.

- :mod:`.config` — :class:`Point2MaskConfig` (paper defaults; release values in field metadata).
- :mod:`.cost` — Eq. 2-3: grid graph edge lengths and multi-source Dijkstra costs.
- :mod:`.transport` — Eq. 1 / Alg. 1: log-domain Sinkhorn-Knopp (release and converged modes).
- :mod:`.units` — Sec. 3.3.3 / Eq. 4: unit numbers (equal, nearest point, nearest centroid).
- :mod:`.boundary` — Eq. 6-7: boundary head, L_bou, the low-level edge map substitute, Table 3's maps.
- :mod:`.losses` — Eq. 5: L_sem from the :mod:`methods.wsss` terms.
- :mod:`.pseudo` — :func:`pseudo_masks`, the composed pseudo-label map of one image.
"""

from .boundary import BoundaryHead, boundary_loss, boundary_maps, low_level_boundary
from .config import Point2MaskConfig
from .cost import GeodesicCost, transport_cost
from .losses import semantic_loss
from .pseudo import point_probabilities, pseudo_masks
from .transport import SinkhornResult, plan_labels, sinkhorn, transport_plan
from .units import assign, centroids, class_likelihood, unit_numbers

__all__ = [
    "BoundaryHead",
    "GeodesicCost",
    "Point2MaskConfig",
    "SinkhornResult",
    "assign",
    "boundary_loss",
    "boundary_maps",
    "centroids",
    "class_likelihood",
    "low_level_boundary",
    "plan_labels",
    "point_probabilities",
    "pseudo_masks",
    "semantic_loss",
    "sinkhorn",
    "transport_cost",
    "transport_plan",
    "unit_numbers",
]

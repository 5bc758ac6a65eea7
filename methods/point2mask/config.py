"""Hyper-parameters of Point2Mask's pseudo-mask branch (paper 001, Sec. 3.3-3.4; see docs/point2mask.md).

One frozen dataclass of scalars. Defaults are the paper's values; where the paper is silent, the
official release's. Every documented difference between the paper and the release is one field,
whose release value is recorded in the field's metadata (``metadata["release"]``), so
:meth:`Point2MaskConfig.release` is mechanical and a params section can be generated from
:func:`dataclasses.fields`.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

__all__ = ["Point2MaskConfig"]

CostDistance = Literal["l1-class", "own-class"]
OtMode = Literal["release", "converged"]
UnitNumber = Literal["equal", "nearest-point", "nearest-centroid"]
Assignment = Literal["min-cost", "likelihood"]
Decode = Literal["ot", "min-cost"]


def _doc(text: str, **release: Any) -> dict[str, Any]:
    """Field metadata: a one-line description, plus the release's value where it differs."""
    return {"doc": text, **({"release": release["release"]} if "release" in release else {})}


@dataclass(frozen=True)
class Point2MaskConfig:
    """Pseudo-mask generation (Eq. 1-4), boundary loss (Eq. 6-7) and semantic loss weights (Eq. 5)."""

    # --- transport cost, Eq. 2-3 -------------------------------------------------------------
    beta: float = field(default=0.1, metadata=_doc("beta of Eq. 3, weight of the boundary edge length d^b."))
    """beta of Eq. 3 (paper and release: 0.1)."""
    cost_distance: CostDistance = field(default="l1-class", metadata=_doc(
        "d^s of Eq. 2: 'l1-class' = sum_c |P_c(k) - P_c(l)| over the class vectors (release); "
        "'own-class' = |P_c(k) - P_c(l)| for the class c of the source point (scalar reading)."))
    """d^s of Eq. 2. The paper writes |P^s(k) - P^s(l)| for a C-channel map; the release (and PSPS)
    take the L1 norm over the class vector, which is the default. ``"own-class"`` reads the map as the
    point's own class channel (one graph per class present)."""
    diagonal_sqrt2: bool = field(default=True, metadata=_doc(
        "Diagonal edges of the 8-connected grid are sqrt(2) times longer.", release=False))
    """Scale diagonal edge lengths by sqrt(2) (geodesic length on the 8-connected grid). The release's
    ``dijkstra_image`` does not."""
    grid_stride: int = field(default=1, metadata=_doc(
        "Shortest paths run on the maps resized to (H // s, W // s); distances are upsampled bilinearly.",
        release=16))
    """The paper defines the graph over the H x W pixels (n = H x W); the release runs Dijkstra on a
    1/16 grid and upsamples the distances (bilinear) to the image."""
    embedding_term: bool = field(default=False, metadata=_doc(
        "Add embedding_weight * max(0, 1 - <e_k, e_l>) of a learned embedding to every edge.", release=True))
    """The release adds a third edge term from its L2-normalised 128-d embedding (``memory_proj``);
    the paper has d^s and d^b only."""
    embedding_weight: float = field(default=0.1, metadata=_doc("Weight of the embedding term (release: 0.1)."))
    """Weight of the embedding edge term (release ``lambda_diff_feat``: 0.1); used with ``embedding_term``."""
    point_square: int = field(default=17, metadata=_doc(
        "Side of the square around each point whose class probability is set to 1 (odd)."))
    """The release sets the class probability to 1 in a 17 x 17 square around every point (the same
    squares as the partial CE of Eq. 5) before building the cost; 1 = the point pixel only."""
    stuff_min_prob: float = field(default=0.5, metadata=_doc(
        "Stuff pixels whose top class probability is below this are void."))
    """Pseudo semantic labels below this probability are ignored (release: 0.5; the paper is silent)."""

    # --- optimal transport, Eq. 1 / Alg. 1 ---------------------------------------------------
    decode: Decode = field(default="ot", metadata=_doc(
        "'ot' = argmax of the transport plan; 'min-cost' = each pixel to its minimum-cost point (Table 7)."))
    """``"min-cost"`` is Table 7's baseline (PSPS-style assignment without OT)."""
    ot_mode: OtMode = field(default="release", metadata=_doc(
        "'release' = sinkhorn_iterations log-domain iterations from u = v = 1 (not converged); "
        "'converged' = iterate until the marginals meet sinkhorn_tolerance."))
    """The paper fixes T = 80 Sinkhorn iterations (Alg. 1) and is silent on the rest; the release runs
    them in the log domain with eps = 1e-3 from u = v = 1, which does not converge. ``"converged"``
    iterates until the supplier marginals are met."""
    sinkhorn_epsilon: float = field(default=1e-3, metadata=_doc("Entropic regularisation eps (release 1e-3)."))
    """Entropic regularisation eps of the Sinkhorn-Knopp iterations (release: 1e-3)."""
    sinkhorn_iterations: int = field(default=80, metadata=_doc("T of Alg. 1 in 'release' mode (paper: 80)."))
    """T of Alg. 1 (paper and release: 80); used by ``ot_mode="release"``."""
    sinkhorn_tolerance: float = field(default=1e-3, metadata=_doc(
        "'converged': stop when max_i |row_i - k_i| / max(k_i, 1) is below this."))
    """Stopping rule of ``ot_mode="converged"``: largest supplier-marginal error relative to its k."""
    sinkhorn_max_iterations: int = field(default=100000, metadata=_doc("'converged': iteration cap."))
    """Iteration cap of ``ot_mode="converged"`` (raises when reached)."""

    # --- unit numbers, Sec. 3.3.3 / Eq. 4, Tables 5-6 ----------------------------------------
    unit_number: UnitNumber = field(default="nearest-centroid", metadata=_doc(
        "k_i of each supplier: 'equal' division, 'nearest-point' or 'nearest-centroid' counts (Table 5)."))
    """Table 5's schemes; ``"nearest-centroid"`` is the paper's (Eq. 4)."""
    centroid_iterations: int = field(default=1, metadata=_doc("Centroid updates of 'nearest-centroid' (Table 6)."))
    """Times the centroid step is applied (Table 6: 1, 2, 4, 8, 10; main experiments and release: 1)."""
    k_assignment: Assignment = field(default="min-cost", metadata=_doc(
        "Assignment behind the unit numbers: 'min-cost' (paper, Eq. 4) or 'likelihood' = "
        "(1 - normalised cost) x class likelihood (release).", release="likelihood"))
    """The paper assigns each pixel to its minimum-cost point (Eq. 4); the release maximises
    (1 - cost / max cost) times the point's class probability (plus the probabilities of the stuff
    classes present), for the initial masks and for the centroid counts."""

    # --- boundary maps and L_bou, Eq. 6-7 / Table 3 ------------------------------------------
    use_high_boundary: bool = field(default=True, metadata=_doc("Use the learned high-level boundary P^b_high."))
    """Table 3 switch: the learned boundary map in d^b (:func:`~.boundary.boundary_maps` selects the maps)."""
    use_low_boundary: bool = field(default=True, metadata=_doc(
        "Use the low-level edge map P^b_low (a Sobel-LAB substitute for Structured Edges).", release=False))
    """Table 3 switch: the low-level edge map in d^b (the release disables it in every config). The
    paper's Structured Edge model is replaced by :func:`methods.point2mask.boundary.low_level_boundary`."""
    detach_boundary_inputs: bool = field(default=False, metadata=_doc(
        "The boundary head reads detached features, so L_bou trains the head only.", release=True))
    """The release detaches the neck features entering the boundary head (:class:`~.boundary.BoundaryHead`)."""

    # --- semantic map loss, Eq. 5 / Table 4 --------------------------------------------------
    use_lab: bool = field(default=True, metadata=_doc("Add L_LAB to L_sem (Table 4)."))
    """Table 4 switch: the local LAB pairwise term."""
    use_rgb: bool = field(default=True, metadata=_doc("Add L_RGB to L_sem (Table 4)."))
    """Table 4 switch: the long-range MST tree-filter term."""
    alpha_lab: float = field(default=3.0, metadata=_doc("alpha_1 of Eq. 5 (paper: 3)."))
    """alpha_1 of Eq. 5 (paper and release: 3)."""
    alpha_rgb: float = field(default=3.0, metadata=_doc("alpha_2 of Eq. 5 (paper: 3)."))
    """alpha_2 of Eq. 5 (paper and release: 3)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = typing.get_args(typing.get_type_hints(type(self))[f.name])
            if allowed and value not in allowed:
                raise ValueError(f"point2mask.{f.name} = {value!r}: allowed {list(allowed)}")
        if self.grid_stride < 1:
            raise ValueError(f"point2mask.grid_stride must be >= 1, got {self.grid_stride}")
        if self.point_square < 1 or self.point_square % 2 != 1:
            raise ValueError(f"point2mask.point_square must be a positive odd integer, got {self.point_square}")
        if self.sinkhorn_epsilon <= 0 or self.sinkhorn_tolerance <= 0:
            raise ValueError("point2mask.sinkhorn_epsilon and sinkhorn_tolerance must be > 0")
        if self.sinkhorn_iterations < 1 or self.sinkhorn_max_iterations < 1 or self.centroid_iterations < 1:
            raise ValueError("point2mask.sinkhorn_iterations, sinkhorn_max_iterations and centroid_iterations must be >= 1")
        if self.beta < 0 or self.embedding_weight < 0 or not 0 <= self.stuff_min_prob <= 1:
            raise ValueError("point2mask.beta and embedding_weight must be >= 0, stuff_min_prob in [0, 1]")

    @classmethod
    def release(cls, **overrides: Any) -> "Point2MaskConfig":
        """The official release's settings: every field with a ``release`` value takes it."""
        values = {f.name: f.metadata["release"] for f in fields(cls) if "release" in f.metadata}
        return replace(cls(), **{**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""Point2Mask's panoptic pseudo masks from one point per target (paper 001, Sec. 3.3, Alg. 1).

:func:`pseudo_masks` composes the pieces:

1. the category-wise map P^s restricted to the classes of the image's points, with probability 1 in
   a ``point_square`` square around every point (the release's ``sup_semantic_masks``);
2. stuff comes from the semantic map: a pixel whose top class is a stuff class joins that class's
   (first) stuff point, or is void when the top probability is below ``stuff_min_prob``;
3. things go through OT: the consumers are the pixels whose top class is a thing class, the suppliers
   the thing points; costs from Eq. 3 (:mod:`.cost`), unit numbers from Eq. 4 (:mod:`.units`),
   Sinkhorn-Knopp (:mod:`.transport`) and argmax decoding — or Table 7's minimum-cost assignment.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import Point2MaskConfig
from .cost import transport_cost
from .transport import plan_labels, sinkhorn
from .units import class_likelihood, unit_numbers

__all__ = ["pseudo_masks", "point_probabilities"]


def _as_tensor(x: np.ndarray | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """A float32 tensor (no grad) on ``device`` (default: where ``x`` is; numpy -> CPU)."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.detach().to(device=device or t.device, dtype=torch.float32)


def _check_points(points: np.ndarray, point_classes: np.ndarray, shape: tuple[int, int, int], record: object) -> None:
    """ValueError naming the record and point for a point outside the image or an unknown class."""
    where = "" if record is None else f"record {record}: "
    num_classes, height, width = shape
    if points.ndim != 2 or points.shape[1] != 2 or point_classes.shape != (len(points),):
        raise ValueError(f"{where}points must be (N, 2) (x, y) with N classes, got {points.shape} / {point_classes.shape}")
    for p, ((x, y), c) in enumerate(zip(points.tolist(), point_classes.tolist())):
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"{where}point {p} at (x={x}, y={y}) is outside the {width}x{height} image")
        if not 0 <= c < num_classes:
            raise ValueError(f"{where}point {p} has class {c}, absent from the label set [0, {num_classes})")


def point_probabilities(probs: torch.Tensor, rows: np.ndarray, cols: np.ndarray, point_classes: np.ndarray, square: int) -> torch.Tensor:
    """P^s as the release feeds it to the cost: probabilities of the classes present among the points
    (others zeroed, no renormalisation), maxed with 1 in a ``square`` x ``square`` square (clipped at
    the border) around each point for its class."""
    num_classes, height, width = probs.shape
    present = torch.zeros(num_classes, dtype=torch.bool, device=probs.device)
    present[torch.as_tensor(point_classes, dtype=torch.long, device=probs.device)] = True
    out = probs * present[:, None, None]
    r = square // 2
    for y, x, c in zip(rows.tolist(), cols.tolist(), point_classes.tolist()):
        out[c, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = 1.0
    return out


def pseudo_masks(
    semantic_probs: np.ndarray | torch.Tensor,
    boundary: np.ndarray | torch.Tensor | None,
    points: np.ndarray,
    point_classes: np.ndarray,
    is_thing: np.ndarray,
    config: Point2MaskConfig,
    *,
    embedding: np.ndarray | torch.Tensor | None = None,
    record: object = None,
) -> np.ndarray:
    """Panoptic pseudo label map of one image (Alg. 1).

    Args:
        semantic_probs: (C, H, W) class probabilities P^s (softmax of the semantic map). A tensor's
            device is kept for the dense work (costs, Sinkhorn); Dijkstra runs on the CPU.
        boundary: boundary maps P^b in [0, 1], (h', w') or (K, h', w') at any resolution (resized
            bilinearly to the cost grid; each adds its own max term to d^b), or None (Table 3, P^s only).
        points: (N, 2) integer pixel coordinates (x, y), one per thing instance and stuff segment.
        point_classes: (N,) class index of each point, in [0, C).
        is_thing: (C,) bool, thing classes.
        config: :class:`~.config.Point2MaskConfig`.
        embedding: (D, h', w') L2-normalised embedding, required with ``config.embedding_term``.
        record: names the image in error messages (e.g. its id).

    Returns:
        (H, W) int32: ``p + 1`` where the pixel belongs to point ``p``'s segment, 0 = void. Pixels of a
        stuff class with several points go to its first point.

    Raises:
        ValueError: a point outside the image or with a class outside [0, C) (naming ``record`` and
            the point), or malformed inputs.
    """
    probs = _as_tensor(semantic_probs)
    if probs.ndim != 3:
        raise ValueError(f"semantic_probs must be (C, H, W), got {tuple(probs.shape)}")
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2) if len(points) else np.zeros((0, 2), np.int64)
    point_classes = np.asarray(point_classes, dtype=np.int64).reshape(-1)
    is_thing = np.asarray(is_thing, dtype=bool)
    if is_thing.shape != (probs.shape[0],):
        raise ValueError(f"is_thing must have one flag per class ({probs.shape[0]}), got {is_thing.shape}")
    _check_points(points, point_classes, tuple(probs.shape), record)
    if config.embedding_term and embedding is None:
        raise ValueError("config.embedding_term needs an embedding")
    height, width = probs.shape[1:]
    out = np.zeros((height, width), dtype=np.int32)
    if not len(points):
        return out
    cols, rows = points[:, 0], points[:, 1]
    probs = point_probabilities(probs, rows, cols, point_classes, config.point_square)
    top_prob, top_class = probs.max(0)
    thing_pixel = torch.from_numpy(is_thing).to(probs.device)[top_class]

    stuff_point = np.zeros(probs.shape[0], dtype=np.int32)
    for p in np.flatnonzero(~is_thing[point_classes])[::-1]:
        stuff_point[point_classes[p]] = p + 1
    stuff = (~thing_pixel & (top_prob >= config.stuff_min_prob)).cpu().numpy()
    out[stuff] = stuff_point[top_class.cpu().numpy()[stuff]]

    things = np.flatnonzero(is_thing[point_classes])
    if not len(things):
        return out
    bound = None if boundary is None else _as_tensor(boundary, probs.device)
    bound = bound[None] if bound is not None and bound.ndim == 2 else bound
    emb = None if embedding is None else _as_tensor(embedding, probs.device)
    t_rows, t_cols, t_classes = rows[things], cols[things], point_classes[things]

    def cost_from(r: np.ndarray, c: np.ndarray):
        return transport_cost(probs, bound, emb, r, c, t_classes, config)

    cost = cost_from(t_rows, t_cols)
    consumers = cost.image[:, thing_pixel].T.contiguous()  # (m, n)
    if config.decode == "min-cost":
        labels = consumers.argmin(1)
    else:
        likelihood = class_likelihood(probs, t_classes, is_thing) if config.k_assignment == "likelihood" else None
        supply = unit_numbers(cost, thing_pixel, t_rows, t_cols, config, cost_from=cost_from, likelihood=likelihood)
        converged = config.ot_mode == "converged"
        result = sinkhorn(
            consumers, supply, epsilon=config.sinkhorn_epsilon,
            iterations=None if converged else config.sinkhorn_iterations,
            tolerance=config.sinkhorn_tolerance if converged else None,
            max_iterations=config.sinkhorn_max_iterations,
        )
        labels = plan_labels(consumers, result.u)
    out[thing_pixel.cpu().numpy()] = things[labels.cpu().numpy()] + 1
    return out

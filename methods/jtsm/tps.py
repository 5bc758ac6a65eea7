"""Shape-interpolation MoIPool (Sec. 3.3): a thin-plate spline maps each proposal's box onto its mask
region, the box's regular sampling grid is carried through it, and the warped samples are max-pooled
into the h^p×w^p bins (RoIPool on the rectified region).

The paper gives no control points; here (docs/jtsm.md): K rays from the mask's centroid at angles
2πk/K, each ending at the farthest mask point the ray reaches inside the box (the mask read on a
``_MASK_GRID``² grid over its box), correspond to the points where rays from the box centre at the same
angles leave the box, plus centroid ↔ box centre. All in box-normalised coordinates [-1, 1]²; one
(K+4)² linear solve per proposal, batched. Cost per proposal is fixed (no image-sized tensor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods.jtsm.segments import SegmentBatch, sample_masks

__all__ = ["apply_tps", "control_points", "control_points_of", "fit_tps", "shape_interpolation_pool"]

_MASK_GRID = 32
_RAY_STEPS = 32
_REGULARISATION = 1e-3


def _u(r2: torch.Tensor) -> torch.Tensor:
    """The TPS radial basis U(r) = r² log r², from squared distances (0 at 0)."""
    return r2 * torch.log(r2.clamp(min=1e-12))


def control_points(masks: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Corresponding (N, count+1, 2) ``box`` points (on the box border, then its centre) and ``mask``
    points (the mask contour along the same rays, then the mask centroid), (x, y) in [-1, 1]², from
    masks (N, g, g) sampled over their boxes."""
    n, g, _ = masks.shape
    dev = masks.device
    coords = (torch.arange(g, device=dev, dtype=torch.float32) + 0.5) / g * 2 - 1
    weight = masks.float()
    area = weight.sum((1, 2)).clamp(min=1.0)
    cy = (weight.sum(2) * coords).sum(1) / area
    cx = (weight.sum(1) * coords).sum(1) / area
    theta = torch.arange(count, device=dev, dtype=torch.float32) * (2 * math.pi / count)
    direction = torch.stack([torch.cos(theta), torch.sin(theta)], -1)                 # (K, 2)
    border = direction / direction.abs().amax(-1, keepdim=True)                      # box: rays from 0
    centre = torch.stack([cx, cy], -1)                                                # (N, 2)
    # distance from the centroid to the box border along each ray, then samples along it
    limit = torch.where(direction[None] > 0, 1 - centre[:, None], -1 - centre[:, None]) / direction[None]
    reach = torch.nan_to_num(limit, nan=float("inf"), posinf=float("inf"), neginf=float("inf")).amin(-1)
    t = (torch.arange(1, _RAY_STEPS + 1, device=dev, dtype=torch.float32) / _RAY_STEPS)
    pts = centre[:, None, None] + direction[None, :, None] * (reach[..., None, None] * t[None, None, :, None])
    cells = ((pts + 1) / 2 * g).long().clamp(0, g - 1)                                # (N, K, T, 2)
    inside = masks[torch.arange(n, device=dev)[:, None, None], cells[..., 1], cells[..., 0]] > 0.5
    steps = torch.arange(1, _RAY_STEPS + 1, device=dev)
    last = (inside * steps).amax(-1)                                                  # 0: never inside
    frac = last.float() / _RAY_STEPS
    contour = centre[:, None] + direction[None] * (reach * frac)[..., None]
    box_pts = torch.cat([border[None].expand(n, -1, -1), torch.zeros(n, 1, 2, device=dev)], 1)
    mask_pts = torch.cat([contour, centre[:, None]], 1)
    return box_pts, mask_pts


def fit_tps(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, M+3, 2) TPS parameters (M radial weights, then affine a0, ax, ay) of the spline mapping the
    (N, M, 2) ``source`` points onto ``target``."""
    n, m, _ = source.shape
    k = _u(((source[:, :, None] - source[:, None]) ** 2).sum(-1))
    k = k + _REGULARISATION * torch.eye(m, device=source.device)
    p = torch.cat([torch.ones(n, m, 1, device=source.device), source], -1)
    top = torch.cat([k, p], 2)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(n, 3, 3, device=source.device)], 2)
    system = torch.cat([top, bottom], 1)
    rhs = torch.cat([target, torch.zeros(n, 3, 2, device=source.device)], 1)
    return torch.linalg.solve(system, rhs)


def apply_tps(params: torch.Tensor, source: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The fitted spline at (N, Q, 2) ``points`` (N, Q, 2)."""
    m = source.shape[1]
    u = _u(((points[:, :, None] - source[:, None]) ** 2).sum(-1))                     # (N, Q, M)
    affine = torch.cat([torch.ones_like(points[..., :1]), points], -1)                # (N, Q, 3)
    return u @ params[:, :m] + affine @ params[:, m:]


def shape_interpolation_pool(features: torch.Tensor, segments: SegmentBatch, *, output_size: int, stride: int,
                             control_points: int, samples: int) -> torch.Tensor:
    """(N, C, h^p, w^p): features bilinearly read at the TPS-warped (h^p·k)×(w^p·k) box grid of each
    proposal, max-pooled k×k (k = ``samples``)."""
    n = len(segments)
    b, c, hf, wf = features.shape
    if n == 0:
        return features.new_zeros(0, c, output_size, output_size)
    box_pts, mask_pts = control_points_of(segments, control_points)
    params = fit_tps(box_pts, mask_pts)
    side = output_size * samples
    lin = (torch.arange(side, device=features.device, dtype=torch.float32) + 0.5) / side * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx, gy], -1).view(1, -1, 2).expand(n, -1, -1)
    warped = apply_tps(params, box_pts, grid).clamp(-1, 1)                          # box-normalised
    boxes = segments.boxes.float()
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    pixel = boxes[:, None, :2] + half[:, None] + warped * half[:, None]               # (N, Q, 2) x, y
    size = torch.tensor([wf * stride, hf * stride], device=features.device, dtype=torch.float32)
    norm = pixel / size * 2 - 1                                                       # grid_sample coords
    out = features.new_zeros(n, c, side * side)
    for image in range(b):
        sel = (segments.batch_index == image).nonzero().flatten()
        if len(sel):
            read = F.grid_sample(features[image:image + 1], norm[sel].view(1, -1, 1, 2).to(features.dtype),
                                 mode="bilinear", align_corners=False)                # (1, C, n_b·Q, 1)
            out[sel] = read.view(c, len(sel), side * side).permute(1, 0, 2)
    return F.max_pool2d(out.view(n, c, side, side), samples)


def control_points_of(segments: SegmentBatch, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`control_points` of every proposal, its mask read from the superpixel tables."""
    return control_points(sample_masks(segments, _MASK_GRID), count)

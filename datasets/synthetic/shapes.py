"""Shape families of the synthetic thing classes, rasterised into small local patches.

Every family draws a random member of itself as one or more polygons in unit coordinates
(the shape fits in a disc of radius ~1 around the origin). :func:`render_shape` scales the
polygons so that the filled area is close to a requested pixel area, rotates them and
rasterises them with ``cv2.fillPoly`` (even-odd rule, so a second polygon inside the
first one is a hole) into a tight boolean patch. Placement in an image is an integer
translation of the patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FAMILIES", "ShapePatch", "render_shape"]

_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices
_ONE = 1 << _SHIFT

Polys = list[np.ndarray]


def _ellipse(a: float, b: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], axis=1)


def _disc(rng: np.random.Generator) -> Polys:
    return [_ellipse(1.0, float(rng.uniform(0.55, 1.0)))]


def _bar(rng: np.random.Generator) -> Polys:
    """Rounded rectangle, elongated (a 'bottle' / 'bar')."""
    hl, hw = 1.0, float(rng.uniform(0.22, 0.42))
    rad = hw * float(rng.uniform(0.15, 0.95))
    pts = []
    for cx, cy, a0 in ((hl - rad, hw - rad, 0.0), (-hl + rad, hw - rad, 90.0),
                       (-hl + rad, -hw + rad, 180.0), (hl - rad, -hw + rad, 270.0)):
        t = np.deg2rad(a0 + np.linspace(0.0, 90.0, 6))
        pts.append(np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1))
    return [np.concatenate(pts)]


def _tri(rng: np.random.Generator) -> Polys:
    b = float(rng.uniform(0.6, 1.0))
    pts = np.array([[0.0, -1.0], [-b, 0.6], [b, 0.6]])
    pts += rng.uniform(-0.08, 0.08, size=pts.shape)
    return [pts - pts.mean(axis=0)]


def _star(rng: np.random.Generator) -> Polys:
    k = int(rng.choice([5, 6]))
    inner = float(rng.uniform(0.38, 0.55))
    t = np.arange(2 * k) * math.pi / k - math.pi / 2
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]


def _ring(rng: np.random.Generator) -> Polys:
    b = float(rng.uniform(0.8, 1.0))
    inner = float(rng.uniform(0.45, 0.65))
    return [_ellipse(1.0, b), _ellipse(inner, inner * b)]


def _cross(rng: np.random.Generator) -> Polys:
    w = float(rng.uniform(0.22, 0.35))
    h = float(rng.uniform(0.7, 1.0))
    pts = np.array([[-w, -1], [w, -1], [w, -w], [h, -w], [h, w], [w, w], [w, 1], [-w, 1],
                    [-w, w], [-h, w], [-h, -w], [-w, -w]], dtype=np.float64)
    return [pts]


def _hex(rng: np.random.Generator) -> Polys:
    b = float(rng.uniform(0.8, 1.0))
    t = np.arange(6) * math.pi / 3
    return [np.stack([np.cos(t), b * np.sin(t)], axis=1)]


def _blob(rng: np.random.Generator) -> Polys:
    t = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += float(rng.uniform(0.0, 0.18)) * np.cos(k * t + float(rng.uniform(0, 2 * math.pi)))
    r /= r.max()
    return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]


def _moon(rng: np.random.Generator) -> Polys:
    """Crescent: unit disc minus a disc of radius r2 centred at (d, 0)."""
    r2 = float(rng.uniform(0.7, 0.95))
    d = float(rng.uniform(0.35, 0.6))
    x0 = (1.0 + d * d - r2 * r2) / (2.0 * d)
    y0 = math.sqrt(max(1.0 - x0 * x0, 1e-6))
    th0 = math.atan2(y0, x0)
    outer = np.linspace(th0, 2.0 * math.pi - th0, 40)
    p_out = np.stack([np.cos(outer), np.sin(outer)], axis=1)  # from (x0, y0) round the left to (x0, -y0)
    ph_a = math.atan2(-y0, x0 - d)  # lower intersection, in (-pi, 0)
    ph_b = math.atan2(y0, x0 - d)  # upper intersection, in (0, pi)
    # back along the cutting circle through its leftmost point (angle pi), inside the disc
    inner = np.linspace(ph_a + 2.0 * math.pi, ph_b, 30)
    p_in = np.stack([d + r2 * np.cos(inner), r2 * np.sin(inner)], axis=1)
    pts = np.concatenate([p_out, p_in[1:-1]])
    return [pts - np.array([[-0.2, 0.0]])]


def _arrow(rng: np.random.Generator) -> Polys:
    sw = float(rng.uniform(0.12, 0.2))
    hw = float(rng.uniform(0.4, 0.55))
    hl = float(rng.uniform(0.35, 0.5))
    xh = 1.0 - 2.0 * hl
    pts = np.array([[-1, -sw], [xh, -sw], [xh, -hw], [1, 0], [xh, hw], [xh, sw], [-1, sw]],
                   dtype=np.float64)
    return [pts]


def _diamond(rng: np.random.Generator) -> Polys:
    b = float(rng.uniform(0.45, 0.7))
    return [np.array([[1.0, 0.0], [0.0, b], [-1.0, 0.0], [0.0, -b]])]


def _chevron(rng: np.random.Generator) -> Polys:
    t = float(rng.uniform(0.45, 0.6))
    pts = np.array([[-1, -0.6], [0, 0.6], [1, -0.6], [1, -0.6 - t], [0, 0.6 - t], [-1, -0.6 - t]],
                   dtype=np.float64)
    pts[:, 1] += t / 2
    return [pts]


def _poly_area(polys: Polys) -> float:
    """Even-odd area of nested polygons (first outer, the rest holes inside it)."""
    areas = []
    for p in polys:
        x, y = p[:, 0], p[:, 1]
        cross = float(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:])) + float(x[-1] * y[0] - y[-1] * x[0])
        areas.append(0.5 * abs(cross))
    return areas[0] - sum(areas[1:])


@dataclass(frozen=True)
class ShapeFamily:
    """A named shape family: a sampler of unit-size polygons."""

    name: str
    sample: Callable[[np.random.Generator], Polys]


FAMILIES: tuple[ShapeFamily, ...] = (
    ShapeFamily("disc", _disc),
    ShapeFamily("bar", _bar),
    ShapeFamily("tri", _tri),
    ShapeFamily("star", _star),
    ShapeFamily("ring", _ring),
    ShapeFamily("cross", _cross),
    ShapeFamily("hex", _hex),
    ShapeFamily("blob", _blob),
    ShapeFamily("moon", _moon),
    ShapeFamily("arrow", _arrow),
    ShapeFamily("diamond", _diamond),
    ShapeFamily("chevron", _chevron),
)


@dataclass
class ShapePatch:
    """A rasterised shape: ``mask`` (bool, tight box) whose centre pixel is ``(cy, cx)``.

    ``ys``/``xs`` are the coordinates of the mask pixels relative to the centre (used for
    fast contact searches), ``radius`` bounds them.
    """

    mask: np.ndarray
    cy: int
    cx: int
    ys: np.ndarray
    xs: np.ndarray
    radius: float


def render_shape(family: ShapeFamily, rng: np.random.Generator, *, area: float, angle: float) -> ShapePatch:
    """Sample a member of ``family`` with filled area ≈ ``area`` px, rotated by ``angle`` (rad)."""
    polys = family.sample(rng)
    unit = max(_poly_area(polys), 1e-3)
    scale = math.sqrt(max(area, 1.0) / unit)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]]) * scale
    polys = [p @ rot.T for p in polys]
    radius = max(float(np.sqrt((p ** 2).sum(axis=1)).max()) for p in polys)
    half = int(math.ceil(radius)) + 1
    size = 2 * half + 1
    mask = np.zeros((size, size), np.uint8)
    pts = [np.round((p + half) * _ONE).astype(np.int32) for p in polys]
    cv2.fillPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    if not mask.any():  # degenerate tiny shape: at least its centre pixel
        mask[half, half] = 1
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    mask = mask[y0:y1, x0:x1].astype(bool)
    cy, cx = half - y0, half - x0
    return ShapePatch(mask=mask, cy=int(cy), cx=int(cx), ys=(ys - half).astype(np.int32),
                      xs=(xs - half).astype(np.int32), radius=radius)

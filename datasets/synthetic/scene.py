"""Procedural scene synthesis shared by the synthetic presets.

A scene is a stuff layer (VOC-like: one ``background`` class made of 1–3 textured regions;
COCO-like: 2–5 regions of stuff classes laid out as wavy horizontal bands or warped Voronoi
cells), a little clutter drawn on the stuff (part of it), and thing instances painted back to
front (painter's algorithm: a later instance occludes the earlier ones; the *visible* mask is
what gets annotated). Instances come as

* singles at random positions,
* same-class groups ("bottles in a row"): every member after the first is slid along a
  direction until its mask touches (4-adjacency) the previous member, then pushed in by a
  random overlap, so same-class instances touch or overlap; the number of groups follows the
  ``touching_fraction`` target,
* optionally one crowd: a dense cluster of tiny same-class objects that is annotated as one
  region (COCO ``iscrowd=1``),
* optionally one large object at the back (COCO "large" area at small image sizes).

Objects whose visible area is below ``min_area`` are dropped: their pixels become void.
Photometric nuisance follows: global gain and linear illumination gradient, colour cast,
occasional Gaussian blur, Gaussian noise.

Everything is drawn from one ``numpy.random.Generator``; a scene depends on nothing else.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .appearance import (
    STUFF_TABLE,
    ThingAppearance,
    background_texture,
    stuff_texture,
    thing_texture,
)
from .shapes import ShapePatch, render_shape

__all__ = ["Scene", "SceneConfig", "SceneObject", "render_scene", "touching_pairs"]


@dataclass(frozen=True)
class SceneConfig:
    """Everything :func:`render_scene` needs (built by a preset from its params)."""

    height: int
    width: int
    things: tuple[ThingAppearance, ...]
    stuff: tuple[str, ...] | None
    """Stuff texture names (COCO-like); None = VOC-like single ``background`` class."""
    instances: tuple[int, int]
    size_range: tuple[float, float]
    """Log-uniform range of sqrt(area) / sqrt(h·w) of ordinary instances."""
    large_range: tuple[float, float] = (0.95, 1.25)
    large_image_prob: float = 0.3
    touching_fraction: float = 0.55
    max_group: int = 4
    crowd_prob: float = 0.0
    min_area: int = 24
    clutter: tuple[int, int] = (0, 4)
    blur_prob: float = 0.15
    noise: tuple[float, float] = (0.004, 0.03)
    void_sliver_prob: float = 0.0

    @property
    def scale(self) -> float:
        return math.sqrt(self.height * self.width) / 128.0


@dataclass
class SceneObject:
    """One annotated unit: a thing instance or a crowd region (label ``label`` in the map)."""

    label: int
    category: int
    crowd: bool
    full_area: int = 0
    """In-frame area before occlusion."""
    visible_area: int = 0
    truncated: bool = False
    kept: bool = False
    touching: bool = False
    """Touches (4-adjacency of visible masks) a kept same-class non-crowd instance."""


@dataclass
class Scene:
    """A rendered scene: RGB image, object label map, stuff map, void mask and objects."""

    image: np.ndarray
    labels: np.ndarray
    """int32 (h, w): object label (``objects[i].label == i + 1``) or 0 for stuff."""
    stuff: np.ndarray
    """uint8 (h, w): stuff index under the objects (0 for the VOC background)."""
    void: np.ndarray
    """bool (h, w): unlabelled pixels (dropped objects, stuff-boundary slivers)."""
    objects: list[SceneObject] = field(default_factory=list)


@dataclass
class _Member:
    patch: ShapePatch
    cy: int
    cx: int


@dataclass
class _Unit:
    kind: str  # "single" | "group" | "crowd" | "large"
    category: int
    sizes: list[float]
    key: float


# --------------------------------------------------------------------------- helpers


def _slices(h: int, w: int, patch: ShapePatch, cy: int, cx: int):
    """Clip a patch placed with its centre at (cy, cx) to the frame: frame and patch slices."""
    ph, pw = patch.mask.shape
    y0, x0 = cy - patch.cy, cx - patch.cx
    fy0, fx0 = max(y0, 0), max(x0, 0)
    fy1, fx1 = min(y0 + ph, h), min(x0 + pw, w)
    if fy0 >= fy1 or fx0 >= fx1:
        return None
    return (slice(fy0, fy1), slice(fx0, fx1)), (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))


def _full_mask(h: int, w: int, members: list[_Member]) -> np.ndarray:
    out = np.zeros((h, w), bool)
    for m in members:
        sl = _slices(h, w, m.patch, m.cy, m.cx)
        if sl is not None:
            out[sl[0]] |= m.patch.mask[sl[1]]
    return out


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a, b), a < b, of distinct non-zero labels that are 4-adjacent in ``labels``."""
    pairs: set[tuple[int, int]] = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        sel = (a != b) & (a > 0) & (b > 0)
        if sel.any():
            lo = np.minimum(a[sel], b[sel]).astype(np.int64)
            hi = np.maximum(a[sel], b[sel]).astype(np.int64)
            for code in np.unique(lo * 1_000_003 + hi):
                pairs.add((int(code // 1_000_003), int(code % 1_000_003)))
    return pairs


def _contact_center(h: int, w: int, anchor: _Member, dist: np.ndarray, patch: ShapePatch,
                    angle: float, overlap: float) -> tuple[int, int] | None:
    """Centre for ``patch`` on the ray from the anchor centre at ``angle`` where it first touches
    the anchor (L1 distance ≤ 1), moved ``overlap`` px further in; None if off-frame."""
    uy, ux = math.sin(angle), math.cos(angle)

    def touches(t: float) -> bool | None:
        py = anchor.cy + int(round(t * uy))
        px = anchor.cx + int(round(t * ux))
        ys = patch.ys + py
        xs = patch.xs + px
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        if not ok.any():
            return None
        return bool(dist[ys[ok], xs[ok]].min() <= 1.0)

    t_hi = anchor.patch.radius + patch.radius + 2.0
    step = max(1.0, patch.radius / 3.0)
    t = t_hi
    prev = t_hi
    hit = None
    while t > -t_hi:
        r = touches(t)
        if r:
            hit = t
            break
        prev = t
        t -= step
    if hit is None:
        return None
    lo, hi = hit, prev  # touches at lo, not at hi
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        if touches(mid):
            lo = mid
        else:
            hi = mid
    t = lo - overlap
    cy = anchor.cy + int(round(t * uy))
    cx = anchor.cx + int(round(t * ux))
    if not (0 <= cy < h and 0 <= cx < w):
        return None
    return cy, cx


def _regions(rng: np.random.Generator, h: int, w: int, max_regions: int) -> tuple[np.ndarray, str]:
    """Region index map: wavy horizontal bands or warped Voronoi cells."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if max_regions <= 1:
        return np.zeros((h, w), np.int32), "single"
    if rng.random() < 0.55:
        k = int(rng.integers(1, min(3, max_regions - 1) + 1))  # number of boundaries
        fracs = np.sort(rng.uniform(0.2, 0.8, size=k))
        reg = np.zeros((h, w), np.int32)
        for f in fracs:
            amp = float(rng.uniform(0.0, 0.08)) * h
            lam = float(rng.uniform(0.5, 1.5)) * w
            y_b = f * h + amp * np.sin(2 * math.pi * xx / lam + float(rng.uniform(0, 2 * math.pi)))
            reg += (yy > y_b).astype(np.int32)
        return reg, "bands"
    m = int(rng.integers(2, max_regions + 1))
    seeds = rng.uniform(0, 1, size=(m, 2)) * np.array([h, w])
    warp = float(rng.uniform(0.0, 0.15)) * max(h, w)
    gy = cv2.resize(rng.standard_normal((4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    gx = cv2.resize(rng.standard_normal((4, 4)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    py = yy + warp * gy
    px = xx + warp * gx
    d = np.stack([(py - sy) ** 2 + (px - sx) ** 2 for sy, sx in seeds])
    return d.argmin(axis=0).astype(np.int32), "voronoi"


def _stuff_layer(cfg: SceneConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = cfg.height, cfg.width
    img = np.empty((h, w, 3), np.float32)
    if cfg.stuff is None:  # VOC-like background: 1–3 textured regions, one class
        reg, _ = _regions(rng, h, w, 3)
        for r in np.unique(reg):
            _fill_region(img, reg == r, lambda shape: background_texture(rng, shape, scale=cfg.scale))
        return img, np.zeros((h, w), np.uint8)
    n = len(cfg.stuff)
    reg, mode = _regions(rng, h, w, 5)
    nreg = int(reg.max()) + 1
    cls = np.empty(nreg, np.int64)
    for r in range(nreg):
        if mode == "bands" and r == 0 and "sky" in cfg.stuff and rng.random() < 0.6:
            cls[r] = cfg.stuff.index("sky")
        else:
            c = int(rng.integers(n))
            if mode == "bands" and r > 0 and n > 1 and c == cls[r - 1]:
                c = (c + 1 + int(rng.integers(n - 1))) % n
            cls[r] = c
    stuff = cls[reg].astype(np.uint8)
    for c in np.unique(stuff):
        kind = cfg.stuff[int(c)]
        _fill_region(img, stuff == c, lambda shape: stuff_texture(kind, rng, shape, scale=cfg.scale))
    return img, stuff


def _fill_region(img: np.ndarray, mask: np.ndarray, make) -> None:
    """Paint ``make((bh, bw))`` (a texture of the mask's bounding box) into ``img`` where ``mask``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    sl = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    tex = make((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start))
    np.copyto(img[sl], tex, where=mask[sl][:, :, None])


def _clutter(cfg: SceneConfig, rng: np.random.Generator, img: np.ndarray) -> None:
    """A few small marks (lines, dots, boxes) drawn on the stuff layer; they belong to the stuff."""
    h, w = cfg.height, cfg.width
    n = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    for _ in range(n):
        col = colorsys.hsv_to_rgb(float(rng.random()), float(rng.uniform(0.0, 0.6)), float(rng.uniform(0.15, 0.95)))
        col = tuple(float(c) for c in col)
        kind = rng.random()
        y, x = int(rng.integers(h)), int(rng.integers(w))
        size = max(1, int(round(float(rng.uniform(1.5, 6.0)) * cfg.scale)))
        if kind < 0.5:
            ang = float(rng.uniform(0, math.pi))
            ln = float(rng.uniform(4, 20)) * cfg.scale
            p2 = (int(round(x + ln * math.cos(ang))), int(round(y + ln * math.sin(ang))))
            cv2.line(img, (x, y), p2, col, thickness=max(1, size // 3), lineType=cv2.LINE_8)
        elif kind < 0.8:
            cv2.circle(img, (x, y), size, col, thickness=-1, lineType=cv2.LINE_8)
        else:
            cv2.rectangle(img, (x, y), (x + size, y + max(1, size // 2)), col, thickness=-1)


def _sample_units(cfg: SceneConfig, rng: np.random.Generator, empty: bool) -> list[_Unit]:
    lo, hi = cfg.instances
    n = 0 if empty else int(rng.integers(lo, hi + 1))
    k_cls = len(cfg.things)
    units: list[_Unit] = []
    s_lo, s_hi = math.log(cfg.size_range[0]), math.log(cfg.size_range[1])

    def size() -> float:
        return math.exp(float(rng.uniform(s_lo, s_hi)))

    if n > 0 and rng.random() < cfg.large_image_prob:
        n = max(1, min(n, lo + 1))
        units.append(_Unit("large", int(rng.integers(k_cls)), [float(rng.uniform(*cfg.large_range))], math.inf))
        n -= 1
    # groups: fraction f of instances in groups of mean size g: p = f / (g - (g - 1) f)
    g = (2 + cfg.max_group) / 2
    f = min(0.95, cfg.touching_fraction * 1.15)  # calibrated: some planned contacts get lost
    p_group = f / (g - (g - 1) * f) if f > 0 else 0.0
    while n > 0:
        if n >= 2 and rng.random() < p_group:
            k = min(n, int(rng.integers(2, cfg.max_group + 1)))
            base = math.exp(float(rng.uniform(s_lo, min(s_hi, math.log(0.3)))))
            sizes = [base * math.exp(float(rng.normal(0, 0.12))) for _ in range(k)]
            units.append(_Unit("group", int(rng.integers(k_cls)), sizes,
                               math.log(base) + float(rng.normal(0, 0.4))))
            n -= k
        else:
            s = size()
            units.append(_Unit("single", int(rng.integers(k_cls)), [s], math.log(s) + float(rng.normal(0, 0.4))))
            n -= 1
    if not empty and cfg.crowd_prob > 0 and rng.random() < cfg.crowd_prob:
        m = int(rng.integers(8, 21))
        sizes = [float(rng.uniform(0.025, 0.05)) for _ in range(m)]
        units.append(_Unit("crowd", int(rng.integers(k_cls)), sizes, float(rng.uniform(s_lo, s_hi))))
    units.sort(key=lambda u: -u.key)
    return units


# --------------------------------------------------------------------------- main


def render_scene(cfg: SceneConfig, rng: np.random.Generator, *, empty: bool = False,
                 require_object: bool = False, max_tries: int = 20) -> Scene:
    """Render one scene. ``empty``: no things at all; ``require_object``: re-draw (same rng)
    until at least one non-crowd thing instance survives the minimum-area rule."""
    for _ in range(max_tries):
        scene = _render_once(cfg, rng, empty)
        if not require_object or empty or any(o.kept and not o.crowd for o in scene.objects):
            return scene
    raise RuntimeError("could not draw a scene with a visible object; check instances/min_area")


def _render_once(cfg: SceneConfig, rng: np.random.Generator, empty: bool) -> Scene:
    h, w = cfg.height, cfg.width
    area_px = float(h * w)
    img, stuff = _stuff_layer(cfg, rng)
    _clutter(cfg, rng, img)
    labels = np.zeros((h, w), np.int32)
    objects: list[SceneObject] = []
    units = _sample_units(cfg, rng, empty)

    def paint(member: _Member, label: int, tex: np.ndarray) -> None:
        sl = _slices(h, w, member.patch, member.cy, member.cx)
        if sl is None:
            return
        m = member.patch.mask[sl[1]]
        labels[sl[0]][m] = label
        img[sl[0]][m] = tex[sl[1]][m]

    for unit in units:
        app = cfg.things[unit.category]
        if unit.kind == "crowd":
            label = len(objects) + 1
            cy0 = int(rng.uniform(0.15, 0.85) * h)
            cx0 = int(rng.uniform(0.15, 0.85) * w)
            rho = float(rng.uniform(0.06, 0.12)) * math.sqrt(area_px)
            members = []
            for s in unit.sizes:
                patch = render_shape(app.family, rng, area=s * s * area_px, angle=float(rng.uniform(0, 2 * math.pi)))
                r = rho * math.sqrt(float(rng.random()))
                a = float(rng.uniform(0, 2 * math.pi))
                mem = _Member(patch, int(round(cy0 + r * math.sin(a))), int(round(cx0 + r * math.cos(a))))
                members.append(mem)
                paint(mem, label, thing_texture(app, rng, patch.mask.shape, scale=cfg.scale))
            full = int(_full_mask(h, w, members).sum())
            objects.append(SceneObject(label=label, category=unit.category, crowd=True, full_area=full))
            continue
        members: list[_Member] = []
        base_angle = float(rng.uniform(0, 2 * math.pi))
        row_angle = float(rng.uniform(0, 2 * math.pi))
        ends: list[tuple[_Member, float]] = []  # the two ends of the row and their directions
        for j, s in enumerate(unit.sizes):
            angle = base_angle + (float(rng.normal(0, 0.15)) if unit.kind == "group" else 0.0)
            patch = render_shape(app.family, rng, area=s * s * area_px, angle=angle)
            center = None
            used = None
            if j == 0:
                if unit.kind == "large":
                    center = (int(rng.uniform(0.35, 0.65) * h), int(rng.uniform(0.35, 0.65) * w))
                else:
                    center = (int(rng.integers(h)), int(rng.integers(w)))
            else:
                if rng.random() < 0.2:  # just touching
                    overlap = 0.0
                else:  # overlapping (the later one occludes the earlier one)
                    overlap = float(rng.uniform(1.0, max(1.5, 0.35 * math.sqrt(patch.mask.sum() / math.pi))))
                tries: list[tuple[int | None, _Member, float]] = [(0, *ends[0]), (1, *ends[1])]
                for _ in range(2):
                    tries.append((None, members[int(rng.integers(len(members)))], float(rng.uniform(0, 2 * math.pi))))
                for which, anchor, ang in tries:
                    ang = ang + float(rng.normal(0, 0.25))
                    dist = cv2.distanceTransform((~_full_mask(h, w, [anchor])).astype(np.uint8),
                                                 cv2.DIST_L1, 3)
                    center = _contact_center(h, w, anchor, dist, patch, ang, overlap)
                    if center is not None:
                        used = which
                        break
                if center is None:
                    center = (int(rng.integers(h)), int(rng.integers(w)))
            mem = _Member(patch, *center)
            if j == 0:
                ends = [(mem, row_angle), (mem, row_angle + math.pi)]
            elif used is not None:
                ends[used] = (mem, ends[used][1])
            members.append(mem)
            label = len(objects) + 1
            paint(mem, label, thing_texture(app, rng, patch.mask.shape, scale=cfg.scale))
            full = int(_full_mask(h, w, [mem]).sum())
            objects.append(SceneObject(label=label, category=unit.category, crowd=False, full_area=full,
                                       truncated=full < int(patch.mask.sum())))

    # visibility, minimum area, void
    vis = np.bincount(labels.ravel(), minlength=len(objects) + 1)
    void = np.zeros((h, w), bool)
    for o in objects:
        o.visible_area = int(vis[o.label])
        o.kept = o.visible_area >= cfg.min_area
    dropped = [o.label for o in objects if not o.kept and o.visible_area > 0]
    if dropped:
        void |= np.isin(labels, dropped)
    pairs = touching_pairs(labels)
    for a, b in pairs:
        oa, ob = objects[a - 1], objects[b - 1]
        if oa.category == ob.category and oa.kept and ob.kept and not oa.crowd and not ob.crowd:
            oa.touching = ob.touching = True
    if cfg.stuff is not None and cfg.void_sliver_prob > 0 and rng.random() < cfg.void_sliver_prob:
        edge = np.zeros((h, w), bool)
        edge[:, :-1] |= stuff[:, :-1] != stuff[:, 1:]
        edge[:-1, :] |= stuff[:-1, :] != stuff[1:, :]
        void |= edge & (labels == 0)

    # photometric nuisance
    yy = np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
    xx = np.arange(w, dtype=np.float32)[None, :] / max(w - 1, 1)
    ga = float(rng.uniform(0, 2 * math.pi))
    proj = (xx * math.cos(ga) + yy * math.sin(ga))
    proj = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6) - 0.5
    gain = float(rng.uniform(0.75, 1.2)) * (1.0 + float(rng.uniform(0.0, 0.5)) * proj)
    cast = rng.uniform(0.94, 1.06, size=3).astype(np.float32)
    img *= gain[:, :, None] * cast[None, None, :]
    if rng.random() < cfg.blur_prob:
        sigma = float(rng.uniform(0.6, 1.4)) * cfg.scale
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    sigma_n = float(rng.uniform(*cfg.noise))
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * sigma_n
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Scene(image=out, labels=labels, stuff=stuff, void=void, objects=objects)


def stuff_names(n: int) -> tuple[str, ...]:
    """The first ``n`` stuff texture names."""
    return tuple(s.name for s in STUFF_TABLE[:n])

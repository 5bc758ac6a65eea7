"""Class appearance of the synthetic datasets: thing colour/texture distributions and stuff textures.

A thing class is a shape family (``shapes.FAMILIES``) plus a colour distribution (a base hue
with per-instance jitter, saturation and value ranges), a texture type (stripes, dots,
checker, camouflage noise, gradient, concentric rings, plain shading) with random
parameters per instance, and a rule for the texture's second colour. Classes overlap in
single-pixel colour; shape, texture and colour statistics together identify them.

Stuff classes are full-frame textures (sky-like gradient with clouds, grass-like vertical
streak noise, water-like ripples, wall-like bricks, sand, road, snow, wood grain). The VOC-like
background draws its regions from the same textures plus plain random-colour regions.

All functions return float32 RGB in [0, 1]; everything is vectorised over pixels.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .shapes import FAMILIES, ShapeFamily

__all__ = [
    "STUFF_TABLE",
    "StuffAppearance",
    "ThingAppearance",
    "background_texture",
    "stuff_texture",
    "thing_appearance",
    "thing_texture",
]

TEXTURES = ("stripes", "gradient", "dots", "checker", "noise", "solid", "rings")

# family index -> (hue, saturation range, value range, texture, second-colour rule)
_THING_TABLE: tuple[tuple[float, tuple[float, float], tuple[float, float], str, str], ...] = (
    (0.00, (0.55, 0.90), (0.55, 0.95), "stripes", "dark"),       # disc
    (0.60, (0.45, 0.85), (0.45, 0.90), "gradient", "light"),     # bar
    (0.14, (0.60, 0.95), (0.60, 0.95), "dots", "complement"),    # tri
    (0.33, (0.50, 0.90), (0.40, 0.85), "checker", "dark"),       # star
    (0.83, (0.40, 0.80), (0.50, 0.90), "noise", "shift"),        # ring
    (0.07, (0.50, 0.90), (0.50, 0.90), "solid", "light"),        # cross
    (0.50, (0.40, 0.80), (0.45, 0.85), "rings", "dark"),         # hex
    (0.25, (0.50, 0.85), (0.40, 0.80), "noise", "complement"),   # blob
    (0.72, (0.35, 0.75), (0.45, 0.85), "stripes", "light"),      # moon
    (0.95, (0.50, 0.85), (0.50, 0.90), "checker", "light"),      # arrow
    (0.42, (0.45, 0.85), (0.45, 0.85), "dots", "dark"),          # diamond
    (0.17, (0.30, 0.60), (0.30, 0.60), "gradient", "complement"),  # chevron
)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)),
                    dtype=np.float32)


def _rgb255(c: np.ndarray) -> list[int]:
    return [int(round(float(x) * 255)) for x in c]


@dataclass(frozen=True)
class ThingAppearance:
    """Appearance distribution of one thing class (index ``index`` among the things)."""

    index: int
    name: str
    family: ShapeFamily
    hue: float
    sat: tuple[float, float]
    val: tuple[float, float]
    texture: str
    second: str

    @property
    def color(self) -> list[int]:
        """Representative RGB colour (0..255), used as the category colour."""
        return _rgb255(_hsv(self.hue, sum(self.sat) / 2, sum(self.val) / 2))


def thing_appearance(index: int) -> ThingAppearance:
    """Appearance of thing class ``index`` (0-based). Fixed by the index, not by the seed.

    Classes 0..11 use the 12 shape families once; beyond that the families repeat with a
    shifted hue and another texture, named e.g. ``disc2``.
    """
    n = len(FAMILIES)
    fam = FAMILIES[index % n]
    rnd = index // n
    hue, sat, val, tex, second = _THING_TABLE[index % n]
    if rnd:
        hue = (hue + 0.5 + 0.13 * rnd) % 1.0
        tex = TEXTURES[(TEXTURES.index(tex) + rnd) % len(TEXTURES)]
    name = fam.name if rnd == 0 else f"{fam.name}{rnd + 1}"
    return ThingAppearance(index=index, name=name, family=fam, hue=hue, sat=sat, val=val,
                           texture=tex, second=second)


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth noise in [0, 1] with about ``cells`` bumps across the larger side."""
    gh = max(2, int(round(cells * h / max(h, w))) + 1)
    gw = max(2, int(round(cells * w / max(h, w))) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :])


def _mix(c1: np.ndarray, c2: np.ndarray, m: np.ndarray) -> np.ndarray:
    return c1[None, None, :] + (c2 - c1)[None, None, :] * m[:, :, None]


def _pattern(kind: str, rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Mixing weight (h, w) in [0, 1] of the second colour for a texture kind."""
    yy, xx = _coords(h, w)
    ang = float(rng.uniform(0, math.pi))
    ca, sa = math.cos(ang), math.sin(ang)
    u = xx * ca + yy * sa
    v = yy * ca - xx * sa
    if kind == "stripes":
        period = float(rng.uniform(3.0, 8.0)) * scale
        duty = float(rng.uniform(0.3, 0.7))
        return ((u / period) % 1.0 < duty).astype(np.float32)
    if kind == "dots":
        sp = float(rng.uniform(4.0, 8.0)) * scale
        r = sp * float(rng.uniform(0.2, 0.38))
        du = (u % sp) - sp / 2
        dv = (v % sp) - sp / 2
        return ((du * du + dv * dv) < r * r).astype(np.float32)
    if kind == "checker":
        cell = float(rng.uniform(3.0, 7.0)) * scale
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if kind == "noise":
        n = _lowfreq(rng, h, w, max(h, w) / (float(rng.uniform(4.0, 9.0)) * scale))
        thr = float(rng.uniform(0.4, 0.6))
        return np.clip((n - thr) * 6.0 + 0.5, 0.0, 1.0)
    if kind == "gradient":
        lo, hi = float(u.min()) if u.size else 0.0, float(u.max()) if u.size else 1.0
        return np.broadcast_to((u - lo) / max(hi - lo, 1.0), (h, w)).astype(np.float32)
    if kind == "rings":
        period = float(rng.uniform(3.0, 7.0)) * scale
        r = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
        return ((r / period) % 1.0 < 0.5).astype(np.float32)
    return np.zeros((h, w), np.float32)  # solid


def thing_texture(app: ThingAppearance, rng: np.random.Generator, shape: tuple[int, int], *,
                  scale: float) -> np.ndarray:
    """A random instance texture (h, w, 3) of class ``app``; ``scale`` = image size / 128."""
    h, w = shape
    hue = app.hue + float(rng.normal(0.0, 0.05))
    s = float(rng.uniform(*app.sat))
    v = float(rng.uniform(*app.val))
    c1 = _hsv(hue, s, v)
    if app.second == "dark":
        c2 = _hsv(hue, s, v * float(rng.uniform(0.3, 0.55)))
    elif app.second == "light":
        c2 = _hsv(hue, s * float(rng.uniform(0.15, 0.5)), min(1.0, v * float(rng.uniform(1.1, 1.4)) + 0.1))
    elif app.second == "complement":
        c2 = _hsv(hue + 0.5 + float(rng.normal(0.0, 0.05)), s, v * float(rng.uniform(0.7, 1.0)))
    else:  # shift
        c2 = _hsv(hue + float(rng.uniform(0.1, 0.2)), s, v)
    if rng.random() < 0.2:
        c1, c2 = c2, c1
    m = _pattern(app.texture, rng, h, w, scale) * float(rng.uniform(0.55, 1.0))
    tex = _mix(c1, c2, m)
    shade = (_lowfreq(rng, h, w, 2.5) - 0.5) * float(rng.uniform(0.0, 0.3))
    tex += shade[:, :, None]
    return tex


# ---------------------------------------------------------------------------- stuff


@dataclass(frozen=True)
class StuffAppearance:
    """A stuff texture: ``name`` and a representative colour (category colour)."""

    index: int
    name: str
    color: tuple[int, int, int]


STUFF_TABLE: tuple[StuffAppearance, ...] = (
    StuffAppearance(0, "sky", (140, 185, 235)),
    StuffAppearance(1, "grass", (70, 130, 45)),
    StuffAppearance(2, "water", (40, 110, 150)),
    StuffAppearance(3, "wall", (190, 170, 150)),
    StuffAppearance(4, "sand", (210, 190, 130)),
    StuffAppearance(5, "road", (90, 90, 95)),
    StuffAppearance(6, "snow", (235, 240, 250)),
    StuffAppearance(7, "wood", (120, 75, 40)),
)


def _fine_noise(rng: np.random.Generator, h: int, w: int, sigma: float) -> np.ndarray:
    return rng.standard_normal((h, w), dtype=np.float32) * sigma


def stuff_texture(kind: str, rng: np.random.Generator, shape: tuple[int, int], *, scale: float) -> np.ndarray:
    """Full-frame texture (h, w, 3) of stuff ``kind`` (a name of :data:`STUFF_TABLE`)."""
    h, w = shape
    yy, xx = _coords(h, w)
    if kind == "sky":
        top = _hsv(float(rng.uniform(0.55, 0.62)), float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.75, 1.0)))
        bot = _hsv(float(rng.uniform(0.55, 0.62)), float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.85, 1.0)))
        t = np.broadcast_to(yy / max(h - 1, 1), (h, w))
        img = _mix(top, bot, t)
        clouds = np.clip((_lowfreq(rng, h, w, float(rng.uniform(3, 7))) - float(rng.uniform(0.5, 0.8))) * 4, 0, 1)
        img += (np.ones(3, np.float32)[None, None] - img) * (clouds * float(rng.uniform(0.4, 0.9)))[:, :, None]
        return img + _fine_noise(rng, h, w, 0.01)[:, :, None]
    if kind == "grass":
        base = _hsv(float(rng.uniform(0.22, 0.33)), float(rng.uniform(0.5, 0.85)), float(rng.uniform(0.3, 0.6)))
        tip = _hsv(float(rng.uniform(0.14, 0.22)), float(rng.uniform(0.4, 0.8)), float(rng.uniform(0.5, 0.8)))
        sh = max(2, int(h / (3.0 * scale)))
        streak = cv2.resize(rng.random((sh, w), dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        img = _mix(base, tip, np.clip(streak * _lowfreq(rng, h, w, 4) * 1.6, 0, 1))
        return img + _fine_noise(rng, h, w, 0.05)[:, :, None]
    if kind == "water":
        base = _hsv(float(rng.uniform(0.5, 0.6)), float(rng.uniform(0.5, 0.85)), float(rng.uniform(0.35, 0.7)))
        lam = float(rng.uniform(4, 9)) * scale
        mu = float(rng.uniform(15, 40)) * scale
        wave = np.sin(2 * math.pi * (yy / lam + 0.35 * np.sin(2 * math.pi * xx / mu + float(rng.uniform(0, 6.3)))))
        img = base[None, None, :] * (1.0 + 0.18 * wave)[:, :, None]
        img += (np.clip(wave - 0.85, 0, 1) * 2.0)[:, :, None]
        return img + _fine_noise(rng, h, w, 0.02)[:, :, None]
    if kind == "wall":
        base = _hsv(float(rng.uniform(0.04, 0.12)), float(rng.uniform(0.12, 0.4)), float(rng.uniform(0.5, 0.85)))
        bh = float(rng.uniform(5, 9)) * scale
        bw = bh * float(rng.uniform(2.0, 3.0))
        row = np.floor(yy / bh)
        off = (row % 2) * bw / 2
        mortar = ((yy % bh) < 1.0) | (((xx + off) % bw) < 1.0)
        brick_id = row * 1000 + np.floor((xx + off) / bw)
        jitter = (np.sin(brick_id * 12.9898) * 43758.5453) % 1.0 - 0.5
        img = base[None, None, :] * (1.0 + 0.12 * jitter)[:, :, None]
        img = np.where(mortar[:, :, None], base[None, None, :] * 0.7 + 0.25, img)
        return img + _fine_noise(rng, h, w, 0.03)[:, :, None]
    if kind == "sand":
        base = _hsv(float(rng.uniform(0.1, 0.14)), float(rng.uniform(0.3, 0.55)), float(rng.uniform(0.6, 0.85)))
        dunes = _lowfreq(rng, h, w, 3) - 0.5
        img = base[None, None, :] * (1.0 + 0.2 * dunes)[:, :, None]
        return img + _fine_noise(rng, h, w, 0.06)[:, :, None]
    if kind == "road":
        g = float(rng.uniform(0.25, 0.45))
        img = np.full((h, w, 3), g, np.float32) + _fine_noise(rng, h, w, 0.05)[:, :, None]
        y0 = float(rng.uniform(0.3, 0.7)) * h
        dash = (np.abs(yy - y0) < 1.0 * scale) & ((xx % (12 * scale)) < 6 * scale)
        return np.where(dash[:, :, None], np.float32(0.9), img)
    if kind == "snow":
        base = _hsv(float(rng.uniform(0.55, 0.65)), float(rng.uniform(0.0, 0.12)), float(rng.uniform(0.85, 1.0)))
        img = base[None, None, :] * (1.0 - 0.12 * _lowfreq(rng, h, w, 4))[:, :, None]
        return img + _fine_noise(rng, h, w, 0.02)[:, :, None]
    if kind == "wood":
        base = _hsv(float(rng.uniform(0.05, 0.09)), float(rng.uniform(0.45, 0.7)), float(rng.uniform(0.3, 0.55)))
        lam = float(rng.uniform(3, 6)) * scale
        grain = np.sin(2 * math.pi * (yy + 6 * scale * _lowfreq(rng, h, w, 3)) / lam)
        img = base[None, None, :] * (1.0 + 0.2 * grain)[:, :, None]
        return img + _fine_noise(rng, h, w, 0.02)[:, :, None]
    raise ValueError(f"unknown stuff texture {kind!r}")


def background_texture(rng: np.random.Generator, shape: tuple[int, int], *, scale: float) -> np.ndarray:
    """One region of a VOC-like background: a stuff texture or a plain random-colour region."""
    if rng.random() < 0.45:
        kind = STUFF_TABLE[int(rng.integers(len(STUFF_TABLE)))].name
        return stuff_texture(kind, rng, shape, scale=scale)
    h, w = shape
    c1 = _hsv(float(rng.random()), float(rng.uniform(0.0, 0.5)), float(rng.uniform(0.2, 0.9)))
    c2 = _hsv(float(rng.random()), float(rng.uniform(0.0, 0.4)), float(rng.uniform(0.2, 0.9)))
    kind = str(rng.choice(["noise", "gradient", "stripes", "checker", "solid"], p=[0.35, 0.3, 0.1, 0.1, 0.15]))
    m = _pattern(kind, rng, h, w, scale * 2.0) * float(rng.uniform(0.15, 0.6))
    img = _mix(c1, c2, m)
    return img + _fine_noise(rng, h, w, 0.02)[:, :, None]

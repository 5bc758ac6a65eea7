"""COCO RLE helpers: encoding, normalising, and a vectorised consistency check of RLE strings.

pycocotools trusts an RLE string: counts that do not add up to ``h·w`` give meaningless IoUs
(and ``decode`` may write past its buffer). :func:`rle_totals` decodes the run lengths of many
compressed RLE strings at once (numpy, no per-character Python loop) so that every predicted
mask can be checked against its image size before it reaches pycocotools.

The compressed format (pycocotools ``maskApi.c`` ``rleToString`` / ``rleFrString``): each run
length is written as signed 5-bit groups, least significant first, each character
``48 + group`` with bit ``0x20`` set on every group except the last; the last group's bit
``0x10`` is the sign. From the third run on, the value stored is the difference to the run two
places earlier (``cnts[m] = x + cnts[m-2]`` for ``m > 2``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bench.evaluation.base import EvaluationError


def encode(mask: np.ndarray) -> dict:
    """Binary mask ``(H, W)`` → compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def to_compressed(seg: Any, h: int, w: int) -> dict:
    """A COCO segmentation (compressed RLE, uncompressed RLE or polygons) → compressed RLE.

    Compressed RLEs are returned as they are (``counts`` str or bytes, both accepted by pycocotools).
    """
    if isinstance(seg, dict):
        counts = seg.get("counts")
        if isinstance(counts, (str, bytes)):
            return seg
        if isinstance(counts, list):
            return mask_utils.frPyObjects(seg, h, w)
        raise ValueError("RLE 'counts' must be a string or a list of integers")
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    raise ValueError("segmentation must be an RLE dict or a list of polygons")


def rle_totals(counts: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many compressed RLE strings at once.

    Returns ``(total, area, ok)`` per string: the sum of all run lengths (must equal ``h·w``),
    the sum of the odd runs (the mask area, as ``pycocotools.mask.area``), and whether the string
    is well formed (characters in ``'0'..'o'``, ends with a final group, no negative run).
    """
    n = len(counts)
    total = np.zeros(n, np.int64)
    area = np.zeros(n, np.int64)
    ok = np.ones(n, bool)
    if n == 0:
        return total, area, ok
    lengths = np.fromiter(map(len, counts), np.int64, n)
    ends = np.cumsum(lengths) - 1              # index of each string's last character
    b = np.frombuffer(b"".join(counts), np.uint8) - np.uint8(48)  # chars below '0' wrap above 63
    if b.size == 0:
        return total, area, ok                 # all empty strings: zero runs
    nonempty = lengths > 0
    bad = b > 63
    if bad.any():
        ok[np.searchsorted(ends, np.flatnonzero(bad))] = False
        b = np.where(bad, np.uint8(0), b)
    is_last = (b & 0x20) == 0
    # every string must end with a final group; cut groups at string ends so none leaks into the next
    ok[np.flatnonzero(nonempty)[~is_last[ends[nonempty]]]] = False
    is_last[ends[nonempty]] = True
    group_end = np.flatnonzero(is_last)
    group_start = np.empty_like(group_end)
    group_start[0] = 0
    group_start[1:] = group_end[:-1] + 1
    glen = group_end - group_start + 1
    # groups per string (strings never share a group, see above) and the string of each group
    n_groups = np.zeros(n, np.int64)
    n_groups[nonempty] = np.add.reduceat(is_last, (ends - lengths + 1)[nonempty], dtype=np.int64)
    g_str = np.repeat(np.arange(n), n_groups)
    if glen.max() > 13:                        # more than 65 bits: malformed
        ok[g_str[glen > 13]] = False
        glen = np.minimum(glen, 13)
    # value of each group: 5-bit digits, least significant first; the last digit's bit 0x10 is the sign
    x = (b[group_start] & 0x1F).astype(np.int64)
    for j in range(1, int(glen.max())):
        sel = np.flatnonzero(glen > j)
        x[sel] += (b[group_start[sel] + j] & 0x1F).astype(np.int64) << (5 * j)
    neg = (b[group_end] & 0x10) != 0
    x[neg] -= np.int64(1) << (5 * glen[neg])
    # run index m inside its string
    first_group = np.cumsum(n_groups) - n_groups
    m = np.arange(group_end.size) - np.repeat(first_group, n_groups)
    # cnts[m] = x[m] + cnts[m-2] for m > 2, i.e. per string and parity a cumulative sum starting at
    # m = 1 (odd runs) and m = 2 (even runs); m = 0 stands alone. Global cumulative sums minus the
    # value reached before each string's first group.
    odd = (m & 1) == 1
    even2 = ~odd & (m >= 2)
    cnts = x.copy()
    for sel in (odd, even2):
        cs = np.cumsum(np.where(sel, x, 0))
        before = np.concatenate(([0], cs))[first_group]        # running sum before each string
        cnts[sel] = (cs - np.repeat(before, n_groups))[sel]
    neg_run = cnts < 0
    if neg_run.any():
        ok[g_str[neg_run]] = False
    has = n_groups > 0
    if has.any():
        total[has] = np.add.reduceat(cnts, first_group[has])
        area[has] = np.add.reduceat(np.where(odd, cnts, 0), first_group[has])
    return total, area, ok


def check_rles(segs: list[dict], sizes: list[tuple[int, int]], *, where: list[str], source: str) -> None:
    """Every compressed RLE must decode to exactly ``h·w`` non-negative runs; raise naming the record.

    ``segs`` hold compressed RLE dicts (``counts`` str/bytes); ``sizes`` their images' ``(h, w)``.
    """
    counts = [c["counts"].encode("ascii") if isinstance(c["counts"], str) else bytes(c["counts"]) for c in segs]
    expected = np.array([h * w for h, w in sizes], np.int64)
    start = 0
    while start < len(counts):  # batches of at most ~1M characters (~40 MB of temporaries)
        stop, chars = start, 0
        while stop < len(counts) and (stop == start or chars + len(counts[stop]) <= 1_000_000):
            chars += len(counts[stop])
            stop += 1
        total, _, ok = rle_totals(counts[start:stop])
        for j in np.flatnonzero(~ok | (total != expected[start:stop])):
            h, w = sizes[start + j]
            reason = "malformed RLE counts string" if not ok[j] else \
                f"RLE runs add up to {total[j]} pixels, not {h}x{w}={h * w}"
            raise EvaluationError(f"{source}: {where[start + j]}: {reason}")
        start = stop

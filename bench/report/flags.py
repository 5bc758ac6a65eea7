"""Sanity flags: results that are more likely a broken run than a finding, named with rows and numbers.

- **near zero**: a reproduced score (a percent metric, not a count) below :data:`NEAR_ZERO`;
- **below its baseline**: a weakly supervised row below a training-free baseline of the same kind (both the
  method's own predictions, or both a segmentor trained on pseudo labels) on the same slot and metric;
- **upper bound below**: an upper bound (the segmentor trained on the ground truth, the oracle grouping) below
  a weakly supervised row on the same slot and metric;
- **curve collapses**: a curve over training that falls to at most :data:`COLLAPSE` of its peak and stays there.

A flag says what to look at; it does not say the result is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.report.metrics import Aggregate
from bench.report.roles import BASELINE, UPPER_BOUND, WEAK
from bench.report.specs import COUNT_KEYS

#: A percent score at or below this reads as "near zero".
NEAR_ZERO = 1.0
#: A curve whose later points all stay at or below this fraction of its peak has collapsed.
COLLAPSE = 0.05


@dataclass(frozen=True)
class ScoredRow:
    """One row's reproduced scores for the flags: its label, role (bench.report.roles), kind (``direct`` /
    ``segmentor``), slot, metric key → aggregate over seeds, and the method whose run it is."""

    label: str
    role: str
    kind: str
    slot: str
    scores: Mapping[str, Aggregate]
    method: str = ""


def _fmt(value: float, decimals: int, key: str) -> str:
    return f"{value:.0f}" if key in COUNT_KEYS and float(value).is_integer() else f"{value:.{decimals}f}"


def _pairs(low: ScoredRow, high: ScoredRow, labels: Mapping[str, str], decimals: int) -> list[str]:
    """``label low < high`` for each metric both rows have where ``low`` is below ``high``."""
    return [f"{labels.get(k, k)} {_fmt(low.scores[k].mean, decimals, k)} < {_fmt(high.scores[k].mean, decimals, k)}"
            for k in labels if k in low.scores and k in high.scores and low.scores[k].mean < high.scores[k].mean]


def row_flags(rows: Sequence[ScoredRow], labels: Mapping[str, str], decimals: int, *,
              same_method: bool = False) -> list[str]:
    """The flags of a set of rows (a table's, or the leaderboard's); ``labels``: metric key → printed name, in
    column order. ``same_method``: compare a weak row only with its own method's baselines (the leaderboard, where
    methods with other supervision sit side by side; a paper table compares with the baselines it shows)."""
    flags = []
    for row in rows:
        low = [f"{labels.get(k, k)} {row.scores[k].mean:.{decimals}f}" for k in labels
               if k in row.scores and k not in COUNT_KEYS and row.scores[k].mean <= NEAR_ZERO]
        if low:
            flags.append(f"**near zero**: {row.label} — {', '.join(low)} (≤ {NEAR_ZERO:g})")
    weak = [r for r in rows if r.role == WEAK]
    for baseline in (r for r in rows if r.role == BASELINE):
        for row in (r for r in weak if r.kind == baseline.kind and r.slot == baseline.slot
                    and (r.method == baseline.method or not same_method)):
            below = _pairs(row, baseline, labels, decimals)
            if below:
                flags.append(f"**below its training-free baseline**: {row.label} < {baseline.label} — "
                             + ", ".join(below))
    for bound in (r for r in rows if r.role == UPPER_BOUND):
        for row in (r for r in weak if r.slot == bound.slot):
            below = _pairs(bound, row, labels, decimals)
            if below:
                flags.append(f"**upper bound below a weak row**: {bound.label} < {row.label} — " + ", ".join(below))
    return flags


def curve_flags(curves: Mapping[str, Sequence[tuple[int, Aggregate]]], key: str, decimals: int) -> list[str]:
    """A flag per curve (series label → (step, aggregate) by step) that collapses: after its peak, every later
    point is at most :data:`COLLAPSE` of the peak."""
    flags = []
    for label, curve in curves.items():
        if len(curve) < 2:
            continue
        peak_index = max(range(len(curve)), key=lambda i: curve[i][1].mean)
        peak_step, peak = curve[peak_index][0], curve[peak_index][1].mean
        after = curve[peak_index + 1:]
        if peak > 0 and after and all(a.mean <= COLLAPSE * peak for _, a in after):
            flags.append(f"**curve collapses**: {label} — {_fmt(peak, decimals, key)} at step {peak_step}, then "
                         + ", ".join(f"{_fmt(a.mean, decimals, key)} at step {s}" for s, a in after))
    return flags

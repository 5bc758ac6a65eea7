"""Noise-aware verdicts on a paper's claims: a claim compares two rows' means over seeds, and a difference that
the seeds' spread can explain is neither a win nor a loss.

The rule (printed under every claims table, :data:`RULE`): Δ = mean(left) − mean(right) and
SE = √(s²_left / n_left + s²_right / n_right), the standard error of that difference (sample standard deviations
over the seeds). With at least two seeds on each side, |Δ| ≤ 2·SE reads **within noise**; otherwise the
claim's comparison decides **held** / **not held**. A ``~`` claim holds when |Δ| ≤ its tolerance or
|Δ| ≤ 2·SE. With one seed on either side there is no spread: the comparison decides, marked **single seed**.
A side with no number is **pending**; a side that is a reported-only row (a method the harness does not run)
is **not testable here**.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.metrics import Aggregate
from bench.report.specs import Claim

#: How many standard errors of the difference a gap must exceed to count as a difference.
NOISE_SE = 2.0
RULE = ("Verdicts use the seeds' spread: Δ = mean(left) − mean(right), SE = √(s²₁/n₁ + s²₂/n₂) (sample standard "
        "deviations over seeds). With ≥ 2 seeds on both sides, |Δ| ≤ 2·SE is *within noise*; otherwise the claim's "
        "comparison gives *held* / *not held* (a `~` claim holds when |Δ| ≤ its tolerance or ≤ 2·SE). With one "
        "seed on a side there is no spread and the verdict says *single seed*. A claim on a row the harness does "
        "not run is *not testable here*; one whose rows have no metrics yet is *pending*.")
HELD, NOT_HELD, WITHIN_NOISE, PENDING, NOT_TESTABLE = "held", "not held", "within noise", "pending", \
    "not testable here"
#: Every verdict word, in the order the index counts them.
WORDS = (HELD, NOT_HELD, WITHIN_NOISE, PENDING, NOT_TESTABLE)


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict on the reproduced numbers: the word, Δ and SE behind it, and whether it rests on one
    seed (``n_min`` = the fewer seeds of the two sides; 0 when a side has no number)."""

    word: str
    delta: float | None = None
    se: float | None = None
    n_min: int = 0

    @property
    def single_seed(self) -> bool:
        return self.word in (HELD, NOT_HELD) and self.n_min == 1

    def text(self, decimals: int) -> str:
        """The cell: ``held · Δ +1.2, SE 0.4 (n ≥ 3)``, ``not held (single seed) · Δ −2.0``, ``pending``."""
        if self.delta is None:
            return self.word
        word = f"{self.word} (single seed)" if self.single_seed else self.word
        if self.n_min == 1:
            return f"{word} · Δ {self.delta:+.{decimals}f}"
        return f"{word} · Δ {self.delta:+.{decimals}f}, SE {self.se:.{decimals}f} (n ≥ {self.n_min})"


def _compare(op: str, delta: float, tolerance: float) -> bool:
    return {">": delta > 0, ">=": delta >= 0, "<": delta < 0, "<=": delta <= 0,
            "~": abs(delta) <= tolerance}[op]


def judge_seeds(claim: Claim, left: Aggregate | None, right: Aggregate | None, *, testable: bool = True) -> Verdict:
    """The verdict of ``claim`` on the two rows' aggregates over seeds (the rule of this module's docstring)."""
    if not testable:
        return Verdict(NOT_TESTABLE)
    if left is None or right is None or math.isnan(left.mean) or math.isnan(right.mean):
        return Verdict(PENDING)
    delta = left.mean - right.mean
    n_min = min(left.n, right.n)
    if n_min < 2:
        return Verdict(HELD if _compare(claim.op, delta, claim.tolerance) else NOT_HELD, delta, None, n_min)
    se = math.sqrt(left.std ** 2 / left.n + right.std ** 2 / right.n)
    if claim.op == "~":
        word = HELD if abs(delta) <= max(claim.tolerance, NOISE_SE * se) else NOT_HELD
    elif abs(delta) <= NOISE_SE * se:
        word = WITHIN_NOISE
    else:
        word = HELD if _compare(claim.op, delta, claim.tolerance) else NOT_HELD
    return Verdict(word, delta, se, n_min)

"""What each registered run is for the comparisons the reports draw: a weakly supervised method, a training-free
baseline, an upper bound, or neither. Derived from the method registry (bench/methods.py), not listed by hand:
a variant whose description starts with "training-free baseline" is a baseline, one that calls itself an
"upper bound" or a "ceiling" is an upper bound, and a segmentor row ``<variant>-<arch>`` (fine-tuned on
``<variant>``'s train labels) takes its source's role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.methods import Producer, StageGroup

WEAK, BASELINE, UPPER_BOUND, SELF_CHECK, OTHER = "weak", "baseline", "upper bound", "self-check", "other"


@dataclass(frozen=True)
class RunRole:
    """The role of ``method/variant`` and, for a segmentor row, the variant whose labels trained it."""

    role: str
    segmentor_of: str | None = None

    @property
    def kind(self) -> str:
        """``segmentor`` for a "labels → segmentor" row, ``direct`` for a method's own predictions: rows are
        compared with baselines of the same kind."""
        return "segmentor" if self.segmentor_of is not None else "direct"


def _role_of_description(producer: Producer, description: str) -> str:
    text = description.lower()
    if text.startswith("training-free baseline"):
        return BASELINE
    if "upper bound" in text or "ceiling" in text:
        return UPPER_BOUND
    if "self-check" in text:
        return SELF_CHECK
    return WEAK if producer.paper is not None else OTHER


def run_roles(producers: Iterable[Producer], groups: Iterable[tuple[Producer, StageGroup]],
              rows: dict[str, set[str]]) -> dict[tuple[str, str], RunRole]:
    """``(method, variant)`` → its :class:`RunRole`, for every row ``rows`` (producer → variants it writes,
    :func:`bench.methods.rows_of`) lists; ``groups`` are the stage groups with the producer owning their rows."""
    by_name = {p.name: p for p in producers}
    segmentor_rows: dict[tuple[str, str], str] = {}
    for owner, group in groups:
        if group.runner == "segmentor":
            for variant in group.variants:
                segmentor_rows[(owner.name, group.rows([variant])[0])] = variant
    roles = {}
    for name, variants in rows.items():
        producer = by_name[name]
        for variant in variants:
            source = segmentor_rows.get((name, variant))
            description = producer.variants.get(source or variant, "")
            roles[(name, variant)] = RunRole(_role_of_description(producer, description), source)
    return roles

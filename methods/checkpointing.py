"""Resumable training for every method's loop: the whole training state, written atomically every N steps,
and resumed only by a run of the same configuration and data (its fingerprint)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpointing:
    """Every ``every`` steps and at the last one, the whole training state (weights, optimizer, schedule,
    AMP scaler, NumPy and torch RNGs, the rest of the epoch's order) is written atomically to ``path``; a
    run that finds a checkpoint of the same ``fingerprint`` continues from it to the weights of an
    uninterrupted run. Another fingerprint (config or data) is ignored and overwritten."""

    path: Path
    fingerprint: str
    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"checkpoint every must be >= 1 step, got {self.every}")

    def load(self, iterations: int) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") != self.fingerprint or not 0 < int(state.get("step", 0)) <= iterations:
            log.warning("ignoring checkpoint %s: it belongs to another configuration or data", self.path)
            return None
        log.info("resuming from %s (step %d of %d)", self.path, int(state["step"]), iterations)
        return state

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"fingerprint": self.fingerprint, **state}, tmp)
        os.replace(tmp, self.path)

"""``bench data`` — ``prepare`` (stage: any source → canonical form) and ``generate`` (synthetic raw folders).

A synthetic source is generated in the real formats (VOC 2012 + SBD, COCO 2017) into a
temporary folder and read back through the same loader real data uses; a real source is
read from ``data.<slot>.root``. Which generator and loader serve a source is data
(:data:`SOURCES`), not a chain of ifs.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.commands import COMMANDS, Command, params_argument, parse_assignments, slot_argument
from bench.config.schema import DatasetSlot
from bench.paths import DATA, canonical_dir
from bench.stages.base import declare_stage, run_stage
from datasets.registry import load_source
from datasets.synthetic import PRESETS, generate

log = logging.getLogger(__name__)
STAGE = declare_stage("prepare", "data")


@dataclass(frozen=True)
class Source:
    """How a ``data.<slot>.source`` becomes canonical: an optional generator preset and a loader."""

    loader: str
    preset: str | None = None
    subdir: str = ""  # where the generator puts the dataset the loader reads, under the generated root
    loader_options: Callable[[list[dict[str, Any]]], dict[str, Any]] = lambda categories: {}


def _synthetic_voc_options(categories: list[dict[str, Any]]) -> dict[str, Any]:
    return {"class_names": [c["name"] for c in categories if c["isthing"]], "name": "synth-voc",
            "source": "synthetic-voc"}


SOURCES: dict[str, Source] = {
    "synth-voc": Source(loader="voc-sbd", preset="synth-voc", loader_options=_synthetic_voc_options),
    "synth-coco": Source(loader="coco", preset="synth-coco", subdir="coco",
                         loader_options=lambda categories: {"name": "synth-coco", "source": "synthetic-coco"}),
    "voc-sbd": Source(loader="voc-sbd"),
    "voc": Source(loader="voc"),
    "coco": Source(loader="coco"),
}


def prepare(slot: DatasetSlot, out: Path) -> dict[str, Any]:
    """Write the canonical form of one slot's dataset to ``out``; returns the loader's summary."""
    if slot.source not in SOURCES:
        raise ValueError(f"data source {slot.source!r} unknown; allowed: {', '.join(SOURCES)}")
    source = SOURCES[slot.source]
    splits = (slot.train_split, slot.val_split)
    if source.preset is None:
        if not slot.root:
            raise ValueError(f"data source {slot.source!r} needs a root folder: set data.<slot>.root")
        summary = load_source(source.loader)(root=Path(slot.root), out=out, splits=splits)
        return summary.to_json()
    DATA.mkdir(exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix=".raw-", dir=DATA)) / source.preset
    try:
        generated = generate(source.preset, raw, **slot.synthetic)
        options = source.loader_options(generated.categories)
        summary = load_source(source.loader)(root=raw / source.subdir, out=out, splits=splits, **options)
        return {"generated": generated.to_dict(), **summary.to_json()}
    finally:
        shutil.rmtree(raw.parent, ignore_errors=True)


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prep = sub.add_parser(
        "prepare", help="stage prepare: write data/canonical/<slot> from data.<slot> in params",
        description="Read the slot's dataset (data.<slot>.source: a synthetic preset, generated in the real formats, "
                    "or VOC+SBD / COCO under data.<slot>.root) through its loader and write the canonical form to "
                    "data/canonical/<slot>/ (COCO instance JSON with RLE masks, COCO panoptic JSON/PNGs, semantic "
                    "PNGs, image labels; docs/formats.md). Every image is decoded and every annotation checked; a "
                    "bad file stops with its path and record. The folder is replaced atomically.")
    slot_argument(prep)
    params_argument(prep)
    gen = sub.add_parser(
        "generate", help="write a synthetic dataset in the real formats (VOC+SBD or COCO)",
        description="Write a procedurally generated dataset in the folder layout of the real one (synth-voc: "
                    "VOCdevkit/VOC2012 + SBD; synth-coco: COCO 2017 JSON + panoptic PNGs) to --out, for trying a "
                    "loader by hand; the prepare stage generates its own. Generator parameters by --set.")
    gen.add_argument("--preset", required=True, choices=sorted(PRESETS))
    gen.add_argument("--out", required=True, help="folder to create")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="generator parameter, e.g. --set num_train=50 (repeatable)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing folder")


def _handle(args: argparse.Namespace) -> int:
    if args.action == "generate":
        params = parse_assignments(args.set)
        summary = generate(args.preset, Path(args.out), if_exists="overwrite" if args.overwrite else "raise", **params)
        print(yaml.safe_dump(summary.to_dict(), sort_keys=False))
        return 0
    with run_stage(STAGE, params_path=Path(args.params), dataset=args.dataset) as ctx:
        slot = getattr(ctx.params.data, args.dataset)
        summary = prepare(slot, canonical_dir(args.dataset))
        for split, info in summary["splits"].items():
            ctx.run.log_metrics({f"{split}.{k}": v for k, v in info.items() if isinstance(v, (int, float))})
        log.info("prepared %s (%s) → %s", args.dataset, slot.source, canonical_dir(args.dataset))
    return 0


COMMANDS.add("data", Command("prepare a dataset (stage) or generate a synthetic one", _configure, _handle,
                             description="Datasets: `prepare` writes a slot's canonical form (the pipeline's first "
                                         "stage); `generate` writes a synthetic dataset in the real formats."))

"""``bench wsss`` — semantic pseudo-maps of the training images (stage ``wsss``).

Writes ``runs/<slot>/wsss/<method>/`` with ``train_semantic/<stem>.png`` (the maps the methods
train from: semantic indices of docs/formats.md, 255 = unsure/ignore) and, where the mode can
produce them, ``val_semantic/``; ``bench evaluate`` scores both (mIoU on train and val).

Modes (``wsss.method``), each a registered builder:

- ``oracle`` — the ground-truth semantic maps (BESTIE Table 4's "ground truth" row);
- ``external`` — a folder of user maps (e.g. SAM or PMM outputs), ``<external_dir>/<stem>.png``
  for every training image (and ``<external_dir>/val/<stem>.png`` for val, optional), validated:
  one per image, the image's size, values in the dataset's semantic indices or 255.

The learned modes (``points``: Point2Mask's weak losses; ``cam`` / ``pam``: image-level CAMs
with BESTIE's peak attention) plug in as further builders.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import predictions as P
from bench.commands import COMMANDS, Command, params_argument, slot_argument
from bench.io import atomic_path, write_json
from bench.paths import canonical_dir, run_dir
from bench.registry import Registry
from bench.stages.base import declare_stage, run_stage
from datasets.canonical import CanonicalDataset, CanonicalSplit
from datasets.errors import DatasetError
from datasets.imageio import read_index_png

log = logging.getLogger(__name__)
STAGE = declare_stage("wsss", "data", "wsss")

#: (split, output folder, wsss params) → writes one PNG per image of the split into the folder;
#: returns False when the mode has no maps for that split (optional val maps).
Builder = Callable[[CanonicalSplit, Path, object, bool], bool]
BUILDERS: Registry[Builder] = Registry("wsss method")


@BUILDERS.register("oracle")
def _oracle(split: CanonicalSplit, out: Path, params: object, required: bool) -> bool:
    shutil.copytree(split.root / "semantic", out)
    return True


@BUILDERS.register("external")
def _external(split: CanonicalSplit, out: Path, params: object, required: bool) -> bool:
    if not params.external_dir:
        raise ValueError("wsss.method = external needs wsss.external_dir (a folder of <stem>.png maps)")
    folder = Path(params.external_dir) / ("" if required else "val")
    if not required and not folder.is_dir():
        return False
    validate_external_maps(split, folder)
    out.mkdir(parents=True)
    for image in split.images:
        shutil.copyfile(folder / f"{image.stem}.png", out / f"{image.stem}.png")
    return True


def validate_external_maps(split: CanonicalSplit, folder: Path) -> None:
    """Every image of ``split`` has ``folder/<stem>.png``: its size, semantic indices or 255; no extras."""
    if not folder.is_dir():
        raise DatasetError("external WSSS folder does not exist", path=folder)
    expected = {f"{image.stem}.png" for image in split.images}
    present = {p.name for p in folder.glob("*.png")}
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing:
        raise DatasetError(f"{len(missing)} of {len(expected)} {split.name} images have no map, e.g. {missing[:3]}",
                           path=folder)
    if extra:
        raise DatasetError(f"{len(extra)} maps match no {split.name} image, e.g. {extra[:3]}", path=folder)
    n_classes = len(split.dataset.semantic_classes)
    for image in tqdm(split.images, desc=f"check {folder.name or 'maps'}", unit="img", leave=False):
        path = folder / f"{image.stem}.png"
        semantic = read_index_png(path, record=f"image {image.id}")
        if semantic.shape != (image.height, image.width):
            raise DatasetError(f"map is {semantic.shape[1]}x{semantic.shape[0]} (WxH), image is "
                               f"{image.width}x{image.height}", path=path, record=f"image {image.id}")
        bad = np.unique(semantic[(semantic >= n_classes) & (semantic != 255)])
        if bad.size:
            raise DatasetError(f"values {bad.tolist()} are neither semantic indices 0..{n_classes - 1} nor 255",
                               path=path, record=f"image {image.id}")


def _configure(parser: argparse.ArgumentParser) -> None:
    slot_argument(parser)
    params_argument(parser)


def _handle(args: argparse.Namespace) -> int:
    with run_stage(STAGE, params_path=Path(args.params), method="wsss", dataset=args.dataset) as ctx:
        p = ctx.params.wsss
        build = BUILDERS.get(p.method)
        slot = getattr(ctx.params.data, args.dataset)
        dataset = CanonicalDataset(canonical_dir(args.dataset))
        with atomic_path(run_dir(args.dataset, "wsss", p.method), directory=True) as out:
            build(dataset.split(slot.train_split), out / P.TRAIN_SEMANTIC_DIR, p, True)
            has_val = build(dataset.split(slot.val_split), out / P.SEMANTIC_DIR, p, False)
            write_json(out / P.RUN_INFO, {"method": "wsss", "variant": p.method, "dataset": args.dataset,
                                          "train_split": slot.train_split, "val_split": slot.val_split,
                                          "profile": ctx.profile, "val_maps": has_val})
        log.info("%s: wsss %s maps for %s%s", args.dataset, p.method, slot.train_split,
                 f" and {slot.val_split}" if has_val else "")
    return 0


COMMANDS.add("wsss", Command("semantic pseudo-maps of the training images (oracle, external)", _configure, _handle))

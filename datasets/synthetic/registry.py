"""Preset registry and :func:`generate`, the atomic writer of a synthetic dataset folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from .base import GenerationSummary, ImageOutput, PresetWriter, SplitStats, WorkItem, image_rng
from .coco_writer import SynthCOCOWriter
from .params import params_from_mapping
from .scene import render_scene
from .voc_writer import SynthVOCWriter

__all__ = ["MANIFEST", "PRESETS", "PRETRAIN_STREAM", "Preset", "categories", "generate", "make_params",
           "register_preset", "render_classification_set"]

MANIFEST = "synthetic_manifest.json"
"""Written last into a generated root; its presence marks the folder complete."""
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Preset:
    """A registered preset: its name, parameter class and writer class."""

    name: str
    params_cls: type
    writer_cls: type[PresetWriter]
    description: str = ""


PRESETS: dict[str, Preset] = {}


def register_preset(writer_cls: type[PresetWriter], *, description: str = "") -> type[PresetWriter]:
    """Register a preset writer under ``writer_cls.name`` (usable as a class decorator)."""
    if writer_cls.name in PRESETS:
        raise ValueError(f"synthetic preset {writer_cls.name!r} is already registered")
    PRESETS[writer_cls.name] = Preset(writer_cls.name, writer_cls.params_cls, writer_cls, description)
    return writer_cls


register_preset(SynthVOCWriter, description="VOC 2012 + SBD layout; thing shapes on one background class")
register_preset(SynthCOCOWriter, description="COCO 2017 instances + panoptic layout; things on stuff textures")


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic preset {name!r}; known: {sorted(PRESETS)}") from None


def make_params(preset: str, **params: Any) -> Any:
    """The validated parameter object of ``preset`` (unknown keys raise ValueError)."""
    return params_from_mapping(_preset(preset).params_cls, params)


def categories(preset: str, **params: Any) -> list[dict[str, Any]]:
    """Categories (COCO-panoptic dicts: id, name, supercategory, isthing, color) of a preset."""
    spec = _preset(preset)
    return spec.writer_cls(make_params(preset, **params)).categories()


PRETRAIN_STREAM = "pretrain"
"""The image stream of :func:`render_classification_set`: images are seeded by (seed, stream, index)
(:func:`~datasets.synthetic.base.image_rng`), so no image of this stream is an image of a split."""
SPLIT_STREAMS = frozenset({"train", "val", "sbd_only"})


def render_classification_set(preset: str, count: int, *, stream: str = PRETRAIN_STREAM, offset: int = 0,
                              progress: bool = True, **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes of ``preset`` with their image-level labels, in memory: images (N, H, W, 3) uint8
    and multi-hot thing-class labels (N, K) float32 (column k = thing category k + 1 of the dataset; a
    class is present when one of its annotated instances is). Drawn from ``stream``, indices
    ``offset`` … ``offset + count - 1``, with the dataset's parameters — the same classes and
    appearance, never an image of the dataset's splits. Every scene holds at least one instance."""
    if stream in SPLIT_STREAMS:
        raise ValueError(f"stream {stream!r} is a split of the generated datasets; use another name")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    writer = _preset(preset).writer_cls(make_params(preset, **params))
    h, w = writer.params.image_size
    images = np.empty((count, h, w, 3), np.uint8)
    labels = np.zeros((count, len(writer.things)), np.float32)
    for i in tqdm(range(count), desc=f"render {stream}", unit="img", leave=False, disable=not progress):
        scene = render_scene(writer.cfg, image_rng(writer.params.seed, stream, offset + i), require_object=True)
        images[i] = scene.image
        labels[i, [o.category for o in scene.objects if o.kept and not o.crowd]] = 1.0
    return images, labels


# worker-process cache: one writer per (preset, params)
_WORKER_WRITERS: dict[tuple[str, Any], PresetWriter] = {}


def _produce(preset: str, params: Any, item: WorkItem) -> ImageOutput:
    key = (preset, params)
    writer = _WORKER_WRITERS.get(key)
    if writer is None:
        _WORKER_WRITERS.clear()
        writer = _WORKER_WRITERS[key] = PRESETS[preset].writer_cls(params)
    return writer.produce(item)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _outputs(writer: PresetWriter, preset: str, items: list[WorkItem], workers: int) -> Iterator[ImageOutput]:
    if workers <= 1:
        for item in items:
            yield writer.produce(item)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as ex:
        chunk = max(1, min(32, len(items) // (4 * workers) or 1))
        yield from ex.map(_produce, [preset] * len(items), [writer.params] * len(items), items, chunksize=chunk)


def _write(root: Path, rel: str, data: bytes) -> None:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise ValueError(f"generated file name {rel!r} would escape the dataset root")
    path = root.joinpath(*pure.parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generate(preset: str, root: Path | str, *, if_exists: Literal["raise", "overwrite", "reuse"] = "raise",
             workers: int = 1, progress: bool = True, **params: Any) -> GenerationSummary:
    """Generate the synthetic dataset ``preset`` under ``root`` in the real on-disk formats.

    Args:
        preset: a registered preset name (``synth-voc``, ``synth-coco``; see :data:`PRESETS`).
        root: the dataset root to create (e.g. ``data/raw/synth-voc``).
        if_exists: what to do when ``root`` exists: ``"raise"`` (default) raises
            FileExistsError; ``"overwrite"`` replaces it (only after the new folder is complete);
            ``"reuse"`` returns the stored summary when ``root`` is a complete folder generated
            with the same preset and parameters, and raises otherwise.
        workers: processes that render images in parallel (output is identical for any value).
        progress: show a tqdm progress bar.
        **params: keyword parameters of the preset's params class (``SynthVOCParams`` /
            ``SynthCOCOParams``); unknown keys raise ValueError naming the allowed ones.

    The folder is written to a sibling ``<root>.tmp-XXXX`` and renamed into place at the end,
    with ``synthetic_manifest.json`` (preset, params, categories, summary) written last. Every
    image is seeded from ``(seed, split, index)`` alone, so the same parameters give byte-identical
    files.
    """
    spec = _preset(preset)
    p = params_from_mapping(spec.params_cls, params)
    if if_exists not in ("raise", "overwrite", "reuse"):
        raise ValueError(f"if_exists={if_exists!r}: allowed 'raise', 'overwrite', 'reuse'")
    if workers < 1:
        raise ValueError(f"workers={workers!r}: must be ≥ 1")
    root = Path(root)
    writer = spec.writer_cls(p)
    if root.exists():
        manifest = _read_manifest(root)
        if if_exists == "reuse":
            if (manifest is not None and manifest.get("preset") == preset
                    and manifest.get("params") == p.to_dict()
                    and manifest.get("format_version") == MANIFEST_VERSION):
                return GenerationSummary.from_dict(manifest["summary"], root=str(root),
                                                   categories=manifest["categories"])
            raise FileExistsError(f"{root}: exists but was not generated by {preset} with these parameters "
                                  "(use if_exists='overwrite' to replace it)")
        if if_exists == "raise":
            state = "a complete synthetic dataset" if manifest is not None else "an incomplete/foreign folder"
            raise FileExistsError(f"{root}: exists ({state}); pass if_exists='overwrite' or 'reuse'")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    old_threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        items = writer.plan()
        splits: dict[str, SplitStats] = {}
        records: list[tuple[WorkItem, dict[str, Any]]] = []
        bar = tqdm(total=len(items), desc=f"generate {preset}", unit="img", disable=not progress)
        try:
            for item, out in zip(items, _outputs(writer, preset, items, workers)):
                for rel, data in out.files.items():
                    _write(tmp, rel, data)
                splits.setdefault(item.split, SplitStats()).add(out.stats)
                records.append((item, out.record))
                bar.update(1)
        finally:
            bar.close()
        for rel, data in writer.finalize(records).items():
            _write(tmp, rel, data)
        cats = writer.categories()
        summary = GenerationSummary(preset=preset, root=str(root), params=p.to_dict(), splits=splits,
                                    categories=cats, extra=writer.extra_summary())
        manifest = {"format_version": MANIFEST_VERSION, "preset": preset, "params": p.to_dict(),
                    "categories": cats, "summary": summary.to_dict()}
        _write(tmp, MANIFEST, json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8") + b"\n")
        if root.exists():  # overwrite: swap, then delete the old folder
            old = Path(tempfile.mkdtemp(prefix=root.name + ".old-", dir=root.parent))
            os.rmdir(old)
            os.rename(root, old)
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        cv2.setNumThreads(old_threads)
    return summary

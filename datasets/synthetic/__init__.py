"""Procedural synthetic datasets shaped like VOC 2012 (+ SBD) and COCO 2017, written in the real formats.

>>> from datasets.synthetic import generate
>>> summary = generate("synth-voc", "data/raw/synth-voc", num_train=20, num_val=10)  # doctest: +SKIP
>>> summary.touching_fraction, summary.size_distribution  # doctest: +SKIP

Presets are registered by name in :data:`PRESETS` (``synth-voc``, ``synth-coco``); a new preset is a
:class:`PresetWriter` subclass passed to :func:`register_preset`. See ``docs/datasets.md``.
"""

from .base import GenerationSummary, ImageOutput, PresetWriter, SplitStats, WorkItem, image_rng, size_class
from .coco_writer import SynthCOCOWriter
from .params import SynthCOCOParams, SynthVOCParams, params_from_mapping
from .registry import (
    MANIFEST,
    PRESETS,
    PRETRAIN_STREAM,
    Preset,
    categories,
    generate,
    make_params,
    register_preset,
    render_classification_set,
)
from .voc_writer import SynthVOCWriter, voc_palette

__all__ = [
    "MANIFEST",
    "PRESETS",
    "PRETRAIN_STREAM",
    "GenerationSummary",
    "ImageOutput",
    "Preset",
    "PresetWriter",
    "SplitStats",
    "SynthCOCOParams",
    "SynthCOCOWriter",
    "SynthVOCParams",
    "SynthVOCWriter",
    "WorkItem",
    "categories",
    "generate",
    "image_rng",
    "make_params",
    "params_from_mapping",
    "register_preset",
    "render_classification_set",
    "size_class",
    "voc_palette",
]

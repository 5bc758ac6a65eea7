"""WSIS-Bench datasets: loaders for VOC/SBD/COCO, the canonical form, the synthetic generator, point sampling.

This top-level name shadows Hugging Face ``datasets``, which is kept out of the locked
environment; :data:`WSIS_BENCH_DATASETS` lets :mod:`bench` verify at import that
``import datasets`` resolved to this package.
"""

WSIS_BENCH_DATASETS = True

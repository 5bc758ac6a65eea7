"""WSIS-Bench: a reproducibility harness for weakly/point-supervised instance and panoptic segmentation."""

__version__ = "0.1.0"

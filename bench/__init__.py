"""WSIS-Bench: a reproducibility harness for weakly/point-supervised instance and panoptic segmentation."""

import importlib

__version__ = "0.1.0"


def _check_datasets_package() -> None:
    """Fail loudly if ``import datasets`` finds another package (e.g. Hugging Face ``datasets``)."""
    module = importlib.import_module("datasets")
    if not getattr(module, "WSIS_BENCH_DATASETS", False):
        raise ImportError(
            f"`import datasets` resolved to {getattr(module, '__file__', module)!r}, not WSIS-Bench's datasets "
            "package. Uninstall the other one (e.g. `pip uninstall datasets`) or run from the repository root."
        )


_check_datasets_package()

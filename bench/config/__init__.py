"""Params: the validated schema of ``params.yaml``, profiles and the loader every stage uses."""

from bench.config.schema import Params
from bench.config.loader import ParamsError, load_params, flatten

__all__ = ["Params", "ParamsError", "load_params", "flatten"]

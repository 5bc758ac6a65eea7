"""Params: the validated schema of ``params.yaml``, profiles and the loader every stage uses."""

from bench.config.loader import ParamsError, flatten, load_params
from bench.config.schema import Params

__all__ = ["Params", "ParamsError", "load_params", "flatten"]

"""lslu-kernels: fused kernels for learnable activation functions (LSLU, PVLU, PWLU)."""

import importlib.util

from ._backends import available_backends, unavailable_backends
from .convert import convert_activations
from .functional import lslu, pvlu, pwlu
from .modules import (
    LSLU,
    PVLU,
    PWLU,
    LazyLSLU,
    LazyPVLU,
    LazyPWLU,
    LearnableSerieslinearUnit,
    official_state_dict,
)
from .optim import param_groups
from .recorder import ParameterRecorder

if importlib.util.find_spec("onnxscript") is not None:
    from . import onnx  # noqa: F401  (registers the ONNX translations of the ops, lslu_kernels/onnx.py)

__all__ = ["LSLU", "PVLU", "PWLU", "LazyLSLU", "LazyPVLU", "LazyPWLU", "LearnableSerieslinearUnit",
           "ParameterRecorder", "available_backends", "convert_activations", "lslu", "official_state_dict",
           "param_groups", "pvlu", "pwlu", "unavailable_backends"]
__version__ = "0.1.0"

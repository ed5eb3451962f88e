"""lslu-kernels: fused kernels for learnable activation functions (LSLU, PVLU, PWLU)."""

from ._backends import available_backends
from .functional import lslu, pvlu, pwlu
from .modules import LSLU, PVLU, PWLU
from .recorder import ParameterRecorder

__all__ = ["LSLU", "PVLU", "PWLU", "ParameterRecorder", "available_backends", "lslu", "pvlu", "pwlu"]
__version__ = "0.1.0"

"""lslu-kernels: fused kernels for learnable activation functions (LSLU, PVLU, PWLU)."""

from ._backends import available_backends
from .functional import lslu
from .modules import LSLU

__all__ = ["LSLU", "available_backends", "lslu"]
__version__ = "0.1.0"

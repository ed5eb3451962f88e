"""The numeric conventions every backend follows (SPEC.md section 3), written once.

Arithmetic and reductions run in :func:`compute_dtype`; a parameter's gradient
is finished from a backward kernel's partial sums by :func:`sum_partials`, in a
fixed order, and has the parameter's dtype.
"""

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype arithmetic and reductions run in for input ``x``: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def sum_partials(partial: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A parameter's gradient from a backward kernel's ``(programs, ..., C)`` partial sums.

    Sums over programs (torch's sum over a leading axis: a fixed order, so the
    result is the same from run to run), then over channels when the parameter
    is shared (its last axis has size 1), and casts to the parameter's dtype.
    """
    total = partial.sum(0)
    if param.shape[-1] == 1 and total.shape[-1] != 1:
        total = total.sum(-1, keepdim=True)
    # (.to of the same dtype returns the tensor too, but its call costs a microsecond or more per gradient)
    return total if total.dtype == param.dtype else total.to(param.dtype)

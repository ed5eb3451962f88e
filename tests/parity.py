"""Parity assertions against the float64 reference, with SPEC.md section 3 tolerances."""

import torch

# (explicit mantissa bits, exponent of the smallest normal number)
_FORMATS = {torch.float16: (10, -14), torch.bfloat16: (7, -126)}


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at each of ``values`` (float64)."""
    mantissa_bits, min_exponent = _FORMATS[dtype]
    _, exponent = torch.frexp(values.abs())  # |v| = m * 2**exponent with m in [0.5, 1)
    return torch.exp2((exponent - 1).clamp(min=min_exponent).to(torch.float64) - mantissa_bits)


def _same_non_finite(actual: torch.Tensor, expected: torch.Tensor, label: str):
    """Assert NaN and infinities stand at the same places (infinities with the same sign);
    return the finite values of both, in float64."""
    a, e = actual.detach().cpu().to(torch.float64), expected.detach().cpu().to(torch.float64)
    assert torch.equal(a.isnan(), e.isnan()), f"{label}: NaN at different places"
    inf = e.isinf()
    assert torch.equal(a.isinf(), inf) and torch.equal(a[inf], e[inf]), f"{label}: infinities differ"
    finite = e.isfinite()
    return a[finite], e[finite]


def assert_elementwise(actual: torch.Tensor, expected: torch.Tensor, x_dtype: torch.dtype, label: str):
    """Outputs and grad_input: 1e-5 relative for float32/float64, one ULP for float16/bfloat16.

    Both bounds carry an absolute term relative to the tensor's largest value
    (1e-5 of it for float32/float64, 2**-20 for half types): the arithmetic the
    spec prescribes (float32 for half types) rounds at the scale of the operands,
    so an element near 0 produced by cancellation (theta * r + omega ~ 0) has a
    float32 error that no element-wise relative bound on the result can hold.
    """
    assert actual.shape == expected.shape, f"{label}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == x_dtype, f"{label}: dtype {actual.dtype}, expected {x_dtype}"
    a, e = _same_non_finite(actual, expected, label)
    if e.numel() == 0:
        return
    scale = e.abs().max()
    if x_dtype in _FORMATS:
        bound = ulp(e, x_dtype) + 2.0**-20 * scale
    else:
        bound = 1e-5 * (e.abs() + scale)
    err = (a - e).abs()
    worst = int((err - bound).argmax())
    assert bool((err <= bound).all()), (
        f"{label}: {int((err > bound).sum())} of {e.numel()} elements off; worst: got {a[worst].item()!r}, "
        f"expected {e[worst].item()!r} (bound {bound[worst].item():.3g})")


def assert_reduction(actual: torch.Tensor, expected: torch.Tensor, x_dtype: torch.dtype,
                     param_dtype: torch.dtype, label: str):
    """Parameter gradients: norm-wise 1e-5 relative (1e-3 for half-type inputs), in the parameter's dtype."""
    assert actual.shape == expected.shape, f"{label}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == param_dtype, f"{label}: dtype {actual.dtype}, expected {param_dtype}"
    rtol = 1e-3 if x_dtype in _FORMATS else 1e-5
    a, e = _same_non_finite(actual, expected, label)
    err = torch.linalg.vector_norm(a - e).item()
    norm = torch.linalg.vector_norm(e).item()
    assert err <= rtol * norm, f"{label}: relative error {err / max(norm, 1e-300):.3g} > {rtol} (|expected| = {norm:.3g})"

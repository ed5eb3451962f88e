"""Parity of any activation against its float64 reference, with SPEC.md section 3 tolerances.

Shared by the test module of every op: the layouts and dtypes every backend
must serve, and the checks of an op's output and of each gradient.
"""

import torch

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _contiguous(t):
    return t


def _channels_last(t):
    return t.to(memory_format=torch.channels_last)


def _every_other_column(t):  # not dense: the dispatch layer copies it
    return t[..., ::2]


def _storage_offset(t):  # dense, but starts one row into its storage
    return t[1:]


def _one_element_past_alignment(change_layout):
    """``change_layout``, then the same values and strides in a storage that starts one element
    past a 16-byte boundary: packable by its sizes, not by its address (the scalar fallback)."""
    def change(t):
        t = change_layout(t)
        storage = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        moved = storage[1:].as_strided(t.shape, t.stride())  # keeps storage offset 1
        assert moved.data_ptr() % 16 != 0
        return moved.copy_(t)
    return change


# (id, shape before the layout change, channel_dim, layout change)
LAYOUTS = [
    ("nchw", (2, 5, 7, 3), 1, _contiguous),
    ("channels_last", (2, 5, 7, 3), 1, _channels_last),
    ("channels_last_wide", (1, 67, 3, 5), 1, _channels_last),
    ("blc", (3, 11, 13), -1, _contiguous),
    ("chw", (13, 4, 5), 0, _contiguous),
    ("vector", (17,), 0, _contiguous),
    ("single_element", (1,), 0, _contiguous),
    ("one_channel", (7, 1), 1, _contiguous),
    ("many_rows", (16, 33, 2, 3), 1, _contiguous),  # more rows than the cpu backend's 256 partials
    ("channels_last_many_rows", (8, 5, 9, 7), 1, _channels_last),
    ("long_rows", (1, 2, 3 * 2**14 + 5), 1, _contiguous),  # rows longer than the cpu backend's chunks
    ("strided", (2, 3, 5, 8), 1, _every_other_column),
    ("storage_offset", (4, 6, 5), 1, _storage_offset),
]

# Sizes whose elements the CUDA kernels move in packs of up to 16 bytes, for every dtype: rows of
# C % 8 == 0 channels (inner == 1; csrc/cuda/*.cu rows_pack) and channel rows of inner % 8 == 0
# elements (channel_pack). Triton vectorizes only where C (inner == 1) or inner is a multiple of 16,
# the divisibility it specializes integer arguments on: channels_last_c64 and nchw_8x8 (C = 72, C = 8
# and inner = 24 compile to one-element accesses). Each has a twin one element past a 16-byte
# boundary: the same sizes and strides, which must take the scalar fallback (Triton: without the
# pointer's 16-byte divisibility, one-element accesses).
PACKED_LAYOUTS = [
    ("channels_last_c64", (2, 64, 3, 5), 1, _channels_last),  # one full 64-channel tile of the CUDA rows kernels
    ("blc_c72", (2, 5, 72), -1, _contiguous),  # a full tile and one of 8 channels
    ("blc_c8", (3, 7, 8), -1, _contiguous),  # an 8-channel tile: one warp spans several rows
    # inner = 64, a multiple of 16 too; 8 channels make Triton's tile 1024 elements, 8 per thread (16 bytes in bf16)
    ("nchw_8x8", (2, 8, 8, 8), 1, _contiguous),
    ("nchw_4x6", (2, 5, 4, 6), 1, _contiguous),  # inner = 24
]
LAYOUTS += PACKED_LAYOUTS + [(f"{name}_misaligned", shape, channel_dim, _one_element_past_alignment(change))
                             for name, shape, channel_dim, change in PACKED_LAYOUTS]


# Small shapes: gradcheck runs one backward per output element.
GRADCHECK_LAYOUTS = [
    ("nchw", (2, 3, 2, 3), 1, _contiguous),
    ("channels_last", (2, 3, 2, 3), 1, _channels_last),
    ("blc", (2, 3, 5), -1, _contiguous),
]


def forward_backward(op, x, params, grad_output, **kwargs):
    """Output and gradients of ``op`` (e.g. ``lk.lslu``) at (x, *params), all leaves of a fresh graph.

    The leaves share the tensors' memory (no clone): a clone would start a new, aligned storage and
    the misaligned layouts would never reach the kernels misaligned. Nothing writes into them.
    """
    leaves = [t.detach().requires_grad_() for t in (x, *params)]
    y = op(*leaves, **kwargs)
    y.backward(grad_output)
    return y.detach(), [t.grad for t in leaves]


def reference_float64(op, x, params, grad_output, channel_dim):
    as64 = [t.detach().to(torch.float64) for t in (x, *params)]
    return forward_backward(op, as64[0], as64[1:], grad_output.to(torch.float64),
                            channel_dim=channel_dim, backend="reference")


def check_parity(op, x, params, channel_dim, backend, label, grad_input_scale=None):
    """Output, grad_input and every parameter gradient of ``backend`` against the float64 reference.

    ``grad_input_scale(x, params, grad_output, channel_dim)``: the size of the terms the input
    gradient sums, where they can cancel (``OpCase.grad_input_scale``).
    """
    grad_output = torch.randn(x.shape, dtype=torch.float64).to(x.device, x.dtype)
    y, grads = forward_backward(op, x, params, grad_output, channel_dim=channel_dim, backend=backend)
    y_ref, grads_ref = reference_float64(op, x, params, grad_output, channel_dim)
    assert_elementwise(y, y_ref, x.dtype, f"{label}: output")
    terms = None if grad_input_scale is None else grad_input_scale(x, params, grad_output, channel_dim)
    assert_elementwise(grads[0], grads_ref[0], x.dtype, f"{label}: grad_input", terms=terms)
    scales = _per_channel_scales(op, x, params, grad_output, channel_dim)
    for name, p, g, g_ref, scale in zip(op.param_names, params, grads[1:], grads_ref[1:], scales):
        assert_reduction(g, g_ref, x.dtype, p.dtype, f"{label}: grad_{name}", scale=scale)
    return y


def _per_channel_scales(op, x, params, grad_output, channel_dim):
    """For each shared parameter, the RMS of its per-channel gradients (float64); None for the others.

    A shared parameter's gradient is the sum of the gradients it would have per
    channel. Kernels hold each of those to the spec's relative bound; when they
    cancel, their sum can only be held to that bound relative to their size.
    """
    channels = x.shape[channel_dim]
    shared = [p.shape[axis] == 1 and channels > 1 for p, axis in zip(params, op.param_channel_axis)]
    if not any(shared):
        return [None] * len(params)
    expanded = [p.detach().to(torch.float64).expand(*[channels if a == axis else -1 for a in range(p.dim())])
                for p, axis in zip(params, op.param_channel_axis)]
    _, grads = reference_float64(op, x, expanded, grad_output, channel_dim)
    return [torch.linalg.vector_norm(g).item() / channels ** 0.5 if is_shared else None
            for g, is_shared in zip(grads[1:], shared)]


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


def assert_elementwise(actual: torch.Tensor, expected: torch.Tensor, x_dtype: torch.dtype, label: str,
                       terms: torch.Tensor | None = None):
    """Outputs and grad_input: 1e-5 relative for float32/float64, one ULP for float16/bfloat16.

    Both bounds carry an absolute term relative to the tensor's largest value
    (1e-5 of it for float32/float64, 2**-20 for half types): the arithmetic the
    spec prescribes (float32 for half types) rounds at the scale of the operands,
    so an element near 0 produced by cancellation (theta * r + omega ~ 0) has a
    float32 error that no element-wise relative bound on the result can hold.
    ``terms`` (float64, per element): the size of the operands where known, for
    tensors so small that their largest value may itself be a cancelled one.
    """
    assert actual.shape == expected.shape, f"{label}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == x_dtype, f"{label}: dtype {actual.dtype}, expected {x_dtype}"
    a, e = _same_non_finite(actual, expected, label)
    if e.numel() == 0:
        return
    scale = e.abs().max()
    if terms is not None:  # the same elements as e: the finite ones, in logical order
        scale = torch.maximum(scale, terms.cpu().double()[expected.detach().cpu().isfinite()])
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
                     param_dtype: torch.dtype, label: str, scale: float | None = None):
    """Parameter gradients: norm-wise 1e-5 relative (1e-3 for half-type inputs), in the parameter's dtype.

    ``scale``: for a shared parameter, the size of its per-channel gradients
    (see ``_per_channel_scales``); the bound is relative to the larger of the two.
    """
    assert actual.shape == expected.shape, f"{label}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == param_dtype, f"{label}: dtype {actual.dtype}, expected {param_dtype}"
    rtol = 1e-3 if x_dtype in _FORMATS else 1e-5
    a, e = _same_non_finite(actual, expected, label)
    err = torch.linalg.vector_norm(a - e).item()
    norm = max(torch.linalg.vector_norm(e).item(), scale or 0.0)
    assert err <= rtol * norm, (
        f"{label}: relative error {err / max(norm, 1e-300):.3g} > {rtol} (|expected| = {norm:.3g})")

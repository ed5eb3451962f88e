"""ONNX translations of the custom ops, for ``torch.onnx.export(..., dynamo=True)`` (SPEC.md section 2).

Each op's translation is its reference (``reference.py``) written with standard
ONNX operators (opset 18, no custom domain): the same steps in the same order,
computed in float32 (float64 for float64 inputs) and cast back to ``x``'s dtype.
The ``backend`` argument of the custom ops names a kernel, so ONNX ignores it; the Triton backend's
``lslu_kernels::<op>_triton`` ops (``_triton_ops``: the same arguments without ``backend``) share them.

Registered when ``lslu_kernels`` is imported (with onnxscript installed) in
onnxscript's torch_lib registry, which ``torch.onnx.export(..., dynamo=True)``
reads each time it builds its operator table (tested with torch 2.13 and
onnxscript 0.7), so models export as they are. torch's own way,
``custom_translation_table=``, would have every user pass the translations at
every export; ``translation_table()`` returns them in that form, for an
exporter that does not read the registry.
"""

import torch
from onnxscript import ir
from onnxscript.function_libs.torch_lib.registration import torch_op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat
from onnxscript.onnx_opset import opset18 as op

INT64 = ir.DataType.INT64


def _compute(x, *params) -> tuple:
    """``reference.compute_dtype``: its dtype, then ``x`` and the parameters cast to it."""
    dtype = ir.DataType.DOUBLE if x.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
    return dtype, *(op.Cast(t, to=dtype) for t in (x, *params))


def _per_channel(x, channel_dim: int):
    """``reference.per_channel`` for ``x``: shapes a ``(C,)`` or ``(1,)`` vector to broadcast along ``channel_dim``."""
    shape = [1] * len(x.shape)
    shape[channel_dim % len(x.shape)] = -1
    shape = ir.tensor(shape, dtype=INT64)
    return lambda p: op.Reshape(p, shape)


def _series(x, theta, omega, channel_dim: int):
    """The LSLU series of ``x`` in the compute dtype (not cast back)."""
    along = _per_channel(x, channel_dim)
    stages = theta.shape[0]
    _, xc, theta, omega = _compute(x, theta, omega)
    r = op.Relu(xc)
    for s in range(stages):
        stage = ir.tensor(s, dtype=INT64)
        th, om = along(op.Gather(theta, stage, axis=0)), along(op.Gather(omega, stage, axis=0))
        r = op.Relu(op.Add(op.Mul(th, r), om))
    return r


def lslu(x: TFloat, theta: TFloat, omega: TFloat, channel_dim: int, backend: str = "") -> TFloat:
    return op.CastLike(_series(x, theta, omega, channel_dim), x)


def pvlu(x: TFloat, alpha: TFloat, beta: TFloat, channel_dim: int, backend: str = "") -> TFloat:
    along = _per_channel(x, channel_dim)
    _, xc, alpha, beta = _compute(x, alpha, beta)
    a, b = along(alpha), along(beta)
    return op.CastLike(op.Add(op.Relu(xc), op.Mul(a, op.Sin(op.Mul(b, xc)))), x)


def pwlu(x: TFloat, points: TFloat, left_bound: TFloat, right_bound: TFloat, left_slope: TFloat,
         right_slope: TFloat, channel_dim: int, backend: str = "") -> TFloat:
    along = _per_channel(x, channel_dim)
    rows, intervals = points.shape[0], points.shape[1] - 1
    dtype, xc, points, *bounds_and_slopes = _compute(x, points, left_bound, right_bound, left_slope, right_slope)
    bl, br, kl, kr = (along(p) for p in bounds_and_slopes)
    zero, one = ir.tensor(0.0, dtype=dtype), ir.tensor(1.0, dtype=dtype)
    left, right = op.Less(xc, bl), op.GreaterOrEqual(xc, br)
    inside = op.Not(op.Or(left, right))
    # Inside the bounds B_R > B_L; elsewhere a width of 1 keeps the unused branch finite.
    width = op.Where(inside, op.Div(op.Sub(br, bl), ir.tensor(float(intervals), dtype=dtype)), one)
    u = op.Where(inside, op.Div(op.Sub(xc, bl), width), zero)
    floor = op.Floor(u)
    floor = op.Where(op.IsNaN(floor), zero, floor)
    index = op.Cast(op.Clip(floor, zero, ir.tensor(float(intervals - 1), dtype=dtype)), to=INT64)
    t = op.Sub(u, op.Cast(index, to=dtype))
    # Y[c, k] read as a flat table: row (channel, or 0 when shared) * (N + 1) + k.
    table = op.Reshape(points, ir.tensor([-1], dtype=INT64))
    row = along(ir.tensor([r * (intervals + 1) for r in range(rows)], dtype=INT64))
    at = op.Add(row, index)
    y_inside = op.Add(op.Mul(op.Sub(one, t), op.Gather(table, at)),
                      op.Mul(t, op.Gather(table, op.Add(at, ir.tensor(1, dtype=INT64)))))
    y_left = op.Add(op.Gather(table, row), op.Mul(op.Sub(xc, bl), kl))
    y_right = op.Add(op.Gather(table, op.Add(row, ir.tensor(intervals, dtype=INT64))), op.Mul(op.Sub(xc, br), kr))
    return op.CastLike(op.Where(left, y_left, op.Where(right, y_right, y_inside)), x)


def lslu_dwconv(x: TFloat, theta: TFloat, omega: TFloat, weight: TFloat, bias: TFloat | None, backend: str) -> TFloat:
    """``reference.lslu_dwconv``: the series (not rounded to x's dtype), then the depthwise Conv."""
    stages, channels = theta.shape[0], weight.shape[0]
    dtype, weight = _compute(x, weight)[0::2]
    r = _series(x, theta, omega, 1)
    inputs = [r, weight] + ([] if bias is None else [op.Cast(bias, to=dtype)])
    return op.CastLike(op.Conv(*inputs, group=channels, pads=[stages] * 4), x)


_TRANSLATIONS = {"lslu": lslu, "pvlu": pvlu, "pwlu": pwlu, "lslu_dwconv": lslu_dwconv}


def translation_table() -> dict:
    """``{custom op: translation}``, as ``torch.onnx.export(..., custom_translation_table=...)`` takes it."""
    ops = torch.ops.lslu_kernels
    names = [n for name in _TRANSLATIONS for n in (name, f"{name}_triton") if hasattr(ops, n)]
    return {getattr(ops, name).default: _TRANSLATIONS[name.removesuffix("_triton")] for name in names}


for _name, _translation in _TRANSLATIONS.items():
    torch_op(f"lslu_kernels::{_name}", trace_only=True)(_translation)
    torch_op(f"lslu_kernels::{_name}_triton", trace_only=True)(_translation)

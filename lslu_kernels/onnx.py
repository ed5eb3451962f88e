"""ONNX translations of the custom ops, for ``torch.onnx.export(..., dynamo=True)`` (SPEC.md section 2).

Each op's translation is its reference (``reference.py``) written with standard
ONNX operators (opset 18, no custom domain): the same steps in the same order,
computed in float32 (float64 for float64 inputs) and cast back to ``x``'s dtype.
The ``backend`` argument of the custom ops names a kernel, so ONNX ignores it.

Registered when ``lslu_kernels`` is imported (with onnxscript installed) in
onnxscript's torch_lib registry, which every ``torch.onnx.export(...,
dynamo=True)`` reads when it builds its operator table (torch >= 2.5): models
export with no ``custom_translation_table``. ``translation_table()`` returns
the same translations in that argument's form, for an exporter that does not
read the registry.
"""

import torch
from onnxscript import ir
from onnxscript.function_libs.torch_lib.registration import torch_op
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat
from onnxscript.onnx_opset import opset18 as op


def _compute(x, *params) -> tuple:
    """``reference.compute_dtype``: its dtype, then ``x`` and the parameters cast to it."""
    dtype = ir.DataType.DOUBLE if x.dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
    return dtype, *(op.Cast(t, to=dtype) for t in (x, *params))


def _per_channel(p, ndim: int, channel_dim: int):
    """``reference.per_channel``: a ``(C,)`` or ``(1,)`` vector shaped to broadcast along ``channel_dim``."""
    shape = [1] * ndim
    shape[channel_dim] = -1
    return op.Reshape(p, ir.tensor(shape, dtype=ir.DataType.INT64))


def _constant(value, dtype):
    return ir.tensor(value, dtype=dtype)


def lslu(x: TFloat, theta: TFloat, omega: TFloat, channel_dim: int, backend: str) -> TFloat:
    ndim = len(x.shape)
    channel_dim %= ndim
    stages = theta.shape[0]
    _, xc, theta, omega = _compute(x, theta, omega)
    r = op.Relu(xc)
    for s in range(stages):
        stage = _constant(s, ir.DataType.INT64)
        th = _per_channel(op.Gather(theta, stage, axis=0), ndim, channel_dim)
        om = _per_channel(op.Gather(omega, stage, axis=0), ndim, channel_dim)
        r = op.Relu(op.Add(op.Mul(th, r), om))
    return op.CastLike(r, x)


def pvlu(x: TFloat, alpha: TFloat, beta: TFloat, channel_dim: int, backend: str) -> TFloat:
    ndim = len(x.shape)
    channel_dim %= ndim
    _, xc, alpha, beta = _compute(x, alpha, beta)
    a, b = (_per_channel(p, ndim, channel_dim) for p in (alpha, beta))
    return op.CastLike(op.Add(op.Relu(xc), op.Mul(a, op.Sin(op.Mul(b, xc)))), x)


def pwlu(x: TFloat, points: TFloat, left_bound: TFloat, right_bound: TFloat, left_slope: TFloat,
         right_slope: TFloat, channel_dim: int, backend: str) -> TFloat:
    ndim = len(x.shape)
    channel_dim %= ndim
    rows, intervals = points.shape[0], points.shape[1] - 1
    dtype, xc, points, *bounds_and_slopes = _compute(x, points, left_bound, right_bound, left_slope, right_slope)
    bl, br, kl, kr = (_per_channel(p, ndim, channel_dim) for p in bounds_and_slopes)
    zero, one = _constant(0.0, dtype), _constant(1.0, dtype)
    left, right = op.Less(xc, bl), op.GreaterOrEqual(xc, br)
    inside = op.Not(op.Or(left, right))
    width = op.Where(inside, op.Div(op.Sub(br, bl), _constant(float(intervals), dtype)), one)
    u = op.Where(inside, op.Div(op.Sub(xc, bl), width), zero)
    floor = op.Floor(u)
    floor = op.Where(op.IsNaN(floor), zero, floor)
    index = op.Cast(op.Clip(floor, zero, _constant(float(intervals - 1), dtype)), to=ir.DataType.INT64)
    t = op.Sub(u, op.Cast(index, to=dtype))
    # Y[c, k] read as a flat table: row (channel, or 0 when shared) * (N + 1) + k.
    table = op.Reshape(points, _constant([-1], ir.DataType.INT64))
    row = _per_channel(_constant([r * (intervals + 1) for r in range(rows)], ir.DataType.INT64), ndim, channel_dim)
    at = op.Add(row, index)
    y_inside = op.Add(op.Mul(op.Sub(one, t), op.Gather(table, at)),
                      op.Mul(t, op.Gather(table, op.Add(at, _constant(1, ir.DataType.INT64)))))
    y_left = op.Add(op.Gather(table, row), op.Mul(op.Sub(xc, bl), kl))
    y_right = op.Add(op.Gather(table, op.Add(row, _constant(intervals, ir.DataType.INT64))),
                     op.Mul(op.Sub(xc, br), kr))
    return op.CastLike(op.Where(left, y_left, op.Where(right, y_right, y_inside)), x)


_TRANSLATIONS = {"lslu": lslu, "pvlu": pvlu, "pwlu": pwlu}


def translation_table() -> dict:
    """``{custom op: translation}``, as ``torch.onnx.export(..., custom_translation_table=...)`` takes it."""
    return {getattr(torch.ops.lslu_kernels, name).default: fn for name, fn in _TRANSLATIONS.items()}


for _name, _translation in _TRANSLATIONS.items():
    torch_op(f"lslu_kernels::{_name}", trace_only=True)(_translation)

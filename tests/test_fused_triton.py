"""The fused full layer in Triton (issue 15): ``depthwise_conv2d(lslu(x), weight, padding S) + bias`` in one kernel.

Tested through its host functions, ``triton_kernels/lslu_dwconv.py``'s ``forward`` and ``backward`` (the
contract the public op calls), against the unfused reference: ``lslu_kernels.reference.lslu`` then
``torch.nn.functional.conv2d(groups=C, padding=S)``, with autograd for every gradient, in float64. Without a
GPU the kernels run in Triton's interpreter (conftest.py), so the sizes are small; they are chosen to cover
one and several tiles along each axis, images smaller than the kernel, one image, one channel, primes.
"""

import parity
import pytest
import torch
import torch.nn.functional as F
from conftest import KERNEL_BACKENDS, backend_device

from lslu_kernels import reference

if "triton" not in KERNEL_BACKENDS:
    pytest.skip("the triton backend is not available here", allow_module_level=True)

from lslu_kernels.triton_kernels import lslu_dwconv  # noqa: E402

DEVICE = backend_device("triton")
GRADIENTS = ("grad_x", "grad_theta", "grad_omega", "grad_weight", "grad_bias")


def make_inputs(shape, stages, *, shared, dtype=torch.float64, channels_last=False, bias=True):
    """x, theta, omega, weight, bias: theta of both signs (mostly positive) and omega > 0, so that the series
    stays alive through 8 stages (h_s = omega > 0 where r_{s-1} = 0; a dead series tests nothing)."""
    N, C, H, W = shape
    k = 2 * stages + 1
    p_shape = (stages, 1 if shared else C)
    theta = 0.6 + 0.8 * torch.rand(p_shape, dtype=torch.float64)
    if not shared:  # negative in the first stage of some channels (more would kill tiny images' channels)
        theta[0] = torch.where(torch.rand(C) < 0.3, -theta[0], theta[0])
    omega = 0.05 + 0.4 * torch.rand(p_shape, dtype=torch.float64)
    x = 2 * torch.randn(shape, dtype=torch.float64)
    if x.numel():
        # One small positive input per channel, which a negative first stage passes: tiny images have a live gradient.
        x[0, :, 0, 0] = 0.05 * x[0, :, 0, 0].abs()
    weight = torch.randn(C, 1, k, k, dtype=torch.float64) / k
    b = torch.randn(C, dtype=torch.float64) if bias else None
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    x = x.to(DEVICE, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return (x, theta.to(DEVICE, compute), omega.to(DEVICE, compute), weight.to(DEVICE, dtype),
            None if b is None else b.to(DEVICE, dtype))


def unfused(x, theta, omega, weight, bias, grad_y):
    """The layer's math in float64 from the same inputs (lslu, then the depthwise convolution), and its
    gradients by autograd: (y, [grad_x, grad_theta, grad_omega, grad_weight, grad_bias])."""
    leaves = [None if t is None else t.detach().cpu().to(torch.float64).requires_grad_()
              for t in (x, theta, omega, weight, bias)]
    a = reference.lslu(leaves[0], leaves[1], leaves[2])
    y = F.conv2d(a, leaves[3], leaves[4], padding=theta.shape[0], groups=x.shape[1])
    y.backward(grad_y.detach().cpu().to(torch.float64))
    # Without a bias, the gradient a bias would get (what backward returns; the caller drops it).
    grads = [t.grad if t is not None else grad_y.cpu().to(torch.float64).sum((0, 2, 3)) for t in leaves]
    return y.detach(), grads


def fused(x, theta, omega, weight, bias, grad_y):
    stages = theta.shape[0]
    y = lslu_dwconv.forward(x, theta, omega, weight, bias, stages)
    return y, list(lslu_dwconv.backward(grad_y, x, theta, omega, weight, stages))


def _terms_of_y(x, theta, omega, weight, bias):
    """Per output element, the size of what it sums: conv(|lslu(x)|, |w|) + |b| (float64)."""
    a = reference.lslu(x.cpu().double(), theta.cpu().double(), omega.cpu().double()).abs()
    b = None if bias is None else bias.cpu().double().abs()
    return F.conv2d(a, weight.cpu().double().abs(), b, padding=theta.shape[0], groups=x.shape[1])


def _terms_of_grad_x(x, theta, omega, weight, grad_y):
    """Per input element, the size of what its gradient sums: the transposed conv of |grad_y| with |w|, times
    the product of |theta| (an upper bound of the series' derivative)."""
    S = theta.shape[0]
    g = F.conv_transpose2d(grad_y.cpu().double().abs(), weight.cpu().double().abs(), padding=S,
                           groups=x.shape[1])
    scale = theta.cpu().double().abs().prod(0).reshape(1, -1, 1, 1)
    return g * scale


def check(x, theta, omega, weight, bias, label):
    """y and each gradient against the unfused float64 math, with SPEC.md section 3's tolerances."""
    grad_y = torch.randn(x.shape, dtype=torch.float64).to(DEVICE, x.dtype).to(memory_format=(
        torch.channels_last if not x.is_contiguous() else torch.contiguous_format))
    y, grads = fused(x, theta, omega, weight, bias, grad_y)
    y_ref, grads_ref = unfused(x, theta, omega, weight, bias, grad_y)
    assert y.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(
        memory_format=torch.channels_last) and y.is_contiguous() == x.is_contiguous(), f"{label}: y's memory format"
    assert grads[0].stride() == x.stride(), f"{label}: grad_x's memory format"
    parity.assert_elementwise(y, y_ref, x.dtype, f"{label}: y",
                              terms=_terms_of_y(x, theta, omega, weight, bias))
    parity.assert_elementwise(grads[0], grads_ref[0], x.dtype, f"{label}: grad_x",
                              terms=_terms_of_grad_x(x, theta, omega, weight, grad_y))
    for name, got, want, param in zip(GRADIENTS[1:], grads[1:], grads_ref[1:], (theta, omega, weight, weight)):
        # grad_weight and grad_bias are in the weight's dtype: against the exact gradient rounded to it
        # (float16/bfloat16 rounding alone is ~1e-3 norm-wise, the bound itself).
        want = want.to(param.dtype).to(torch.float64) if name in ("grad_weight", "grad_bias") else want
        parity.assert_reduction(got, want, x.dtype, param.dtype, f"{label}: {name}")
    for name, want in zip(GRADIENTS, grads_ref):
        assert torch.linalg.vector_norm(want) > 0, f"{label}: the reference {name} is 0: the case tests nothing"
    return y, grads


# (N, C, H, W), S: one and several tiles along H and W (NCHW tiles are up to 32 columns, 16 rows at S <= 7),
# images smaller than the kernel, a 1x1 image, one image, one channel, primes.
SHAPES = [
    ((2, 3, 5, 7), 1),
    ((1, 1, 37, 40), 2),   # one channel, 3 x 2 NCHW tiles
    ((3, 2, 17, 37), 1),   # several tiles along W in both layouts
    ((2, 5, 4, 3), 3),     # H, W < K = 7
    ((1, 2, 1, 1), 3),     # one pixel
    ((1, 3, 3, 2), 8),     # K = 17 over a 3 x 2 image
    ((1, 1, 20, 11), 8),   # K = 17, halo 32 x 32
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shared", [False, True], ids=["per_channel", "shared"])
@pytest.mark.parametrize("shape,stages", SHAPES, ids=[f"{'x'.join(map(str, s))}-S{k}" for s, k in SHAPES])
def test_parity_float64(shape, stages, shared, channels_last):
    torch.manual_seed(hash((shape, stages, shared, channels_last)) % 2**31)
    inputs = make_inputs(shape, stages, shared=shared, channels_last=channels_last, bias=not shared)
    check(*inputs, f"{shape} S={stages} {'shared' if shared else 'per-channel'} "
                   f"{'channels_last' if channels_last else 'nchw'} float64")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape,stages", [((2, 8, 9, 16), 2), ((1, 3, 6, 5), 3)], ids=["2x8x9x16-S2", "1x3x6x5-S3"])
def test_parity_low_precision(shape, stages, dtype, channels_last):
    """fp32 accumulation from fp16/bf16/fp32 inputs: y and grad_x within SPEC.md's bound of the exact math of
    the same inputs (the unfused path rounds lslu(x) to the input dtype before the convolution; the fused
    kernel does not), parameter gradients within 1e-3 (1e-5 for float32) norm-wise. 16 columns: the packed
    (16-byte) row accesses."""
    inputs = make_inputs(shape, stages, shared=False, dtype=dtype, channels_last=channels_last)
    check(*inputs, f"{shape} S={stages} {'channels_last' if channels_last else 'nchw'} {dtype}")


def test_without_bias():
    x, theta, omega, weight, _ = make_inputs((2, 3, 6, 5), 2, shared=False)
    check(x, theta, omega, weight, None, "no bias")


def test_zero_padding_is_of_the_activation():
    """With omega > 0, lslu(0) > 0: the convolution must pad lslu(x) with zeros, not x."""
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64, device=DEVICE)
    theta = torch.ones(1, 1, dtype=torch.float64, device=DEVICE)
    omega = torch.ones(1, 1, dtype=torch.float64, device=DEVICE)
    weight = torch.ones(1, 1, 3, 3, dtype=torch.float64, device=DEVICE)
    y = lslu_dwconv.forward(x, theta, omega, weight, None, 1)
    # lslu(0) = 1 everywhere inside: each output counts its neighbours inside the image.
    expected = torch.tensor([[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]], dtype=torch.float64)
    assert torch.equal(y.cpu()[0, 0], expected), f"y {y}"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_bitwise_deterministic(channels_last):
    inputs = make_inputs((2, 3, 19, 35), 2, shared=True, dtype=torch.float32, channels_last=channels_last)
    grad_y = torch.randn_like(inputs[0])
    first_y, first = fused(*inputs, grad_y)
    second_y, second = fused(*inputs, grad_y)
    assert torch.equal(first_y, second_y), "y differs between two calls"
    for name, a, b in zip(GRADIENTS, first, second):
        assert torch.equal(a, b), f"{name} differs between two calls"


def test_empty_input():
    x, theta, omega, weight, bias = make_inputs((0, 3, 4, 4), 1, shared=False)
    assert lslu_dwconv.forward(x, theta, omega, weight, bias, 1).shape == x.shape
    grads = lslu_dwconv.backward(torch.empty_like(x), x, theta, omega, weight, 1)
    assert grads[0].shape == x.shape
    for name, g, p in zip(GRADIENTS[1:], grads[1:], (theta, omega, weight, bias)):
        assert torch.equal(g, torch.zeros_like(p)), f"{name} of an empty input"


def test_bad_input_names_the_problem():
    x, theta, omega, weight, bias = make_inputs((1, 3, 4, 4), 2, shared=False)
    with pytest.raises(ValueError, match="stages must equal theta's rows"):
        lslu_dwconv.forward(x, theta, omega, weight, bias, 3)
    with pytest.raises(ValueError, match=r"weight must be contiguous \(C, 1, 2S\+1, 2S\+1\)"):
        lslu_dwconv.forward(x, theta, omega, weight[:, :, :3, :3].contiguous(), bias, 2)
    with pytest.raises(ValueError, match="x must be \\(N, C, H, W\\)"):
        lslu_dwconv.forward(x[0], theta, omega, weight, bias, 2)
    with pytest.raises(ValueError, match="theta and omega must be contiguous"):
        lslu_dwconv.forward(x, theta[:, :2].contiguous(), omega[:, :2].contiguous(), weight, bias, 2)
    with pytest.raises(ValueError, match="bias must be"):
        lslu_dwconv.forward(x, theta, omega, weight, bias[:2], 2)

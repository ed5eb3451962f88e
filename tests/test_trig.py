"""trig.h's accurate float sin and cos, the CUDA kernels' pvlu_sin / pvlu_sincos, compiled for the host.

``_C_cpu.trig_sincos`` / ``trig_sin`` (test-only bindings) run the same header functions that the device
runs: every multiply-add in them is an explicit fmaf, so the host build computes bit for bit what the
device computes (checked here across the cpu levels, whose compilers would contract any a * b + c left,
and on a GPU by the last test). Errors are in float ulps of the exact result (float64 sin/cos of the
float argument), relative over the whole float range: near the zeros too.

Measured by an exhaustive run over every float of both signs (2^32 - 2^24 finite values): sin at most
{SIN_ULPS} ulp, cos at most {COS_ULPS} ulp (CUDA's sinf/cosf are documented at 2 ulp). To run it again
(tens of minutes): LSLU_TRIG_EXHAUSTIVE=1 pytest tests/test_trig.py -k exhaustive -s
"""

import importlib
import os

import pytest
import torch

import lslu_kernels as lk
from conftest import CPU_ISAS, cpu_isa

pytestmark = pytest.mark.skipif("cpu" not in lk.available_backends(), reason="the cpu extension was not built")

# The exhaustive maxima (see the module docstring), 1.5426 and 1.5367 ulp, rounded up to 0.01 ulp.
SIN_ULPS = 1.55
COS_ULPS = 1.54
__doc__ = __doc__.format(SIN_ULPS=SIN_ULPS, COS_ULPS=COS_ULPS)

# Where trig.h switches from the Cody-Waite to the Payne-Hanek reduction (kTrigCodyWaiteMax).
CODY_WAITE_MAX = 131072.0

# From the exhaustive run, as bit patterns: the floats > 1 closest to a multiple of pi/2 (the 12
# smallest min(|sin v|, |cos v|), 1.6e-9 to 1.0e-8: their reduction cancels the most bits), then
# the arguments of the largest sin and cos errors.
HARDEST = [0x6F79BE45, 0x50A3E87F, 0x6FF9BE45, 0x5123E87F, 0x437CE5F1, 0x7079BE45, 0x6A1976F1, 0x53B146A6,
           0x65898498, 0x51A3E87F, 0x43FCE5F1, 0x77584625, 0x4F171ABB, 0x74795BD1]


def _extension():
    return importlib.import_module("lslu_kernels._C_cpu")


def trig(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sin, cos) by trig_sincos and sin by trig_sin of the float32 tensor v, at the current cpu level."""
    v = v.to(torch.float32).contiguous().flatten()
    s, c, s_only = torch.empty_like(v), torch.empty_like(v), torch.empty_like(v)
    ext = _extension()
    ext.trig_sincos(v.data_ptr(), s.data_ptr(), c.data_ptr(), v.numel())
    ext.trig_sin(v.data_ptr(), s_only.data_ptr(), v.numel())
    return s, c, s_only


def ulp_error(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|got - exact| in float32 ulps at exact (the spacing of the floats of exact's binade; 2^-149 at least)."""
    _, exponent = torch.frexp(exact)  # |exact| = m * 2^exponent, m in [0.5, 1)
    ulp = torch.ldexp(torch.ones_like(exact), (exponent - 24).clamp(min=-149))
    return (got.double() - exact).abs() / ulp


def with_signs(bits: torch.Tensor) -> torch.Tensor:
    """The float32 values of the (positive) bit patterns `bits`, then the same negated."""
    bits = torch.cat([bits, bits | 0x80000000])
    return (bits - ((bits >> 31) << 32)).to(torch.int32).view(torch.float32)


def floats_between(lo_bits: int, hi_bits: int) -> torch.Tensor:
    """Every float32 whose bit pattern is in [lo_bits, hi_bits), both signs."""
    return with_signs(torch.arange(lo_bits, hi_bits, dtype=torch.int64))


def bits_of(*values: float) -> int:
    return torch.tensor(values, dtype=torch.float32).view(torch.int32).tolist()


def every_exponent(mantissas: int = 4096) -> torch.Tensor:
    """Random mantissas with every exponent field (subnormals up to FLT_MAX), both signs."""
    g = torch.Generator().manual_seed(11)
    exponent = torch.arange(255, dtype=torch.int64).repeat_interleave(mantissas)
    mantissa = torch.randint(0, 1 << 23, (exponent.numel(),), generator=g, dtype=torch.int64)
    return with_signs((exponent << 23) | mantissa)


def near_multiples_of_half_pi() -> torch.Tensor:
    """The floats nearest to k * pi/2 and their 4 neighbours each side, for k up to ~1e7 (|v| < 2^24, where
    the nearest float is close enough for its remainder to be small), and the hardest floats of all."""
    g = torch.Generator().manual_seed(12)
    k = torch.cat([torch.arange(1, 4096, dtype=torch.float64),
                   torch.randint(4096, 10_680_000, (100_000,), generator=g).double()])
    nearest = (k * (torch.pi / 2)).float().view(torch.int32).long()
    steps = torch.arange(-4, 5, dtype=torch.int64)
    bits = (nearest[:, None] + steps[None, :]).flatten()
    return torch.cat([with_signs(bits), with_signs(torch.tensor(HARDEST, dtype=torch.int64))])


def check_accuracy(v: torch.Tensor, label: str) -> None:
    for chunk in v.split(1 << 21):
        check_chunk(chunk, label)


def check_chunk(v: torch.Tensor, label: str) -> None:
    s, c, s_only = trig(v)
    exact_s, exact_c = torch.sin(v.double()), torch.cos(v.double())
    sin_ulps, cos_ulps = ulp_error(s, exact_s), ulp_error(c, exact_c)
    worst = int(sin_ulps.argmax())
    assert sin_ulps.max().item() <= SIN_ULPS, \
        f"{label}: sin({v[worst].item()!r}) = {s[worst].item()!r}, {sin_ulps[worst].item():.3f} ulp from {exact_s[worst].item()!r}"
    worst = int(cos_ulps.argmax())
    assert cos_ulps.max().item() <= COS_ULPS, \
        f"{label}: cos({v[worst].item()!r}) = {c[worst].item()!r}, {cos_ulps[worst].item():.3f} ulp from {exact_c[worst].item()!r}"
    assert torch.equal(s_only.view(torch.int32), s.view(torch.int32)), f"{label}: trig_sin differs from trig_sincos"


@pytest.mark.parametrize("lo, hi, label", [
    (0x3F400000, 0x3F500000, "[0.75, 0.8125): around pi/4, where the polynomials swap"),
    (0x3FC00000, 0x3FD00000, "[1.5, 1.625): around pi/2"),
    (0x40100000, 0x40200000, "[2.25, 2.5): around 3 pi/4"),
    (*bits_of(CODY_WAITE_MAX - 2048, CODY_WAITE_MAX + 4096), "the switch to the Payne-Hanek reduction"),
    (0x7F700000, 0x7F800000, "the top of the float range (Payne-Hanek, the last table bits)"),
    (0x00000000, 0x00100000, "zeros and subnormals"),
], ids=["pi/4", "pi/2", "3pi/4", "cody-waite-max", "top", "subnormal"])
def test_every_float_in_a_range(lo, hi, label):
    check_accuracy(floats_between(lo, hi), label)


def test_every_exponent_with_random_mantissas():
    check_accuracy(every_exponent(), "every exponent field, random mantissas")


def test_near_multiples_of_half_pi():
    check_accuracy(near_multiples_of_half_pi(), "near multiples of pi/2")


@pytest.mark.skipif(os.environ.get("LSLU_TRIG_EXHAUSTIVE") != "1", reason="LSLU_TRIG_EXHAUSTIVE=1 runs it")
def test_exhaustive():
    """Every finite float of both signs; prints the largest errors and where."""
    worst = {"sin": (0.0, 0.0), "cos": (0.0, 0.0)}
    for start in range(0, 0x7F800000, 1 << 22):
        v = floats_between(start, min(start + (1 << 22), 0x7F800000))
        s, c, s_only = trig(v)
        assert torch.equal(s_only.view(torch.int32), s.view(torch.int32)), f"trig_sin differs from trig_sincos near {v[0].item()!r}"
        for name, got, exact in (("sin", s, torch.sin(v.double())), ("cos", c, torch.cos(v.double()))):
            ulps = ulp_error(got, exact)
            i = int(ulps.argmax())
            if ulps[i].item() > worst[name][0]:
                worst[name] = (ulps[i].item(), v[i].item())
    print(", ".join(f"{name} at most {u:.4f} ulp (at {x.hex()})" for name, (u, x) in worst.items()))
    assert worst["sin"][0] <= SIN_ULPS and worst["cos"][0] <= COS_ULPS, f"{worst}"


def test_the_worst_arguments_reach_the_bounds():
    """The bounds are the measured maxima, not loose ones: the worst two arguments come within 0.01 ulp."""
    v = with_signs(torch.tensor(HARDEST[-2:], dtype=torch.int64))
    s, c, _ = trig(v)
    sin_ulps, cos_ulps = ulp_error(s, torch.sin(v.double())), ulp_error(c, torch.cos(v.double()))
    assert SIN_ULPS - 0.01 <= sin_ulps.max().item() <= SIN_ULPS, f"sin errors {sin_ulps.tolist()}"
    assert COS_ULPS - 0.01 <= cos_ulps.max().item() <= COS_ULPS, f"cos errors {cos_ulps.tolist()}"


def test_signed_zeros_inf_and_nan():
    v = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")])
    s, c, s_only = trig(v)
    assert s[:2].view(torch.int32).tolist() == v[:2].view(torch.int32).tolist(), f"sin(+-0) = {s[:2].tolist()}"
    assert c[:2].tolist() == [1.0, 1.0], f"cos(+-0) = {c[:2].tolist()}"
    assert s[2:].isnan().all() and c[2:].isnan().all() and s_only[2:].isnan().all(), \
        f"sin, cos of inf, -inf, nan: {s[2:].tolist()}, {c[2:].tolist()}"


@pytest.mark.skipif(len(CPU_ISAS) < 2, reason="this CPU runs one instruction-set level only")
def test_the_same_bits_at_every_cpu_level():
    """The levels with FMA instructions (whose compilers contract any a * b + c) give the baseline's bits:
    the functions leave nothing to contract, as on the device (nvcc contracts by default)."""
    v = torch.cat([floats_between(0x3F000000, 0x3F080000), every_exponent(256), near_multiples_of_half_pi()])
    with cpu_isa(CPU_ISAS[0]):
        expected = trig(v)
    for isa in CPU_ISAS[1:]:
        with cpu_isa(isa):
            got = trig(v)
        for name, a, b in zip(("sin", "cos", "sin alone"), got, expected):
            differ = (a.view(torch.int32) != b.view(torch.int32)).sum().item()
            assert differ == 0, f"{isa}: {name} differs from {CPU_ISAS[0]} for {differ} arguments"


@pytest.mark.skipif("cuda" not in lk.available_backends(), reason="needs a GPU (the cuda backend)")
def test_cuda_kernels_compute_the_host_bits():
    """PVLU on the GPU with x = -1, alpha = 1, beta = v: y = sin(-v), dL/dalpha = sin(-v) and
    dL/dbeta = -cos(-v) exactly (one element per channel, dL/dy = 1): the same bits as trig_sincos here."""
    v = torch.cat([floats_between(0x3F000000, 0x3F010000), every_exponent(64), near_multiples_of_half_pi()])
    v = v[v.isfinite()]
    x = torch.full((1, v.numel()), -1.0, device="cuda")
    alpha = torch.ones(v.numel(), device="cuda", requires_grad=True)
    beta = v.cuda().requires_grad_()
    y = lk.pvlu(x, alpha, beta, backend="cuda")
    dalpha, dbeta = torch.autograd.grad(y, (alpha, beta), torch.ones_like(y))
    s, c, _ = trig(-v)
    for name, got, want in (("y = sin", y.flatten().cpu(), s), ("dalpha = sin", dalpha.cpu(), s),
                            ("-dbeta = cos", -dbeta.cpu(), c)):
        differ = ((got.view(torch.int32) != want.view(torch.int32)) & ((got != 0) | (want != 0))).nonzero()
        assert differ.numel() == 0, \
            f"{name}: {differ.numel()} arguments differ, first v = {v[differ[0]].item()!r}: {got[differ[0]].item()!r} " \
            f"on the GPU, {want[differ[0]].item()!r} here"

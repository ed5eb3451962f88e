"""Host-side logic of the CUDA backend that a machine without a GPU can check.

- ``cpp_kernels.FORCE_INT64`` reaches every extension call as ``force_int64``, read at the call;
- the CUDA grids' wave arithmetic (csrc/grid.h, exposed as ``wave_blocks_per_column`` by both
  extensions) fills whole waves where the work allows it;
- ``_C_cuda.device_support`` answers, without raising, where there is no driver or no GPU.
"""

import importlib

import pytest
import torch

from lslu_kernels import _dispatch, cpp_kernels

from ops import OPS

cpu_ext = pytest.importorskip("lslu_kernels._C_cpu", reason="the CPU extension was not built")

KERNEL_CALLS = ("lslu_forward", "lslu_backward", "pvlu_forward", "pvlu_backward", "pwlu_forward", "pwlu_backward")


class RecordingExtension:
    """The CPU extension, noting the force_int64 argument of every kernel call."""

    def __init__(self):
        self.force_int64 = {}

    def __getattr__(self, name):
        target = getattr(cpu_ext, name)
        if name not in KERNEL_CALLS:
            return target

        def call(*args, **kwargs):  # force_int64: the last argument, by name or by position
            self.force_int64[name] = kwargs["force_int64"] if "force_int64" in kwargs else args[-1]
            return target(*args, **kwargs)

        return call


@pytest.mark.parametrize("forced", [False, True])
@pytest.mark.parametrize("op", OPS, ids=str)
def test_force_int64_reaches_every_kernel_call(monkeypatch, op, forced):
    recording = RecordingExtension()
    monkeypatch.setattr(cpp_kernels, "extension", lambda device: recording)
    monkeypatch.setattr(_dispatch, "_PLANS", {})  # the launches of cached plans hold the real extension
    x = torch.randn(2, 5, 7, requires_grad=True)
    params = [p.requires_grad_() for p in op.make_params(5, op.variants[0])]
    monkeypatch.setattr(cpp_kernels, "FORCE_INT64", forced)  # after the import: read at the call
    y = op.fn(x, *params, backend="cpu")
    y.backward(torch.randn_like(y))
    assert recording.force_int64 == {f"{op.name}_forward": forced, f"{op.name}_backward": forced}, \
        f"{op.name}: FORCE_INT64={forced} but the extension received {recording.force_int64}"


@pytest.mark.parametrize("op", OPS, ids=str)
def test_cpu_backend_ignores_force_int64(monkeypatch, op):
    """The CPU kernels always index in int64: the switch changes no bit of any result."""
    x = torch.randn(3, 6, 11)
    params = op.make_params(6, op.variants[0])
    grad_output = torch.randn_like(x)
    results = []
    for forced in (False, True):
        monkeypatch.setattr(cpp_kernels, "FORCE_INT64", forced)
        leaves = [t.clone().requires_grad_() for t in (x, *params)]
        y = op.fn(*leaves, backend="cpu")
        y.backward(grad_output)
        results.append([y.detach(), *(t.grad for t in leaves)])
    for k, (plain, forced) in enumerate(zip(*results)):
        assert torch.equal(plain, forced), f"{op.name}: result {k} (0: y, 1: grad_x, then the parameters) differs"


# ---- the wave arithmetic (csrc/grid.h) ----

ROWS_TILE = 64
MIN_ELEMENTS_PER_BLOCK = 2048


def _columns(channels, inner):
    return channels if inner > 1 else -(-channels // ROWS_TILE)


def _fill(blocks, wave):
    """Share of the block slots of the launch's waves that its blocks use."""
    return blocks / (-(-blocks // wave) * wave)


# (outer, channels, inner) of tensors of at least 64 MB in float32: NCHW (16, 64, 112, 112) and
# (64, 256, 56, 56), channels-last of both, (8, 1024, 768) and (32, 2048, 4096) as (B, L, C).
LARGE = [(16, 64, 112 * 112), (64, 256, 56 * 56), (16 * 112 * 112, 64, 1), (64 * 56 * 56, 256, 1),
         (8 * 1024, 768, 1), (32 * 2048, 4096, 1)]
# SMs of an A100, an H100 PCIe, an H100/H200 SXM; 1 to 8 resident blocks per SM (the registers allow 1 to 6).
DEVICES = [(sms, resident) for sms in (108, 114, 132) for resident in range(1, 9)]


@pytest.mark.parametrize("sizes", LARGE, ids=str)
def test_large_launches_fill_whole_waves(sizes):
    outer, channels, inner = sizes
    for sms, resident in DEVICES:
        per_column = cpu_ext.wave_blocks_per_column(outer, channels, inner, resident, sms)
        blocks = _columns(channels, inner) * per_column
        fill = _fill(blocks, resident * sms)
        assert fill >= 0.95, (f"{sizes} on {sms} SMs x {resident} blocks: {blocks} blocks in "
                              f"{-(-blocks // (resident * sms))} waves fill {fill:.0%} of their slots")
        assert blocks <= 32 * resident * sms, f"{sizes}: {blocks} blocks is more than 32 waves"


@pytest.mark.parametrize("sizes", [(2, 3, 5), (1, 1, 1), (7, 100, 1), (16, 100, 196), (4, 13, 2049)], ids=str)
def test_small_launches_give_each_block_enough_work(sizes):
    """Under one wave of work, every block gets MIN_ELEMENTS_PER_BLOCK elements of its column (the last fewer)."""
    outer, channels, inner = sizes
    column_elements = outer * inner if inner > 1 else outer * min(channels, ROWS_TILE)
    useful = max(1, -(-column_elements // MIN_ELEMENTS_PER_BLOCK))
    for sms, resident in DEVICES:
        if _columns(channels, inner) * useful > resident * sms:
            continue
        assert cpu_ext.wave_blocks_per_column(outer, channels, inner, resident, sms) == useful, (sizes, sms, resident)


def test_blocks_per_column_stay_in_range():
    for outer, channels, inner in [*LARGE, (2, 3, 5), (16, 100, 196), (1000, 1, 1), (3, 70000, 1)]:
        column_elements = outer * inner if inner > 1 else outer * min(channels, ROWS_TILE)
        useful = max(1, -(-column_elements // MIN_ELEMENTS_PER_BLOCK))
        for sms, resident in DEVICES:
            per_column = cpu_ext.wave_blocks_per_column(outer, channels, inner, resident, sms)
            assert 1 <= per_column <= useful, ((outer, channels, inner), sms, resident, per_column)


def test_empty_and_degenerate_sizes_get_one_block():
    for sizes in [(0, 4, 4), (4, 0, 4), (4, 4, 0)]:
        assert cpu_ext.wave_blocks_per_column(*sizes, 4, 132) == 1, sizes
    # A device answer of 0 resident blocks or SMs counts as 1, never divides by zero.
    assert cpu_ext.wave_blocks_per_column(16, 64, 3136, 0, 0) >= 1


def test_both_extensions_share_the_arithmetic():
    try:
        cuda_ext = importlib.import_module("lslu_kernels._C_cuda")
    except ImportError:
        pytest.skip("the CUDA extension was not built")
    for sizes in LARGE:
        for sms, resident in DEVICES:
            assert cuda_ext.wave_blocks_per_column(*sizes, resident, sms) == \
                cpu_ext.wave_blocks_per_column(*sizes, resident, sms), (sizes, sms, resident)


# ---- the device probe ----

def test_device_support_answers_without_a_usable_device():
    try:
        cuda_ext = importlib.import_module("lslu_kernels._C_cuda")
    except ImportError:
        pytest.skip("the CUDA extension was not built")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: benchmarks/gpu_check.py checks the probe there")
    first = cuda_ext.device_support(0)
    assert set(first) == {"driver_version", "runtime_version", "compute_capability", "image_ok", "error"}
    assert first["runtime_version"] >= 12000, first  # the runtime linked statically: known without a driver
    assert first["error"], f"no device here, yet no error: {first}"
    assert first["image_ok"] is False and first["compute_capability"] == 0, first
    # The failed calls left no state behind that changes the next answer, on this or another index.
    assert cuda_ext.device_support(0) == first
    assert cuda_ext.device_support(7)["error"], "device 7 does not exist either"

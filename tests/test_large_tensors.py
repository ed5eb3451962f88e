"""Every op's forward and backward on tensors of more than 2**31 elements, where int32 offsets wrap.

The tensors are bfloat16, 4 GiB each; at most three exist at once (x, grad_output,
and the output or grad_input). A float64 reference of the whole tensor would take
minutes, so the input and grad_output repeat one block of ``PERIOD`` values:

- the output and grad_input are compared element by element on slices that hold
  the first elements of every channel and every element past 2**31, against the
  float64 reference of those slices;
- the parameter gradients sum over every element. Element i of x and grad_output
  is ``block[i % PERIOD]`` (grad_output times PAST_SCALE from element 2**31 on),
  so a channel's float64 gradient is the reference's gradient of a ``(C, PERIOD)``
  table of the blocks whose grad_output is weighted by how often each residue
  occurs in the channel, and at which scale (the gradients are linear in
  grad_output): exact, whatever the channel's length.

``PERIOD`` is odd, so no wrap of a power of two elements or bytes (2**31, 2**32)
maps an element onto one that holds the same values: a kernel that reads or writes
at a wrapped offset fails the element checks. PAST_SCALE makes the few elements
past 2**31 weigh enough in the parameter gradients that reading them at wrapped
offsets moves those past their bounds too.
The Triton interpreter would take hours at this size; its int64 path is run by the
forced-int64 parity tests (test_activations.py).
"""

import dataclasses

import pytest
import torch
from conftest import KERNEL_BACKENDS, backend_device
from ops import OPS
from parity import assert_elementwise, assert_reduction, reference_float64

from lslu_kernels import _backends

NUMEL = 2**31 + 2**20  # 2**20 elements past the first int32 overflow
PERIOD = 10007  # prime: no power of two is a multiple of it
# grad_output past 2**31 is scaled by this (exactly, a power of two): its 2**20 elements then make 3-9% of
# a channel's parameter gradients, which reading them at wrapped offsets changes by a few percent (at
# scale 1, by ~1e-3: the bound itself).
PAST_SCALE = 64
DTYPE = torch.bfloat16
# x, grad_output and one output-sized tensor, and room for the float64 slices and the reference's temporaries.
NEEDED_BYTES = 3 * NUMEL * DTYPE.itemsize + 2 * 2**30
# Elements of each checked tail slice beyond those past 2**31: the last ones below it.
BELOW = 4096
# One variant per op: S = 3 stages, N = 16 intervals.
VARIANTS = {"lslu": "S3", "pvlu": "random", "pwlu": "N16"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A shape with ``outer == 1`` (the channel kernels) or ``inner == 1`` (the rows kernels)."""

    name: str
    shape: tuple[int, int] | tuple[int, int, int]
    channel_dim: int  # as a user passes it

    @property
    def channels(self) -> int:
        return self.shape[self.channel_dim]

    def channel_elements(self, c: int) -> tuple[int, int, int]:
        """Channel c's flat element indices, as (first, step, count)."""
        if len(self.shape) == 3:  # (1, C, inner): channel c is one run of `inner` elements
            return c * self.shape[2], 1, self.shape[2]
        return c, self.channels, self.shape[0]  # (rows, C): one element of every row

    def checked_slices(self) -> list[tuple[slice, ...]]:
        """Index tuples of the element-checked parts: the first elements of every channel, and a tail that
        holds every element past 2**31 (and the BELOW elements before them)."""
        past = NUMEL - 2**31 + BELOW
        if len(self.shape) == 3:  # the tail of every channel (slices keep every channel, for the parameters)
            inner = self.shape[2]
            return [(slice(None), slice(None), slice(0, 4096)), (slice(None), slice(None), slice(inner - past, inner))]
        rows = self.shape[0]
        tail_rows = -(-past // self.channels)
        return [(slice(0, 64), slice(None)), (slice(rows - tail_rows, rows), slice(None))]


LAYOUTS = [
    # NCHW-like: inner % 8 == 0, so the CUDA channel kernels take their 16-byte packs.
    Layout("channels", (1, 3, NUMEL // 3), 1),
    # (B*L, C) with channel_dim=-1: C = 64, the packed rows kernels.
    Layout("rows", (NUMEL // 64, 64), -1),
]
assert all(torch.Size(layout.shape).numel() == NUMEL for layout in LAYOUTS)
assert NUMEL // 3 % 8 == 0


def residue_counts(first: int, step: int, count: int) -> torch.Tensor:
    """How often each residue r occurs among (first + k * step) % PERIOD for k in [0, count), in float64.

    k = m * PERIOD + j gives the residue of j: every j < PERIOD occurs count // PERIOD
    times, and once more for j < count % PERIOD.
    """
    whole, rest = divmod(count, PERIOD)
    residues = (first + torch.arange(PERIOD, dtype=torch.int64) * step) % PERIOD
    counts = whole * torch.bincount(residues, minlength=PERIOD) + torch.bincount(residues[:rest], minlength=PERIOD)
    return counts.to(torch.float64)


def grad_output_weights(first: int, step: int, count: int) -> torch.Tensor:
    """The grad_output weight of each residue in the elements first + k * step, k < count: how often it
    occurs below 2**31, plus PAST_SCALE times how often it occurs from 2**31 on."""
    below = min(count, max(0, -(-(2**31 - first) // step)))  # elements below 2**31
    return residue_counts(first, step, below) + PAST_SCALE * residue_counts(first + below * step, step, count - below)


def fill_periodic(out: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``out`` (flat, NUMEL elements) with element i set to ``block[i % PERIOD]``."""
    whole = NUMEL // PERIOD
    block = block.to(out.device)
    out[: whole * PERIOD].view(whole, PERIOD).copy_(block.expand(whole, PERIOD))
    out[whole * PERIOD :].copy_(block[: NUMEL - whole * PERIOD])
    return out


def _near_a_kink(op, block: torch.Tensor, params) -> torch.Tensor:
    """Where a float32 kernel and the float64 reference could take different sides of a kink of
    some channel (an LSLU stage's relu at h ~ 0, a PWLU knot); (PERIOD,) bool.

    Every value of the block occurs ~2**31 / (C * PERIOD) times in every channel, so one
    value on the wrong side of a kink would move a parameter gradient past its bound
    by itself. x = 0 is exact in every precision (the relu of LSLU and PVLU).
    """
    x = block.to(torch.float64)[None, :]
    p64 = [p.detach().cpu().double() for p in params]
    if op.name == "lslu":
        theta, omega = p64
        r, near = torch.relu(x), torch.zeros(block.shape, dtype=torch.bool)
        for s in range(theta.shape[0]):
            h = theta[s][:, None] * r + omega[s][:, None]
            near |= (h.abs() < 1e-4).any(0)
            r = torch.relu(h)
        return near
    if op.name == "pwlu":
        points, left, right = p64[:3]
        width = ((right - left) / (points.shape[1] - 1))[:, None]
        u = (x - left[:, None]) / width
        return ((u - u.round()).abs() < 1e-4).any(0)
    return torch.zeros(block.shape, dtype=torch.bool)


def input_block(op, params) -> torch.Tensor:
    """PERIOD bfloat16 values ~ 2 * randn, none near a kink (redrawn until so)."""
    block = (2 * torch.randn(PERIOD)).to(DTYPE)
    while (near := _near_a_kink(op, block, params)).any():
        block[near] = (2 * torch.randn(int(near.sum()))).to(DTYPE)
    return block


def _skip_unless_memory(device: torch.device, needed: int):
    if device.type == "cuda":  # free on the device, and what torch's caching allocator holds unused
        free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) \
            - torch.cuda.memory_allocated(device)
        where = "GPU memory free"
    else:
        with open("/proc/meminfo") as meminfo:
            free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
        where = "MemAvailable"
    if free < needed:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB more memory, {where} is {free / 2**30:.1f} GiB")


@pytest.fixture(scope="module")
def buffers():
    """``buffers(device)``: two flat tensors of NUMEL elements for x and grad_output, kept for the
    module's tests (the first touch of 4 GiB costs seconds; refilling it, less), one device at a time."""
    held = {}

    def get(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        buffer_bytes = 2 * NUMEL * DTYPE.itemsize
        if device in held:
            _skip_unless_memory(device, NEEDED_BYTES - buffer_bytes)
        else:
            held.clear()
            _skip_unless_memory(device, NEEDED_BYTES)
            held[device] = tuple(torch.empty(NUMEL, dtype=DTYPE, device=device) for _ in range(2))
        return held[device]

    yield get
    held.clear()


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.name for layout in LAYOUTS])
@pytest.mark.parametrize("op", OPS, ids=str)
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_more_than_2_31_elements(buffers, backend, op, layout):
    """Output, grad_input and every parameter gradient of a bfloat16 tensor of 2**31 + 2**20 elements."""
    if backend == "triton" and _backends.triton_interpreter_on():
        pytest.skip("the Triton interpreter would take hours at 2**31 elements; its int64 path runs in the "
                    "forced-int64 parity tests")
    device = backend_device(backend)
    C, label = layout.channels, f"{op} {backend} {layout.name} {NUMEL} elements"
    params = op.make_params(C, VARIANTS[op.name], dtype=torch.float32, device=device)
    x_block, g_block = input_block(op, params), torch.randn(PERIOD).to(DTYPE)
    x_flat, g_flat = buffers(device)  # skips when memory is short
    x = fill_periodic(x_flat, x_block).view(layout.shape)
    g = fill_periodic(g_flat, g_block)
    g[2**31:] *= PAST_SCALE
    g = g.view(layout.shape)
    slices = layout.checked_slices()
    # Float64 reference of the checked slices: outputs, grad_input, and PVLU's size of grad_input's terms.
    references = []
    for index in slices:
        y_ref, grads_ref = reference_float64(op.fn, x[index], params, g[index], layout.channel_dim)
        terms = None if op.grad_input_scale is None else \
            op.grad_input_scale(x[index], params, g[index], layout.channel_dim)
        references.append((y_ref, grads_ref[0], terms))

    y = op.fn(x, *params, channel_dim=layout.channel_dim, backend=backend)
    for index, (y_ref, _, _) in zip(slices, references):
        assert_elementwise(y[index], y_ref, DTYPE, f"{label}: output at {index}")
    del y  # before backward allocates grad_input: three 4 GiB tensors at most

    grads = op.fn.backward_op(g, x, *params, layout.channel_dim % x.dim(), backend)
    for index, (_, grad_input_ref, terms) in zip(slices, references):
        assert_elementwise(grads[0][index], grad_input_ref, DTYPE, f"{label}: grad_input at {index}", terms=terms)

    # Every element's parameter gradients: the blocks as a (C, PERIOD) table, grad_output weighted by the
    # number of times each residue occurs in the channel, and at which scale.
    weights = torch.stack([grad_output_weights(*layout.channel_elements(c)) for c in range(C)])
    assert weights.sum().item() == 2**31 + PAST_SCALE * (NUMEL - 2**31)
    x_table = x_block.to(torch.float64).expand(C, PERIOD).to(device)
    g_table = (g_block.to(torch.float64)[None, :] * weights).to(device)
    _, table_grads = reference_float64(op.fn, x_table, params, g_table, 0)
    for name, p, g_param, g_ref in zip(op.fn.param_names, params, grads[1:], table_grads[1:]):
        assert_reduction(g_param, g_ref, DTYPE, p.dtype, f"{label}: grad_{name}")

"""Static GPU gate for the Triton kernels: compile each one for sm_80 and sm_90 as a GPU launch would, no GPU needed.

    python benchmarks/gate_triton.py            # compile, print the kernels that miss the bar, write the CSV
    python benchmarks/gate_triton.py --no-write # the same without writing benchmarks/results/gate-triton.csv
    python benchmarks/gate_triton.py --only "lslu S=8 backward" --out x.csv  # one kernel family
    python benchmarks/gate_triton.py --only lslu_dwconv --out benchmarks/results/gate/pending/lslu_dwconv-triton-3.9.csv
        # the fused layer's kernels (PENDING_OPS: not in the default matrix until they meet the bar)

How a launch is reproduced without a GPU:

1. Capture. The host functions (``triton_kernels/<op>.py``: ``<op>_forward`` / ``<op>_backward``) run on
   stand-in CUDA tensors (``FakeTensorMode``: shapes, strides and devices, no memory) while
   ``JITFunction.run`` records each launch (kernel, grid, arguments, constexprs, ``num_warps``) and launches
   nothing. The SM count the host functions ask for is injected: 108 for sm_80 (A100), 132 for sm_90
   (H100/H200). Host code after the last launch that needs a CUDA runtime (a copy) is skipped.
2. Compile. Each recorded launch goes through ``JITFunction.warmup`` (Triton's own argument specialization
   and ``triton.compile``, with its bundled ptxas) under a stand-in driver that reports the target. Tensor
   arguments become pointers at the addresses PyTorch's CUDA allocator gives (256-byte aligned), plus the
   tensor's storage offset; so Triton specializes pointers on 16-byte alignment and integers on
   ``== 1`` / ``% 16 == 0`` exactly as at a launch. Identical compile keys are compiled once.
3. Measure, per compiled kernel:
   - ``registers``, the stack frame and local variables (``REG``, ``STACK``, ``LOCAL`` of ``cuobjdump -res-usage``
     on the cubin: any local memory the SASS touches, ``LDL``/``STL``, lives there); ``spill_bytes``: ptxas's
     "bytes spill stores" (``TRITON_DUMP_PTXAS_LOG``; the whole stack frame where that report is missing);
     ``shared_bytes``: static plus Triton's dynamic shared memory.
   - ``widest_access_bits``: for each element tensor (an argument shaped like ``x``: x, dy, dx, y), the
     widest ``ld.global``/``st.global`` in the PTX whose address derives from that tensor's pointer
     parameter (vector count times element bits: ``ld.global.v4.b32`` is 128); the column is the minimum
     over the element tensors, so 128 means every one of them is read or written 128 bits wide.
   - ``occupancy``: theoretical, from registers (allocated per warp in units of 256), warps and shared
     memory (plus the 1 KiB the runtime reserves per block) against the per-SM limits of sm_80 / sm_90:
     65536 registers, 64 warps, 32 blocks, 164 / 228 KiB shared memory.
4. The bar (fp32, bf16, fp16; fp64 only has to compile): no compile error, no spill and no local memory
   (except the array of libdevice's accurate sin/cos for arguments of magnitude >= 105615, see TRIG_REDUCTION),
   element accesses of 128 bits where the shape and alignment allow them (the contiguous run, ``inner``
   for NCHW and ``C`` when channels are innermost, is a multiple of 16 bytes' worth of elements and the
   element tensors start 16-byte aligned), theoretical occupancy of at least 25%.

The compile runs in a subprocess without ``TRITON_INTERPRET`` (the test suite sets it) and with its own
empty Triton cache; ``LSLU_GATE_PYTHONPATH`` is put first on that subprocess's ``PYTHONPATH`` (for example
a folder holding an older Triton installed with ``pip install --target DIR triton==3.6.0``).
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "gate-triton.csv"
FIELDS = ["kernel", "target", "dtype", "layout", "shape", "index", "num_warps", "registers", "spill_bytes",
          "shared_bytes", "widest_access_bits", "occupancy", "meets_bar"]

# Published per-SM limits (CUDA C++ Programming Guide, compute capabilities 8.0 and 9.0).
TARGETS = {
    "sm_80": dict(arch=80, sms=108, shared_per_sm=164 * 1024),  # A100
    "sm_90": dict(arch=90, sms=132, shared_per_sm=228 * 1024),  # H100 / H200
}
REGISTERS_PER_SM = 65536
REGISTER_UNIT_PER_WARP = 256
WARPS_PER_SM = 64
BLOCKS_PER_SM = 32
RESERVED_SHARED_PER_BLOCK = 1024
MIN_OCCUPANCY = 0.25
# libdevice's accurate sin/cos (PVLU) reduce arguments of magnitude >= 105615 (float32) with a Payne-Hanek
# step that keeps a small array in local memory; a stack frame without spills in such a kernel is that array.
TRIG_REDUCTION = "__internal_trig_reduction_slowpath"
FULL_WIDTH_BITS = 128

DTYPES = ["float32", "bfloat16", "float16", "float64"]
BAR_DTYPES = ("float32", "bfloat16", "float16")
# (op, size parameter): LSLU stages S, PWLU intervals N, the fused layer's (lslu_dwconv) stages S.
OPS = [("lslu", 1), ("lslu", 3), ("lslu", 8), ("pvlu", None), ("pwlu", 16), ("pwlu", 64)]
# Ops of 4-D images only (no (B, L, C) layout): the fused series and depthwise convolution (issue 15).
IMAGE_OPS = ("lslu_dwconv",)
# Kernels compiled only when --only names them, not yet in the default matrix, the committed tables and
# tests/test_gate_triton.py: the fused layer, whose S = 8 backward and 16-bit channels-last instances still
# miss the bar (and whose compiles take ~30 min on a 2-core machine).
PENDING_OPS = [("lslu_dwconv", 1), ("lslu_dwconv", 3), ("lslu_dwconv", 8)]
# (layout, shape, misaligned, dtypes): misaligned inputs (x and dy) start one element past an aligned address.
# The odd shapes and the misaligned twins run in one 32-bit and one 16-bit type (float16 compiles as bfloat16
# does but for the conversions), which keeps the gate within a few minutes on a 2-core machine.
ALL_DTYPES = tuple(DTYPES)
TWO_DTYPES = ("float32", "bfloat16")
LAYOUTS = [
    ("nchw", (16, 64, 56, 56), False, ALL_DTYPES),
    ("channels_last", (16, 64, 56, 56), False, ALL_DTYPES),
    ("blc", (8, 1024, 768), False, ALL_DTYPES),
    ("nchw", (16, 256, 14, 14), False, TWO_DTYPES),
    ("nchw", (8, 100, 28, 28), False, TWO_DTYPES),
    ("channels_last", (8, 100, 28, 28), False, TWO_DTYPES),
    ("nchw", (16, 64, 56, 56), True, TWO_DTYPES),
    ("channels_last", (16, 64, 56, 56), True, TWO_DTYPES),
    ("blc", (8, 1024, 768), True, TWO_DTYPES),
]


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    size: int | None
    direction: str  # "forward" or "backward"
    dtype: str
    layout: str
    shape: tuple
    misaligned: bool

    @property
    def kernel(self) -> str:
        label = {"lslu": f"lslu S={self.size}", "pvlu": "pvlu", "pwlu": f"pwlu N={self.size}",
                 "lslu_dwconv": f"lslu_dwconv S={self.size}"}[self.op]
        return f"{label} {self.direction}"

    @property
    def layout_name(self) -> str:
        return self.layout + ("-misaligned" if self.misaligned else "")

    @property
    def channel_dim(self) -> int:
        return -1 if self.layout == "blc" else 1

    @property
    def contiguous_run(self) -> int:
        """Elements contiguous in memory along the channel view: ``inner`` (NCHW) or ``C`` (channels innermost).

        The fused convolution walks NCHW images in 2-D tiles: its contiguous runs are the image rows (``W``).
        """
        if self.layout == "nchw":
            return self.shape[-1] if self.op in IMAGE_OPS else math.prod(self.shape[2:])
        return self.shape[self.channel_dim]

    def full_width_possible(self, itemsize: int) -> bool:
        """Whether the shape and alignment allow every element tensor 128-bit accesses."""
        return not self.misaligned and self.contiguous_run % (16 // itemsize) == 0


def cases(only: str | None = None) -> list[Case]:
    """The gate's matrix; ``only``: just the kernels whose name contains it (e.g. "lslu S=8 backward"),
    the pending ones included."""
    if only is None:
        return _matrix(OPS)
    return [case for case in _matrix(OPS + PENDING_OPS) if only in case.kernel]


def _matrix(ops) -> list[Case]:
    return [Case(op, size, direction, dtype, layout, shape, misaligned)
            for op, size in ops for direction in ("forward", "backward")
            for layout, shape, misaligned, dtypes in LAYOUTS for dtype in dtypes
            if not (op in IMAGE_OPS and len(shape) != 4)]


# ----------------------------------------------------------------------------------------------------------
# Step 1: capture the launches (in the subprocess).


@dataclasses.dataclass
class TensorArg:
    """What a launch needs of a tensor argument: its dtype, its address, and whether it is x-shaped."""
    dtype: str
    address: int
    element: bool


def _stand_in(dtype, shape, layout, misaligned):
    """A fake CUDA tensor of ``shape`` in ``layout``, starting one element in when ``misaligned``."""
    import torch
    numel = math.prod(shape)
    offset = 1 if misaligned else 0
    storage = torch.empty(numel + offset, dtype=dtype, device="cuda")
    if layout == "channels_last":
        n, c, h, w = shape
        return storage.as_strided(shape, (h * w * c, 1, w * c, c), offset)
    return storage.as_strided(shape, torch.empty(shape, device="meta").stride(), offset)


def _params(case: Case, C: int, dtype):
    import torch
    if case.op == "lslu":
        return (torch.ones(case.size, C, device="cuda", dtype=dtype), torch.zeros(case.size, C, device="cuda",
                                                                                 dtype=dtype))
    if case.op == "pvlu":
        return torch.zeros(C, device="cuda", dtype=dtype), torch.ones(C, device="cuda", dtype=dtype)
    if case.op == "lslu_dwconv":  # theta, omega in the compute dtype; weight and bias in x's
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        k = 2 * case.size + 1
        return (torch.ones(case.size, C, device="cuda", dtype=compute),
                torch.zeros(case.size, C, device="cuda", dtype=compute),
                torch.zeros(C, 1, k, k, device="cuda", dtype=dtype), torch.zeros(C, device="cuda", dtype=dtype))
    points = torch.zeros(C, case.size + 1, device="cuda", dtype=dtype)
    return (points, *(torch.zeros(C, device="cuda", dtype=dtype) for _ in range(4)))


def capture(case: Case, sms: int) -> list[dict]:
    """The launches ``case``'s host function makes on a GPU with ``sms`` SMs, as plain data."""
    import importlib
    import types

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from triton.runtime.jit import JITFunction

    from lslu_kernels import _layout

    module = importlib.import_module(f"lslu_kernels.triton_kernels.{case.op}")
    common = importlib.import_module("lslu_kernels.triton_kernels.common")
    dtype = getattr(torch, case.dtype)
    launches = []
    addresses = {}  # storage -> base address; the allocator's blocks are 256-byte aligned (use 1 MiB apart)

    def describe(arg, x_shape):
        if isinstance(arg, torch.Tensor):
            key = id(arg.untyped_storage())
            base = addresses.setdefault(key, (len(addresses) + 1) << 20)
            return TensorArg(str(arg.dtype).removeprefix("torch."), base + arg.storage_offset() * arg.itemsize,
                             tuple(arg.shape) == x_shape)
        if isinstance(arg, torch.dtype):
            raise TypeError("torch.dtype launch arguments are not supported by the gate")
        return arg

    def record(fn, *args, grid, warmup, **kwargs):
        assert not warmup
        launches.append(dict(module=fn.fn.__module__, name=fn.__name__, grid=list(grid) if not callable(grid) else None,
                             args=[describe(a, case.shape) for a in args],
                             kwargs={k: describe(v, case.shape) for k, v in kwargs.items()}))

    saved_run, saved_properties = JITFunction.run, torch.cuda.get_device_properties
    JITFunction.run = record
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(multi_processor_count=sms)
    try:
        with FakeTensorMode():
            x = _stand_in(dtype, case.shape, case.layout, case.misaligned)
            dim = case.channel_dim % len(case.shape)
            outer, C, inner = _layout.channel_view(x, dim)
            params = _params(case, C, dtype)
            try:
                if case.op in IMAGE_OPS:  # forward(x, theta, omega, weight, bias, stages), backward without bias
                    if case.direction == "forward":
                        module.forward(x, *params, case.size)
                    else:
                        dy = _stand_in(dtype, case.shape, case.layout, case.misaligned)
                        module.backward(dy, x, *params[:3], case.size)
                elif case.direction == "forward":
                    getattr(module, f"{case.op}_forward")(x, *params, outer=outer, C=C, inner=inner)
                else:
                    dy = _stand_in(dtype, case.shape, case.layout, case.misaligned)
                    getattr(module, f"{case.op}_backward")(dy, x, *params, outer=outer, C=C, inner=inner)
            except RuntimeError as error:  # fake CUDA tensors cannot be copied: only what follows the launch
                if "not linked with support for cuda" not in str(error) or not launches:
                    raise
    finally:
        JITFunction.run, torch.cuda.get_device_properties = saved_run, saved_properties
    for launch in launches:
        launch["index"] = "int64" if math.prod(case.shape) >= common.INT64_THRESHOLD else "int32"
    return launches


# ----------------------------------------------------------------------------------------------------------
# Step 2 and 3: compile and measure (in the subprocess).


class _TargetDriver:
    """Stands in for Triton's CUDA driver: reports ``arch`` as the current device's target; launches nothing."""

    def __init__(self, arch: int):
        self.arch = arch

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget("cuda", self.arch, 32)

    def get_current_device(self):
        return self.arch  # one JIT cache per target

    def get_current_stream(self, device=None):
        return 0

    def is_active(self):
        return True


class _Pointer:
    """A tensor argument as Triton's specialization sees it: a dtype and an address."""

    def __init__(self, arg: TensorArg):
        import torch
        self.dtype = getattr(torch, arg.dtype)
        self.address = arg.address

    def data_ptr(self):
        return self.address


def _specialization_key(launch: dict, arch: int) -> str:
    """What Triton's compile key depends on: constexprs and options by value; pointers by dtype and 16-byte
    alignment; other integers by ``== 1``, ``% 16 == 0`` and width."""
    module = sys.modules.get(launch["module"]) or __import__(launch["module"], fromlist=["_"])
    constexpr = {p.name for p in getattr(module, launch["name"]).params if p.is_constexpr}
    names = list(getattr(module, launch["name"]).arg_names)

    def key(name, value):
        if isinstance(value, TensorArg):
            return ("ptr", value.dtype, value.address % 16 == 0)
        if name in constexpr or name not in names or isinstance(value, bool) or not isinstance(value, int):
            return ("value", repr(value))
        return ("int", value == 1, value % 16 == 0, -2**31 <= value < 2**31)
    return json.dumps([launch["module"], launch["name"], arch,
                       [key(n, a) for n, a in zip(names, launch["args"])],
                       sorted((k, key(k, v)) for k, v in launch["kwargs"].items())], default=str)


def _tool(name: str) -> str:
    import triton
    return str(pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


_PARAM_LOAD = re.compile(r"ld\.param\.\w+\s+(%\w+),\s*\[(\w+)_param_(\d+)\]")
_MEMORY_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)\s+(.*)")
_REGISTER = re.compile(r"%[a-z]+\d+")


def access_widths(ptx: str) -> dict[int, int]:
    """Widest ``ld.global``/``st.global`` (bits) per pointer parameter (PTX parameter number), by following
    which parameter each address register is computed from."""
    lines = [line.strip() for line in ptx.splitlines()]
    derived = {}  # register -> parameter numbers it is computed from
    for line in lines:
        if match := _PARAM_LOAD.search(line):
            derived[match.group(1)] = {int(match.group(3))}
    changed = True
    while changed:  # to a fixed point: loops assign registers after their use
        changed = False
        for line in lines:
            if line.startswith(("ld.param", "//", ".", "{", "}")) or not line or _MEMORY_ACCESS.search(line):
                continue
            registers = _REGISTER.findall(line.split("//")[0].removeprefix("@").lstrip("!"))
            if line.startswith("@"):
                registers = registers[1:]  # the predicate
            if len(registers) < 2:
                continue
            sources = set().union(*(derived.get(r, set()) for r in registers[1:]))
            if sources - derived.get(registers[0], set()):
                derived[registers[0]] = derived.get(registers[0], set()) | sources
                changed = True
    widths = {}
    for line in lines:
        match = _MEMORY_ACCESS.search(line)
        if not match or "[" not in match.group(3):
            continue
        modifiers = match.group(2).split(".")
        vector = next((int(m[1:]) for m in modifiers if re.fullmatch(r"v\d+", m)), 1)
        bits = next((int(m[1:]) for m in reversed(modifiers) if re.fullmatch(r"[bfsu]\d+", m)), None)
        if bits is None:
            continue
        address = _REGISTER.findall(match.group(3).split("[", 1)[1])
        for parameter in derived.get(address[0], set()) if address else ():
            widths[parameter] = max(widths.get(parameter, 0), vector * bits)
    return widths


def occupancy(registers: int, num_warps: int, shared_bytes: int, shared_per_sm: int) -> float:
    """Theoretical occupancy: resident warps per SM over the SM's 64."""
    warp_registers = math.ceil(registers * 32 / REGISTER_UNIT_PER_WARP) * REGISTER_UNIT_PER_WARP
    by_registers = (REGISTERS_PER_SM // warp_registers) // num_warps if registers else BLOCKS_PER_SM
    by_warps = WARPS_PER_SM // num_warps
    by_shared = shared_per_sm // (shared_bytes + RESERVED_SHARED_PER_BLOCK)
    return min(by_registers, by_warps, by_shared, BLOCKS_PER_SM) * num_warps / WARPS_PER_SM


def compile_launch(launch: dict, target: str) -> dict:
    """Compile one recorded launch for ``target`` and measure it; ``error`` holds a compile failure."""
    import warnings

    import triton
    from triton.runtime import driver

    limits = TARGETS[target]
    module = sys.modules.get(launch["module"]) or __import__(launch["module"], fromlist=["_"])
    fn = getattr(module, launch["name"])
    wrap = lambda v: _Pointer(v) if isinstance(v, TensorArg) else v  # noqa: E731
    driver.set_active(_TargetDriver(limits["arch"]))
    ptxas_log = io.StringIO()  # TRITON_DUMP_PTXAS_LOG=1 (set by run_gate) prints ptxas -v's report
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(ptxas_log):
            warnings.simplefilter("ignore")
            kernel = fn.warmup(*map(wrap, launch["args"]), grid=launch["grid"] or (1,),
                               **{k: wrap(v) for k, v in launch["kwargs"].items()})
    except Exception as error:  # noqa: BLE001 -- every compile failure is a row that misses the bar
        return dict(error=f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = pathlib.Path(tmp) / "kernel.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        dump = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    usage = {name: int(value) for name, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", dump)}
    registers, stack, local = usage.get("REG", 0), usage.get("STACK", 0), usage.get("LOCAL", 0)
    spills = re.findall(r"(\d+) bytes spill stores", ptxas_log.getvalue())
    # Without ptxas's report (a Triton without the switch, or a kernel compiled earlier in this process),
    # every byte of stack counts as spilled.
    spill_bytes = sum(map(int, spills)) if spills else stack
    ptx = kernel.asm["ptx"]
    shared = usage.get("SHARED", 0) + int(kernel.metadata.shared)
    # PTX parameters are the non-constexpr arguments, in order.
    names = [name for name, kind in kernel.src.signature.items() if kind != "constexpr"]
    arg_names = list(fn.arg_names)
    element_params = [names.index(arg_names[i]) for i, a in enumerate(launch["args"])
                      if isinstance(a, TensorArg) and a.element and arg_names[i] in names]
    widths = access_widths(ptx)
    num_warps = int(kernel.metadata.num_warps)
    return dict(
        registers=registers, spill_bytes=spill_bytes, stack_bytes=stack, local_bytes=local,
        trig_reduction=TRIG_REDUCTION in ptx, shared_bytes=shared, num_warps=num_warps,
        widest_access_bits=min((widths.get(p, 0) for p in element_params), default=0),
        occupancy=occupancy(registers, num_warps, shared, limits["shared_per_sm"]),
        triton=triton.__version__)


def _compile_job(job):
    launch, target = job
    return compile_launch(launch, target)


def judge(case: Case, result: dict) -> list[str]:
    """What a compiled kernel misses of the bar (empty: it meets it)."""
    if "error" in result:
        return [f"compile error ({result['error']})"]
    if case.dtype not in BAR_DTYPES:
        return []
    misses = []
    if result["spill_bytes"]:
        misses.append(f"spills {result['spill_bytes']} bytes (ptxas's spill stores)")
    elif result["local_bytes"] or (result["stack_bytes"] and not result["trig_reduction"]):
        misses.append(f"local memory: {result['stack_bytes']} bytes of stack, {result['local_bytes']} bytes of "
                      "local variables")
    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[case.dtype]
    if case.full_width_possible(itemsize) and result["widest_access_bits"] < FULL_WIDTH_BITS:
        misses.append(f"element accesses {result['widest_access_bits']} bits wide where 128 are possible")
    if result["occupancy"] < MIN_OCCUPANCY:
        misses.append(f"occupancy {result['occupancy']:.0%} with {result['registers']} registers, "
                      f"{result['num_warps']} warps")
    return misses


def worker(out: pathlib.Path, jobs: int, only: str | None) -> None:
    """Capture every case's launches, compile each distinct one for both targets, write the rows as JSON."""
    import concurrent.futures
    import multiprocessing

    start = time.time()
    rows, distinct = [], {}
    for case in cases(only):
        for target, limits in TARGETS.items():
            launches = capture(case, limits["sms"])
            for launch in launches:
                key = _specialization_key(launch, limits["arch"])
                distinct.setdefault(key, (launch, target))
                # A host function that launches several kernels gets one row per kernel.
                name = case.kernel if len(launches) == 1 else f"{case.kernel} ({launch['name']})"
                rows.append((case, name, target, launch, key))
    captured = time.time()
    keys = list(distinct)
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        results = dict(zip(keys, pool.map(_compile_job, [distinct[k] for k in keys])))
    table = []
    for case, name, target, launch, key in rows:
        result = results[key]
        misses = judge(case, result)
        table.append(dict(
            kernel=name, target=target, dtype=case.dtype, layout=case.layout_name,
            shape="x".join(map(str, case.shape)), index=launch["index"],
            num_warps=result.get("num_warps", ""), registers=result.get("registers", ""),
            spill_bytes=result.get("spill_bytes", ""), shared_bytes=result.get("shared_bytes", ""),
            widest_access_bits=result.get("widest_access_bits", ""),
            occupancy=f"{result['occupancy']:.3f}" if "occupancy" in result else "",
            meets_bar="yes" if not misses else "no", misses="; ".join(misses),
            stack_bytes=result.get("stack_bytes", ""), local_bytes=result.get("local_bytes", ""),
            kernel_name=launch["name"]))
    out.write_text(json.dumps(dict(rows=table, compiled=len(keys), launches=len(rows),
                                   capture_s=captured - start, compile_s=time.time() - captured,
                                   triton=next((r["triton"] for r in results.values() if "triton" in r), None))))


def run_gate(jobs: int | None = None, only: str | None = None) -> dict:
    """Run the gate in a clean subprocess; returns its rows (one per case, target and launch) and timings."""
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET" and not k.startswith("TRITON_CACHE")}
    env["TRITON_DUMP_PTXAS_LOG"] = "1"
    path = [p for p in (os.environ.get("LSLU_GATE_PYTHONPATH"), str(ROOT), os.environ.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(path)
    with tempfile.TemporaryDirectory(prefix="lslu-gate-") as tmp:
        env["TRITON_CACHE_DIR"] = str(pathlib.Path(tmp) / "triton-cache")
        out = pathlib.Path(tmp) / "rows.json"
        start = time.time()
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", str(out), "--jobs", str(jobs)]
        done = subprocess.run(command + (["--only", only] if only else []), env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the gate's compile subprocess failed (exit {done.returncode}):\n"
                               f"{done.stderr[-4000:]}")
        report = json.loads(out.read_text())
    report["total_s"] = time.time() - start
    return report


def write_csv(rows: list[dict], path: pathlib.Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def row_key(row: dict) -> tuple:
    """A row's identity in the table (what the committed CSV and a fresh run must both have)."""
    return tuple(str(row[k]) for k in ("kernel", "target", "dtype", "layout", "shape", "index"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--jobs", type=int, default=None, help="compile processes (default: CPUs, at most 4)")
    parser.add_argument("--only", help="only the kernels whose name contains this (not written unless --out)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help=f"CSV to write (default {RESULTS.name})")
    parser.add_argument("--worker", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.jobs or 1, args.only)
    report = run_gate(args.jobs, args.only)
    rows = report["rows"]
    missed = [r for r in rows if r["meets_bar"] != "yes"]
    for r in missed:
        print(f"MISSED {r['kernel']} {r['target']} {r['dtype']} {r['layout']} {r['shape']}: {r['misses']}")
    print(f"{len(rows)} rows, {report['compiled']} distinct compiles (triton {report['triton']}): "
          f"{len(rows) - len(missed)} meet the bar, {len(missed)} miss it; capture {report['capture_s']:.1f} s, "
          f"compile {report['compile_s']:.1f} s, total {report['total_s']:.1f} s")
    if args.out or not (args.no_write or args.only):
        out = args.out or RESULTS
        write_csv(rows, out)
        print(f"wrote {out}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job: every backend of every activation against eager PyTorch, torch.compile and the copy bandwidth.

    python benchmarks/run.py            # a few representative cases, a few minutes; saved under results/local/
    python benchmarks/run.py --full     # the whole sweep, appended to benchmarks/results/<device>.csv
    python benchmarks/run.py --smoke    # one small shape per case, printed only (tests, dry runs)

Runs on the GPU when there is one, else on the CPU. The ops and their
parameter sets are the registered activations' (``benchmarks`` of each
``Activation`` in ``lslu_kernels/functional.py``). For each case (op, shape,
layout, dtype) and mode (forward, backward, forward+backward; the default CPU
sweep leaves out backward alone) it times every provider in turns, one call of
each per round, so that a change in the machine's load weighs on all of them
alike: the project's kernel backends that serve the device, the eager
reference (``lslu_kernels.reference``), ``torch.compile`` of that reference,
and PyTorch's own ``torch.relu`` and ``torch.nn.functional.prelu`` as the price
of a non-learnable and of the cheapest built-in learnable activation.

Timing: on the GPU ``triton.testing.do_bench`` (CUDA events, L2 flushed before
every call, warm-up excluded); on the CPU the wall time of repeated calls after
three warm-up calls. Both report the median and the 20%/80% quantiles, and both
rotate through enough copies of the inputs that together they exceed the
last-level cache three times over, so no call finds its inputs in the cache.

Each time is also given as GB/s of the bytes the op must move at least
(forward: read x, write y; backward: read x and dy, write dx) and as a
percentage of the device's copy bandwidth, measured in the same run on a large
tensor copy (bytes read + written). For forward+backward the run also records
the peak memory of one step above its inputs and the bytes the autograd graph
saves for backward.

Each case's table is printed as soon as it is timed, and the targets the
issues set (``benchmarks/report.py``) with their verdicts at the end. Rows are
appended to ``benchmarks/results/local/<device>.csv`` (ignored by git), with
``--full`` to the committed ``benchmarks/results/<device>.csv``, or to
``--out``; ``benchmarks/plot.py`` draws them and ``benchmarks/report.py``
writes the README's results section from the committed ones. Then the
model-level benchmark (``benchmarks/models.py``, ``--no-models`` skips it) times
small models with every activation, its rows in ``models-<device>.csv`` beside.
"""

import argparse
import contextlib
import csv
import dataclasses
import datetime
import importlib.util
import itertools
import math
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch._functorch.config
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from lslu_kernels import _backends, registry

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
LOCAL_RESULTS_DIR = RESULTS_DIR / "local"  # the default run's rows: .gitignore keeps them out of the checkout
MODES = ("forward", "backward", "forward+backward")
SWEEPS = ("smoke", "default", "full")
# Tensor-sized passes over memory each mode needs at the least.
PASSES = {"forward": 2, "backward": 3, "forward+backward": 5}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FIELDS = ["op", "provider", "mode", "dtype", "shape", "layout", "median_ms", "q20_ms", "q80_ms", "gbps",
          "pct_copy_bw", "peak_mb", "saved_mb", "device", "torch", "triton", "commit", "timestamp", "copy_gbps"]
BASELINES = ("torch.relu", "F.prelu")


@dataclasses.dataclass(frozen=True)
class Op:
    """An activation as benchmarked: its public function, its reference and a parameter factory."""
    label: str  # e.g. "lslu S=3"
    fn: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    make_params: Callable[[int, torch.device], list[torch.Tensor]]


# Every parameter set each registered activation names for benchmarking ("lslu S=1", "lslu S=3", "pvlu", ...).
OPS = [Op(activation.benchmark_label(variant), registry.function(activation.name), activation.reference, make)
       for activation in registry.activations() for variant, make in activation.benchmarks]


@dataclasses.dataclass(frozen=True)
class Provider:
    """What is timed: ``fn(x, *params, channel_dim=...)``.

    ``make_params(channels, device, x_dtype)`` when not the op's own parameters (float32, mixed precision).
    """
    name: str
    fn: Callable[..., torch.Tensor]
    make_params: Callable[[int, torch.device, torch.dtype], list[torch.Tensor]] | None = None


def _relu(x, *, channel_dim):
    return torch.relu(x)


def _prelu(x, weight, *, channel_dim):
    if channel_dim == 1:
        return F.prelu(x, weight)
    return F.prelu(x.reshape(-1, x.shape[-1]), weight).view(x.shape)  # prelu's channel axis is 1


def kernel_backends(device: torch.device) -> list[str]:
    """The project's backends that may be the device's default: not the Triton interpreter (TRITON_INTERPRET=1)."""
    return [name for name, backend in _backends.backends().items()
            if name != "reference" and backend.serves_device(device.type) and device.type in backend.default_for
            and _backends.device_problem(name, device) is None]


def providers(device: torch.device, op: Op) -> list[Provider]:
    """Everything timed for ``op`` on ``device``; call once per case, so each case compiles afresh."""
    out = [Provider(name, lambda *a, name=name, **k: op.fn(*a, backend=name, **k)) for name in kernel_backends(device)
           if _backends.has_kernels(name, op.fn.activation.name)]
    out += [Provider("eager", op.reference), Provider("torch.compile", torch.compile(op.reference, dynamic=False)),
            Provider("torch.relu", _relu, lambda channels, device, dtype: []),
            Provider("F.prelu", _prelu,  # prelu's weight has x's dtype
                     lambda channels, device, dtype: [torch.full((channels,), 0.25, device=device, dtype=dtype)])]
    return out


@dataclasses.dataclass(frozen=True)
class Case:
    op: Op
    shape: tuple[int, ...]
    layout: str  # "nchw", "channels_last" or "blc" (channel axis last)
    dtype: str

    @property
    def channel_dim(self) -> int:
        return -1 if self.layout == "blc" else 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize

    def make_inputs(self, provider: Provider, device: torch.device) -> list[torch.Tensor]:
        """x and the provider's parameters (per channel), all requiring grad."""
        x = torch.randn(self.shape, device=device, dtype=DTYPES[self.dtype])
        if self.layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        channels = self.shape[self.channel_dim]
        if provider.make_params is None:
            params = self.op.make_params(channels, device)
        else:
            params = provider.make_params(channels, device, x.dtype)
        return [t.requires_grad_() for t in (x, *params)]


# The default sweep: a few cases per op that answer the targets' questions in minutes, as (shape, layout, dtype).
DEFAULT_CASES = {
    # ResNet stage 1 in float32 (the CPU targets' case) and channels-last bfloat16; a GPT-2-small sized batch.
    "cpu": [((16, 64, 56, 56), "nchw", "float32"), ((8, 512, 768), "blc", "float32"),
            ((16, 64, 56, 56), "channels_last", "bfloat16")],
    # ResNet-50 stage 1 and BERT-large, all at least 64 MB (the size of the GPU bandwidth targets).
    "cuda": [((64, 256, 56, 56), "nchw", "float32"), ((64, 256, 56, 56), "channels_last", "bfloat16"),
             ((16, 2048, 1024), "blc", "bfloat16")],
}


def cases(device: torch.device, sweep: str = "default") -> list[Case]:
    """CNN activations (NCHW and channels-last) and transformer activations ((B, L, C), channel axis last)."""
    if sweep == "default":
        return [Case(op, shape, layout, dtype) for shape, layout, dtype in DEFAULT_CASES[device.type] for op in OPS]
    if sweep == "smoke":
        cnn, blc, dtypes = [(8, 64, 28, 28)], [(4, 256, 768)], ["float32", "bfloat16"]
    elif device.type == "cuda":  # ResNet-50 stages 1 and 3, a stem; BERT-large, a 4096-wide LLM layer, ViT-B
        cnn = [(64, 256, 56, 56), (64, 1024, 14, 14), (32, 64, 112, 112)]
        blc = [(16, 2048, 1024), (8, 4096, 4096), (64, 197, 768)]
        dtypes = ["float32", "bfloat16", "float16"]
    else:  # ResNet stage 1 (the size of the CPU targets) and stage 3; a GPT-2-small sized sequence batch
        cnn, blc, dtypes = [(16, 64, 56, 56), (16, 256, 14, 14)], [(8, 512, 768)], ["float32", "bfloat16"]
    out = []
    for dtype in dtypes:
        for op in OPS:
            out += [Case(op, s, layout, dtype) for s in cnn for layout in ("nchw", "channels_last")]
            out += [Case(op, s, "blc", dtype) for s in blc]
    return out


def modes(device: torch.device, sweep: str) -> tuple[str, ...]:
    """The default CPU sweep leaves out backward alone (forward+backward contains it; the CPU targets are
    forward+backward); the GPU targets judge backward alone too, and a GPU times it in seconds."""
    if sweep == "default" and device.type == "cpu":
        return ("forward", "forward+backward")
    return MODES


def last_level_cache_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    sizes = []
    for index in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            text = (index / "size").read_text().strip()  # e.g. "32768K"
            sizes.append(int(text[:-1]) << {"K": 10, "M": 20, "G": 30}[text[-1]])
    return max(sizes, default=64 << 20)  # 64 MiB when sysfs does not tell


def rotation_copies(case: Case, device: torch.device) -> int:
    """How many input sets to rotate through so that together they exceed the last-level cache 3 times."""
    return max(1, min(32, math.ceil(3 * last_level_cache_bytes(device) / case.nbytes)))


def _summary(times: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


def measure(fn: Callable[[], object], device: torch.device, min_time: float) -> tuple[float, float, float]:
    """(median, 20% quantile, 80% quantile) of the time of ``fn()`` in milliseconds, warm-up excluded."""
    return measure_in_turns({"fn": fn}, device, min_time)["fn"]


def measure_in_turns(fns: dict[str, Callable[[], object]], device: torch.device,
                     min_time: float) -> dict[str, tuple[float, float, float]]:
    """(median, 20% quantile, 80% quantile) ms of each of ``fns``, timed in turns: each round times every
    one once (on the GPU, one short ``do_bench`` each), so that what else the machine does in the
    meantime weighs on all of them alike and their ratios hold."""
    times = {name: [] for name in fns}
    if device.type == "cuda":
        import triton.testing

        rounds = 5
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name] += triton.testing.do_bench(fn, warmup=10, rep=max(20, int(1000 * min_time / rounds)),
                                                       return_mode="all")
        return {name: _summary(t) for name, t in times.items()}
    for fn in fns.values():
        for _ in range(3):
            fn()
    start, rounds = time.perf_counter(), 0
    while rounds < 5 or (time.perf_counter() - start < min_time * len(fns) and rounds < 200):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t0))
        rounds += 1
    return {name: _summary(t) for name, t in times.items()}


def copy_bandwidth(device: torch.device, min_time: float) -> float:
    """The device's copy bandwidth in GB/s: bytes read plus bytes written by a large tensor copy."""
    nbytes = 2**30 if device.type == "cuda" else 2**28
    src = torch.empty(nbytes // 4, device=device)
    src.normal_()
    dst = torch.empty_like(src)
    median, _, _ = measure(lambda: dst.copy_(src), device, min_time)
    return 2 * nbytes / (median * 1e-3) / 1e9


# Backward alone is timed by calling autograd.grad on one graph again and again
# (retain_graph=True), which compiled backwards with donated buffers refuse.
torch._functorch.config.donated_buffer = False


def timed_step(case: Case, provider: Provider, mode: str, device: torch.device) -> Callable[[], object]:
    """One call of ``mode``, each on the next of ``rotation_copies`` input sets."""
    sets = [case.make_inputs(provider, device) for _ in range(rotation_copies(case, device))]
    forwards = [lambda inputs=inputs: provider.fn(*inputs, channel_dim=case.channel_dim) for inputs in sets]
    turn = itertools.cycle(range(len(sets)))
    if mode == "forward":
        return lambda: forwards[next(turn)]()
    grad_outputs = [torch.randn_like(forward()) for forward in forwards]
    # allow_unused: the torch.relu baseline has no parameters.
    if mode == "backward":
        outputs = [forward() for forward in forwards]

        def backward():
            i = next(turn)
            return torch.autograd.grad(outputs[i], sets[i], grad_outputs[i], retain_graph=True, allow_unused=True)
        return backward

    def forward_backward():
        i = next(turn)
        return torch.autograd.grad(forwards[i](), sets[i], grad_outputs[i], allow_unused=True)
    return forward_backward


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints start/stop lines on stderr, which would break the progress bar."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak memory allocated by ``step()`` above what was allocated before it (None when it cannot be seen)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    # The CPU allocator keeps no statistics; the profiler records every allocation and free.
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:  # kineto's raw memory events, in time order (not a public API, hence the guard)
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
    except AttributeError:
        return None
    allocated = peak = 0
    for _, nbytes in events:
        allocated += nbytes
        peak = max(peak, allocated)
    return peak


def saved_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages the autograd graph of ``forward()`` keeps for backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())


def memory_case(case: Case, provider: Provider, device: torch.device) -> tuple[int | None, int]:
    """(peak bytes of one forward+backward step above its inputs, bytes saved for backward)."""
    inputs = case.make_inputs(provider, device)
    forward = lambda: provider.fn(*inputs, channel_dim=case.channel_dim)  # noqa: E731
    grad_output = torch.randn_like(forward())
    step = lambda: torch.autograd.grad(forward(), inputs, grad_output, allow_unused=True)  # noqa: E731
    step()  # compiled providers compile here, not inside the measurement
    return peak_bytes(step, device), saved_bytes(forward)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, "
            f"cpu kernels {cpu_kernels()}")


def cpu_kernels() -> str:
    """The cpu backend's instruction-set level and vector width (csrc/cpu/isa.h), e.g. "avx512 (512-bit vectors)"."""
    try:
        ext = importlib.import_module("lslu_kernels._C_cpu")
    except ImportError:
        return "not built"
    return f"{ext.isa()} ({ext.vector_bits()}-bit vectors)"


def git_commit() -> str:
    """The checkout's commit (+dirty); in a copy of the tree without git, $LSLU_KERNELS_COMMIT if set."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=pathlib.Path(__file__).parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("LSLU_KERNELS_COMMIT", "unknown")


def results_path(device: torch.device) -> pathlib.Path:
    if device.type == "cuda":
        slug = torch.cuda.get_device_name(device)
    else:
        slug = f"cpu-{torch.get_num_threads()}threads"
    return RESULTS_DIR / (re.sub(r"[^A-Za-z0-9]+", "-", slug).strip("-").lower() + ".csv")


def run_metadata(device: torch.device) -> dict:
    """The columns every results file ends with: device, torch and triton versions, commit, timestamp."""
    return dict(device=device_name(device), torch=torch.__version__, triton=_triton_version(), commit=git_commit(),
                timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def append_rows(path: pathlib.Path, rows: list[dict], fields: list[str] = FIELDS) -> None:
    """Append to ``path``, writing the header for a new file; refuse a file with other columns than ``fields``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f))
        if header != fields:
            raise SystemExit(f"{path} has columns {header}, this runner writes {fields}; "
                             "pass --out to write elsewhere")
    new = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _report():
    """benchmarks/report.py, which holds the targets (loaded from beside this file: run.py is a script)."""
    return _sibling("report")


def _sibling(name: str):
    """benchmarks/<name>.py, loaded from beside this file."""
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    op_names = sorted({op.label.split()[0] for op in OPS})
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--full", action="store_true",
                       help="the whole sweep (every shape, layout, dtype and mode), appended to the committed "
                            "benchmarks/results/<device>.csv unless --out")
    sweep.add_argument("--smoke", action="store_true", help="one small shape per case; printed, saved only with --out")
    parser.add_argument("--ops", nargs="+", choices=op_names, default=None, help="only these ops")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None, help="only these dtypes")
    parser.add_argument("--layouts", nargs="+", choices=["nchw", "channels_last", "blc"], default=None,
                        help="only these layouts")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="AxBx...",
                        help="only cases of these shapes, written as in the CSV (e.g. 64x256x56x56)")
    parser.add_argument("--providers", nargs="+", default=None,
                        help="only these providers, and eager (every speedup is over it)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds to time each provider in each mode (default: 0.5 with --full, else 0.2)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="CSV to append to (default: benchmarks/results/local/<device>.csv, "
                             "with --full benchmarks/results/<device>.csv)")
    parser.add_argument("--no-save", action="store_true", help="print the tables only")
    parser.add_argument("--no-models", action="store_true",
                        help="skip the model-level benchmark (benchmarks/models.py) that follows the sweep")
    parser.add_argument("--no-layer", action="store_true",
                        help="skip the full layer's fused/unfused comparison (benchmarks/layer.py; CPU only, "
                             "run when --ops is not given)")
    parser.add_argument("--no-overhead", action="store_true",
                        help="leave out the per-call overhead table (benchmarks/overhead.py) after the sweep")
    args = parser.parse_args(argv)
    sweep = "full" if args.full else "smoke" if args.smoke else "default"

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_time = args.min_time if args.min_time is not None else {"smoke": 0.1, "default": 0.2, "full": 0.5}[sweep]
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for one line per row
        console = Console(width=160)
    bandwidth = copy_bandwidth(device, min_time)
    meta = {**run_metadata(device), "copy_gbps": f"{bandwidth:.1f}"}
    console.print(f"[bold]lslu-kernels benchmark[/] on {meta['device']}; torch {meta['torch']}, "
                  f"triton {meta['triton']}, commit {meta['commit']}; copy bandwidth {bandwidth:.1f} GB/s; "
                  f"last-level cache {last_level_cache_bytes(device) >> 20} MiB")
    save = not args.no_save and (args.out is not None or sweep != "smoke")
    path = args.out or (results_path(device) if sweep == "full" else LOCAL_RESULTS_DIR / results_path(device).name)

    chosen = [c for c in cases(device, sweep)
              if (args.ops is None or c.op.label.split()[0] in args.ops)
              and (args.dtypes is None or c.dtype in args.dtypes)
              and (args.layouts is None or c.layout in args.layouts)
              and (args.shapes is None or "x".join(map(str, c.shape)) in args.shapes)]
    if not chosen:
        raise SystemExit(f"no case on {device.type} matches --ops/--dtypes/--layouts/--shapes")
    timed_modes = modes(device, sweep)
    console.print(f"{sweep} sweep: {len(chosen)} cases, {', '.join(timed_modes)}"
                  + (f"; rows appended to {path}" if save else "; nothing saved")
                  + ("" if sweep == "full" else " (--full for the whole sweep)"))
    earlier = []  # the file's rows before this run: the targets' earlier values
    if save and path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            earlier = list(csv.DictReader(f))
    rows = []
    baseline_results = {}  # torch.relu and F.prelu do not depend on the op: measured once per shape
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("timing", total=len(chosen) * (len(timed_modes) + 1))
        for case in chosen:
            torch._dynamo.reset()  # a fresh torch.compile per case: no recompilation limit is hit
            timed = [p for p in providers(device, case.op)
                     if args.providers is None or p.name in (*args.providers, "eager")]
            progress.update(task, description=f"{case.op.label} {case.dtype} {'x'.join(map(str, case.shape))} "
                                              f"{case.layout}")
            results = {}  # (provider, mode) -> (median, q20, q80) ms; (provider, "memory") -> (peak, saved)
            for mode in (*timed_modes, "memory"):
                todo = {}
                for provider in timed:
                    key = (provider.name, case.shape, case.layout, case.dtype, mode)
                    if provider.name in BASELINES and key in baseline_results:
                        results[provider.name, mode] = baseline_results[key]
                    elif mode == "memory":
                        results[provider.name, mode] = memory_case(case, provider, device)
                    else:
                        todo[provider.name] = timed_step(case, provider, mode, device)
                if todo:
                    for name, result in measure_in_turns(todo, device, min_time).items():
                        results[name, mode] = result
                del todo  # the input copies
                for provider in timed:
                    if provider.name in BASELINES:
                        baseline_results[provider.name, case.shape, case.layout, case.dtype, mode] = \
                            results[provider.name, mode]
                progress.advance(task)
            case_rows = []
            for provider in timed:
                peak, saved = results[provider.name, "memory"]
                for mode in timed_modes:
                    median, q20, q80 = results[provider.name, mode]
                    gbps = PASSES[mode] * case.nbytes / (median * 1e-3) / 1e9
                    memory = dict(peak_mb="", saved_mb="")  # memory belongs to the forward+backward row
                    if mode == "forward+backward":
                        memory = dict(peak_mb="" if peak is None else f"{peak / 1e6:.1f}",
                                      saved_mb=f"{saved / 1e6:.1f}")
                    case_rows.append(dict(op=case.op.label, provider=provider.name, mode=mode, dtype=case.dtype,
                                          shape="x".join(map(str, case.shape)), layout=case.layout,
                                          median_ms=f"{median:.4f}", q20_ms=f"{q20:.4f}", q80_ms=f"{q80:.4f}",
                                          gbps=f"{gbps:.1f}", pct_copy_bw=f"{100 * gbps / bandwidth:.1f}",
                                          **memory, **meta))
            if save:  # a case is done: saved at once
                append_rows(path, case_rows)
            rows += case_rows
            progress.console.print(summary_table(case_rows, timed_modes))

    targets = _report().target_lines(path, rows, earlier + rows)
    if targets:
        console.print("[bold]Targets[/] (benchmarks/report.py), this run's values:")
        for line in targets:
            console.print(line, markup=False, highlight=False)
    # The overhead and full-layer rows go to overhead-<name>.csv and layer-<name>.csv beside this run's file.
    beside = (lambda kind: path.with_name(f"{kind}-{path.name}")) if save else (lambda kind: None)
    if not args.no_overhead:  # 64-element calls against F.prelu and the registration mechanisms (issue 13)
        overhead = _sibling("overhead")
        results = overhead.report(device, console, min_time=0.0 if sweep == "smoke" else 0.5,
                                  cpp_floor=sweep != "smoke")
        if save:
            append_rows(beside("overhead"), overhead.rows(results, run_metadata(device)), overhead.FIELDS)
            console.print(f"appended the per-call overhead's rows to {beside('overhead')}")
    if save:
        console.print(f"appended {len(rows)} rows to {path}")
    if device.type == "cpu" and args.ops is None and not args.no_layer:
        _sibling("layer").run(smoke=sweep == "smoke", min_time=min_time, console=console, out=beside("layer"),
                              meta=run_metadata(device))
    if not args.no_models:
        _sibling("models").main(models_argv(sweep, path if save else None, args.min_time), console=console)


def models_argv(sweep: str, path: pathlib.Path | None, min_time: float | None) -> list[str]:
    """The model-level benchmark's arguments after this run: the same sweep and --min-time, its rows in
    models-<name>.csv beside this run's file (``path``; None: nothing saved)."""
    return ([f"--{sweep}"] if sweep != "default" else []) \
        + (["--no-save"] if path is None else ["--out", str(path.with_name("models-" + path.name))]) \
        + ([] if min_time is None else ["--min-time", str(min_time)])


def summary_table(rows: list[dict], timed_modes: tuple[str, ...] = MODES) -> Table:
    """One case, one row per provider: median ms, % of copy bandwidth and speedup over eager per mode (and over
    torch.compile for forward+backward); forward+backward memory."""
    first = rows[0]
    table = Table(title=f"{first['op']} {first['dtype']} {first['shape']} {first['layout']}: median ms "
                        r"(% of copy bandwidth) \[speedup over eager]", title_justify="left")
    for column in ("provider", *timed_modes, "×compile", "peak MB", "saved MB"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    by_key = {(r["provider"], r["mode"]): r for r in rows}
    for provider in dict.fromkeys(r["provider"] for r in rows):
        cells = []
        for mode in timed_modes:
            row, eager = by_key[provider, mode], by_key["eager", mode]
            speedup = float(eager["median_ms"]) / float(row["median_ms"])
            cells.append(f"{float(row['median_ms']):.3f} ({row['pct_copy_bw']}%) [{speedup:.2f}x]")
        full = by_key[provider, "forward+backward"]
        compiled = by_key.get(("torch.compile", "forward+backward"))
        over_compile = "" if compiled is None else f"{float(compiled['median_ms']) / float(full['median_ms']):.2f}x"
        table.add_row(provider, *cells, over_compile, full["peak_mb"], full["saved_mb"],
                      end_section=provider == "torch.compile")
    return table


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())

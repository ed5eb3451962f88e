"""The main job: every backend of every activation against eager PyTorch, torch.compile and the copy bandwidth.

    python benchmarks/run.py            # the full sweep for this machine's device
    python benchmarks/run.py --quick    # one small shape per case

Runs on the GPU when there is one, else on the CPU. For each case and mode
(forward, backward, forward+backward) it times every provider: the project's
kernel backends that serve the device, the eager reference
(``lslu_kernels.reference``), ``torch.compile`` of that reference, and
``torch.relu`` as the price of a non-learnable activation. Each time is also
given as GB/s of the bytes the op must move at least (forward: read x, write
y; backward: read x and dy, write dx) and as a percentage of the device's copy
bandwidth, measured in the same run. Results are printed as a table and
appended to ``benchmarks/results/<device>.csv``.
"""

import argparse
import csv
import dataclasses
import datetime
import functools
import math
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
from rich.console import Console
from rich.progress import track
from rich.table import Table

import lslu_kernels as lk
from lslu_kernels import _backends, reference

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
MODES = ("forward", "backward", "forward+backward")
# Tensor-sized passes over memory each mode needs at the least.
PASSES = {"forward": 2, "backward": 3, "forward+backward": 5}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _lslu_params(stages):
    def make(channels, device):  # a little away from the identity
        return [1.0 + 0.1 * torch.randn(stages, channels, device=device),
                0.1 * torch.randn(stages, channels, device=device)]
    return make


def _pvlu_params(channels, device):
    return [0.1 * torch.randn(channels, device=device), 1.0 + 0.1 * torch.randn(channels, device=device)]


def _pwlu_params(intervals):
    def make(channels, device):  # realigned on a standard normal input, then perturbed
        knots = torch.linspace(-3, 3, intervals + 1, device=device)
        points = torch.relu(knots).expand(channels, -1) + 0.05 * torch.randn(channels, intervals + 1, device=device)
        return [points, torch.full((channels,), -3.0, device=device), torch.full((channels,), 3.0, device=device),
                0.05 * torch.randn(channels, device=device), 1.0 + 0.05 * torch.randn(channels, device=device)]
    return make


@dataclasses.dataclass(frozen=True)
class Op:
    """An activation as benchmarked: its public function, its reference and a parameter factory."""
    label: str  # e.g. "lslu S=3"
    fn: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    make_params: Callable[[int, torch.device], list[torch.Tensor]]


OPS = [
    Op("lslu S=1", lk.lslu, reference.lslu, _lslu_params(1)),
    Op("lslu S=3", lk.lslu, reference.lslu, _lslu_params(3)),
    Op("pvlu", lk.pvlu, reference.pvlu, _pvlu_params),
    Op("pwlu N=16", lk.pwlu, reference.pwlu, _pwlu_params(16)),
]


@dataclasses.dataclass(frozen=True)
class Case:
    op: Op
    shape: tuple[int, ...]
    layout: str  # "nchw", "channels_last" or "blc" (channel axis last)
    dtype: str

    @property
    def channel_dim(self) -> int:
        return -1 if self.layout == "blc" else 1

    def make_inputs(self, device: torch.device) -> list[torch.Tensor]:
        """x and the op's per-channel parameters (float32), all requiring grad."""
        x = torch.randn(self.shape, device=device, dtype=DTYPES[self.dtype])
        if self.layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        return [t.requires_grad_() for t in (x, *self.op.make_params(self.shape[self.channel_dim], device))]


def cases(device: torch.device, quick: bool) -> list[Case]:
    """CNN activations (NCHW and channels-last) and transformer activations ((B, L, C))."""
    if quick:
        cnn, blc = [(8, 64, 28, 28)], [(4, 256, 768)]
    elif device.type == "cuda":  # 64 MB and more in float32: far beyond the L2 cache
        cnn, blc = [(32, 256, 56, 56), (64, 128, 112, 112)], [(16, 2048, 1024), (8, 4096, 4096)]
    else:
        cnn, blc = [(16, 64, 56, 56)], [(8, 512, 768)]
    dtypes = ["float32", "bfloat16"] + (["float16"] if device.type == "cuda" else [])
    out = []
    for dtype in dtypes:
        for op in OPS:
            out += [Case(op, s, layout, dtype) for s in cnn for layout in ("nchw", "channels_last")]
            out += [Case(op, s, "blc", dtype) for s in blc]
    return out


def providers(device: torch.device, op: Op) -> dict[str, Callable]:
    """Name -> ``fn(x, *params, channel_dim=...)`` for everything timed on ``device``."""
    out = {}
    for name, backend in _backends.backends().items():
        if name != "reference" and backend.serves_device(device.type):
            out[name] = functools.partial(op.fn, backend=name)
    out["eager"] = op.reference
    out["torch.compile"] = torch.compile(op.reference, dynamic=False)
    out["torch.relu"] = lambda x, *params, channel_dim: torch.relu(x)
    return out


def measure(fn: Callable[[], object], device: torch.device, min_time: float) -> tuple[float, float, float]:
    """(median, 20% quantile, 80% quantile) of the time of ``fn()`` in milliseconds, warm-up excluded."""
    if device.type == "cuda":
        import triton.testing

        # Clears the L2 cache before every call, so inputs are read from memory.
        return tuple(triton.testing.do_bench(fn, warmup=25, rep=max(100, int(1000 * min_time)),
                                             quantiles=[0.5, 0.2, 0.8]))
    for _ in range(3):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < min_time and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    q = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), q[1], q[7]


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


def time_case(case: Case, provider: Callable, mode: str, device: torch.device, min_time: float):
    inputs = case.make_inputs(device)
    forward = lambda: provider(*inputs, channel_dim=case.channel_dim)  # noqa: E731
    if mode == "forward":
        return measure(forward, device, min_time)
    y = forward()
    grad_output = torch.randn_like(y)
    # allow_unused: the torch.relu baseline has no parameters.
    if mode == "backward":
        return measure(lambda: torch.autograd.grad(y, inputs, grad_output, retain_graph=True, allow_unused=True),
                       device, min_time)
    return measure(lambda: torch.autograd.grad(forward(), inputs, grad_output, allow_unused=True), device, min_time)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=pathlib.Path(__file__).parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=pathlib.Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def results_path(device: torch.device) -> pathlib.Path:
    if device.type == "cuda":
        slug = torch.cuda.get_device_name(device)
    else:
        slug = f"cpu-{torch.get_num_threads()}threads"
    return RESULTS_DIR / (re.sub(r"[^A-Za-z0-9]+", "-", slug).strip("-").lower() + ".csv")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small shape per case")
    parser.add_argument("--ops", nargs="+", default=None, help="only these ops (e.g. lslu pwlu)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds to time each measurement")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="CSV to append to (default: per device)")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 1.0)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: wide enough for one line per row
        console = Console(width=150)
    bandwidth = copy_bandwidth(device, min_time)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta = dict(device=device_name(device), torch=torch.__version__, triton=_triton_version(),
                commit=git_commit(), timestamp=now, copy_gbps=f"{bandwidth:.1f}")
    console.print(f"[bold]lslu-kernels benchmark[/] on {meta['device']}; torch {meta['torch']}, "
                  f"triton {meta['triton']}, commit {meta['commit']}; copy bandwidth {bandwidth:.1f} GB/s")

    chosen = [c for c in cases(device, args.quick) if args.ops is None or c.op.label.split()[0] in args.ops]
    work = [(c, p, m) for c in chosen for p in providers(device, c.op) for m in MODES]
    rows = []
    timed_case = None
    for case, name, mode in track(work, description="timing", console=console, transient=True):
        if case != timed_case:  # a fresh torch.compile per case: no recompilation limit is hit
            torch._dynamo.reset()
            timed, timed_case = providers(device, case.op), case
        median, q20, q80 = time_case(case, timed[name], mode, device, min_time)
        nbytes = PASSES[mode] * math.prod(case.shape) * torch.empty((), dtype=DTYPES[case.dtype]).element_size()
        gbps = nbytes / (median * 1e-3) / 1e9
        rows.append(dict(op=case.op.label, provider=name, mode=mode, dtype=case.dtype,
                         shape="x".join(map(str, case.shape)), layout=case.layout,
                         median_ms=f"{median:.4f}", q20_ms=f"{q20:.4f}", q80_ms=f"{q80:.4f}",
                         gbps=f"{gbps:.1f}", pct_copy_bw=f"{100 * gbps / bandwidth:.1f}", **meta))

    console.print(summary_table(rows))
    if not args.no_save:
        path = args.out or results_path(device)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
        console.print(f"appended {len(rows)} rows to {path}")


def summary_table(rows: list[dict]) -> Table:
    """One row per case and provider: median ms, % of copy bandwidth and speedup over eager, per mode."""
    table = Table(title="median ms (% of copy bandwidth) [speedup over eager]")
    for column in ("case", "provider", *MODES):
        table.add_column(column, justify="left" if column in ("case", "provider") else "right")
    by_key = {(r["op"], r["dtype"], r["shape"], r["layout"], r["provider"], r["mode"]): r for r in rows}
    seen = []
    for r in rows:
        key = (r["op"], r["dtype"], r["shape"], r["layout"], r["provider"])
        if key in seen:
            continue
        seen.append(key)
        cells = []
        for mode in MODES:
            row, eager = by_key[(*key, mode)], by_key[(*key[:-1], "eager", mode)]
            speedup = float(eager["median_ms"]) / float(row["median_ms"])
            cells.append(f"{float(row['median_ms']):.3f} ({row['pct_copy_bw']}%) [{speedup:.2f}x]")
        table.add_row(" ".join(key[:4]), key[4], *cells, end_section=key[4] == "torch.relu")
    return table


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())

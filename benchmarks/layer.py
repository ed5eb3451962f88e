"""The paper's full layer (``LearnableSerieslinearUnit``, issue 15): fused against unfused, timed in turns.

    python benchmarks/layer.py            # the issue's three shapes, float32 NCHW, on the CPU
    python benchmarks/layer.py --smoke    # one small shape (tests)
    python benchmarks/layer.py --device cuda --providers unfused copy --save   # on a GPU (the GPU check's step)

Also run by ``benchmarks/run.py`` after its cases (``--no-layer`` skips it). Two modes:

- ``deploy forward``: ``torch.no_grad`` forward of the deploy form, ``dwconv(lslu(x)) + bias``;
- ``training step``: forward and backward of the training form, ``BN(dwconv(lslu(x)))`` with batch
  statistics, gradients of x and of every parameter.

Providers: ``fused`` (``lk.functional.lslu_dwconv`` / the layer on a backend with the fused kernels),
``unfused`` (``lk.lslu`` on that backend, then PyTorch's depthwise convolution and BN), ``eager``
(the official layer's math in eager PyTorch: ``reference.lslu``, ``F.conv2d``, BN) and
``torch.compile`` of it, and on a GPU in deploy form a copy of x (reading x and writing y, the least the
layer moves: the GPU target's bound). On a GPU the Triton fused kernels are timed (the CUDA C++ backend has none),
x of about 100 MB. Each mode times its providers in turns (``run.measure_in_turns``), so the
ratios hold on a busy machine; the issue's targets (CPU: fused over unfused; GPU: fused over the copy) get
their verdicts, and the training step's bytes saved for backward are given per provider.
"""

import argparse
import importlib.util
import pathlib
import sys

import torch
import torch.nn.functional as F

import lslu_kernels as lk
from lslu_kernels import fused, reference

# (N, C, H, W, S): the issue's shapes; on a GPU the same layers with x of about 100 MB (float32).
SHAPES = [(8, 128, 56, 56, 3), (8, 512, 14, 14, 3), (16, 64, 28, 28, 1)]
GPU_SHAPES = [(64, 128, 56, 56, 3), (256, 512, 14, 14, 3), (128, 64, 56, 56, 1)]
SMOKE_SHAPES = [(2, 8, 9, 9, 1)]
# The issue's CPU targets: fused over unfused, per mode.
TARGETS = {"deploy forward": 1.8, "training step": 1.3}
# The issue's GPU target: the fused deploy forward within this factor of reading x and writing y (a copy).
GPU_COPY_BOUND = 1.2
COPY = "copy (read x, write y)"
ISSUE = 15
# The columns of layer-<device>.csv (beside the sweep's results file; run.py's metadata columns last).
FIELDS = ["shape", "mode", "provider", "median_ms", "q20_ms", "q80_ms", "saved_mb", "x_mb", "params_mb",
          "device", "torch", "triton", "commit", "timestamp"]


def _run_module():
    """benchmarks/run.py (a script beside this file): its timing and memory helpers."""
    if "run" in sys.modules and hasattr(sys.modules["run"], "measure_in_turns"):
        return sys.modules["run"]
    spec = importlib.util.spec_from_file_location("lslu_benchmark_run", pathlib.Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _official(x, theta, omega, weight, bias, bn, backend):
    """The layer's math unfused; ``backend`` None: the eager reference series."""
    S, C = theta.shape[0], x.shape[1]
    r = reference.lslu(x, theta, omega) if backend is None else lk.lslu(x, theta, omega, backend=backend)
    y = F.conv2d(r, weight, bias, padding=S, groups=C)
    return y if bn is None else bn(y)


def providers(backend: str, device_type: str = "cpu"):
    """name -> (deploy forward(x, layer), training forward(x, layer) or None) for a layer of the training form."""
    def unfused_with(b):
        return (lambda x, deployed: _official(x, deployed.theta, deployed.omega, deployed.weight, deployed.bias, None, b),
                lambda x, layer: _official(x, layer.theta, layer.omega, layer.weight, None, layer.bn, b))

    eager = unfused_with(None)
    compiled = tuple(torch.compile(f) for f in eager)
    out = {
        "fused": (lambda x, deployed: deployed(x), lambda x, layer: layer(x)),
        "unfused": unfused_with(backend),
        "eager": eager,
        "torch.compile": compiled,
    }
    if device_type == "cuda":  # the least a deploy forward moves (read x, write y): the GPU target's bound
        out[COPY] = (lambda x, deployed: x.clone(), None)
    return out


def _layers(N, C, H, W, S, backend, device):
    torch.manual_seed(0)
    layer = lk.LearnableSerieslinearUnit(C, S, shared=True, backend=backend, device=device)
    with torch.no_grad():  # a little away from the identity, as the activations' benchmarks
        layer.theta.copy_(1 + 0.1 * torch.randn_like(layer.theta))
        layer.omega.copy_(0.1 * torch.randn_like(layer.omega))
    deployed = lk.LearnableSerieslinearUnit(C, S, shared=True, backend=backend, device=device)
    deployed.load_state_dict(layer.state_dict())
    deployed.eval()
    deployed.switch_to_deploy()
    return layer.train(), deployed


def fused_backend_of(device: torch.device) -> str | None:
    """The backend whose fused kernels are timed: the device's default if it has them (the CPU's), else
    Triton where it serves the device (a GPU: the CUDA C++ backend has no fused kernels); None: none."""
    backend = fused.fused_backend(None, device)
    if backend is None and device.type == "cuda" and "triton" in lk.available_backends():
        backend = fused.fused_backend("triton", device)
    return backend


def run(*, smoke: bool = False, min_time: float = 0.2, console=None, out: pathlib.Path | None = None,
        meta: dict | None = None, device: torch.device | None = None, only: list[str] | None = None) -> list[dict]:
    """Times every provider (``only``: these and ``fused``) at each shape and mode on ``device`` (default: the
    CPU); prints the table and the targets; returns the rows, appended to ``out`` (a CSV of :data:`FIELDS`,
    ``meta`` giving the device, versions and commit) if given."""
    helpers = _run_module()
    device = device or torch.device("cpu")
    backend = fused_backend_of(device)
    say = print if console is None else (lambda s: console.print(s, markup=False, highlight=False))
    if backend is None:
        say(f"full layer (issue {ISSUE}): no backend with the fused kernels on {device.type}; skipped")
        return []
    rows = []
    for N, C, H, W, S in SMOKE_SHAPES if smoke else GPU_SHAPES if device.type == "cuda" else SHAPES:
        torch._dynamo.reset()
        layer, deployed = _layers(N, C, H, W, S, backend, device)
        x = torch.randn(N, C, H, W, device=device)
        grad = torch.randn(N, C, H, W, device=device)
        params = list(layer.parameters())
        shape = f"{N}x{C}x{H}x{W} S={S}"
        for mode in TARGETS:
            steps, saved = {}, {}
            for name, (deploy_fn, train_fn) in providers(backend, device.type).items():
                if only is not None and name not in (*only, "fused"):
                    continue
                if mode == "training step" and train_fn is None:
                    continue
                if mode == "deploy forward":
                    steps[name] = lambda f=deploy_fn: _no_grad(f, x, deployed)
                else:
                    leaf = x.clone().requires_grad_()
                    steps[name] = lambda f=train_fn, leaf=leaf: torch.autograd.grad(f(leaf, layer), [leaf, *params],
                                                                                   grad)
                    saved[name] = helpers.saved_bytes(lambda f=train_fn, leaf=leaf: f(leaf, layer))
            times = helpers.measure_in_turns(steps, device, min_time)
            for name, (median, q20, q80) in times.items():
                rows.append(dict(shape=shape, mode=mode, provider=name, median_ms=median, q20_ms=q20, q80_ms=q80,
                                 saved_mb=saved[name] / 1e6 if name in saved else None,
                                 x_mb=x.numel() * x.element_size() / 1e6,
                                 params_mb=sum(p.numel() * p.element_size() for p in layer.parameters()) / 1e6))
    _print(rows, backend, device, say)
    if out is not None:
        helpers.append_rows(out, [{**{k: _cell(v) for k, v in r.items()}, **meta} for r in rows], FIELDS)
        say(f"appended {len(rows)} rows to {out}")
    return rows


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _no_grad(f, x, layer):
    with torch.no_grad():
        return f(x, layer)


def _print(rows, backend, device, say):
    say(f"full layer (issue {ISSUE}), float32 NCHW, on {device.type}, backend {backend!r}: median ms [20%-80%], "
        "speedup of fused over each")
    for row in rows:
        fused_row = next(r for r in rows if (r["shape"], r["mode"], r["provider"]) == (row["shape"], row["mode"], "fused"))
        saved = "" if row["saved_mb"] is None else f"  saved {row['saved_mb']:.1f} MB (x: {row['x_mb']:.1f} MB)"
        say(f"  {row['shape']:<22} {row['mode']:<15} {row['provider']:<22} {row['median_ms']:9.3f} "
            f"[{row['q20_ms']:.3f}-{row['q80_ms']:.3f}]  fused {row['median_ms'] / fused_row['median_ms']:5.2f}x"
            + saved)
    for line in target_lines(rows, device.type):
        say(line)


def target_lines(rows, device_type: str = "cpu") -> list[str]:
    """The issue's targets of the device (CPU: fused over unfused; GPU: fused over a copy) with this run's
    values and verdicts, and the bytes saved for backward."""
    by_key = {(r["shape"], r["mode"], r["provider"]): r for r in rows}
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        f, c = by_key.get((shape, "deploy forward", "fused")), by_key.get((shape, "deploy forward", COPY))
        if device_type == "cuda" and f is not None and c is not None:
            ratio = f["median_ms"] / c["median_ms"]
            lines.append(f"- issue {ISSUE}: fused deploy forward at {shape} <= {GPU_COPY_BOUND}x a copy of x: "
                         f"{ratio:.2f}x — {'met' if ratio <= GPU_COPY_BOUND else 'MISSED'}")
        for mode, bound in TARGETS.items():
            if device_type == "cuda":
                break
            f, u = by_key.get((shape, mode, "fused")), by_key.get((shape, mode, "unfused"))
            if f is None or u is None:
                continue
            ratio = u["median_ms"] / f["median_ms"]
            lines.append(f"- issue {ISSUE}: fused {mode} at {shape} >= {bound}x unfused: {ratio:.2f}x — "
                         f"{'met' if ratio >= bound else 'MISSED'}")
        f = by_key.get((shape, "training step", "fused"))
        if f is not None and f["saved_mb"] is not None:
            # x, the parameters and a few per-channel values (BN's batch statistics)
            only_x = f["saved_mb"] <= f["x_mb"] + f["params_mb"] + 0.01
            lines.append(f"- issue {ISSUE}: training step at {shape} saves only x for backward: "
                         f"{f['saved_mb']:.2f} MB (x {f['x_mb']:.2f} MB, parameters {f['params_mb']:.2f} MB) — "
                         f"{'met' if only_x else 'MISSED'}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="one small shape")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per provider and mode")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="CSV to append the rows to")
    parser.add_argument("--save", action="store_true",
                        help="append to the committed benchmarks/results/layer-<device>.csv (unless --out)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: the Triton fused kernels on the GPU, x of about 100 MB, against a copy of x")
    parser.add_argument("--providers", nargs="+", default=None, choices=("unfused", "eager", "torch.compile", "copy"),
                        help="only these providers (and fused); copy: on a GPU")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    helpers = _run_module()
    out = args.out
    if out is None and args.save:
        out = helpers.results_path(device).with_name("layer-" + helpers.results_path(device).name)
    meta = None if out is None else helpers.run_metadata(device)
    only = None if args.providers is None else [COPY if p == "copy" else p for p in args.providers]
    run(smoke=args.smoke, min_time=args.min_time, out=out, meta=meta, device=device, only=only)


if __name__ == "__main__":
    main()

"""Per-call overhead: the host time of one call on a 64-element tensor, where nothing but dispatch is timed.

    python benchmarks/overhead.py          # this table alone (benchmarks/run.py prints it after its sweep)

Issue 13's targets, for every op and every kernel backend that may be the device's default (not the
Triton interpreter, which serves CPU tensors for tests only): forward at most 2x ``F.prelu``'s, forward
+ backward at most 1.5x ``F.prelu``'s forward + backward. The inputs are as in training: ``x`` and the
parameters require grad (the parameters are ``nn.Parameter``s); forward is also timed under
``torch.no_grad()`` (inference), against ``F.prelu`` under ``torch.no_grad()``.

Beside the project's ops and ``F.prelu``, the floors of the registration mechanisms, each only
cloning its input (and, in backward, the gradient and the weight): a ``torch.library.custom_op``
with registered autograd and a backward custom op (how ``lslu_kernels::<op>`` is registered), a bare
``torch.autograd.Function``, and an op registered in C++ with its autograd in C++ (``TORCH_LIBRARY``
against torch's C++ ABI), built with ``torch.utils.cpp_extension.load_inline`` into a temporary
directory on first use (a minute or two; skipped, with the reason, where it cannot be built).

Timing: every subject and mode in turns, a few calls of each per round, so that the machine's load
weighs on all alike; each call timed on its own (on a GPU its host time: the launches are not waited
for), the median over all calls and its ratio to ``F.prelu``.
"""

import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lslu_kernels import _backends, registry

SHAPE = (2, 8, 4)  # 64 elements, C = 8 on axis 1
MODES = ("forward", "forward no_grad", "forward+backward")
# Ratio to F.prelu in the same mode that issue 13 sets for the project's ops.
TARGETS = {"forward": 2.0, "forward no_grad": 2.0, "forward+backward": 1.5}
BASELINE = "F.prelu"
CALLS_PER_BATCH = 20


@dataclasses.dataclass(frozen=True)
class Subject:
    name: str
    kind: str  # "op": judged by the targets; "baseline"; "floor": a mechanism at its cheapest
    forward: Callable[[], torch.Tensor]
    inputs: tuple[torch.Tensor, ...]  # what forward+backward differentiates


# ---- the floors of the registration mechanisms ----

@torch.library.custom_op("lslu_overhead_floor_py::clone", mutates_args=())
def _custom_op_clone(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.clone()


@torch.library.custom_op("lslu_overhead_floor_py::clone_backward", mutates_args=())
def _custom_op_clone_backward(grad: torch.Tensor, x: torch.Tensor,
                              weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return grad.clone(), weight.clone()


_custom_op_clone.register_fake(lambda x, weight: torch.empty_like(x))
_custom_op_clone_backward.register_fake(lambda grad, x, weight: (torch.empty_like(grad), torch.empty_like(weight)))


def _custom_op_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _custom_op_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    return _custom_op_clone_backward(grad, x, weight)


_custom_op_clone.register_autograd(_custom_op_backward, setup_context=_custom_op_setup_context)


class _FunctionClone(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad.clone(), weight.clone()


_CPP_FLOOR_SOURCE = r"""
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace {
at::Tensor clone_kernel(const at::Tensor& x, const at::Tensor& weight) { return x.clone(); }

std::tuple<at::Tensor, at::Tensor> clone_backward_kernel(const at::Tensor& grad, const at::Tensor& x,
                                                         const at::Tensor& weight) {
  return {grad.clone(), weight.clone()};
}

class CloneFunction : public torch::autograd::Function<CloneFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight) {
    ctx->save_for_backward({x, weight});
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lslu_overhead_floor_cpp::clone", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
    return op.call(x, weight);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lslu_overhead_floor_cpp::clone_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&)>();
    auto [grad_x, grad_weight] = op.call(grads[0], saved[0], saved[1]);
    return {grad_x, grad_weight};
  }
};

at::Tensor clone_autograd(const at::Tensor& x, const at::Tensor& weight) { return CloneFunction::apply(x, weight); }
}  // namespace

TORCH_LIBRARY(lslu_overhead_floor_cpp, m) {
  m.def("clone(Tensor x, Tensor weight) -> Tensor");
  m.def("clone_backward(Tensor grad, Tensor x, Tensor weight) -> (Tensor, Tensor)");
}
TORCH_LIBRARY_IMPL(lslu_overhead_floor_cpp, CompositeExplicitAutograd, m) {
  m.impl("clone", clone_kernel);
  m.impl("clone_backward", clone_backward_kernel);
}
TORCH_LIBRARY_IMPL(lslu_overhead_floor_cpp, Autograd, m) { m.impl("clone", clone_autograd); }
"""


def cpp_floor_op() -> tuple[Callable | None, str]:
    """``torch.ops.lslu_overhead_floor_cpp.clone.default``, built once per torch version into a temporary
    directory; (None, why) where it cannot be built."""
    if hasattr(torch.ops.lslu_overhead_floor_cpp, "clone"):
        return torch.ops.lslu_overhead_floor_cpp.clone.default, ""
    from torch.utils import cpp_extension

    directory = os.path.join(tempfile.gettempdir(), f"lslu_kernels_overhead_floor_torch{torch.__version__}")
    os.makedirs(directory, exist_ok=True)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            cpp_extension.load_inline("lslu_overhead_floor_cpp", cpp_sources=[_CPP_FLOOR_SOURCE],
                                      is_python_module=False, build_directory=directory, extra_cflags=["-O2"])
    except Exception as exc:  # no compiler, no torch headers, a failed build: the row is left out, saying why
        return None, f"C++ op floor not built ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
    return torch.ops.lslu_overhead_floor_cpp.clone.default, ""


# ---- what is timed ----

def kernel_backends(device: torch.device, op: str) -> list[str]:
    """The backends that may be the device's default and have kernels for ``op`` (not the Triton interpreter)."""
    return [name for name, b in _backends.backends().items()
            if name != "reference" and b.serves_device(device.type) and device.type in b.default_for
            and _backends.device_problem(name, device) is None and _backends.has_kernels(name, op)]


def subjects(device: torch.device, cpp_floor: bool = True) -> tuple[list[Subject], list[str]]:
    """Every subject timed on ``device``, and notes on what was left out."""
    x = torch.randn(SHAPE, device=device, requires_grad=True)
    channels = SHAPE[1]
    weight = torch.nn.Parameter(torch.full((channels,), 0.25, device=device))
    out = [Subject(BASELINE, "baseline", lambda: F.prelu(x, weight), (x, weight))]
    notes = []
    for activation in registry.activations():
        if not activation.benchmarks:
            continue
        variant, make = activation.benchmarks[0]
        params = tuple(torch.nn.Parameter(p) for p in make(channels, device))
        fn = registry.function(activation.name)
        label = activation.benchmark_label(variant)
        for backend in kernel_backends(device, activation.name):
            out.append(Subject(f"{label} [{backend}]", "op",
                               lambda fn=fn, params=params, backend=backend: fn(x, *params, backend=backend),
                               (x, *params)))
    out.append(Subject("floor: custom_op", "floor", lambda: _custom_op_clone(x, weight), (x, weight)))
    out.append(Subject("floor: autograd.Function", "floor", lambda: _FunctionClone.apply(x, weight), (x, weight)))
    if cpp_floor:
        op, why = cpp_floor_op()
        if op is None:
            notes.append(why)
        else:
            out.append(Subject("floor: C++ op (TORCH_LIBRARY)", "floor", lambda: op(x, weight), (x, weight)))
    else:
        notes.append("C++ op floor skipped (--no-cpp-floor)")
    return out, notes


def _call(subject: Subject, mode: str, device: torch.device) -> Callable[[], None]:
    """One call of ``mode``."""
    forward = subject.forward
    if mode in ("forward", "forward no_grad"):  # measure() enters no_grad around the timed calls
        return forward
    inputs = subject.inputs
    grad_output = torch.randn(SHAPE, device=device)
    return lambda: torch.autograd.grad(forward(), inputs, grad_output)


def measure(device: torch.device, min_time: float = 0.5, cpp_floor: bool = True) -> tuple[dict, list[str]]:
    """{(subject name, mode): median µs per call} with the subjects' kinds under (name, "kind"), and notes.

    Each call is timed on its own and the median taken over every call: on a busy machine a batch of
    slow calls (forward+backward) is preempted far more often than one of fast calls, one call rarely.
    """
    found, notes = subjects(device, cpp_floor)
    calls = {(s.name, mode): _call(s, mode, device) for s in found for mode in MODES}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for (_, mode), call in calls.items():  # warm-up: the first calls fill caches
        with torch.no_grad() if mode == "forward no_grad" else contextlib.nullcontext():
            for _ in range(3):
                call()
    sync()
    times = {key: [] for key in calls}
    clock = time.perf_counter
    start, rounds = clock(), 0
    while rounds < 15 or (clock() - start < min_time * len(found) and rounds < 400):
        for key, call in calls.items():
            samples = times[key]
            with torch.no_grad() if key[1] == "forward no_grad" else contextlib.nullcontext():
                for _ in range(CALLS_PER_BATCH):
                    t0 = clock()
                    call()
                    samples.append(1e6 * (clock() - t0))
            sync()  # outside the timed calls: on a GPU, host time per call is what is measured
        rounds += 1
    results = {key: statistics.median(t) for key, t in times.items()}
    results.update({(s.name, "kind"): s.kind for s in found})
    return results, notes + [f"{rounds} rounds of {CALLS_PER_BATCH} calls per subject and mode, in turns; "
                             "each call timed on its own, the median of all"]


def names(results: dict) -> list[str]:
    return list(dict.fromkeys(name for name, _ in results))


def verdicts(results: dict) -> list[tuple[str, str, float, float, bool]]:
    """(op subject, mode, ratio to F.prelu, target, met) for every op subject and mode."""
    out = []
    for name in names(results):
        if results[name, "kind"] != "op":
            continue
        for mode in MODES:
            ratio = results[name, mode] / results[BASELINE, mode]
            out.append((name, mode, ratio, TARGETS[mode], ratio <= TARGETS[mode]))
    return out


def table(results: dict):
    """A rich table: µs per call and the ratio to F.prelu, per subject and mode."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"Per-call overhead, {SHAPE[0] * SHAPE[1] * SHAPE[2]}-element tensor {SHAPE}: median µs per "
                    r"call \[ratio to F.prelu]; targets: forward ≤ 2x, forward+backward ≤ 1.5x",
              title_justify="left")
    for column in ("subject", *MODES):
        t.add_column(column, justify="left" if column == "subject" else "right")
    for name in names(results):
        kind = results[name, "kind"]
        cells = []
        for mode in MODES:
            ratio = results[name, mode] / results[BASELINE, mode]
            mark = "" if kind != "op" else (" ok" if ratio <= TARGETS[mode] else " MISSED")
            cells.append(f"{results[name, mode]:.1f} [{ratio:.2f}x]{mark}")
        t.add_row(escape(name), *cells, end_section=kind == "baseline")
    return t


def target_lines(results: dict) -> list[str]:
    """One line per mode: met or missed, with the worst op."""
    lines = []
    by_mode = {mode: [v for v in verdicts(results) if v[1] == mode] for mode in MODES}
    for mode, rows in by_mode.items():
        if not rows:
            continue
        worst = max(rows, key=lambda v: v[2])
        missed = [v for v in rows if not v[4]]
        verdict = "met" if not missed else f"MISSED by {len(missed)} of {len(rows)}"
        lines.append(f"overhead {mode} <= {TARGETS[mode]}x F.prelu (every op and kernel backend): {verdict}; "
                     f"worst {worst[0]} {worst[2]:.2f}x")
    return lines


# The columns of overhead-<device>.csv (beside the sweep's results file; run.py's metadata columns last).
FIELDS = ["subject", "kind", "mode", "median_us", "ratio_to_prelu", "target", "device", "torch", "triton", "commit",
          "timestamp"]


def rows(results: dict, meta: dict) -> list[dict]:
    """The results as CSV rows of :data:`FIELDS` (``target`` only on the ops' rows)."""
    return [dict(subject=name, kind=results[name, "kind"], mode=mode, median_us=f"{results[name, mode]:.2f}",
                 ratio_to_prelu=f"{results[name, mode] / results[BASELINE, mode]:.3f}",
                 target=TARGETS[mode] if results[name, "kind"] == "op" else "", **meta)
            for name in names(results) for mode in MODES]


def report(device: torch.device, console, min_time: float = 0.5, cpp_floor: bool = True) -> dict:
    """Measures, prints the table, the notes and the verdicts on ``console`` (rich); returns the results
    (:func:`rows` makes them the CSV rows that ``benchmarks/run.py`` saves)."""
    results, notes = measure(device, min_time, cpp_floor)
    console.print(table(results))
    for note in notes:
        console.print(f"  {note}", markup=False, highlight=False)
    for line in target_lines(results):
        console.print(line, markup=False, highlight=False)
    return results


def main(argv=None):
    import argparse

    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per subject (all modes), at least")
    parser.add_argument("--no-cpp-floor", action="store_true", help="do not build or time the C++ op floor")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads")
    report(device, console, args.min_time, not args.no_cpp_floor)


if __name__ == "__main__":
    sys.exit(main())

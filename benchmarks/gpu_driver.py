"""The programs that ``benchmarks/gpu_check.py`` runs, each in a process of its own.

    python benchmarks/gpu_driver.py info --json PATH       # versions, device, tools: what the check runs on
    python benchmarks/gpu_driver.py backends --expect cuda triton
    python benchmarks/gpu_driver.py families --backends cuda triton    # every kernel family once, tiny tensors
    python benchmarks/gpu_driver.py graph --backend cuda   # CUDA-graph capture as the process's first use
    python benchmarks/gpu_driver.py stream --backends cuda triton
    python benchmarks/gpu_driver.py devices --backends cuda triton
    python benchmarks/gpu_driver.py determinism --backends cuda triton
    python benchmarks/gpu_driver.py compiled --backends cuda triton --mode reduce-overhead

Each prints one line per case and exits 0 when every case passed, 1 when one
failed, and 77 (printing ``SKIP: reason`` last) when the machine cannot run it.
Parity is checked with the tests' own helpers (``tests/parity.py``, SPEC.md
section 3 tolerances) and parameters come from ``tests/ops.py``.

``families`` is what compute-sanitizer runs: every op (LSLU S=1 and S=3, PVLU,
PWLU N=16 and N=64), forward and backward, in the channel (inner > 1) and rows
(inner == 1) layouts, packed (sizes a multiple of the 16-byte pack, aligned) and
scalar (the same sizes one element into a storage: packable but misaligned),
every dtype, int32 and forced int64 indexing, on each backend named.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP = 77  # the exit status of a check this machine cannot run (as automake's test drivers use it)


def _skip(reason: str):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def _run_text(command: list[str]) -> str:
    """First line of a tool's output, or why it could not be run."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[-1] if text else f"exit status {out.returncode}"


def info(args):
    """Facts the orchestrator plans the run by; printed and written as JSON. Imports no lslu_kernels:
    on the GPU machine this runs before the build."""
    import importlib.util

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    facts = dict(python=platform.python_version(), torch=torch.__version__, triton=triton_version,
                 torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                 device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                 devices=[], cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                 commit=_git(["rev-parse", "HEAD"]), dirty=_git(["status", "--porcelain", "--untracked-files=no"]),
                 nvcc=shutil.which("nvcc"), compute_sanitizer=_compute_sanitizer(),
                 nvidia_smi=_run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                       "--format=csv,noheader"]) if shutil.which("nvidia-smi") else None,
                 pytest_xdist=importlib.util.find_spec("xdist") is not None,
                 pytest_timeout=importlib.util.find_spec("pytest_timeout") is not None)
    if facts["commit"] is None:  # a copy of the tree without git (the device machine's): as told, if told
        facts["commit"] = os.environ.get("LSLU_KERNELS_COMMIT", "unknown") + " (from $LSLU_KERNELS_COMMIT)"
    facts["dirty"] = bool(facts["dirty"])
    if facts["nvcc"]:
        facts["nvcc_version"] = _run_text(["nvcc", "--version"])
    if facts["compute_sanitizer"]:
        facts["compute_sanitizer_version"] = _run_text([facts["compute_sanitizer"], "--version"])
    for index in range(facts["device_count"]):
        props = torch.cuda.get_device_properties(index)
        facts["devices"].append(dict(name=props.name, capability=f"{props.major}.{props.minor}",
                                     multiprocessors=props.multi_processor_count,
                                     memory_gib=round(props.total_memory / 2**30, 1)))
    if facts["device_count"]:
        facts["cuda_driver"] = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    print(json.dumps(facts, indent=2), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(facts, indent=2) + "\n")
    names = ", ".join(d["name"] for d in facts["devices"]) or "no CUDA device"
    print(f"info: {names}; torch {facts['torch']} (CUDA {facts['torch_cuda']}), triton {facts['triton']}, "
          f"commit {facts['commit'][:12]}")


def _compute_sanitizer() -> str | None:
    """On PATH, else where CUDA toolkits put it (beside nvcc, or under CUDA_HOME)."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    if shutil.which("nvcc"):
        homes.append(str(pathlib.Path(shutil.which("nvcc")).resolve().parent.parent))
    for home in filter(None, homes):
        for candidate in (pathlib.Path(home) / "bin" / "compute-sanitizer",
                          pathlib.Path(home) / "compute-sanitizer" / "compute-sanitizer"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def _git(argv: list[str]) -> str | None:
    try:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# Everything below imports the project (installed by then) and the tests' helpers.
def _project():
    """(lslu_kernels, tests/ops.py, tests/parity.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import ops
    import parity

    import lslu_kernels
    return lslu_kernels, ops, parity


def backends(args):
    lk, _, _ = _project()
    from lslu_kernels import _backends

    available = lk.available_backends()
    if hasattr(lk, "unavailable_backends"):  # says why per GPU, where the project has it
        unavailable = lk.unavailable_backends()
    else:
        unavailable = {name: b.missing for name, b in _backends.backends().items() if not b.available}
    print(f"available backends: {available}")
    for name, why in unavailable.items():
        print(f"  {name} unavailable: {why}")
    missing = [b for b in args.expect if b not in available]
    if missing:
        print(f"FAIL: expected {args.expect}, missing {missing}")
        sys.exit(1)
    print(f"ok: {args.expect} available")


# The parameter sets that select different kernel code (tests/ops.py names): LSLU's stage count sets
# the rows kernels' pack width (S=1 and S=3), PWLU's table size its shared memory (N=16 and N=64).
VARIANTS = [("lslu", "S1"), ("lslu", "S3"), ("pvlu", "random"), ("pwlu", "N16"), ("pwlu", "N64_realigned")]
DTYPE_NAMES = ("float32", "float64", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    shape: tuple[int, ...]
    channel_dim: int


def layouts(size: str) -> list[Layout]:
    """The channel kernels (inner > 1) and the rows kernels (inner == 1).

    Tiny: inner = 32 and C = 64 are multiples of every pack (2 fp64, 4 fp32, 8 16-bit elements).
    Large (determinism): many blocks per launch, several programs per channel.
    """
    if size == "tiny":
        return [Layout("channel", (2, 3, 32), 1), Layout("rows", (5, 64), -1)]
    if size == "small":  # the dry run on a CPU
        return [Layout("channel", (4, 16, 24, 24), 1), Layout("rows", (8, 128, 64), -1)]
    return [Layout("channel", (32, 64, 64, 64), 1), Layout("rows", (16, 512, 1024), -1)]


@dataclasses.dataclass
class Case:
    label: str
    op: object  # tests/ops.py OpCase
    x: torch.Tensor
    params: list[torch.Tensor]
    grad_output: torch.Tensor
    channel_dim: int

    def forward_backward(self, backend: str) -> list[torch.Tensor]:
        """[y, grad_input, *param grads] of fresh leaves (tests/parity.py)."""
        import parity
        y, grads = parity.forward_backward(self.op.fn, self.x, self.params, self.grad_output,
                                           channel_dim=self.channel_dim, backend=backend)
        return [y, *grads]


def make_cases(ops, device: torch.device, size: str, dtypes) -> list[Case]:
    """Every op and variant (VARIANTS) in every layout of ``size`` and dtype, made on ``device``."""
    by_name = {op.name: op for op in ops.OPS}
    out = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        # Half-type activations come with float32 parameters (mixed precision), as in the tests.
        param_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        for name, variant in VARIANTS:
            op = by_name[name]
            for layout in layouts(size):
                params = op.make_params(layout.shape[layout.channel_dim], variant, dtype=param_dtype, device=device)
                x = op.make_x(layout.shape, params, layout.channel_dim).to(device, dtype)
                grad_output = torch.randn(layout.shape, device=device, dtype=dtype)
                out.append(Case(f"{name} {variant} {layout.name} {dtype_name}", op, x, params, grad_output,
                                layout.channel_dim))
    return out


def device_of(backend: str, index: int = 0) -> torch.device:
    """The device whose tensors ``backend`` computes on here (as tests/conftest.py's backend_device)."""
    from lslu_kernels import _backends
    serves = _backends.backends()[backend].serves
    return torch.device("cuda", index) if serves and "cuda" in serves else torch.device("cpu")


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in a dense tensor of its shape that starts one element into its storage:
    packable sizes at an address no 16-byte access may use (the kernels' scalar fallback)."""
    storage = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = storage[1:].view(t.shape)
    view.copy_(t)
    return view


@contextlib.contextmanager
def forced_int64(enabled: bool):
    """Every backend's int64 indexing on small tensors: triton's INT64_THRESHOLD = 0 and the C++
    backends' FORCE_INT64 switch. Yields whether the C++ switch exists in this build."""
    from lslu_kernels.triton_kernels import common

    from lslu_kernels import cpp_kernels
    has_cpp_switch = hasattr(cpp_kernels, "FORCE_INT64")
    saved = common.INT64_THRESHOLD, getattr(cpp_kernels, "FORCE_INT64", None)
    if enabled:
        common.INT64_THRESHOLD = 0
        if has_cpp_switch:
            cpp_kernels.FORCE_INT64 = True
    try:
        yield has_cpp_switch
    finally:
        common.INT64_THRESHOLD = saved[0]
        if has_cpp_switch:
            cpp_kernels.FORCE_INT64 = saved[1]


class Tally:
    """Counts cases; a failed case is printed with its message and the run goes on."""

    def __init__(self):
        self.passed, self.failed = 0, []

    @contextlib.contextmanager
    def case(self, label: str):
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:  # an assertion or a launch error: reported, then the next case
            self.failed.append(label)
            print(f"FAIL {label}: {exc.__class__.__name__}: {exc}", flush=True)
        else:
            self.passed += 1
            print(f"ok   {label} ({time.perf_counter() - start:.2f} s)", flush=True)

    def finish(self, what: str):
        print(f"{what}: {self.passed} passed, {len(self.failed)} failed", flush=True)
        if self.failed:
            print("failed: " + "; ".join(self.failed))
            sys.exit(1)


def check_path(parity, case: Case, backend: str, path: str):
    """Forward and backward of ``case`` against the float64 reference (SPEC.md section 3 tolerances),
    with x and grad_output aligned ("packed") or one element into their storage ("scalar").

    Like ``parity.check_parity``, but x and grad_output enter as they are: that helper clones its
    inputs, and a clone starts at a fresh, aligned address (the scalar path would not be reached).
    """
    op, x, params, g = case.op, case.x, case.params, case.grad_output
    x_in, g_in = (x, g) if path == "packed" else (misaligned(x), misaligned(g))
    leaves = [x_in.detach().requires_grad_(), *(p.detach().clone().requires_grad_() for p in params)]
    if (leaves[0].data_ptr() % 16 == 0) != (path == "packed"):
        raise AssertionError(f"x at {leaves[0].data_ptr():#x} for the {path} path")
    y = op.fn(*leaves, channel_dim=case.channel_dim, backend=backend)
    y.backward(g_in)
    y_ref, grads_ref = parity.reference_float64(op.fn, x, params, g, case.channel_dim)
    parity.assert_elementwise(y, y_ref, x.dtype, "output")
    terms = None if op.grad_input_scale is None else op.grad_input_scale(x, params, g, case.channel_dim)
    parity.assert_elementwise(leaves[0].grad, grads_ref[0], x.dtype, "grad_input", terms=terms)
    for name, p, leaf, g_ref in zip(op.fn.param_names, params, leaves[1:], grads_ref[1:]):
        parity.assert_reduction(leaf.grad, g_ref, x.dtype, p.dtype, f"grad_{name}")


def families(args):
    _, ops, parity = _project()
    tally = Tally()
    for backend in args.backends:
        device = device_of(backend)
        for index in args.index:
            with forced_int64(index == "int64") as has_cpp_switch:
                if index == "int64" and backend in ("cuda", "cpu") and not has_cpp_switch:
                    print(f"NOTE {backend} int64: lslu_kernels.cpp_kernels.FORCE_INT64 is missing in this build; "
                          "these cases ran with the kernels' own index choice (int32 at these sizes)")
                for case in make_cases(ops, device, "tiny", args.dtypes):
                    for path in args.paths:
                        with tally.case(f"{backend} {index} {case.label} {path}"):
                            check_path(parity, case, backend, path)
                            if device.type == "cuda":
                                torch.cuda.synchronize(device)  # a launch error surfaces in this case
    tally.finish("families")


def differences(case: Case, a: list[torch.Tensor], b: list[torch.Tensor]) -> list[str]:
    """The results (output, grad_input, grad_<param>) that are not bitwise equal, with their largest difference."""
    names = ["output", "grad_input"] + [f"grad_{name}" for name in case.op.fn.param_names]
    return [f"{name} (max |diff| {(u.double() - v.double()).abs().max().item():.3g})"
            for name, u, v in zip(names, a, b) if not same_bits(u, v)]


def same_bits(u: torch.Tensor, v: torch.Tensor) -> bool:
    if u.shape != v.shape or u.dtype != v.dtype or u.device != v.device:
        return False
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[u.element_size()]
    return torch.equal(u.contiguous().view(as_int), v.contiguous().view(as_int))


def _capture(static: list[tuple[Case, list[torch.Tensor]]], backend: str):
    """One CUDA graph of forward and backward of every case; (graph, [[y, *grads] per case])."""
    cuda_graph = torch.cuda.CUDAGraph()
    outputs = []
    with torch.cuda.graph(cuda_graph):
        for case, leaves in static:
            y = case.op.fn(*leaves, channel_dim=case.channel_dim, backend=backend)
            outputs.append([y, *torch.autograd.grad(y, leaves, case.grad_output)])
    return cuda_graph, outputs


def graph(args):
    """Capture forward and backward of every op in one CUDA graph before any of the project's kernels
    ran in this process (Triton compiles and CUDA modules load inside the capture), replay it on new
    inputs and compare with eager calls on those inputs: bitwise."""
    _, ops, _ = _project()
    if not torch.cuda.is_available():
        _skip("no CUDA device")
    device = device_of(args.backend)
    cases = make_cases(ops, device, "tiny", ("float32", "bfloat16"))
    static = [(case, [t.detach().clone().requires_grad_() for t in (case.x, *case.params)]) for case in cases]
    # torch's own lazy state (autograd engine, allocator) is warmed up on a side stream as the
    # documentation asks, with plain torch ops: none of the project's kernels runs before the capture.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        a = torch.randn(64, device=device, requires_grad=True)
        torch.autograd.grad((a * a).sum(), a)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    tally = Tally()
    captured = None
    with tally.case(f"{args.backend}: capture of {len(static)} forward+backward calls as the kernels' first use"):
        captured = _capture(static, args.backend)
    if captured is None:  # that failure is the finding; still check that replays are right after a warm-up
        print("capturing again after one eager call of each case, to check the replays all the same", flush=True)
        for case in cases:
            case.forward_backward(args.backend)
        torch.cuda.synchronize()
        captured = _capture(static, args.backend)
    cuda_graph, outputs = captured
    for replay in range(2):  # new values each time: the graph reads its inputs, it did not bake them in
        for (case, leaves), new in zip(static, make_cases(ops, device, "tiny", ("float32", "bfloat16"))):
            with torch.no_grad():
                for leaf, value in zip(leaves, (new.x, *new.params)):
                    leaf.copy_(value)
                case.grad_output.copy_(new.grad_output)
        cuda_graph.replay()
        torch.cuda.synchronize()
        for (case, leaves), got in zip(static, outputs):
            with tally.case(f"replay {replay} {args.backend} {case.label}"):
                eager = Case(case.label, case.op, leaves[0].detach(), [p.detach() for p in leaves[1:]],
                             case.grad_output, case.channel_dim).forward_backward(args.backend)
                different = differences(case, got, eager)
                assert not different, f"graph replay differs from eager: {', '.join(different)}"
    tally.finish(f"graph ({args.backend})")


def stream(args):
    """Calls under a side stream run on it (they finish while the default stream is still busy) and
    give the default stream's results, bitwise."""
    _, ops, _ = _project()
    if not torch.cuda.is_available():
        _skip("no CUDA device")
    if not hasattr(torch.cuda, "_sleep"):
        _skip("this torch has no torch.cuda._sleep to keep the default stream busy")
    tally = Tally()
    for backend in args.backends:
        cases = make_cases(ops, device_of(backend), "tiny", ("float32", "bfloat16"))
        expected = [case.forward_backward(backend) for case in cases]  # also compiles what Triton needs
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        torch.cuda._sleep(1_000_000_000)  # 1e9 clock cycles on the default stream: 0.5 s at 2 GHz
        default_done = torch.cuda.Event()
        default_done.record()
        with torch.cuda.stream(side):
            got = [case.forward_backward(backend) for case in cases]
            side_done = torch.cuda.Event()
            side_done.record(side)
        side_done.synchronize()
        overlapped = not default_done.query()
        torch.cuda.synchronize()
        with tally.case(f"{backend}: the side-stream calls did not wait for the default stream"):
            assert overlapped, "they finished only after the default stream's sleep: some launch went to " \
                               "another stream than the current one"
        for case, a, b in zip(cases, got, expected):
            with tally.case(f"{backend} side stream {case.label}"):
                different = differences(case, a, b)
                assert not different, f"differs from the default stream: {', '.join(different)}"
    tally.finish("stream")


def devices(args):
    """Every op on the second GPU while the first is current: right (SPEC.md tolerances), and bitwise
    the first GPU's results when both are the same model."""
    _, ops, parity = _project()
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        _skip(f"{count} CUDA device(s): a second device is needed")
    same_model = torch.cuda.get_device_name(0) == torch.cuda.get_device_name(1)
    torch.cuda.set_device(0)
    tally = Tally()
    for backend in args.backends:
        for case in make_cases(ops, torch.device("cuda", 0), "tiny", ("float32", "bfloat16")):
            with tally.case(f"{backend} cuda:1 {case.label}"):
                on1 = Case(case.label, case.op, case.x.to("cuda:1"), [p.to("cuda:1") for p in case.params],
                           case.grad_output.to("cuda:1"), case.channel_dim)
                check_path(parity, on1, backend, "packed")
                got = on1.forward_backward(backend)
                assert all(t.device == torch.device("cuda", 1) for t in got), "a result is not on cuda:1"
                if same_model:
                    different = differences(case, [t.to("cuda:0") for t in got], case.forward_backward(backend))
                    assert not different, f"cuda:1 differs from cuda:0: {', '.join(different)}"
    tally.finish("devices")


def determinism(args):
    """Forward and backward twice on the same inputs, at a size with many blocks: the same bits."""
    _, ops, _ = _project()
    tally = Tally()
    for backend in args.backends:
        for case in make_cases(ops, device_of(backend), args.size, args.dtypes):
            with tally.case(f"{backend} {case.label} {tuple(case.x.shape)}"):
                different = differences(case, case.forward_backward(backend), case.forward_backward(backend))
                assert not different, f"two runs differ: {', '.join(different)}"
    tally.finish("determinism")


COMPILED_MODELS = ("chain-float32", "chain-bfloat16", "layer-float64")


def _activation_chain(backend: str, channels: int, device, dtype) -> torch.nn.Module:
    """Every op as a module, one after the other (PWLU realigned: phase II computes the op)."""
    import lslu_kernels as lk
    pwlu = lk.PWLU(channels, backend=backend, device=device, dtype=dtype)
    pwlu.realign()
    chain = torch.nn.Sequential(lk.LSLU(channels, backend=backend, device=device, dtype=dtype),
                                lk.PVLU(channels, alpha=0.3, backend=backend, device=device, dtype=dtype), pwlu,
                                lk.LSLU(None, backend=backend, device=device, dtype=dtype))
    with torch.no_grad():  # away from the identity, so that every parameter matters
        for parameter in chain.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return chain


def _step(model: torch.nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> list[torch.Tensor]:
    """[y, grad_input, *parameter grads] of one forward and backward, copied out (CUDA-graph outputs are
    overwritten by the next replay)."""
    for parameter in model.parameters():
        parameter.grad = None
    leaf = x.detach().requires_grad_()
    y = model(leaf)
    y.backward(grad_output)
    return [y.detach().clone(), leaf.grad.clone(), *(p.grad.clone() for p in model.parameters())]


def compiled(args):
    """``torch.compile(mode=...)`` over models using every op, forward and backward, three steps on new inputs
    each (with ``reduce-overhead`` the later ones replay CUDA graphs): a chain of the four activation modules
    (float32, bfloat16), whose output and input gradient must equal eager's bitwise (the same kernels) and
    whose parameter gradients (Inductor may sum a backward's partial sums itself) SPEC.md's reduction tolerance
    of eager's; and the full layer (``LearnableSerieslinearUnit``, float64) within float64 rounding of eager.
    For the triton backend where it uses its triton ops, the generated code must launch every kernel itself
    and call no lslu_kernels op; with ``reduce-overhead``, Inductor must have skipped no CUDA graph."""
    from torch._dynamo.utils import counters

    import lslu_kernels as lk
    from lslu_kernels import _triton_ops
    _, _, parity = _project()
    tally = Tally()
    for backend in args.backends:
        device = device_of(backend)
        # float32 parameters for both input types (bfloat16 activations train with float32 parameters).
        models = [(f"chain {dtype}", _activation_chain(backend, 16, device, torch.float32), (4, 16, 9, 7),
                   getattr(torch, dtype)) for dtype in ("float32", "bfloat16")]
        # In eval mode: BN's running statistics are not updated, so that no buffer mutation (Inductor's business,
        # not the ops') can keep the graph out of CUDA graphs; the series and the convolution still train.
        layer = lk.LearnableSerieslinearUnit(16, shared=False, backend=backend, device=device,
                                             dtype=torch.float64).eval()
        models.append(("layer float64", layer, (4, 16, 9, 7), torch.float64))
        for label, model, shape, dtype in models:
            if label.replace(" ", "-") not in args.models:
                continue
            with tally.case(f"{backend} {args.mode} {label}"):
                torch._dynamo.reset()
                counters.clear()
                run = torch.compile(model, backend=args.compiler, fullgraph=True,
                                    mode=None if args.mode == "default" or args.compiler != "inductor" else args.mode)
                for step in range(3):
                    x, grad_output = (torch.randn(shape, device=device, dtype=dtype) for _ in range(2))
                    torch.compiler.cudagraph_mark_step_begin()
                    if step == 0 and args.compiler == "inductor":  # (importing Inductor costs a dry run seconds)
                        from torch._inductor.utils import run_and_get_code
                        got, codes = run_and_get_code(_step, run, x, grad_output)
                    else:
                        got, codes = _step(run, x, grad_output), codes if step else []
                    expected = _step(model, x, grad_output)
                    names = ["output", "grad_input", *(f"grad_{n}" for n, _ in model.named_parameters())]
                    if label.startswith("chain"):
                        for name, a, b in zip(names[:2], got, expected):
                            assert same_bits(a, b), f"step {step}: compiled {name} differs from eager " \
                                                    f"(max |diff| {(a.double() - b.double()).abs().max().item():.3g})"
                        for name, a, b in zip(names[2:], got[2:], expected[2:]):
                            parity.assert_reduction(a, b, dtype, b.dtype, f"step {step}: compiled {name}")
                    else:
                        for name, a, b in zip(names, got, expected):
                            torch.testing.assert_close(a, b, msg=f"step {step}: compiled {name} (float64)")
                launches = [re.findall(r"^\s+(_\w+_kernel)_\d+\.run\(", code, flags=re.M) for code in codes]
                callbacks = sum(code.count("torch.ops.lslu_kernels.") for code in codes)
                if backend == "triton" and _triton_ops.in_use:
                    kernels = {k for found in launches for k in found}
                    wanted = {f"_{op}_{d}_kernel" for op in (("lslu",) if label.startswith("layer") else
                                                             ("lslu", "pvlu", "pwlu")) for d in ("forward", "backward")}
                    assert args.compiler != "inductor" or kernels >= wanted and not callbacks, \
                        f"generated code launches {sorted(kernels)}, calls lslu_kernels ops {callbacks} times"
                skips = dict(counters["inductor"]).get("cudagraph_skips", 0)
                if args.mode == "reduce-overhead" and args.compiler == "inductor":
                    assert not skips, f"Inductor skipped {skips} CUDA graph(s)"
                print(f"     {backend} {label}: {len(codes)} generated files, kernels launched from them: "
                      f"{sorted({k for found in launches for k in found}) or 'none'}, lslu_kernels op calls: "
                      f"{callbacks}, CUDA graphs skipped: {skips}", flush=True)
    tally.finish(f"compiled ({args.mode})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info")
    p.add_argument("--json", default=None)
    p.set_defaults(run=info)
    p = sub.add_parser("backends")
    p.add_argument("--expect", nargs="+", required=True)
    p.set_defaults(run=backends)
    p = sub.add_parser("families")
    p.add_argument("--backends", nargs="+", required=True)
    p.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, default=list(DTYPE_NAMES))
    p.add_argument("--index", nargs="+", choices=("int32", "int64"), default=["int32", "int64"])
    p.add_argument("--paths", nargs="+", choices=("packed", "scalar"), default=["packed", "scalar"])
    p.set_defaults(run=families)
    p = sub.add_parser("graph")
    p.add_argument("--backend", required=True)
    p.set_defaults(run=graph)
    for name, run in (("stream", stream), ("devices", devices)):
        p = sub.add_parser(name)
        p.add_argument("--backends", nargs="+", required=True)
        p.set_defaults(run=run)
    p = sub.add_parser("determinism")
    p.add_argument("--backends", nargs="+", required=True)
    p.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, default=["float32", "bfloat16"])
    p.add_argument("--size", choices=("tiny", "small", "large"), default="large")
    p.set_defaults(run=determinism)
    p = sub.add_parser("compiled")
    p.add_argument("--backends", nargs="+", required=True)
    p.add_argument("--mode", choices=("default", "reduce-overhead"), default="reduce-overhead")
    p.add_argument("--models", nargs="+", choices=COMPILED_MODELS, default=list(COMPILED_MODELS))
    p.add_argument("--compiler", choices=("inductor", "aot_eager"), default="inductor",
                   help="torch.compile's backend (aot_eager: the same tracing without Inductor's code, quicker)")
    p.set_defaults(run=compiled)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()

"""The prepared GPU check: everything only a GPU can prove, in one command, in under 8 minutes.

    python benchmarks/gpu_check.py --out DIR              # on an H100/H200, offline
    python benchmarks/gpu_check.py --out DIR --dry-run    # the same orchestration on a CPU, in under 2 minutes
    python benchmarks/gpu_check.py --out DIR --steps build bench plot report   # some steps (the others: skipped)
    python benchmarks/gpu_check.py --out DIR --list       # the steps and their commands, run none

Each step is one command in a process of its own, with its own timeout, its
output in ``DIR/<step>.log``; a hang or a crash costs that step and no more.
Consecutive steps of one group run at the same time (independent processes
sharing the GPU; none of them times anything). ``DIR/summary.md`` and
``DIR/summary.json`` (rewritten after every step) give each step's status
(pass, fail, timeout, skipped), its result or why, and what it checks, with
the device, the torch, triton and CUDA versions and the git commit (from git,
or ``$LSLU_KERNELS_COMMIT`` in a copy of the tree without it).

The steps on a GPU: install the project (``pip install --no-build-isolation
--no-deps -e .``, the CUDA extension built there; if that fails, again without
it so that the Triton checks still run), check that ``cuda`` and ``triton``
are available; CUDA-graph capture as the first use of the kernels in a fresh
process, a side stream, a second device, bitwise determinism of the backward
at a size with many blocks, every kernel family once (both index types, packed
and scalar, every dtype) against the float64 reference; ``torch.compile(mode="reduce-overhead")`` (CUDA
graphs) of models using every op against eager; the same families
under compute-sanitizer's memcheck, initcheck and racecheck beside the whole
test suite (junit XML in DIR); then the benchmark subset that judges the GPU
targets (every op, float32 and bfloat16, NCHW, channels-last and (B, L, C),
tensors of at least 64 MB) appended to ``benchmarks/results/<gpu>.csv`` case by
case, the model-level benchmark's training steps (``benchmarks/models.py``: LSLU,
PReLU and no activation, eager, compiled and with CUDA graphs) appended to
``benchmarks/results/models-<gpu>.csv``, the fused full layer (``benchmarks/layer.py``: the Triton
fused kernels against the unfused layer and a copy of x) appended to
``benchmarks/results/layer-<gpu>.csv``, the plots and the README's results
section regenerated, and copies of the CSVs, plots, README.md and its diff in
``DIR/results``.

``--dry-run`` runs the same list against the CPU backends (cpu, reference, the
Triton interpreter where cheap) with tiny sizes, a small test selection and a
one-case benchmark and the model-level benchmark's eager training steps at
tiny sizes written to DIR; the GPU-only steps are reported as skipped.
Every step's timeout is also cut to what is left of ``--budget``, keeping time
for the benchmark, the plots and the report, so the whole run stays inside the
budget; SIGINT stops the running steps and records them.
"""

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = str(ROOT / "benchmarks" / "gpu_driver.py")
PY = sys.executable
SKIP_STATUS = 77  # gpu_driver.py's exit status for "this machine cannot run it"
GRACE = 15  # seconds between SIGINT (pytest and the runner write what they have) and SIGKILL

# The benchmark subset that judges the GPU targets: tensors of at least 64 MB in float32 and bfloat16
# (64x256x56x56: 205 / 103 MB; 16x2048x1024: 134 / 67 MB), every op, the three layouts.
BENCH_SHAPES = ["64x256x56x56", "16x2048x1024"]
# The model-level benchmark's GPU subset (benchmarks/models.py; Identity and PReLU always run): the MLP block
# first, whose graphs compile fastest.
MODEL_BENCH_MODELS = ["mlp-block", "resnet"]
MODEL_BENCH_ACTIVATIONS = ["LSLU"]
SANITIZER_TOOLS = ("memcheck", "initcheck", "racecheck")
DTYPES = ("float32", "float64", "float16", "bfloat16")


@dataclasses.dataclass
class Step:
    name: str
    command: list[str]
    timeout: float  # seconds, before the cut to the budget
    why: str  # what it proves, one line
    gpu_only: bool = False  # skipped in a dry run and where torch sees no GPU
    group: str | None = None  # consecutive steps of one group run at the same time
    env: dict = dataclasses.field(default_factory=dict)
    skip: str | None = None  # a reason known before it runs
    keep: float = 0  # seconds the steps before it must leave for it (the benchmark, the plots, the report)
    if_failed: str | None = None  # run only when that step failed (else skipped)


@dataclasses.dataclass
class Result:
    name: str
    status: str  # pass, fail, timeout, skipped
    reason: str
    proves: str = ""
    seconds: float = 0.0
    timeout: float = 0.0
    command: str = ""
    log: str = ""


def plan(args, info: dict) -> list[Step]:
    """The steps, in order. A dry run keeps every name, with CPU commands or a skip reason."""
    out = pathlib.Path(args.out)
    dry = args.dry_run
    kernels = ["cpu", "triton"] if dry else ["cuda", "triton"]
    driver = [PY, DRIVER]
    steps = [
        Step("build", [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."], 240,
             "the project installs offline with the CUDA extension built by nvcc",
             skip="--dry-run: the installed package is used" if dry else ("--no-build" if args.no_build else None)),
        # Without the CUDA extension the Triton kernels can still be checked on the GPU (cuda steps then fail).
        Step("build_without_cuda", [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."],
             120, "the project installs without its CUDA extension, so the triton checks still run",
             env={"LSLU_KERNELS_BUILD_CUDA": "0"}, if_failed="build",
             skip="--dry-run: the installed package is used" if dry else ("--no-build" if args.no_build else None)),
        Step("backends", [*driver, "backends", "--expect", *kernels, "reference"], 60 if dry else 30,
             "lk.available_backends() lists the kernel backends (cuda and triton on a GPU)", group="checks"),
    ]
    # Graph capture must be the kernels' first use: a Triton cache of its own, new (outside DIR: it is
    # not a result), so that the Triton kernels compile inside the capture whatever ran before.
    for backend in ("cuda", "triton"):
        steps.append(Step(f"graph_{backend}", [*driver, "graph", "--backend", backend], 120,
                          f"CUDA-graph capture of forward+backward as the first use of the {backend} kernels in a "
                          "fresh process; replays equal eager calls bitwise", gpu_only=True, group="checks",
                          env={"TRITON_CACHE_DIR": str(pathlib.Path(tempfile.gettempdir()) /
                                                       f"lslu-gpu-check-{os.getpid()}-triton-cache-{backend}")}))
    steps += [
        Step("stream", [*driver, "stream", "--backends", *kernels], 120,
             "calls under a side stream run on it and give the default stream's bits", gpu_only=True,
             group="checks"),
        Step("second_device", [*driver, "devices", "--backends", *kernels], 120,
             "calls on cuda:1 while cuda:0 is current: right, and cuda:0's bits", gpu_only=True, group="checks",
             skip=None if dry or info.get("device_count", 0) >= 2 else f"{info.get('device_count', 0)} CUDA device(s)"),
        Step("determinism", [*driver, "determinism", "--backends", *(["cpu"] if dry else kernels),
                             "--size", "small" if dry else "large"], 120,
             "forward and backward twice at a size with many blocks: the same bits", group="checks"),
    ]
    # torch.compile over models using every op: CUDA graphs on a GPU; a dry run traces the activation chain on
    # the cpu backend with aot_eager (Inductor's C++ builds would take much of its budget from the other steps).
    steps.append(Step("compiled", [*driver, "compiled", "--backends", *(["cpu"] if dry else kernels),
                                   *(["--mode", "default", "--models", "chain-float32", "--compiler", "aot_eager"]
                                     if dry else ["--mode", "reduce-overhead"])], 60 if dry else 180,
                      "torch.compile(mode='reduce-overhead') of models using every op, forward and backward: "
                      "equal to eager (output and grad_input bitwise), no CUDA graph skipped, and the triton "
                      "backend's kernels launched from Inductor's code", group="checks"))
    # Every kernel family once, without a sanitizer: one process per dtype, at the same time. On a GPU
    # this also fills the Triton cache that the sanitizer runs then read (no compiling under them).
    # A dry run takes the Triton interpreter through float32 only (the test suite runs it on all dtypes).
    for dtype in DTYPES:
        backends = ["cpu"] if dry and dtype != "float32" else kernels
        steps.append(Step(f"families_{dtype}", [*driver, "families", "--backends", *backends, "--dtypes", dtype],
                          120, f"every op, forward and backward, channel and rows layouts, packed and scalar, "
                               f"int32 and int64 indexing, {dtype}, against the float64 reference",
                          group="checks"))
    sanitizer = info.get("compute_sanitizer")
    for tool in SANITIZER_TOOLS:
        for backend in ("cuda", "triton"):
            families = [*driver, "families", "--backends", backend]
            if tool == "racecheck":  # racecheck is slow; shared-memory races do not depend on the index type
                families += ["--dtypes", "float32", "bfloat16", "--index", "int32"]
            steps.append(Step(
                f"{tool}_{backend}",
                [sanitizer or "compute-sanitizer", "--tool", tool, "--error-exitcode", "1", "--print-limit", "50",
                 *families], 150, f"compute-sanitizer {tool} finds nothing in every {backend} kernel family",
                gpu_only=True, group="sanitizers",
                # every tensor its own allocation, so that memcheck sees an access past its end
                env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"},
                skip=None if sanitizer or dry else "compute-sanitizer is not on PATH"))
    pytest = [PY, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "--durations", "15",
              "--junitxml", str(out / "pytest.xml")]
    if dry:  # a small selection, the backend choice rules (never this check's own test)
        pytest += ["tests/test_dispatch.py"]
    else:
        pytest += ["tests", "--ignore", "tests/test_gpu_check.py"]
        if info.get("pytest_xdist"):
            pytest += ["-n", "6"]
        if info.get("pytest_timeout"):
            pytest += ["--timeout", "120"]
    steps.append(Step("pytest", pytest, 60 if dry else 150,
                      "the test suite on every available backend (Triton compiled on a GPU)", group="sanitizers"))
    bench_csv = out / "bench" / "cpu-dry-run.csv"
    # The activation sweep only: the model-level benchmark is a step of its own.
    if dry:
        bench = [PY, "benchmarks/run.py", "--smoke", "--ops", "pvlu", "--dtypes", "float32", "--layouts", "nchw",
                 "--providers", "cpu", "--min-time", "0", "--out", str(bench_csv), "--no-models"]
        models = [PY, "benchmarks/models.py", "--smoke", "--modes", "train-step", "--min-time", "0",
                  "--out", str(bench_csv.with_name("models-" + bench_csv.name))]
    else:
        bench = [PY, "benchmarks/run.py", "--full", "--dtypes", "float32", "bfloat16", "--layouts", "nchw",
                 "channels_last", "blc", "--shapes", *BENCH_SHAPES, "--min-time", "0.1", "--no-models"]
        # The model-level target's cases: the training step of both models with LSLU on the default
        # backend, eager, torch.compile and reduce-overhead; appended to benchmarks/results/models-<gpu>.csv.
        models = [PY, "benchmarks/models.py", "--full", "--models", *MODEL_BENCH_MODELS, "--modes", "train-step",
                  "--activations", *MODEL_BENCH_ACTIVATIONS, "--backends", "default", "--min-time", "0.2"]
    # The fused full layer (issue 15) on the GPU: the Triton fused kernels against the unfused layer and a copy.
    layer = [PY, "benchmarks/layer.py", *(["--smoke", "--min-time", "0", "--out",
                                           str(bench_csv.with_name("layer-" + bench_csv.name))] if dry else
                                          ["--device", "cuda", "--providers", "unfused", "copy", "--min-time", "0.05",
                                           "--save"])]
    steps += [
        # On a GPU the benchmark runs alone (it times); a dry run times nothing, so it runs beside the tests.
        Step("bench", bench, 60 if dry else 300,
             "the benchmark subset that judges the GPU targets, each case saved as it finishes",
             group="sanitizers" if dry else None, keep=20 if dry else 120),
        Step("models", models, 60 if dry else 150,
             "the model-level benchmark's training steps of a small CNN and a transformer MLP block (on a GPU "
             "LSLU, PReLU and no activation, eager, compiled, CUDA graphs), each model saved as it finishes",
             # in a dry run it runs beside the benchmark, whose reserve covers both
             group="sanitizers" if dry else None, keep=0 if dry else 60,
             # beside the tests on a 2-core machine, OpenMP's barriers wait for descheduled threads: a dry
             # run times nothing, so one thread
             env={"OMP_NUM_THREADS": "1"} if dry else {}),
        Step("layer", layer, 60 if dry else 120,
             "the fused full layer's deploy forward and training step (Triton on a GPU) against the unfused layer "
             "and, in deploy form, a copy of x (the GPU target's bound), saved to layer-<device>.csv",
             group="sanitizers" if dry else None, keep=0 if dry else 40, gpu_only=not dry,
             env={"OMP_NUM_THREADS": "1"} if dry else {}),
        Step("plot", [PY, "benchmarks/plot.py", *([str(bench_csv), "--out-dir", str(out / "plots")] if dry else [])],
             20, "the plots of the results", keep=20),
        Step("report", [PY, "benchmarks/report.py", *(["--results-dir", str(bench_csv.parent)] if dry
                                                       else ["--write"])],
             10, "the README's results section regenerated" + (" (printed only)" if dry else ""), keep=10),
    ]
    for step in steps:
        if step.gpu_only and step.skip is None:
            if dry:
                step.skip = "--dry-run: no GPU"
            elif not info.get("cuda_available"):
                step.skip = "torch sees no CUDA device"
    if args.steps:
        for step in steps:
            if step.name not in args.steps and step.skip is None:
                step.skip = "not in --steps"
    return steps


class Check:
    """Runs steps, logs them and keeps the summary up to date."""

    def __init__(self, args):
        self.out = pathlib.Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.dry = args.dry_run
        self.start = time.monotonic()
        self.deadline = self.start + args.budget
        self.budget = args.budget
        self.started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.info: dict = {}
        self.results: list[Result] = []
        self.log = (self.out / "gpu_check.log").open("a")

    def say(self, text: str):
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def environment(self, step: Step) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **step.env)
        if self.dry:  # the Triton kernels in the interpreter, on CPU tensors (as the tests' conftest does)
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        return env

    def run_group(self, steps: list[Step], reserve: float):
        """Start every step of the group, wait for all (each to its own deadline), record them."""
        running = []
        for step in steps:
            if step.if_failed and self.status(step.if_failed) in ("pass", "skipped"):
                step.skip = f"{step.if_failed} did not fail"
            if step.skip:
                self.record(Result(step.name, "skipped", step.skip, step.why, command=" ".join(step.command)))
                continue
            left = self.deadline - time.monotonic() - reserve
            limit = min(step.timeout, left)
            if left < 5:
                self.record(Result(step.name, "skipped", f"no time left in the {self.budget:.0f} s budget",
                                   step.why, command=" ".join(step.command)))
                continue
            log_path = self.out / f"{step.name}.log"
            log = log_path.open("w")
            log.write(f"$ {' '.join(step.command)}\n# timeout {limit:.0f} s; env {step.env}\n")
            log.flush()
            self.say(f"[{self.elapsed():6.1f} s] start {step.name} (timeout {limit:.0f} s)")
            process = subprocess.Popen(step.command, cwd=ROOT, env=self.environment(step), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            running.append((step, process, log, log_path, time.monotonic(), limit))
        interrupted = False
        while running:
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:  # the whole check is stopped (timeout -s INT): stop the steps, record them
                interrupted = True
            for entry in list(running):
                step, process, log, log_path, started, limit = entry
                timed_out = process.poll() is None and (interrupted or time.monotonic() - started > limit)
                if timed_out:
                    stop(process)
                if process.poll() is None:
                    continue
                end_group(process)
                running.remove(entry)
                log.close()
                seconds = time.monotonic() - started
                status, reason = verdict(step, process.returncode, timed_out, log_path.read_text(errors="replace"))
                if interrupted and timed_out:
                    reason = "the whole check was interrupted; " + reason
                self.record(Result(step.name, status, reason, step.why, round(seconds, 1), round(limit),
                                   " ".join(step.command), log_path.name))
        if interrupted:
            raise KeyboardInterrupt

    def status(self, name: str) -> str | None:
        return next((r.status for r in self.results if r.name == name), None)

    def record(self, result: Result):
        self.results.append(result)
        self.say(f"[{self.elapsed():6.1f} s] {result.status:7s} {result.name}: {result.reason}")
        self.write_summary()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def write_summary(self):
        failed = [r.name for r in self.results if r.status in ("fail", "timeout")]
        summary = dict(mode="dry-run" if self.dry else "gpu", started=self.started_at,
                       elapsed_s=round(self.elapsed(), 1), budget_s=self.budget, passed=not failed, failed=failed,
                       device=device_line(self.info), torch=self.info.get("torch"), triton=self.info.get("triton"),
                       cuda=self.info.get("torch_cuda"), cuda_driver=self.info.get("cuda_driver"),
                       nvidia_smi=self.info.get("nvidia_smi"), nvcc=self.info.get("nvcc_version"),
                       compute_sanitizer=self.info.get("compute_sanitizer_version"), python=self.info.get("python"),
                       commit=self.info.get("commit"), dirty=self.info.get("dirty"),
                       steps=[dataclasses.asdict(r) for r in self.results])
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        lines = [f"# GPU check ({summary['mode']}): {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}", "",
                 f"- device: {summary['device']}",
                 f"- torch {summary['torch']} (CUDA {summary['cuda']}), triton {summary['triton']}, "
                 f"python {summary['python']}",
                 f"- driver: {summary['nvidia_smi']}; nvcc: {summary['nvcc']}; compute-sanitizer: "
                 f"{summary['compute_sanitizer']}",
                 f"- commit {summary['commit']}{' (uncommitted changes)' if summary['dirty'] else ''}",
                 f"- started {summary['started']}, {summary['elapsed_s']} s of a {self.budget:.0f} s budget", "",
                 "| step | status | seconds (timeout) | result or reason | what it checks |", "|---|---|---|---|---|"]
        for r in self.results:
            reason, proves = (text.replace("|", "\\|").replace("\n", " ") for text in (r.reason, r.proves))
            lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} ({r.timeout:.0f}) | {reason} | {proves} |")
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")


def stop(process: subprocess.Popen):
    """SIGINT to the step's whole process group (pytest and the runner then write what they have), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(GRACE)
    end_group(process)
    process.wait()


def end_group(process: subprocess.Popen):
    """SIGKILL to whatever is left of a step's process group (compile workers, test workers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def verdict(step: Step, returncode: int, timed_out: bool, text: str) -> tuple[str, str]:
    """(status, reason) of a finished step from its exit status and its log."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "(no output)"
    if timed_out:
        return "timeout", f"stopped after its timeout; last line: {last}"
    if returncode == SKIP_STATUS:
        skip = [line for line in lines if line.startswith("SKIP:")]
        return "skipped", skip[-1].removeprefix("SKIP:").strip() if skip else last
    detail = last
    if step.name.startswith(SANITIZER_TOOLS):
        summary = [line for line in lines if "ERROR SUMMARY" in line or "RACECHECK SUMMARY" in line]
        where = [line.removeprefix("=========").strip() for line in lines if re.match(r"=+\s+at ", line)]
        detail = "; ".join(summary[-1:] + [f"families: {line}" for line in lines if line.startswith("families:")]
                           + where[:3]) or last
    elif step.name == "pytest":
        counts = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
        detail = counts[-1] if counts else last
    if returncode == 0:
        return "pass", detail
    return "fail", f"exit status {returncode}: {detail}"


def device_line(info: dict) -> str:
    if info.get("devices"):
        first = info["devices"][0]
        more = f" (+{len(info['devices']) - 1} more)" if len(info["devices"]) > 1 else ""
        return f"{first['name']} (sm {first['capability']}, {first['multiprocessors']} SMs, " \
               f"{first['memory_gib']} GiB){more}"
    return f"no CUDA device; CPU {info.get('cpu')} ({info.get('cpu_count')} cores)"


def collect(check: Check):
    """Copies of what the benchmark steps wrote in the repository during this run: the results CSV, the
    plots, README.md and its diff (when git works here), into DIR/results."""
    if check.dry:
        return
    started = time.time() - check.elapsed()
    written = [f for f in (ROOT / "benchmarks" / "results").rglob("*")
               if f.is_file() and f.suffix in (".csv", ".png") and f.stat().st_mtime >= started]
    readme = ROOT / "README.md"
    if readme.stat().st_mtime >= started:
        written.append(readme)
    (check.out / "results").mkdir(exist_ok=True)
    for file in written:
        shutil.copy2(file, check.out / "results" / file.name)
    diff = subprocess.run(["git", "diff", "--", "README.md"], cwd=ROOT, capture_output=True, text=True)
    (check.out / "README.diff").write_text(diff.stdout if diff.returncode == 0 else f"git diff failed: {diff.stderr}")
    rows, model_rows, side_rows = [], [], []  # rows this run appended (the runners stamp each with its start time)
    for file in written:
        if file.suffix == ".csv":
            with file.open(newline="") as f:
                new = [r for r in csv.DictReader(f) if r.get("timestamp", "") >= check.started_at]
            if file.name.startswith("models-"):
                model_rows += new
            elif file.name.startswith(("overhead-", "layer-")):  # the per-call overhead's, the full layer's
                side_rows += new
            else:
                rows += new
    cases = len({(r["op"], r["dtype"], r["shape"], r["layout"]) for r in rows})
    check.record(Result("collect", "pass", f"{len(rows)} benchmark rows ({cases} cases), {len(model_rows)} "
                        f"model-level rows and {len(side_rows)} overhead and full-layer rows from this run; copied "
                        f"{', '.join(f.name for f in written) or 'nothing'} to results/; README.diff "
                        f"{len(diff.stdout.splitlines())} lines", "copies of what the run wrote in the repository"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the logs, the summary and copies of the results")
    parser.add_argument("--dry-run", action="store_true", help="the CPU backends, tiny sizes; no GPU needed")
    parser.add_argument("--no-build", action="store_true", help="skip the pip install (the project is installed)")
    parser.add_argument("--steps", nargs="+", default=None, help="run only these steps (the others: skipped)")
    parser.add_argument("--list", action="store_true", help="print the steps as they would run here, run none")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default 470 on a GPU, 230 for --dry-run)")
    args = parser.parse_args(argv)
    args.out = str(pathlib.Path(args.out).resolve())  # the steps run in the repository root
    if args.budget is None:
        # A dry run's steps run side by side on the CPU's cores: on a 2-core machine without AVX-512 the
        # first four (every one importing torch and Triton) took 37 s of a 30 s timeout (measured).
        args.budget = 230.0 if args.dry_run else 470.0
    check = Check(args)
    check.say(f"gpu_check {'dry run' if args.dry_run else 'on the GPU'}: logs in {check.out}, "
              f"budget {args.budget:.0f} s")
    info_step = Step("info", [PY, DRIVER, "info", "--json", str(check.out / "info.json")], 60,
                     "versions, device and tools")
    check.run_group([info_step], reserve=0)
    info_path = check.out / "info.json"
    check.info = json.loads(info_path.read_text()) if info_path.exists() else {}
    check.say(f"device: {device_line(check.info)}; torch {check.info.get('torch')}, "
              f"triton {check.info.get('triton')}, commit {check.info.get('commit')}")
    steps = plan(args, check.info)
    known = {s.name for s in steps}
    unknown = sorted(set(args.steps or []) - known)
    if unknown:
        parser.error(f"unknown --steps {unknown}; the steps are {[s.name for s in steps]}")
    if args.list:
        for step in steps:
            state = f"skipped: {step.skip}" if step.skip else f"timeout {step.timeout:.0f} s, group {step.group}"
            check.say(f"{step.name} ({state})\n    {' '.join(step.command)}")
        return 0
    index = 0
    try:
        while index < len(steps):  # one group at a time (a step without a group is a group of its own)
            group = [steps[index]]
            while steps[index].group and index + len(group) < len(steps) \
                    and steps[index + len(group)].group == steps[index].group:
                group.append(steps[index + len(group)])
            index += len(group)
            check.run_group(group, reserve=sum(s.keep for s in steps[index:] if not s.skip))
    except KeyboardInterrupt:
        check.say(f"interrupted; not run: {', '.join(s.name for s in steps[index:]) or 'none'}")
        for step in steps[index:]:
            check.record(Result(step.name, "skipped", step.skip or "the check was interrupted before it", step.why))
    collect(check)
    check.write_summary()
    failed = [r.name for r in check.results if r.status in ("fail", "timeout")]
    check.say(f"[{check.elapsed():6.1f} s] {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}; "
              f"summary in {check.out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

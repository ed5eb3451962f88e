"""The prepared GPU check (benchmarks/gpu_check.py): its runner, and its dry run on the CPU within its budget."""

import dataclasses
import importlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import time

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a GPU session must find in the summary (the list), whatever else the plan holds.
REQUIRED_STEPS = {"build", "backends", "graph_cuda", "graph_triton", "stream", "second_device", "determinism",
                  "compiled", "families_float32", "families_float64", "families_float16", "families_bfloat16",
                  "memcheck_cuda", "memcheck_triton", "initcheck_cuda", "initcheck_triton", "racecheck_cuda",
                  "racecheck_triton", "pytest", "bench", "models", "layer", "plot", "report"}
# Steps a CPU can run: a dry run must pass them (the others are skipped, saying why).
CPU_STEPS = {"info", "backends", "determinism", "compiled", "families_float32", "families_float64",
             "families_float16", "families_bfloat16", "pytest", "bench", "models", "layer", "plot", "report"}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    for module in ("rich", "matplotlib"):  # the benchmark runner prints with rich; plot.py draws with matplotlib
        pytest.importorskip(module, reason="the dry run's benchmark and plot steps need it (the 'test' extra)")
    out = tmp_path_factory.mktemp("gpu_check")
    results = ROOT / "benchmarks" / "results"
    committed = {p: p.stat().st_mtime for p in results.rglob("*") if p.is_file()}
    readme_mtime = (ROOT / "README.md").stat().st_mtime
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
    seconds = time.monotonic() - start
    after = {p: p.stat().st_mtime for p in results.rglob("*") if p.is_file()}
    touched = sorted(str(p) for p in after if committed.get(p) != after[p])
    touched += ["README.md"] if (ROOT / "README.md").stat().st_mtime != readme_mtime else []
    return proc, out, seconds, touched


def test_dry_run_passes_every_cpu_step_within_its_budget(dry_run):
    proc, out, seconds, touched = dry_run
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s for s in summary["steps"]}
    assert proc.returncode == 0 and summary["passed"], \
        f"dry run failed: {summary['failed']}\n{(out / 'summary.md').read_text()}\n{proc.stdout[-3000:]}"
    for name in CPU_STEPS:
        assert status[name]["status"] == "pass", f"{name}: {status[name]}"
    for name, step in status.items():
        if name not in CPU_STEPS:
            assert step["status"] == "skipped" and step["reason"], f"{name} should be skipped with a reason: {step}"
    assert summary["budget_s"] <= 240 and summary["elapsed_s"] <= summary["budget_s"], \
        f"{summary['elapsed_s']} s of a {summary['budget_s']} s budget"
    assert seconds < 250, f"the dry run took {seconds:.0f} s"
    assert not touched, f"a dry run must leave the committed results and README alone: {touched}"


def test_summary_lists_every_planned_step_with_a_log(dry_run):
    _, out, _, _ = dry_run
    gpu_check = _load()
    summary = json.loads((out / "summary.json").read_text())
    recorded = [s["name"] for s in summary["steps"]]
    args = gpu_check.argparse.Namespace(out=str(out), dry_run=True, no_build=False, steps=None)
    planned = ["info"] + [s.name for s in gpu_check.plan(args, json.loads((out / "info.json").read_text()))]
    assert sorted(recorded) == sorted(planned), f"recorded {recorded}, planned {planned}"
    assert REQUIRED_STEPS <= set(planned), f"missing from the plan: {sorted(REQUIRED_STEPS - set(planned))}"
    table = (out / "summary.md").read_text()
    for step in summary["steps"]:
        assert f"| {step['name']} | {step['status']} |" in table, f"{step['name']} not in summary.md"
        if step["status"] != "skipped":
            assert (out / step["log"]).read_text().startswith("$ "), f"{step['name']}: no log"
    for key in ("device", "torch", "triton", "commit"):
        assert summary[key], f"summary lacks {key}"
    rows = (out / "bench" / "cpu-dry-run.csv").read_text().splitlines()
    assert len(rows) > 1 and rows[0].startswith("op,provider,mode"), "the dry run's benchmark CSV"
    model_rows = (out / "bench" / "models-cpu-dry-run.csv").read_text().splitlines()
    assert len(model_rows) > 1 and model_rows[0].startswith("model,activation,backend"), "the model-level CSV"
    assert "### Model-level benchmark" in (out / "report.log").read_text(), "the dry run's report of the models"
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["cpu-dry-run-bandwidth.png", "cpu-dry-run-speedup.png"]


def _step(gpu_check, name, code, timeout):
    return gpu_check.Step(name, [sys.executable, "-c", code], timeout, "test")


def test_runner_stops_a_hung_step_and_goes_on(tmp_path):
    """A step past its timeout is interrupted and marked timeout; a crash is a failure; exit status 77 a skip;
    the steps of one group run at the same time."""
    gpu_check = _load()
    check = gpu_check.Check(gpu_check.argparse.Namespace(out=str(tmp_path), dry_run=True, budget=100.0))
    start = time.monotonic()
    check.run_group([_step(gpu_check, "hang", "import time; time.sleep(120)", 2),
                     _step(gpu_check, "crash", "raise SystemExit('broken')", 30),
                     _step(gpu_check, "skip", "print('SKIP: no such device'); raise SystemExit(77)", 30),
                     _step(gpu_check, "fine", "import time; time.sleep(1); print('all good')", 30)], reserve=0)
    seconds = time.monotonic() - start
    got = {r.name: (r.status, r.reason) for r in check.results}
    assert got["hang"][0] == "timeout", got["hang"]
    assert got["crash"] == ("fail", "exit status 1: broken"), got["crash"]
    assert got["skip"] == ("skipped", "no such device"), got["skip"]
    assert got["fine"] == ("pass", "all good"), got["fine"]
    assert seconds < 10, f"the group took {seconds:.1f} s: the hung step was not stopped at its 2 s timeout"
    assert set(json.loads((tmp_path / "summary.json").read_text())["failed"]) == {"hang", "crash"}


def test_a_fallback_step_runs_only_after_its_step_failed(tmp_path):
    gpu_check = _load()
    check = gpu_check.Check(gpu_check.argparse.Namespace(out=str(tmp_path), dry_run=True, budget=100.0))
    steps = [_step(gpu_check, "broken", "raise SystemExit(3)", 30), _step(gpu_check, "fine", "pass", 30),
             _step(gpu_check, "after_broken", "print('fallback ran')", 30),
             _step(gpu_check, "after_fine", "print('should not run')", 30)]
    steps[2].if_failed, steps[3].if_failed = "broken", "fine"
    check.run_group(steps[:2], reserve=0)
    check.run_group(steps[2:], reserve=0)
    got = {r.name: (r.status, r.reason) for r in check.results}
    assert got["after_broken"] == ("pass", "fallback ran"), got
    assert got["after_fine"] == ("skipped", "fine did not fail"), got


def test_steps_get_no_more_than_the_budget_leaves(tmp_path):
    """A step's timeout is cut to what is left of the budget; once it is spent, later steps are skipped."""
    gpu_check = _load()
    check = gpu_check.Check(gpu_check.argparse.Namespace(out=str(tmp_path), dry_run=True, budget=7.0))
    check.run_group([_step(gpu_check, "long", "import time; time.sleep(60)", 60)], reserve=0)
    check.run_group([_step(gpu_check, "late", "print('never')", 60)], reserve=0)
    got = {r.name: r for r in check.results}
    assert got["long"].status == "timeout" and got["long"].timeout <= 7, got["long"]
    assert got["late"].status == "skipped" and "budget" in got["late"].reason, got["late"]
    assert check.elapsed() < 12, f"{check.elapsed():.1f} s for a 7 s budget"


def _load_driver():
    spec = importlib.util.spec_from_file_location("gpu_driver", ROOT / "benchmarks" / "gpu_driver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_families_reach_the_scalar_path_and_catch_a_wrong_gradient():
    """The sanitizer driver's own check: a misaligned twin starts one element into its storage, and a
    backend whose gradient is off by a rounding-sized amount too many fails it."""
    driver = _load_driver()
    _, ops, parity = driver._project()
    case = next(c for c in driver.make_cases(ops, torch.device("cpu"), "tiny", ["float32"]) if "pvlu" in c.label)
    twin = driver.misaligned(case.x)
    assert twin.data_ptr() % 16 == 4 and torch.equal(twin, case.x) and twin.is_contiguous()
    driver.check_path(parity, case, "cpu", "scalar")  # the real kernel passes
    real_fn = case.op.fn

    def off_by_a_little(x, alpha, beta, *, backend, **kwargs):  # the kernel's gradients 1% too large
        y = real_fn(x, alpha, beta, backend=backend, **kwargs)
        return y if backend == "reference" else y + 0.01 * (y - y.detach())

    off_by_a_little.param_names = real_fn.param_names
    wrong = driver.Case(case.label, dataclasses.replace(case.op, fn=off_by_a_little), case.x, case.params,
                        case.grad_output, case.channel_dim)
    with pytest.raises(AssertionError, match="grad_input"):
        driver.check_path(parity, wrong, "cpu", "scalar")


def test_bitwise_comparison_sees_one_ulp():
    driver = _load_driver()
    _, ops, _ = driver._project()
    case = driver.make_cases(ops, torch.device("cpu"), "tiny", ["bfloat16"])[0]
    results = case.forward_backward("cpu")
    assert driver.differences(case, results, case.forward_backward("cpu")) == []
    nudged = [t.clone() for t in results]
    nudged[1].view(-1).view(torch.int16)[3] += 1  # grad_input, one unit in the last place
    different = driver.differences(case, results, nudged)
    assert len(different) == 1 and different[0].startswith("grad_input"), different


def test_gpu_plan_on_an_h200():
    """The plan a GPU machine gets: every step runs (none skipped), the suite leaves out this test, the
    sanitizers wrap the families driver, and the benchmark selects every op in float32 and bfloat16 in
    the three layouts at 64 MB and more."""
    pytest.importorskip("rich", reason="the benchmark runner prints with rich")
    gpu_check = _load()
    info = dict(cuda_available=True, device_count=1, compute_sanitizer="/usr/local/cuda/bin/compute-sanitizer",
                pytest_xdist=True, pytest_timeout=True)
    args = gpu_check.argparse.Namespace(out="/tmp/x", dry_run=False, no_build=False, steps=None)
    steps = {s.name: s for s in gpu_check.plan(args, info)}
    assert {name for name, s in steps.items() if s.skip} == {"second_device"}, \
        {name: s.skip for name, s in steps.items() if s.skip}
    assert steps["build"].command[-5:] == ["install", "--no-build-isolation", "--no-deps", "-e", "."]
    pytest_command = " ".join(steps["pytest"].command)
    assert "--ignore tests/test_gpu_check.py" in pytest_command and "--junitxml /tmp/x/pytest.xml" in pytest_command
    for tool in gpu_check.SANITIZER_TOOLS:
        for backend in ("cuda", "triton"):
            command = steps[f"{tool}_{backend}"].command
            assert command[:3] == [info["compute_sanitizer"], "--tool", tool] and "families" in command
            assert command[command.index("--backends") + 1] == backend
    assert steps["graph_cuda"].env["TRITON_CACHE_DIR"] != steps["graph_triton"].env["TRITON_CACHE_DIR"]
    compiled = steps["compiled"].command
    assert compiled[compiled.index("--backends") + 1:compiled.index("--mode")] == ["cuda", "triton"]
    assert compiled[compiled.index("--mode") + 1] == "reduce-overhead" and "--compiler" not in compiled, compiled
    sys.path.insert(0, str(ROOT / "benchmarks"))
    run = importlib.import_module("run")
    bench = steps["bench"].command
    shapes = bench[bench.index("--shapes") + 1:bench.index("--min-time")]
    chosen = [c for c in run.cases(torch.device("cuda"), "full")
              if c.dtype in ("float32", "bfloat16") and "x".join(map(str, c.shape)) in shapes]
    assert {(c.op.label, c.dtype, c.layout) for c in chosen} == \
        {(op.label, dtype, layout) for op in run.OPS for dtype in ("float32", "bfloat16")
         for layout in ("nchw", "channels_last", "blc")}
    assert min(c.nbytes for c in chosen) >= 64e6, "a benchmark case under 64 MB"
    # The model-level step times what the model targets judge: their activations and modes, on the
    # default backend, with every provider (eager, torch.compile, reduce-overhead), into the committed file.
    models = steps["models"].command
    assert models[1] == "benchmarks/models.py" and "--full" in models and "--providers" not in models
    assert models[models.index("--backends") + 1:][:1] == ["default"]
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for _, activation, mode, _, _ in report.MODEL_TARGETS:
        assert activation in models[models.index("--activations") + 1:] and mode in models, (activation, mode)

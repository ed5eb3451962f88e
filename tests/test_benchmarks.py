"""The benchmark pipeline runs end to end: the runner's smoke sweep, its results file, the plots and the report.

Timings are not checked (that is the benchmark's job, not a test's); what is
checked is that every provider and mode of a case produces a well-formed row.
"""

import csv
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # plot.py imports report by that name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    pytest.importorskip("rich", reason="the runner prints with rich (in the 'bench' and 'test' extras)")
    run = _load("run")
    out = tmp_path_factory.mktemp("results") / "cpu-test.csv"
    torch._dynamo.reset()
    try:
        run.main(["--smoke", "--ops", "pvlu", "--min-time", "0", "--out", str(out)])  # one op: CI's time
    finally:
        torch._dynamo.reset()
    return run, out


def test_quick_sweep_writes_every_provider_and_mode(quick_results):
    run, out = quick_results
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == run.FIELDS, f"columns {list(rows[0]) if rows else None}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    providers = {p.name for p in run.providers(device, next(op for op in run.OPS if op.label == "pvlu"))}
    kernels = providers - {"eager", "torch.compile", *run.BASELINES}
    for case in {(r["op"], r["dtype"], r["shape"], r["layout"]) for r in rows}:
        got = {(r["provider"], r["mode"]) for r in rows if (r["op"], r["dtype"], r["shape"], r["layout"]) == case}
        expected = {(p, m) for p in providers for m in run.MODES}
        assert expected <= got, f"{case}: missing {sorted(expected - got)}"
    if device.type == "cpu" and "cpu" in kernels:  # the device names the level and vector width the kernels ran at
        ext = importlib.import_module("lslu_kernels._C_cpu")
        shown = f"cpu kernels {ext.isa()} ({ext.vector_bits()}-bit vectors)"
        assert all(r["device"].endswith(shown) for r in rows), f"device {rows[0]['device']!r} lacks {shown!r}"
    for r in rows:
        assert float(r["median_ms"]) > 0 and float(r["q20_ms"]) <= float(r["q80_ms"]), f"times of {r}"
        if r["mode"] == "forward+backward":
            assert float(r["saved_mb"]) > 0 and float(r["peak_mb"]) > 0, f"memory of {r}"
    x_mb = {r["shape"]: torch.Size(map(int, r["shape"].split("x"))).numel() * 4 / 1e6
            for r in rows if r["dtype"] == "float32"}
    for r in rows:  # the kernels keep x only; the eager reference keeps more
        if r["mode"] == "forward+backward" and r["dtype"] == "float32" and r["provider"] in kernels | {"eager"}:
            saved, x = float(r["saved_mb"]), x_mb[r["shape"]]
            if r["provider"] in kernels:
                # x plus the (small) parameters, printed to 0.1 MB
                assert saved == pytest.approx(x, abs=0.1), f"{r['provider']} saves {saved} MB, x is {x:.2f} MB"
            else:
                assert saved > 1.5 * x, f"eager saves {saved} MB, x is {x:.1f} MB"


def test_plots_and_report_from_the_results(quick_results, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = quick_results
    report = _load("report")
    plot = _load("plot")  # imports report
    written = plot.plot_file(out, tmp_path)
    assert sorted(p.name for p in written) == ["cpu-test-bandwidth.png", "cpu-test-speedup.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{p} is not a PNG"
    table = report.case_table(report.load_latest(out), "float32", "forward+backward")
    assert len(table) == 2 + 3, "one line per layout (nchw, channels_last, blc) after the header:\n" + "\n".join(table)


def test_default_sweep_is_small_and_writes_outside_the_tracked_results():
    """The main job's default answers in minutes and leaves the checkout clean; --full is the whole sweep."""
    run = _load("run")
    for device in (torch.device("cpu"), torch.device("cuda")):
        default, full = run.cases(device, "default"), run.cases(device, "full")
        assert {c.op.label for c in default} == {op.label for op in run.OPS}, f"{device}: an op left out"
        assert set(default) <= set(full), f"{device}: default cases outside the full sweep (--full regenerates them)"
        assert len(default) <= 3 * len(run.OPS) < len(full), f"{device}: {len(default)} default cases"
    # The CPU targets (benchmarks/report.py) are all judged by the default sweep.
    cpu = {(c.op.label, "x".join(map(str, c.shape)), c.layout, c.dtype) for c in run.cases(torch.device("cpu"))}
    targets = {(op, shape, layout, dtype) for _, op, shape, layout, dtype, mode, *_ in _load("report").TARGETS}
    assert targets <= cpu, f"CPU targets the default sweep does not time: {sorted(targets - cpu)}"
    assert "forward+backward" in run.modes(torch.device("cpu"), "default")
    local = run.LOCAL_RESULTS_DIR / run.results_path(torch.device("cpu")).name
    assert local.parent != run.RESULTS_DIR
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(local)], cwd=ROOT)
        assert ignored.returncode == 0, f"{local} is not ignored by git: the default run would dirty the checkout"

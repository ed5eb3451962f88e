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
from torch import nn

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
        # one op: CI's time; the model-level benchmark has tests of its own
        run.main(["--smoke", "--ops", "pvlu", "--min-time", "0", "--out", str(out), "--no-models"])
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


@pytest.fixture(scope="module")
def model_results(tmp_path_factory):
    """The model-level benchmark's smoke sweep (eager, tiny sizes), as ``benchmarks/models.py --smoke`` runs it."""
    pytest.importorskip("rich", reason="the runner prints with rich (in the 'bench' and 'test' extras)")
    _load("run")
    models = _load("models")
    out = tmp_path_factory.mktemp("results") / "models-cpu-test.csv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # nothing is judged by time; OpenMP's barriers crawl on a loaded 2-core machine
    try:
        rows = models.main(["--smoke", "--min-time", "0", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return models, out, rows


def test_model_benchmark_writes_every_model_mode_and_activation(model_results):
    models, out, rows = model_results
    with out.open(newline="") as f:
        saved = list(csv.DictReader(f))
    assert saved and list(saved[0]) == models.FIELDS, f"columns {list(saved[0]) if saved else None}"
    assert saved == rows, "the CSV holds other rows than the run returned"
    from lslu_kernels import _backends, registry

    device = torch.device("cpu")
    # Every registered activation module, named by its label, on the device's default backend.
    expected = {("Identity", ""), ("ReLU", ""), ("PReLU", "")}
    expected |= {(a.label, _backends.resolve(None, device, a.name)) for a in registry.activations()
                 if registry.conversion_module(a.name, "shared") is not None}
    assert len(expected) == 3 + 3, expected  # LSLU, PVLU and PWLU at least
    for model in models.MODELS:
        for mode in models.MODES:
            got = {(r["activation"], r["backend"]) for r in saved if (r["model"], r["mode"]) == (model, mode)}
            assert got == expected, f"{model} {mode}: {sorted(got ^ expected)}"
    for r in saved:
        assert r["provider"] == "eager" and r["dtype"] == "float32", r
        assert float(r["median_ms"]) > 0 and float(r["q20_ms"]) <= float(r["q80_ms"]), f"times of {r}"
        assert r["x_prelu"] and r["activation_share_pct"], f"derived columns of {r}"


def test_model_benchmark_ratios_come_from_the_same_model_mode_and_provider():
    """×PReLU is the step over the PReLU model's and the share is (step - Identity step) / step, each from the
    rows of the same model, mode and provider (not from another model's or the compiled step's)."""
    models = _load("models")
    # (model, provider): Identity, PReLU and LSLU ms, then LSLU's expected ×PReLU and share %
    groups = {("resnet", "eager"): (6.0, 8.0, 10.0, "1.250", "40.0"),
              ("resnet", "torch.compile"): (3.0, 4.0, 6.0, "1.500", "50.0"),
              ("mlp-block", "eager"): (60.0, 80.0, 88.0, "1.100", "31.8"),
              ("mlp-block", "torch.compile"): (30.0, 40.0, 50.0, "1.250", "40.0")}
    rows = []
    for (model, provider), (identity, prelu, lslu, _, _) in groups.items():
        for activation, backend, ms in (("Identity", "", identity), ("PReLU", "", prelu), ("LSLU", "cpu", lslu)):
            rows.append(dict(model=model, mode="train-step", provider=provider, activation=activation,
                             backend=backend, median_ms=str(ms)))
    rows.append(dict(model="resnet", mode="inference", provider="eager", activation="LSLU", backend="cpu",
                     median_ms="3.0"))  # no PReLU or Identity row of its own: no ratio, no share
    models.derive(rows)
    for r in rows[:-1]:
        identity, prelu, _, x_prelu, share = groups[r["model"], r["provider"]]
        if r["activation"] == "LSLU":
            assert (r["x_prelu"], r["activation_share_pct"]) == (x_prelu, share), r
        else:
            ms = float(r["median_ms"])
            assert r["x_prelu"] == f"{ms / prelu:.3f}", r
            assert r["activation_share_pct"] == f"{100 * (ms - identity) / ms:.1f}", r
    assert rows[-1]["x_prelu"] == rows[-1]["activation_share_pct"] == "", rows[-1]


def test_model_variants_replace_every_activation():
    """Each model built with a variant holds that activation at every activation site and no other, with the
    backend the row names; PWLU is past its ReLU phase, so its kernel runs."""
    models = _load("models")
    device = torch.device("cpu")
    for variant in models.variants(device):
        for name, model in models.MODELS.items():
            net = model.build(variant.make, models.SHAPES["smoke"][name])
            probe = variant.make(4, 1)
            sites = [m for m in net.modules() if type(m) is type(probe) and not isinstance(m, nn.Sequential)]
            others = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.PReLU)) and type(m) is not type(probe)]
            assert len(sites) == {"resnet": 7, "mlp-block": 1}[name] or variant.activation == "Identity", \
                f"{name} {variant.label}: {len(sites)} activation sites"
            assert not others, f"{name} {variant.label}: other activations left: {others}"
            for m in sites:
                assert getattr(m, "backend", None) == (variant.backend or None), f"{variant.label}: {m}"
                assert getattr(m, "_realigned", True), f"{variant.label} still in its ReLU phase"


def test_model_benchmark_compiles_what_the_targets_judge_by_default():
    """A ResNet training graph takes Inductor about a minute on a 2-core CPU: the default run compiles the
    targets' activation and the two bases in the targets' mode; --full compiles everything."""
    models, report = _load("models"), _load("report")
    every = models.variants(torch.device("cpu"))
    for mode in models.MODES:
        assert models.compiled_variants(every, "full", mode) == every
        targets = [t for t in report.MODEL_TARGETS if t[2] == mode]
        expected = {"Identity", "PReLU", *(t[1] for t in targets)} if targets else set()
        assert {v.activation for v in models.compiled_variants(every, "default", mode)} == expected, mode


def test_report_judges_the_model_target_on_gpus_only(tmp_path):
    report = _load("report")
    rows = [dict(model="resnet", activation="LSLU", backend="cuda", provider=provider, mode="train-step",
                 shape="128x3x64x64", x_prelu=ratio) for provider, ratio in (("eager", "1.050"),
                                                                              ("torch.compile", "1.200"))]
    gpu = report.model_target_lines(tmp_path / "models-nvidia-h200.csv", rows)
    assert [line.rsplit("— ", 1)[1] for line in gpu] == ["met", "MISSED"], gpu
    cpu = report.model_target_lines(tmp_path / "models-cpu-2threads.csv", rows)
    assert all("no verdict" in line for line in cpu) and "1.05×" in cpu[0], cpu
    assert "not measured" in report.model_target_lines(tmp_path / "models-x.csv", rows[:1])[1]


def test_model_report_section_and_result_files(model_results, tmp_path):
    """The model-level CSV is reported in a section of its own and is no activation results file (plots)."""
    _, out, rows = model_results
    report = _load("report")
    shutil.copy(out, tmp_path / out.name)
    assert report.result_files(tmp_path) == [] and report.model_files(tmp_path) == [tmp_path / out.name]
    section = report.model_section(tmp_path / out.name)
    table = [line for line in section if line.startswith("| resnet | train-step |")]
    assert len(table) == len({(r["activation"], r["backend"]) for r in rows}), "\n".join(section)


def test_run_hands_its_sweep_and_output_to_the_model_benchmark(tmp_path):
    run = _load("run")
    out = tmp_path / "cpu-test.csv"
    assert run.models_argv("smoke", out, 0.0) == ["--smoke", "--out", str(tmp_path / "models-cpu-test.csv"),
                                                  "--min-time", "0.0"]
    assert run.models_argv("full", out, None) == ["--full", "--out", str(tmp_path / "models-cpu-test.csv")]
    assert run.models_argv("default", None, None) == ["--no-save"]
    models = _load("models")
    local = models.results_path(torch.device("cpu"), "default")
    assert local == run.LOCAL_RESULTS_DIR / ("models-" + run.results_path(torch.device("cpu")).name)
    assert models.results_path(torch.device("cpu"), "full").parent == run.RESULTS_DIR

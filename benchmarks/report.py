"""Writes the README's results section from the committed results in ``benchmarks/results/``.

    python benchmarks/report.py            # print the section
    python benchmarks/report.py --write    # replace it in README.md

No figure in that section is typed by hand: ``tests/test_readme_results.py``
fails when the README differs from what this script makes of the committed
results. For each case, the latest row in the results file counts.
"""

import argparse
import csv
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BEGIN = "<!-- results:begin (written by benchmarks/report.py; do not edit by hand) -->"
END = "<!-- results:end -->"
CASE_KEY = ("op", "provider", "mode", "dtype", "shape", "layout")
REFERENCE_PROVIDERS = ("eager", "torch.compile", "torch.relu", "F.prelu")

# The speed targets the issues set, as (device kind, op, shape, layout, dtype, mode, measure, bound, issue).
# "compile"/"eager": the kernel's speedup over that provider; "pct_copy_bw": percentage of copy bandwidth.
TARGETS = [
    ("cpu", "lslu S=3", "16x64x56x56", "nchw", "float32", "forward+backward", "compile", 1.5, 3),
    ("cpu", "lslu S=3", "16x64x56x56", "nchw", "float32", "forward+backward", "eager", 4.0, 3),
    ("cpu", "pvlu", "16x64x56x56", "nchw", "float32", "forward+backward", "compile", 1.5, 4),
    ("cpu", "pwlu N=16", "16x64x56x56", "nchw", "float32", "forward+backward", "compile", 1.5, 4),
]
# GPU, at tensors of 64 MB and more, for every kernel backend: (issue, op, mode, % of copy bandwidth).
GPU_BANDWIDTH_TARGETS = [
    (3, "lslu S=1", "forward", 90), (3, "lslu S=1", "backward", 90),
    (3, "lslu S=3", "forward", 90), (3, "lslu S=3", "backward", 90),
    (4, "pvlu", "forward", 90), (4, "pvlu", "backward", 90),
    (4, "pwlu N=16", "forward", 90), (4, "pwlu N=16", "backward", 70),
]
GPU_COMPILE_TARGETS = [(3, "lslu S=1", 1.3), (3, "lslu S=3", 1.3)]  # forward+backward speedup over torch.compile
# The model-level benchmark (benchmarks/models.py), GPU only: (issue, activation, mode, providers, bound on the
# step time over the PReLU model's), for each model and kernel backend. A CPU run shows the ratio, no verdict.
MODEL_TARGETS = [(13, "LSLU", "train-step", ("eager", "torch.compile"), 1.10)]
MODEL_PREFIX = "models-"  # models-<device>.csv, beside <device>.csv
MODEL_KEY = ("model", "activation", "backend", "provider", "mode", "dtype", "shape")
# The per-call overhead (benchmarks/overhead.py, issue 13) and the fused full layer (benchmarks/layer.py, issue
# 15): overhead-<device>.csv and layer-<device>.csv beside <device>.csv; their verdicts are in their rows.
OVERHEAD_PREFIX, OVERHEAD_KEY = "overhead-", ("subject", "mode")
LAYER_PREFIX, LAYER_KEY = "layer-", ("shape", "mode", "provider")
SIDE_PREFIXES = (MODEL_PREFIX, OVERHEAD_PREFIX, LAYER_PREFIX)


def load_latest(path: pathlib.Path, key: tuple[str, ...] = CASE_KEY) -> list[dict]:
    """The rows of a results CSV, keeping for each case the last one written."""
    with path.open(newline="") as f:
        latest = {tuple(row[k] for k in key): row for row in csv.DictReader(f)}
    return list(latest.values())


def _device_order(name: str) -> tuple[bool, str]:
    for prefix in SIDE_PREFIXES:
        name = name.removeprefix(prefix)
    return not name.startswith("cpu-"), name


def result_files(results_dir: pathlib.Path = RESULTS_DIR) -> list[pathlib.Path]:
    """Benchmark results: CPU first, then GPUs by name (the static gate's tables and the model-level
    benchmark's are not activation benchmarks)."""
    return sorted((p for p in results_dir.glob("*.csv")
                   if p.name not in GATE_FILES and not p.name.startswith(SIDE_PREFIXES)),
                  key=lambda p: _device_order(p.name))


def model_files(results_dir: pathlib.Path = RESULTS_DIR, prefix: str = MODEL_PREFIX) -> list[pathlib.Path]:
    """The model-level benchmark's results (or the files of another ``prefix``), CPU first."""
    return sorted(results_dir.glob(prefix + "*.csv"), key=lambda p: _device_order(p.name))


# The static GPU gate's tables (benchmarks/gate_triton.py and the CUDA extension's gate), one row per
# compiled kernel, target, dtype, layout and shape.
GATE_FILES = {"gate-triton.csv": "Triton", "gate-cuda.csv": "CUDA"}
GATE_BAR_DTYPES = ("float16", "bfloat16", "float32")  # float64 only has to compile


def _kernel_family(kernel: str) -> str:
    """A kernel's family in the gate summary: a Triton kernel's name ("lslu S=3 backward"), a CUDA
    instance's kernel without its template values ("lslu_backward_rows S=3 pack=4" -> "lslu_backward_rows")."""
    return kernel.split()[0] if "_" in kernel.split()[0] else kernel


def gate_section(results_dir: pathlib.Path = RESULTS_DIR) -> list[str]:
    """Per backend and kernel family: the worst of each gate measure, and how many kernels meet the bar."""
    tables = [(results_dir / name, backend) for name, backend in GATE_FILES.items() if (results_dir / name).exists()]
    if not tables:
        return []
    lines = ["### Static GPU gate", "",
             "Every Triton kernel compiled for sm_80 and sm_90 with the arguments its host code passes on a GPU, "
             "no GPU needed (`python benchmarks/gate_triton.py`), and every instance in the built CUDA extension "
             "(`python benchmarks/gate_cuda.py`: cuobjdump's resource usage, and the SASS of the packed "
             "instances). The bar, for float16, bfloat16 and float32: no spill or local memory, 128-bit element "
             "accesses where shape and alignment allow them (narrower ones are the misaligned inputs, runs that "
             "are no multiple of 16 bytes and, in CUDA, the scalar instances and packs chosen narrower for "
             "registers), theoretical occupancy ≥ 25%; float64 only has to compile. The tests fail on any miss "
             "of a Triton kernel, and on local memory or a packed access narrower than its pack in a CUDA "
             "instance (CUDA occupancy is reported, not gated). Per kernel family, over its targets, layouts "
             "and shapes; registers, spills, access widths and occupancy of the float16/bfloat16/float32 rows:",
             "",
             "| backend | kernel | compiled | max registers | max spill bytes | element access bits | "
             "min occupancy | meet the bar |", "|---|---|---|---|---|---|---|---|"]
    for path, backend in tables:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        families = {}
        for r in rows:
            families.setdefault(_kernel_family(r["kernel"]), []).append(r)
        for family, group in families.items():
            compiled = [r for r in group if r["registers"] != ""]
            judged = [r for r in compiled if r["dtype"] in GATE_BAR_DTYPES]
            widths = [int(r["widest_access_bits"]) for r in judged if r["widest_access_bits"]]
            cells = [backend, family, f"{len(compiled)}/{len(group)}",
                     str(max((int(r["registers"]) for r in judged), default="–")),
                     str(max((int(r["spill_bytes"]) for r in judged), default="–")),
                     f"{min(widths)}–{max(widths)}" if widths else "–",
                     f"{min(float(r['occupancy']) for r in judged):.0%}" if judged else "–",
                     f"{sum(r['meets_bar'] == 'yes' for r in group)}/{len(group)}"]
            lines.append("| " + " | ".join(cells) + " |")
    files = ", ".join(f"`benchmarks/results/{path.name}`" for path, _ in tables)
    return lines + ["", f"Every compiled kernel's row: {files}.", ""]


def kernel_providers(rows: list[dict]) -> list[str]:
    """The project's backends in these rows, in the order they appear."""
    return list(dict.fromkeys(r["provider"] for r in rows if r["provider"] not in REFERENCE_PROVIDERS))


def _ms(row: dict | None) -> str:
    return "–" if row is None else f"{float(row['median_ms']):.3f}"


def _speedup(row: dict | None, over: dict | None) -> float | None:
    if row is None or over is None:
        return None
    return float(over["median_ms"]) / float(row["median_ms"])


def _times(speedup: float | None) -> str:
    return "–" if speedup is None else f"{speedup:.2f}×"  # None: the other provider was not run (--providers)


def _element_mb(row: dict) -> float:
    """MB of one input-sized tensor of this case."""
    nelements = 1
    for size in row["shape"].split("x"):
        nelements *= int(size)
    return nelements * (4 if row["dtype"] == "float32" else 2) / 1e6


def case_table(rows: list[dict], dtype: str, mode: str) -> list[str]:
    """One line per op, shape and layout: each provider's median ms; speedups and memory of the kernels."""
    kernels = kernel_providers(rows)
    by_key = {tuple(r[k] for k in CASE_KEY): r for r in rows}
    header = (["op", "shape", "layout"] + [f"{k} ms" for k in kernels]
              + [f"{p} ms" for p in REFERENCE_PROVIDERS]
              + [f"{k} ×eager / ×compile / % copy bw" for k in kernels])
    if mode == "forward+backward":
        header += ["saved for backward MB (" + " / ".join(kernels + ["eager", "compile"]) + ")",
                   "peak MB (" + " / ".join(kernels + ["eager", "compile"]) + ")"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cases = dict.fromkeys((r["op"], r["shape"], r["layout"]) for r in rows if r["dtype"] == dtype and r["mode"] == mode)
    for op, shape, layout in cases:
        get = {p: by_key.get((op, p, mode, dtype, shape, layout)) for p in kernels + list(REFERENCE_PROVIDERS)}
        cells = [op, shape, layout] + [_ms(get[p]) for p in kernels + list(REFERENCE_PROVIDERS)]
        for k in kernels:
            over_eager, over_compile = _speedup(get[k], get["eager"]), _speedup(get[k], get["torch.compile"])
            cells.append("–" if get[k] is None else
                         f"{_times(over_eager)} / {_times(over_compile)} / {get[k]['pct_copy_bw']}%")
        if mode == "forward+backward":
            for column in ("saved_mb", "peak_mb"):
                cells.append(" / ".join(get[p][column] or "?" if get[p] else "–"
                                        for p in kernels + ["eager", "torch.compile"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(path: pathlib.Path, rows: list[dict], history: list[dict] = ()) -> list[str]:
    """Each target the issues set for this kind of device, with the measured value and whether it is met.

    ``history``: every row of the file; for the CPU targets, the values of earlier runs are listed
    too, so a margin within the machine's run-to-run spread shows as such.
    """
    by_key = {tuple(r[k] for k in CASE_KEY): r for r in rows}
    lines = []
    if path.name.startswith("cpu-"):
        for _, op, shape, layout, dtype, mode, over, bound, issue in TARGETS:
            other_name = "eager" if over == "eager" else "torch.compile"
            kernel = by_key.get((op, "cpu", mode, dtype, shape, layout))
            value = _speedup(kernel, by_key.get((op, other_name, mode, dtype, shape, layout)))
            verdict = "not measured" if value is None else f"{value:.2f}× — {'met' if value >= bound else 'MISSED'}"
            runs = {}  # timestamp -> {provider: row}, for the earlier runs of this case
            for r in history:
                if (r["op"], r["mode"], r["dtype"], r["shape"], r["layout"]) == (op, mode, dtype, shape, layout) \
                        and r["timestamp"] != (kernel or {}).get("timestamp"):
                    runs.setdefault(r["timestamp"], {})[r["provider"]] = r
            earlier = [_speedup(run.get("cpu"), run.get(other_name)) for _, run in sorted(runs.items())]
            earlier = [f"{s:.2f}×" for s in earlier if s is not None]
            lines.append(f"- issue {issue}: `cpu` {op} {mode} at {shape} {layout} {dtype} ≥ {bound}× "
                         f"{'the eager reference' if over == 'eager' else 'torch.compile'}: {verdict}"
                         + (f" (earlier runs: {', '.join(earlier)})" if earlier else ""))
        return lines
    big = [r for r in rows if _element_mb(r) >= 64]
    for kernel in kernel_providers(rows):
        for issue, op, mode, bound in GPU_BANDWIDTH_TARGETS:
            measured = [r for r in big if (r["op"], r["mode"], r["provider"]) == (op, mode, kernel)]
            head = f"- issue {issue}: `{kernel}` {op} {mode} ≥ {bound}% of copy bandwidth at ≥ 64 MB"
            if not measured:
                lines.append(f"{head}: not measured")
                continue
            worst = min(measured, key=lambda r: float(r["pct_copy_bw"]))
            verdict = "met" if float(worst["pct_copy_bw"]) >= bound else "MISSED"
            lines.append(f"{head}: lowest {worst['pct_copy_bw']}% ({worst['shape']} {worst['layout']} "
                         f"{worst['dtype']}) — {verdict}")
        for issue, op, bound in GPU_COMPILE_TARGETS:
            speedups = [(_speedup(r, by_key.get((op, "torch.compile", *key[2:]))), r) for key, r in by_key.items()
                        if key[:3] == (op, kernel, "forward+backward") and _element_mb(r) >= 64]
            speedups = [(s, r) for s, r in speedups if s is not None]
            head = f"- issue {issue}: `{kernel}` {op} forward+backward ≥ {bound}× torch.compile at ≥ 64 MB"
            if not speedups:
                lines.append(f"{head}: not measured")
                continue
            worst, row = min(speedups, key=lambda pair: pair[0])
            lines.append(f"{head}: lowest {worst:.2f}× ({row['shape']} {row['layout']} {row['dtype']}) — "
                         f"{'met' if worst >= bound else 'MISSED'}")
    return lines


def model_target_lines(path: pathlib.Path, rows: list[dict]) -> list[str]:
    """The model-level targets (``MODEL_TARGETS``): on a GPU each measured ratio with its verdict; on a CPU
    the ratio alone (the issue sets them for GPUs, where the activations are a larger share of the step)."""
    on_cpu = path.name.removeprefix(MODEL_PREFIX).startswith("cpu-")
    lines = []
    for issue, activation, mode, providers, bound in MODEL_TARGETS:
        for provider in providers:
            measured = [r for r in rows if (r["activation"], r["mode"], r["provider"]) == (activation, mode, provider)
                        and r["x_prelu"]]
            head = f"- issue {issue}: {activation} model's {mode} ≤ {bound:.2f}× the PReLU model's, {provider}"
            if not measured:
                lines.append(f"{head}: not measured")
            for r in measured:
                ratio = float(r["x_prelu"])
                verdict = ("no verdict on a CPU (a GPU target)" if on_cpu
                           else "met" if ratio <= bound else "MISSED")
                lines.append(f"{head}, {r['model']} `{r['backend']}` {r['shape']}: {ratio:.2f}× — {verdict}")
    return lines


def model_section(path: pathlib.Path) -> list[str]:
    """One model-level results file: its runs, the targets, and per model and mode a table of the variants."""
    rows = load_latest(path, MODEL_KEY)
    lines = [f"### Model-level benchmark, {rows[0]['device']}", "",
             f"`{_shown(path)}` (`benchmarks/models.py`), the latest row of each case, from:", ""]
    runs = {}
    for r in rows:
        runs.setdefault(r["timestamp"], [r, 0])[1] += 1
    for timestamp, (r, count) in sorted(runs.items()):
        lines.append(f"- {timestamp[:16].replace('T', ' ')} UTC, commit {r['commit']}, torch {r['torch']}, "
                     f"triton {r['triton']}: {count} rows")
    targets = model_target_lines(path, rows)
    lines += ["", "Targets:", "", *targets, ""] if targets else [""]
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    header = ["model", "mode", "shape", "activation [backend]"] + [
        f"{p} {column}" for p in providers for column in ("ms", "×PReLU", "share %")]
    lines += ["Median ms of the step, its ratio to the PReLU model's and the activations' share of it "
              "((step − step with nn.Identity) / step):", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {tuple(r[k] for k in MODEL_KEY): r for r in rows}
    for model, mode, dtype, shape, activation, backend in dict.fromkeys(
            (r["model"], r["mode"], r["dtype"], r["shape"], r["activation"], r["backend"]) for r in rows):
        cells = [model, mode, shape, f"{activation} [{backend}]" if backend else activation]
        for p in providers:
            r = by_key.get((model, activation, backend, p, mode, dtype, shape))
            cells += ["–"] * 3 if r is None else [_ms(r), r["x_prelu"] or "–", r["activation_share_pct"] or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _runs(rows: list[dict]) -> list[str]:
    """One line per run (timestamp) that contributed rows."""
    runs = {}
    for r in rows:
        runs.setdefault(r["timestamp"], [r, 0])[1] += 1
    return [f"- {timestamp[:16].replace('T', ' ')} UTC, commit {r['commit']}, torch {r['torch']}, "
            f"triton {r['triton']}: {count} rows" for timestamp, (r, count) in sorted(runs.items())]


def overhead_section(path: pathlib.Path) -> list[str]:
    """The per-call overhead's latest rows: µs per call and the ratio to F.prelu, with the targets' verdicts."""
    rows = load_latest(path, OVERHEAD_KEY)
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lines = [f"### Per-call overhead, {rows[0]['device']}", "",
             f"`{_shown(path)}` (`benchmarks/overhead.py`, 64-element tensor), from:", "", *_runs(rows), "",
             "Median µs per call [ratio to `F.prelu`]; ops' targets: forward ≤ 2×, forward+backward ≤ 1.5×:", "",
             "| subject | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    by_key = {(r["subject"], r["mode"]): r for r in rows}
    for subject in dict.fromkeys(r["subject"] for r in rows):
        cells = []
        for mode in modes:
            r = by_key.get((subject, mode))
            verdict = "" if r is None or not r["target"] else (
                " met" if float(r["ratio_to_prelu"]) <= float(r["target"]) else " MISSED")
            cells.append("–" if r is None else f"{float(r['median_us']):.1f} [{float(r['ratio_to_prelu']):.2f}×]"
                                               f"{verdict}")
        lines.append(f"| {subject} | " + " | ".join(cells) + " |")
    return lines + [""]


def layer_section(path: pathlib.Path) -> list[str]:
    """The fused full layer's latest rows: median ms per provider and the fused layer's speedup over each."""
    rows = load_latest(path, LAYER_KEY)
    lines = [f"### The full layer fused, {rows[0]['device']}", "",
             f"`{_shown(path)}` (`benchmarks/layer.py`, float32 NCHW), from:", "", *_runs(rows), "",
             "Median ms [the fused layer's speedup over it]; issue 15's "
             + ("GPU target: the fused deploy forward ≤ 1.2× a copy of x (speedup ≥ 0.83×):"
                if "cpu" not in rows[0]["device"].lower() else
                "CPU targets: fused ≥ 1.8× unfused in deploy forward, ≥ 1.3× in the training step:"), ""]
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    lines += ["| shape | mode | " + " | ".join(providers) + " |", "|---|---|" + "---|" * len(providers)]
    by_key = {tuple(r[k] for k in LAYER_KEY): r for r in rows}
    for shape, mode in dict.fromkeys((r["shape"], r["mode"]) for r in rows):
        fused_row = by_key.get((shape, mode, "fused"))
        cells = []
        for provider in providers:
            r = by_key.get((shape, mode, provider))
            cells.append("–" if r is None or fused_row is None else
                         f"{float(r['median_ms']):.3f} [{float(r['median_ms']) / float(fused_row['median_ms']):.2f}×]")
        lines.append(f"| {shape} | {mode} | " + " | ".join(cells) + " |")
    return lines + [""]


def _shown(path: pathlib.Path) -> pathlib.Path:
    """``path`` relative to the repository when inside it (results elsewhere: a dry run's)."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def device_section(path: pathlib.Path) -> list[str]:
    rows = load_latest(path)
    lines = [f"### {rows[0]['device']}", "", f"`{_shown(path)}`, the latest row of each case, from:", ""]
    runs = {}  # one line per run (timestamp) that contributed rows
    for r in rows:
        runs.setdefault(r["timestamp"], [r, 0])[1] += 1
    for timestamp, (r, count) in sorted(runs.items()):
        lines.append(f"- {timestamp[:16].replace('T', ' ')} UTC, commit {r['commit']}, torch {r['torch']}, "
                     f"triton {r['triton']}, copy bandwidth {r['copy_gbps']} GB/s (large tensor copy, bytes read "
                     f"+ written): {count} rows")
    lines.append("")
    plots = sorted((path.parent / "plots").glob(path.stem + "-*.png"))
    if plots:
        lines += [" ".join(f"![{p.stem}]({_shown(p)})" for p in plots), ""]
    with path.open(newline="") as f:
        history = list(csv.DictReader(f))
    targets = target_lines(path, rows, history)
    if targets:
        lines += ["Targets:", "", *targets, ""]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        lines += [f"Forward+backward, {dtype}, median ms:", "", *case_table(rows, dtype, "forward+backward"), ""]
    return lines


def section(results_dir: pathlib.Path = RESULTS_DIR) -> str:
    lines = [BEGIN, "",
             "Generated by `python benchmarks/report.py --write` from the committed results; forward and "
             "backward alone are in the CSV files and the plots. ×eager and ×compile are speedups "
             "(higher is better); % copy bw is GB/s of the bytes the op must move (read x, dy; write y, dx) "
             "over the copy bandwidth; peak MB is one step's allocation above its inputs, saved MB what "
             "the autograd graph keeps for backward.", ""]
    for path in result_files(results_dir):
        lines += device_section(path)
    for path in model_files(results_dir):
        lines += model_section(path)
    for path in model_files(results_dir, LAYER_PREFIX):
        lines += layer_section(path)
    for path in model_files(results_dir, OVERHEAD_PREFIX):
        lines += overhead_section(path)
    lines += gate_section(results_dir)
    return "\n".join(lines + [END])


def replace_section(readme: str, new_section: str) -> str:
    begin, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:begin] + new_section + readme[end:]


def readme_section(readme: str) -> str:
    return readme[readme.index(BEGIN):readme.index(END) + len(END)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"replace the section in {README.name}")
    parser.add_argument("--results-dir", type=pathlib.Path, default=RESULTS_DIR,
                        help="results CSVs (and plots/) to report on; --write takes the committed ones only")
    args = parser.parse_args(argv)
    if args.write and args.results_dir.resolve() != RESULTS_DIR:
        parser.error("--write replaces the README's section with the committed results only")
    text = section(args.results_dir)
    if args.write:
        README.write_text(replace_section(README.read_text(), text))
        print(f"wrote the results section of {README}")
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())

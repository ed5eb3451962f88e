"""The README's benchmark results are generated from the committed results files, never typed by hand."""

import csv
import importlib.util
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

ROW = dict(op="lslu S=3", provider="cpu", mode="forward+backward", dtype="float32", shape="16x64x56x56",
           layout="nchw", median_ms="1.0", q20_ms="0.9", q80_ms="1.1", gbps="10.0", pct_copy_bw="50.0",
           peak_mb="25.7", saved_mb="12.8", device="test CPU", torch="2.13.0", triton="3.9.0", commit="abc",
           timestamp="2026-11-23T00:00:00+00:00", copy_gbps="20.0")


def _write(path: pathlib.Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROW))
        writer.writeheader()
        writer.writerows(rows)


def _results_changed_locally() -> bool:
    """True when benchmarks/results differs from the checked-out commit (a local benchmark run appended rows)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "benchmarks/results"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the files are as shipped
        return False
    return bool(out.strip())


def test_readme_section_is_what_the_report_makes_of_the_committed_results():
    if _results_changed_locally():
        pytest.skip("benchmarks/results has uncommitted rows from a local run: `python benchmarks/report.py "
                    "--write` and commit both to update the README")
    readme = (ROOT / "README.md").read_text()
    assert report.result_files(), "no committed results in benchmarks/results/"
    assert report.readme_section(readme) == report.section(), \
        "README results section is stale or edited by hand: run `python benchmarks/report.py --write`"


def test_the_latest_row_of_a_case_counts(tmp_path):
    path = tmp_path / "cpu-2threads.csv"
    _write(path, [ROW, {**ROW, "median_ms": "2.0"}, {**ROW, "provider": "eager", "median_ms": "5.0"}])
    rows = report.load_latest(path)
    assert sorted((r["provider"], r["median_ms"]) for r in rows) == [("cpu", "2.0"), ("eager", "5.0")]


def test_targets_are_judged_from_the_rows(tmp_path):
    path = tmp_path / "cpu-2threads.csv"
    compile_row = {**ROW, "provider": "torch.compile", "median_ms": "1.4"}
    eager_row = {**ROW, "provider": "eager", "median_ms": "4.2"}
    lines = report.target_lines(path, [ROW, compile_row, eager_row])
    assert "1.5× torch.compile: 1.40× — MISSED" in lines[0], lines[0]
    assert "4.0× the eager reference: 4.20× — met" in lines[1], lines[1]
    assert lines[2].endswith("not measured"), lines[2]
    earlier = [{**row, "timestamp": "2026-11-22T00:00:00+00:00", "median_ms": m}
               for row, m in ((ROW, "1.0"), (compile_row, "2.0"))]
    lines = report.target_lines(path, [ROW, compile_row, eager_row], earlier + [ROW, compile_row, eager_row])
    assert lines[0].endswith("1.40× — MISSED (earlier runs: 2.00×)"), lines[0]


def test_gpu_targets_are_judged_per_kernel_backend_at_64_mb_and_more(tmp_path):
    path = tmp_path / "nvidia-test-gpu.csv"
    big, small = "64x256x56x56", "8x64x28x28"  # 205 MB and 1.6 MB in float32
    gpu = {**ROW, "op": "pvlu", "shape": big, "device": "test GPU"}
    rows = [{**gpu, "provider": "cuda", "mode": "forward", "pct_copy_bw": "95.0"},
            {**gpu, "provider": "cuda", "mode": "backward", "pct_copy_bw": "85.0"},
            {**gpu, "provider": "cuda", "mode": "backward", "pct_copy_bw": "10.0", "shape": small},  # too small
            {**gpu, "provider": "triton", "mode": "forward", "pct_copy_bw": "91.0"},
            {**gpu, "op": "lslu S=3", "provider": "cuda", "mode": "forward+backward", "median_ms": "1.0"},
            {**gpu, "op": "lslu S=3", "provider": "torch.compile", "mode": "forward+backward", "median_ms": "1.2"}]
    lines = report.target_lines(path, rows)
    by_start = {line.split(" ≥ ")[0]: line for line in lines}
    assert by_start["- issue 4: `cuda` pvlu forward"].endswith("lowest 95.0% (64x256x56x56 nchw float32) — met")
    assert by_start["- issue 4: `cuda` pvlu backward"].endswith("lowest 85.0% (64x256x56x56 nchw float32) — MISSED")
    assert by_start["- issue 4: `triton` pvlu forward"].endswith("— met")
    assert by_start["- issue 4: `triton` pvlu backward"].endswith("not measured")
    assert by_start["- issue 3: `cuda` lslu S=3 forward+backward"].endswith("lowest 1.20× (64x256x56x56 nchw "
                                                                            "float32) — MISSED")


def test_gate_summary_has_the_worst_of_each_kernel_family(tmp_path):
    fields = ["kernel", "target", "dtype", "layout", "shape", "index", "num_warps", "registers", "spill_bytes",
              "shared_bytes", "widest_access_bits", "occupancy", "meets_bar"]
    row = dict(kernel="lslu S=3 backward", target="sm_90", dtype="float32", layout="nchw", shape="16x64x56x56",
               index="int32", num_warps="8", registers="62", spill_bytes="0", shared_bytes="1056",
               widest_access_bits="128", occupancy="0.500", meets_bar="yes")
    with (tmp_path / "gate-triton.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows([row, {**row, "target": "sm_80", "registers": "180", "spill_bytes": "8",
                                "widest_access_bits": "32", "occupancy": "0.125", "meets_bar": "no"},
                          {**row, "kernel": "pvlu forward", "registers": "56"},
                          {**row, "kernel": "pvlu forward", "dtype": "float64", "registers": "200",
                           "spill_bytes": "64", "occupancy": "0.125"}])
    _write(tmp_path / "cpu-2threads.csv", [ROW])
    assert [p.name for p in report.result_files(tmp_path)] == ["cpu-2threads.csv"], "the gate table is no benchmark"
    lines = report.gate_section(tmp_path)
    assert "| Triton | lslu S=3 backward | 2/2 | 180 | 8 | 32–128 | 12% | 1/2 |" in lines, lines
    # float64 only has to compile: its registers and spills are not the family's worst.
    assert "| Triton | pvlu forward | 2/2 | 56 | 0 | 128–128 | 50% | 2/2 |" in lines, lines
    assert not any(line.startswith("| CUDA") for line in lines), "no gate-cuda.csv here"

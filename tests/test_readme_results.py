"""The README's benchmark results are generated from the committed results files, never typed by hand."""

import csv
import importlib.util
import pathlib

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


def test_readme_section_is_what_the_report_makes_of_the_committed_results():
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

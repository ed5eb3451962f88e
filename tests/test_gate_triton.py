"""The static GPU gate: every Triton kernel compiles for sm_80 and sm_90 and meets the bar, no GPU needed.

``benchmarks/gate_triton.py`` compiles each kernel with the arguments its host function passes on a GPU
(in a subprocess without TRITON_INTERPRET) and measures the compiled code; this test runs it fresh and
fails once per kernel that misses the bar, with what it misses. Register counts change from one Triton
release to the next, so the committed table is checked for its rows, not for its numbers.

``LSLU_GATE_PYTHONPATH=DIR`` compiles with the Triton installed in DIR instead (``.ci/run`` runs this file
so with the oldest Triton the project claims): the same bar, and the same rows as that release's committed
table ``benchmarks/results/gate/triton-<major.minor>.csv`` where there is one.
"""

import csv
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("gate_triton", ROOT / "benchmarks" / "gate_triton.py")
gate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate)

pytest.importorskip("triton", reason="the gate compiles with Triton")


@pytest.fixture(scope="module")
def gate_report():
    return gate.run_gate()


def _label(row: dict) -> str:
    return f"{row['kernel']} {row['target']} {row['dtype']} {row['layout']} {row['shape']} {row['index']}"


# Misses known and open, each with why: (kernel, target, dtype, layout, shape) -> how its miss begins. Strict both
# ways: a miss outside this list fails, and so does a listed row that meets the bar now (remove it). None is open:
# every kernel meets the bar under Triton 3.6 and 3.9.
KNOWN_MISSES: dict[tuple, str] = {}


def _known_miss(row: dict) -> str | None:
    return KNOWN_MISSES.get((row["kernel"], row["target"], row["dtype"], row["layout"], row["shape"]))


def test_every_kernel_compiles_and_meets_the_bar(gate_report):
    rows = gate_report["rows"]
    assert rows, "the gate compiled nothing"
    missed = [f"{_label(r)}: {r['misses']}" for r in rows
              if r["meets_bar"] != "yes" and not (_known_miss(r) and r["misses"].startswith(_known_miss(r)))]
    assert not missed, f"{len(missed)} of {len(rows)} compiled kernels miss the bar:\n" + "\n".join(missed)


def test_known_misses_still_miss(gate_report):
    """A listed miss that meets the bar now must leave KNOWN_MISSES, so that the list stays true."""
    fixed = [_label(r) for r in gate_report["rows"] if _known_miss(r) and r["meets_bar"] == "yes"]
    assert not fixed, "these meet the bar now; remove them from KNOWN_MISSES:\n" + "\n".join(fixed)


def test_the_matrix_covers_every_op_direction_dtype_layout_and_target(gate_report):
    # A host function that launches several kernels names each: "<op> <direction> (<kernel>)".
    got = {(r["kernel"].split(" (")[0], r["target"], r["dtype"], r["layout"], r["shape"]) for r in gate_report["rows"]}
    for case in gate.cases():
        for target in gate.TARGETS:
            key = (case.kernel, target, case.dtype, case.layout_name, "x".join(map(str, case.shape)))
            assert key in got, f"no compiled kernel for {key}"


def _committed_rows(path: pathlib.Path) -> list[dict]:
    with path.open(newline="") as f:
        committed = list(csv.DictReader(f))
    assert committed and list(committed[0]) == gate.FIELDS, f"columns of {path.name}"
    return committed


def _release_table(version: str) -> pathlib.Path:
    """The committed table of Triton ``version``'s release (major.minor)."""
    return gate.RESULTS.parent / "gate" / f"triton-{'.'.join(version.split('.')[:2])}.csv"


def test_committed_table_has_the_rows_of_a_fresh_run(gate_report):
    fresh = sorted(gate.row_key(r) for r in gate_report["rows"])
    tables = [gate.RESULTS] + [t for t in [_release_table(gate_report["triton"] or "none")] if t.exists()]
    for table in tables:
        assert sorted(gate.row_key(r) for r in _committed_rows(table)) == fresh, \
            f"{table.name} is stale: run `python benchmarks/gate_triton.py --out {table.relative_to(ROOT)}` " \
            f"(with LSLU_GATE_PYTHONPATH for an older Triton) and commit it"


def test_committed_tables_meet_the_bar():
    """Every committed table (the newest Triton's and the per-release ones) records every kernel meeting the bar."""
    for table in [gate.RESULTS, *sorted((gate.RESULTS.parent / "gate").glob("triton-*.csv"))]:
        missed = [f"{_label(r)}" for r in _committed_rows(table) if r["meets_bar"] != "yes" and not _known_miss(r)]
        assert not missed, f"{table.name} records kernels that miss the bar:\n" + "\n".join(missed)


def test_access_widths_follow_the_pointer_parameter():
    ptx = "\n".join([
        "ld.param.b64 %rd1, [k_param_0];",
        "ld.param.b64 %rd2, [k_param_1];",
        "mad.wide.s32 %rd3, %r5, 4, %rd1;",
        "add.s64 %rd4, %rd2, %rd6;",
        "@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd3 + 0 ];",
        "@%p1 st.global.b16 [ %rd4 + 0 ], { %rs1 };",
    ])
    assert gate.access_widths(ptx) == {0: 128, 1: 16}


def test_occupancy_from_registers_warps_and_shared_memory():
    # 64 registers x 32 threads = 2048 per warp: 32 warps fit, 4 blocks of 8 warps (50%).
    assert gate.occupancy(64, 8, 0, 228 * 1024) == 0.5
    # 180 registers round up to 5888 per warp: 11 warps, 2 blocks of 4 warps (12.5%).
    assert gate.occupancy(180, 4, 0, 228 * 1024) == 0.125
    # Shared memory limits: 100 KiB per block leaves room for 1 block on sm_80 (164 KiB).
    assert gate.occupancy(32, 4, 100 * 1024, 164 * 1024) == 4 / 64

"""Draws the benchmark results: speedup over eager and % of copy bandwidth, per op, case and provider.

    python benchmarks/plot.py                          # every file in benchmarks/results/
    python benchmarks/plot.py benchmarks/results/x.csv --out-dir /tmp/plots

For each results file ``<device>.csv`` it writes ``<device>-speedup.png`` and
``<device>-bandwidth.png`` into ``benchmarks/results/plots/`` (or ``--out-dir``):
one panel per op (columns) and mode (rows), one group of bars per case
(shape, layout, dtype), one bar per provider. The latest row of each case counts.
"""

import argparse
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from report import RESULTS_DIR, load_latest, result_files  # noqa: E402

MODES = ("forward", "backward", "forward+backward")
MEASURES = {  # file suffix: (y-axis label, value of a row given the eager row of its case)
    "speedup": ("speedup over eager (log scale)",
                lambda row, eager: float(eager["median_ms"]) / float(row["median_ms"])),
    "bandwidth": ("% of copy bandwidth", lambda row, eager: float(row["pct_copy_bw"])),
}


def plot_file(path: pathlib.Path, out_dir: pathlib.Path) -> list[pathlib.Path]:
    rows = load_latest(path)
    ops = list(dict.fromkeys(r["op"] for r in rows))
    all_providers = list(dict.fromkeys(r["provider"] for r in rows))
    cases = list(dict.fromkeys((r["shape"], r["layout"], r["dtype"]) for r in rows))
    by_key = {(r["op"], r["provider"], r["mode"], r["shape"], r["layout"], r["dtype"]): r for r in rows}
    written = []
    for suffix, (ylabel, value) in MEASURES.items():
        # eager is the line at 1 in the speedup plot
        providers = [p for p in all_providers if suffix != "speedup" or p != "eager"]
        fig, axes = plt.subplots(len(MODES), len(ops), figsize=(4.5 * len(ops), 3.2 * len(MODES) + 1.5),
                                 squeeze=False, sharex=True)
        width = 0.8 / len(providers)
        for col, op in enumerate(ops):
            for row_index, mode in enumerate(MODES):
                ax = axes[row_index][col]
                for i, provider in enumerate(providers):
                    xs, ys = [], []
                    for j, case in enumerate(cases):
                        row, eager = by_key.get((op, provider, mode, *case)), by_key.get((op, "eager", mode, *case))
                        if row is not None and eager is not None:
                            xs.append(j + (i - (len(providers) - 1) / 2) * width)
                            ys.append(value(row, eager))
                    ax.bar(xs, ys, width, label=provider)
                if suffix == "speedup":
                    ax.set_yscale("log")
                    ax.axhline(1.0, color="black", linewidth=0.8)
                else:
                    ax.axhline(100.0, color="black", linewidth=0.8)
                ax.set_title(f"{op}, {mode}", fontsize=10)
                ax.grid(axis="y", alpha=0.3)
                if col == 0:
                    ax.set_ylabel(ylabel, fontsize=8)
                ax.set_xticks(range(len(cases)), ["\n".join(case) for case in cases], fontsize=6, rotation=90)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.suptitle(f"{rows[0]['device']}, torch {rows[0]['torch']}: {ylabel}", y=0.995, fontsize=11)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.975), ncol=len(providers), fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        out = out_dir / f"{path.stem}-{suffix}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        plt.close(fig)
        written.append(out)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=pathlib.Path, help="results CSVs (default: all committed ones)")
    parser.add_argument("--out-dir", type=pathlib.Path, default=RESULTS_DIR / "plots")
    args = parser.parse_args(argv)
    for path in args.files or result_files():
        for out in plot_file(path, args.out_dir):
            print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())

"""Draw what a :class:`~lslu_kernels.ParameterRecorder` recorded: parameter trajectories and learned curves.

    python -m lslu_kernels.plot_params params.jsonl --out params.png

One row per activation module: its parameters against the step, then its
activation curve per channel at the last recorded step, computed by the
reference functions (``lslu_kernels.reference``) on a grid of inputs. The
panels, the curve's range and its marks are each op's, from
``lslu_kernels.registry``. Needs
matplotlib (``pip install "lslu-kernels[plot]"``).
"""

import argparse
import collections

import torch

from . import registry
from .recorder import load_records


def activation_curve(op: str, params: dict, grid: torch.Tensor, realigned: bool = True) -> torch.Tensor:
    """The activation of each channel at the inputs ``grid`` (1-D): a ``(len(grid), channels)`` float64 tensor.

    ``op`` is a record's label (``"LSLU"``); ``realigned=False``: the module is still ReLU (PWLU's phase I).
    """
    activation = registry.by_label(op)
    tensors = [torch.tensor(params[name], dtype=torch.float64) for name in activation.params]
    channels = tensors[0].shape[activation.param_channel_axis[0]]
    x = grid.to(torch.float64)[:, None].expand(-1, channels)
    if not realigned:  # the parameters are not used yet
        return torch.relu(x)
    return activation.reference(x, *tensors, channel_dim=1)


def _default_range(activation: registry.Activation, params: dict, realigned: bool) -> tuple[float, float]:
    if realigned and activation.curve_range is not None:
        return activation.curve_range(params)
    return -4.0, 4.0


def _by_module(records: list[dict]) -> dict[str, list[dict]]:
    modules = collections.defaultdict(list)
    for line in records:
        modules[line["module"]].append(line)
    return {name: sorted(lines, key=lambda line: line["step"]) for name, lines in modules.items()}


def plot_records(records: list[dict], out: str, *, max_channels: int = 16,
                 x_range: tuple[float, float] | None = None) -> None:
    """Draw ``records`` (from :func:`~lslu_kernels.recorder.load_records`) and save the figure to ``out``."""
    # A bare Figure renders to files without pyplot, so the caller's matplotlib backend is left alone.
    from matplotlib.figure import Figure

    modules = _by_module(records)
    figure = Figure(figsize=(13, 3.2 * len(modules)))
    axes = figure.subplots(len(modules), 3, squeeze=False)
    for row, (name, lines) in zip(axes, modules.items()):
        op = lines[0]["op"]
        activation = registry.by_label(op)
        steps = [line["step"] for line in lines]
        panels = activation.trajectory_panels
        for ax, (title, names) in zip(row, panels):
            _plot_trajectories(ax, activation, steps, lines, names, max_channels)
            ax.set_title(f"{name} ({op}): {title}", fontsize=9)
            ax.set_xlabel("step")
        for ax in row[len(panels):2]:  # an op with one trajectory panel
            ax.axis("off")
        last = lines[-1]
        realigned = last.get("realigned", True)
        lo, hi = x_range or _default_range(activation, last["params"], realigned)
        grid = torch.linspace(lo, hi, 401, dtype=torch.float64)
        curves = activation_curve(op, last["params"], grid, realigned)
        _plot_curves(row[2], grid, curves, max_channels)
        if realigned and activation.curve_marks is not None:
            _plot_marks(row[2], *activation.curve_marks(last["params"]), max_channels)
        phase = "" if realigned else ", phase I: ReLU"
        row[2].set_title(f"{name} ({op}): curve at step {last['step']}{phase}", fontsize=9)
        row[2].set_xlabel("x")
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def _colors(count: int):
    import matplotlib
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(count - 1, 1)) for i in range(count)]


def _plot_trajectories(ax, activation, steps, lines, names, max_channels):
    """One line per channel (and per stage for LSLU); several parameters share a panel by line style."""
    for name, style in zip(names, ("-", "--")):
        values = torch.tensor([line["params"][name] for line in lines], dtype=torch.float64)
        # (steps, stages, C): the channel axis last, the parameter's other axes (LSLU's stages) flattened.
        axis = activation.param_channel_axis[activation.params.index(name)]
        values = values.movedim(1 + axis, -1).reshape(len(lines), -1, values.shape[1 + axis])
        stages, channels = values.shape[1], min(values.shape[2], max_channels)
        # LSLU: color by stage; the per-channel parameters of the other ops: color by channel.
        colors = _colors(stages) if stages > 1 else _colors(channels)
        for s in range(stages):
            for c in range(channels):
                color = colors[s] if stages > 1 else colors[c]
                label = f"stage {s}" if stages > 1 and c == 0 else (name if c == 0 and len(names) > 1 else None)
                ax.plot(steps, values[:, s, c], style, color=color, linewidth=0.8, label=label)
        if stages > 1 or len(names) > 1:
            ax.legend(fontsize=7)


def _plot_curves(ax, grid, curves, max_channels):
    channels = min(curves.shape[1], max_channels)
    for c, color in zip(range(channels), _colors(channels)):
        ax.plot(grid, curves[:, c], color=color, linewidth=0.9)
    ax.plot(grid, torch.relu(grid), ":", color="black", linewidth=0.8, label="ReLU")
    shown = f"{channels} of {curves.shape[1]} channels" if channels < curves.shape[1] else \
        f"{channels} channel{'s' if channels > 1 else ''}"
    ax.legend(title=shown, fontsize=7, title_fontsize=7)


def _plot_marks(ax, x, y, max_channels):
    """Points of each channel's curve (PWLU's knots): ``x`` and ``y`` of shape (channels, K)."""
    channels = min(x.shape[0], max_channels)
    for c, color in zip(range(channels), _colors(channels)):
        ax.plot(x[c], y[c], ".", color=color, markersize=3)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lslu_kernels.plot_params",
        description="Draw the parameter trajectories and learned activation curves that lk.ParameterRecorder saved.")
    parser.add_argument("records", help="JSON lines written by ParameterRecorder.save")
    parser.add_argument("--out", required=True, help="the figure to write (PNG)")
    parser.add_argument("--max-channels", type=int, default=16, help="channels drawn per module (default 16)")
    parser.add_argument("--x-range", type=float, nargs=2, metavar=("LO", "HI"),
                        help="inputs of the curves (default: [-4, 4]; a realigned PWLU's bounds plus a margin)")
    args = parser.parse_args(argv)
    plot_records(load_records(args.records), args.out, max_channels=args.max_channels,
                 x_range=tuple(args.x_range) if args.x_range else None)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

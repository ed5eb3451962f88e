"""The model-level benchmark: a training step and an inference pass of small models with every activation replaced.

    python benchmarks/models.py            # the device's sizes; saved under results/local/models-<device>.csv
    python benchmarks/models.py --full     # every kernel backend of each op, appended to results/models-<device>.csv
    python benchmarks/models.py --smoke    # tiny sizes, printed only (tests, dry runs)

``benchmarks/run.py`` runs it after the activation sweep (``--no-models`` skips it).

Two models, each built once per activation with the same seed (so every
variant has the same weights): a small ResNet-style CNN (a 3x3 stem conv, BN
and the activation, then three residual basic blocks of 32, 64 and 128
channels, global pooling and a linear classifier) and a transformer MLP block
(``x + fc2(act(fc1(LayerNorm(x))))``, width 4d, the activation over the last
axis). The activations: ``nn.Identity`` (no activation, the base of the share
below), ``nn.ReLU``, ``nn.PReLU(channels)`` and each registered activation's
module (``lslu_kernels.registry``; per-channel parameters, PWLU realigned so
that its kernel runs) with the device's default kernel backend, or with
``--full`` every kernel backend that serves the device; each row names the
backend that ran.

Modes: ``train-step`` (zero_grad, forward, loss, backward, optimizer step:
SGD with momentum for the CNN, AdamW for the MLP block) and ``inference``
(eval, no_grad, forward). Providers: eager, ``torch.compile(model)`` (default
mode; loss and optimizer stay eager) and, on a GPU, ``torch.compile(model,
mode="reduce-overhead")`` (CUDA graphs), which is left out with a note if it
fails; by default the compiled providers time what the targets
(``benchmarks/report.py``) judge, the training steps with Identity, PReLU and
LSLU, and ``--full`` every variant in both modes. Every variant and provider of one model and mode is timed in turns
(``run.measure_in_turns``: one step of each per round), so the machine's load
weighs on all of them alike. Per row: median and 20%/80% quantiles; ×PReLU,
the step time over the PReLU model's (same model, mode and provider); and the
activations' share of the step, measured as the marginal cost
``(step - step with nn.Identity activations) / step``: what the activation
costs the model, including any fusion it prevents (under ``torch.compile``
ReLU fuses into its neighbours and costs about nothing).
"""

import argparse
import dataclasses
import pathlib
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run  # noqa: E402  (the runner's timing and metadata, shared)

from lslu_kernels import _backends, registry  # noqa: E402

MODES = ("train-step", "inference")
FIELDS = ["model", "activation", "backend", "provider", "mode", "dtype", "shape", "median_ms", "q20_ms", "q80_ms",
          "x_prelu", "activation_share_pct", "note", "device", "torch", "triton", "commit", "timestamp"]
BASE, PRELU = "Identity", "PReLU"  # the share's base and the ratio's
EAGER, COMPILE, REDUCE_OVERHEAD = "eager", "torch.compile", "torch.compile reduce-overhead"


@dataclasses.dataclass(frozen=True)
class Variant:
    """An activation as the models use it: ``make(channels, channel_dim)`` builds one instance."""
    activation: str  # "ReLU", "LSLU", ...
    backend: str  # the lslu_kernels backend it runs on; "" for torch's modules
    make: Callable[[int, int], nn.Module]

    @property
    def label(self) -> str:
        return f"{self.activation} [{self.backend}]" if self.backend else self.activation


class ChannelPReLU(nn.PReLU):
    """``nn.PReLU(channels)`` with its channels on axis 1 (nn.PReLU's) or on the last axis (the MLP block's)."""

    def __init__(self, channels: int, channel_dim: int):
        if channel_dim not in (1, -1):
            raise ValueError(f"ChannelPReLU: channel_dim must be 1 or -1, got {channel_dim}")
        super().__init__(channels)
        self.channel_dim = channel_dim

    def forward(self, x):
        if self.channel_dim == 1:
            return F.prelu(x, self.weight)
        return F.prelu(x.reshape(-1, x.shape[-1]), self.weight).view(x.shape)  # rows of channels: axis 1


def _project_module(cls: type, backend: str) -> Callable[[int, int], nn.Module]:
    def make(channels, channel_dim):
        module = cls(channels, channel_dim=channel_dim, backend=backend)
        entry = registry.module_entry(module)
        if entry.realigned is not None and not entry.realigned(module):
            module.realign()  # out of its ReLU phase (PWLU's statistics phase): the kernel runs
        return module
    return make


def activation_names() -> list[str]:
    """Every activation the models are built with: torch's, then each registered module's label."""
    return [BASE, "ReLU", PRELU] + [a.label for a in registry.activations()
                                    if registry.conversion_module(a.name, "shared") is not None]


def variants(device: torch.device, backends: list[str] | None = None) -> list[Variant]:
    """Identity, ReLU, PReLU, then each registered activation's module on ``device``'s default backend, or on
    each of ``backends`` that has the op's kernels."""
    out = [Variant(BASE, "", lambda c, d: nn.Identity()), Variant("ReLU", "", lambda c, d: nn.ReLU()),
           Variant(PRELU, "", ChannelPReLU)]
    for activation in registry.activations():
        cls = registry.conversion_module(activation.name, "shared")
        if cls is None:
            continue
        names = [_backends.resolve(None, device, activation.name)] if backends is None else \
            [b for b in backends if b == "reference" or _backends.has_kernels(b, activation.name)]
        out += [Variant(activation.label, b, _project_module(cls, b)) for b in names]
    return out


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BN, the activation after the first and after the sum."""

    def __init__(self, cin: int, cout: int, stride: int, act: Callable[[int, int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act(cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = act(cout, 1)

    def forward(self, x):
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, act: Callable[[int, int], nn.Module], widths=(32, 64, 128), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  act(widths[0], 1))
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(cin, width, 1 if i == 0 else 2, act))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class MLPBlock(nn.Module):
    """A transformer block's MLP half: ``x + fc2(act(fc1(LayerNorm(x))))``, the activation over the last axis."""

    def __init__(self, act: Callable[[int, int], nn.Module], dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = act(4 * dim, -1)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    build: Callable[[Callable[[int, int], nn.Module], tuple[int, ...]], nn.Module]
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    # loss(output, target); target(output shape, device) makes the fixed target of the training step
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    target: Callable[[torch.Size, torch.device, torch.Generator], torch.Tensor]


# Small learning rates: the timed steps (hundreds) must not drive PWLU's bounds across each other.
MODELS = {
    "resnet": Model("resnet", lambda act, shape: SmallResNet(act),
                    lambda params: torch.optim.SGD(params, lr=1e-4, momentum=0.9),
                    F.cross_entropy,
                    lambda shape, device, gen: torch.randint(0, shape[-1], shape[:1], generator=gen).to(device)),
    "mlp-block": Model("mlp-block", lambda act, shape: MLPBlock(act, shape[-1]),
                       lambda params: torch.optim.AdamW(params, lr=1e-5),
                       F.mse_loss,
                       lambda shape, device, gen: torch.randn(shape, generator=gen).to(device)),
}
# Input shapes per sweep and device: a CPU training step of tens of ms; on a GPU, activations of tens of MB.
SHAPES = {
    "smoke": {"resnet": (2, 3, 16, 16), "mlp-block": (2, 8, 32)},
    "cpu": {"resnet": (8, 3, 32, 32), "mlp-block": (8, 64, 256)},
    "cuda": {"resnet": (128, 3, 64, 64), "mlp-block": (16, 512, 768)},
}


def shapes(device: torch.device, sweep: str) -> dict[str, tuple[int, ...]]:
    return SHAPES["smoke" if sweep == "smoke" else device.type]


def providers(device: torch.device, sweep: str) -> tuple[str, ...]:
    """Eager and torch.compile (on a GPU also reduce-overhead); the smoke sweep compiles only when asked
    (--providers): a compile costs as much at its tiny sizes as at the real ones."""
    if sweep == "smoke":
        return (EAGER,)
    return (EAGER, COMPILE, REDUCE_OVERHEAD) if device.type == "cuda" else (EAGER, COMPILE)


def make_step(model: Model, variant: Variant, shape: tuple[int, ...], mode: str, provider: str,
              device: torch.device) -> Callable[[], object]:
    """One training step or inference pass of ``model`` with ``variant``'s activations, as ``provider`` runs it."""
    torch.manual_seed(0)  # every variant starts from the same weights
    net = model.build(variant.make, shape).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(device)
    forward = net
    if provider == COMPILE:
        forward = torch.compile(net)
    elif provider == REDUCE_OVERHEAD:
        forward = torch.compile(net, mode="reduce-overhead")

    def begin():
        if provider == REDUCE_OVERHEAD:  # a new iteration: the graphs may overwrite the last one's outputs
            torch.compiler.cudagraph_mark_step_begin()

    if mode == "inference":
        net.eval()

        @torch.no_grad()
        def inference():
            begin()
            return forward(x)
        return inference
    net.train()
    target = model.target(net(x).shape, device, gen)
    optimizer = model.optimizer(list(net.parameters()))

    def train_step():
        begin()
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(forward(x), target)
        loss.backward()
        optimizer.step()
        return loss
    return train_step


def derive(rows: list[dict]) -> None:
    """Fill each row's ``x_prelu`` and ``activation_share_pct`` from the rows of the same model, mode and provider."""
    by_key = {(r["model"], r["mode"], r["provider"], r["activation"]): r for r in rows if not r["backend"]}
    for r in rows:
        prelu, base = (by_key.get((r["model"], r["mode"], r["provider"], a)) for a in (PRELU, BASE))
        median = float(r["median_ms"])
        r["x_prelu"] = "" if prelu is None else f"{median / float(prelu['median_ms']):.3f}"
        r["activation_share_pct"] = "" if base is None else f"{100 * (median - float(base['median_ms'])) / median:.1f}"


def _recompile_limit(n: int):
    """Every variant compiles the same forward code: raise dynamo's per-code recompile limit for them."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch({name: max(n, getattr(config, name))})


def compiled_variants(variants_: list[Variant], sweep: str, mode: str) -> list[Variant]:
    """The variants compiled in ``mode``: all with --full, else what the targets judge, their activations and
    the bases in their modes (Inductor takes about a minute per ResNet training graph on a 2-core CPU)."""
    if sweep == "full":
        return variants_
    targets = run._report().MODEL_TARGETS
    if mode not in {target[2] for target in targets}:
        return []
    return [v for v in variants_ if v.activation in (BASE, PRELU, *(target[1] for target in targets))]


def measure_models(device: torch.device, sweep: str = "default", min_time: float = 0.5, *,
                   models=tuple(MODELS), modes=MODES, provider_names=None, activations=None, backends=None,
                   meta: dict | None = None, console: Console | None = None,
                   save_to: pathlib.Path | None = None) -> list[dict]:
    """Rows (``FIELDS``) for every model, mode, activation variant and provider; per model and mode, a table
    printed and the rows appended to ``save_to`` as soon as they are timed."""
    meta = meta if meta is not None else metadata(device)
    if backends is None and sweep == "full":
        backends = run.kernel_backends(device)
    elif backends is not None and list(backends) == ["default"]:
        backends = None
    for name in backends or ():
        _backends.resolve(name, device, "models.py")  # a clear error for a backend that cannot run here
    chosen = [v for v in variants(device, backends)
              if activations is None or v.activation in (*activations, BASE, PRELU)]
    if provider_names is None:
        provider_names = providers(device, sweep)
    elif REDUCE_OVERHEAD in provider_names and device.type != "cuda":
        raise ValueError(f"{REDUCE_OVERHEAD} needs a GPU (CUDA graphs)")
    rows = []
    for name in models:
        model, shape = MODELS[name], shapes(device, sweep)[name]
        for mode in modes:
            torch._dynamo.reset()  # a fresh compile per model and mode
            compiled = compiled_variants(chosen, sweep, mode)
            todo = [(v, p) for p in provider_names for v in (chosen if p == EAGER else compiled)]
            if console is not None:
                compiles = sum(p != EAGER for _, p in todo)
                console.print(f"{name} {mode} {'x'.join(map(str, shape))}: {len(todo)} steps timed in turns"
                              + (f", {compiles} of them compiled first" if compiles else ""), highlight=False)
            steps, notes, failed = {}, {}, {}  # notes per (variant, provider); failed: provider -> why
            with _recompile_limit(4 * len(chosen)):
                for variant, provider in todo:
                    if provider in failed:
                        continue
                    step = make_step(model, variant, shape, mode, provider, device)
                    skips = _cudagraph_skips()
                    try:
                        step()  # compiles here, not inside the measurement
                    except Exception as exc:
                        if provider != REDUCE_OVERHEAD:
                            raise
                        # reduce-overhead is left out as a whole, so that its rows compare like with like
                        failed[provider] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                        steps = {key: s for key, s in steps.items() if key[1] != provider}
                        continue
                    if provider == REDUCE_OVERHEAD and _cudagraph_skips() > skips:
                        notes[variant, provider] = "Inductor skipped CUDA graphs for some of its graphs"
                    steps[variant, provider] = step
                timed = measure_in_turns(steps, device, min_time)
            group = []
            for (variant, provider), (median, q20, q80) in timed.items():
                group.append(dict(model=name, activation=variant.activation, backend=variant.backend,
                                  provider=provider, mode=mode, dtype="float32", shape="x".join(map(str, shape)),
                                  median_ms=f"{median:.4f}", q20_ms=f"{q20:.4f}", q80_ms=f"{q80:.4f}",
                                  note=notes.get((variant, provider), ""), **meta))
            derive(group)
            rows += group
            if save_to is not None:
                run.append_rows(save_to, group, FIELDS)
            if console is not None:
                console.print(table(group, failed))
    return rows


def _cudagraph_skips() -> int:
    from torch._dynamo.utils import counters
    return counters["inductor"]["cudagraph_skips"]


def measure_in_turns(steps: dict, device: torch.device, min_time: float) -> dict:
    """``run.measure_in_turns`` over (variant, provider) keys (it takes names)."""
    keys = {f"{variant.label} / {provider}": (variant, provider) for variant, provider in steps}
    timed = run.measure_in_turns({name: steps[key] for name, key in keys.items()}, device, min_time)
    return {keys[name]: result for name, result in timed.items()}


def table(rows: list[dict], failed: dict[str, str] | None = None) -> Table:
    """One model and mode: per activation, each provider's median ms, ×PReLU and activation share; the
    caption says which providers failed and the rows' notes."""
    first = rows[0]
    title = (f"{first['model']} {first['mode']} {first['dtype']} {first['shape']}: median ms (q20–q80) "
             r"\[×PReLU] activations' share of the step (step − Identity step) / step")
    table = Table(title=title, title_justify="left")
    table.add_column(escape("activation [backend]"), justify="left")
    provider_names = list(dict.fromkeys(r["provider"] for r in rows))
    for p in provider_names:
        table.add_column(p, justify="right")
    by_key = {(r["activation"], r["backend"], r["provider"]): r for r in rows}
    for activation, backend in dict.fromkeys((r["activation"], r["backend"]) for r in rows):
        cells = []
        for p in provider_names:
            r = by_key.get((activation, backend, p))
            if r is None:
                cells.append("–")
                continue
            ratio = f"{float(r['x_prelu']):.2f}×" if r["x_prelu"] else "–"
            share = f"{r['activation_share_pct']}%" if r["activation_share_pct"] else "–"
            cells.append(escape(f"{float(r['median_ms']):.2f} ({float(r['q20_ms']):.2f}–{float(r['q80_ms']):.2f}) "
                                f"[{ratio}] {share}"))
        table.add_row(escape(f"{activation} [{backend}]" if backend else activation), *cells)
    captions = [f"{provider}: {why}" for provider, why in (failed or {}).items()]
    captions += [f"{r['activation']} {r['provider']}: {r['note']}" for r in rows if r["note"]]
    table.caption = escape("; ".join(captions)) or None
    return table


def metadata(device: torch.device) -> dict:
    return run.run_metadata(device)


def results_path(device: torch.device, sweep: str) -> pathlib.Path:
    """``models-<device>.csv`` next to the activation sweep's results file."""
    main = run.results_path(device)
    return (run.RESULTS_DIR if sweep == "full" else run.LOCAL_RESULTS_DIR) / ("models-" + main.name)


def main(argv=None, *, console: Console | None = None, meta: dict | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--full", action="store_true", help="every kernel backend of each op, appended to the "
                                                           "committed benchmarks/results/models-<device>.csv")
    sweep.add_argument("--smoke", action="store_true", help="tiny sizes; printed, saved only with --out")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--providers", nargs="+", choices=[EAGER, COMPILE, REDUCE_OVERHEAD], default=None,
                        help="default: eager and torch.compile, on a GPU also reduce-overhead; --smoke: eager")
    parser.add_argument("--activations", nargs="+", choices=activation_names(), default=None,
                        help="only these (and Identity and PReLU, the bases of the share and the ratio)")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="the backends of the lslu_kernels modules, or 'default' (the device's default "
                             "backend, the default without --full; --full: every kernel backend of the device)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds to time each variant (default: 1 with --full, 0.5, 0.05 with --smoke)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="CSV to append to")
    parser.add_argument("--no-save", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    sweep = "full" if args.full else "smoke" if args.smoke else "default"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    min_time = args.min_time if args.min_time is not None else {"smoke": 0.05, "default": 0.5, "full": 1.0}[sweep]
    console = console or Console(width=None if Console().is_terminal else 160)
    save = not args.no_save and (args.out is not None or sweep != "smoke")
    path = args.out or results_path(device, sweep)
    console.print(f"[bold]model-level benchmark[/] ({sweep}): {', '.join(args.models)}; {', '.join(args.modes)}"
                  + (f"; rows appended to {path}" if save else "; nothing saved"))
    rows = measure_models(device, sweep, min_time, models=args.models, modes=args.modes,
                          provider_names=args.providers, activations=args.activations, backends=args.backends,
                          meta=meta, console=console,
                          save_to=path if save else None)
    if save:
        console.print(f"appended {len(rows)} rows to {path}")
    for line in run._report().model_target_lines(path, rows):
        console.print(line, markup=False, highlight=False)
    return rows


if __name__ == "__main__":
    main()

"""The registry is the one source of per-op facts: a fourth activation, described once here, goes through
the recorder, the optimizer groups, the conversion, the plots and the benchmark list with no other edit.

The toy has reference math only (the "reference" backend), so it runs on any machine:
``toy(x, mix, bias) = mix[0, c] * relu(x) + mix[1, c] * x + bias[c]``, ReLU at ``mix = (1, 0), bias = 0``.
``mix`` has its channels on its second axis (as LSLU's theta), ``bias`` on its first.
"""

import importlib.util
import pathlib
import sys

import pytest
import torch
from parity import assert_elementwise
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

import lslu_kernels as lk
from lslu_kernels import plot_params, recorder, registry
from lslu_kernels._dispatch import Activation, define
from lslu_kernels.reference import per_channel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def toy_reference(x, mix, bias, channel_dim=1):
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    channel_dim %= x.dim()
    xc = x.to(dtype)
    a, b, c = (per_channel(p.to(dtype), x.dim(), channel_dim) for p in (mix[0], mix[1], bias))
    return (a * torch.relu(xc) + b * xc + c).to(x.dtype)


def toy_knots(params):
    """Marks at x = -1 and 1 of each channel's curve."""
    mix, bias = torch.tensor(params["mix"], dtype=torch.float64), torch.tensor(params["bias"], dtype=torch.float64)
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64).expand(bias.shape[0], 2)
    return x, mix[0, :, None] * torch.relu(x) + mix[1, :, None] * x + bias[:, None]


class Toy(nn.Module):
    def __init__(self, channels=None, *, channel_dim=1, device=None, dtype=None):
        super().__init__()
        width = 1 if channels is None else channels
        self.channel_dim = channel_dim
        self.mix = nn.Parameter(torch.empty(2, width, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(width, device=device, dtype=dtype))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.mix[0].fill_(1.0)
        self.mix[1].zero_()
        self.bias.zero_()

    def forward(self, x):
        return registry.function("toy")(x, self.mix, self.bias, channel_dim=self.channel_dim, backend="reference")


class LazyToy(LazyModuleMixin, Toy):
    cls_to_become = Toy

    def __init__(self, *, channel_dim=1, device=None, dtype=None):
        super().__init__(None, channel_dim=channel_dim, device=device, dtype=dtype)
        self.mix = UninitializedParameter(device=device, dtype=dtype)
        self.bias = UninitializedParameter(device=device, dtype=dtype)

    def reset_parameters(self):
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, x):
        if self.has_uninitialized_params():
            channels = x.shape[self.channel_dim]
            self.mix.materialize((2, channels))
            self.bias.materialize((channels,))
            self.reset_parameters()


# The toy's one description. define() adds its torch.library ops once per process and registers it;
# it is registered only inside the `toy` fixture, so the other tests see the package's three.
TOY = Activation(
    name="toy", params=("mix", "bias"), param_ndims=(2, 1), param_channel_axis=(1, 0),
    reference=toy_reference, trajectory_panels=(("mix", ("mix",)), ("bias", ("bias",))),
    curve_range=lambda params: (-2.0, 2.0), curve_marks=toy_knots,
    benchmarks=(("", lambda channels, device: [1 + 0.1 * torch.randn(2, channels, device=device),
                                               0.1 * torch.randn(channels, device=device)]),))
TOY_FUNCTION = define(TOY)
registry.unregister("toy")


@pytest.fixture
def toy():
    """The toy and its module classes, registered for one test."""
    registry.register(TOY, TOY_FUNCTION)
    registry.activation_module("toy", conversion="shared")(Toy)
    registry.activation_module("toy", conversion="per_channel")(LazyToy)
    try:
        yield TOY_FUNCTION
    finally:
        registry.unregister("toy")


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 5, 2))


def train(model, steps):
    rec = lk.ParameterRecorder(model)
    optimizer = torch.optim.SGD(lk.param_groups(model, weight_decay=0.1), lr=0.1)
    for step in range(steps):
        optimizer.zero_grad()
        model(torch.randn(7, 2, 4, 5)).square().mean().backward()
        optimizer.step()
        rec.record(step)
    return rec


@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "per_channel"])
def test_toy_converts_records_groups_and_plots(toy, per_channel, tmp_path):
    model = toy_model()
    x = torch.randn(7, 2, 4, 5)
    with torch.no_grad():
        expected = model(x)
    model, replaced = lk.convert_activations(model, "toy", per_channel=per_channel)
    assert replaced == ["1", "3"], f"replaced {replaced}"
    assert type(model[1]) is (LazyToy if per_channel else Toy), f"converted to {type(model[1]).__name__}"
    with torch.no_grad():
        got = model(x)  # the dry run materialises the lazy parameters
    assert torch.equal(got, expected), "a converted model starts as the ReLU model, bit for bit"
    width = 3 if per_channel else 1
    assert type(model[1]) is Toy and model[1].mix.shape == (2, width), f"{type(model[1])}, {model[1].mix.shape}"

    # param_groups: the 2-D mix is an activation parameter, not a weight to decay.
    decay, no_decay = lk.param_groups(model, weight_decay=0.1)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for i in (1, 3):
        assert id(model[i].mix) in no_decay_ids and id(model[i].bias) in no_decay_ids, f"toy {i} is decayed"
    assert {id(p) for p in decay["params"]} == {id(model[i].weight) for i in (0, 2, 5)}, "weights decay"

    rec = train(model, steps=3)
    rec.save(tmp_path / "params.jsonl")
    records = recorder.load_records(tmp_path / "params.jsonl")
    assert [(r["step"], r["module"], r["op"]) for r in records] == [
        (step, name, "TOY") for step in range(3) for name in ("1", "3")]
    last = records[-1]
    assert list(last["params"]) == ["mix", "bias"] and "realigned" not in last, f"recorded {last}"
    for name in ("mix", "bias"):
        value = getattr(model[3], name).detach()
        got = torch.tensor(last["params"][name], dtype=value.dtype)
        assert torch.equal(got, value), f"{name}: recorded {got}, module holds {value}"
    assert not torch.equal(torch.tensor(records[1]["params"]["bias"]), torch.zeros(width)), "bias did not train"

    # The plotted curve is the module's forward, on the toy's own range.
    grid = torch.linspace(-2, 2, 41, dtype=torch.float64)
    curve = plot_params.activation_curve("TOY", last["params"], grid)
    assert curve.shape == (41, width), f"curve shape {tuple(curve.shape)}"
    with torch.no_grad():
        module_curve = model[3](grid.float()[:, None].expand(-1, width).contiguous())
    assert_elementwise(module_curve, curve, torch.float32, "toy: module forward against the plotted curve")


def test_toy_plot_writes_one_row_per_module(toy, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (in the 'plot' and 'test' extras) draws the figure")
    import matplotlib.image

    model, _ = lk.convert_activations(toy_model(), "toy", per_channel=True)
    model(torch.randn(1, 2, 4, 5))
    train(model, steps=2).save(tmp_path / "params.jsonl")
    out = tmp_path / "params.png"
    plot_params.main([str(tmp_path / "params.jsonl"), "--out", str(out)])
    height, width, _ = matplotlib.image.imread(out).shape
    assert (height, width) == (2 * 352, 1430), f"two rows of panels expected, got {width}x{height} px"


def test_toy_is_benchmarked(toy):
    pytest.importorskip("rich", reason="the runner prints with rich (in the 'bench' and 'test' extras)")
    spec = importlib.util.spec_from_file_location("run_with_toy", ROOT / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    sys.modules["run_with_toy"] = run
    try:
        spec.loader.exec_module(run)
    finally:
        del sys.modules["run_with_toy"]
    assert [op.label for op in run.OPS] == ["lslu S=1", "lslu S=3", "pvlu", "pwlu N=16", "toy"]
    op = run.OPS[-1]
    assert op.fn is toy and op.reference is toy_reference
    assert [p.shape for p in op.make_params(5, torch.device("cpu"))] == [(2, 5), (5,)]
    # Its providers need no per-op code either: the toy has no kernels, so only its reference is timed.
    names = [p.name for p in run.providers(torch.device("cpu"), op)]
    assert names == ["eager", "torch.compile", *run.BASELINES], names
    pvlu = next(op for op in run.OPS if op.label == "pvlu")
    kernels = [p.name for p in run.providers(torch.device("cpu"), pvlu)][:-4]
    assert kernels == run.kernel_backends(torch.device("cpu")), f"pvlu's kernel providers: {kernels}"


def test_unregistered_toy_leaves_the_three():
    """After the toy's tests (or before them) the registry holds the package's three activations."""
    assert [a.label for a in registry.activations()] == ["LSLU", "PVLU", "PWLU"]
    with pytest.raises(ValueError, match="to must be one of"):
        lk.convert_activations(toy_model(), "toy")
    with pytest.raises(ValueError, match="no LSLU, PVLU or PWLU module"):
        lk.ParameterRecorder(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_descriptions_are_checked():
    base = dict(name="bad", params=("a", "b"), param_ndims=(1, 1), param_channel_axis=(0, 0),
                reference=toy_reference)
    with pytest.raises(ValueError, match="one entry per parameter"):
        Activation(**{**base, "param_ndims": (1,)})
    with pytest.raises(ValueError, match="at most two trajectory panels"):
        Activation(**base, trajectory_panels=(("a", ("a",)), ("b", ("b",)), ("c", ("a",))))
    with pytest.raises(ValueError, match="must name one or two of its parameters"):
        Activation(**base, trajectory_panels=(("c", ("c",)),))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(lk.lslu.activation, lk.lslu)
    with pytest.raises(ValueError, match="already has a 'shared' conversion module"):
        registry.activation_module("lslu", conversion="shared")(type("AnotherLSLU", (nn.Module,), {}))
    with pytest.raises(KeyError, match="no registered activation is named 'nope'"):
        registry.activation_module("nope")
    assert Activation(**base).label == "BAD" and Activation(**base).trajectory_panels == (("a", ("a",)), ("b", ("b",)))


def test_old_import_paths_still_work():
    """sum_partials and compute_dtype moved to _numerics; the kernel backends' old imports still resolve."""
    from lslu_kernels import _layout, _numerics, reference
    assert _layout.sum_partials is _numerics.sum_partials and reference.compute_dtype is _numerics.compute_dtype

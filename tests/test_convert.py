"""``lk.convert_activations``: which modules it replaces, that a converted pretrained model starts
where it was (bit for bit), lazy per-channel parameters, options, device and dtype."""

import pytest
import torch
from conftest import backend_device
from torch import nn

import lslu_kernels as lk

MODULES = {"lslu": lk.LSLU, "pvlu": lk.PVLU, "pwlu": lk.PWLU}


class SmallCNN(nn.Module):
    """ReLUs in every place a model keeps them: in-place, nested Sequential, ModuleList, one instance
    registered twice (under ``shared`` and in ``blocks``), and a ReLU subclass and an F.relu call
    that must stay as they are."""

    class NotAReLU(nn.ReLU):
        pass

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(inplace=True))
        self.shared = nn.ReLU()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(5, 7, 1), self.shared),
                                     nn.Sequential(nn.Conv2d(7, 7, 3, padding=1), nn.ReLU())])
        self.subclass = self.NotAReLU()
        self.head = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(torch.nn.functional.relu(self.subclass(x)))


REPLACED = ["stem.1", "shared", "blocks.0.1", "blocks.1.1"]


@pytest.mark.parametrize("to", ["lslu", "pvlu", "pwlu"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["shared", "per_channel"])
def test_converted_model_starts_as_the_relu_model(kernel_backend, to, per_channel):
    """Bit-exact outputs and input gradients in eval and training mode (PWLU: phase I is ReLU)."""
    device = backend_device(kernel_backend)
    model = SmallCNN().to(device)
    x = torch.randn(2, 3, 6, 5, device=device)
    expected = {}
    for training in (False, True):
        model.train(training)
        xg = x.clone().requires_grad_()
        y = model(xg)
        y.square().sum().backward()
        expected[training] = (y.detach(), xg.grad)
    converted, replaced = lk.convert_activations(model, to, per_channel=per_channel, backend=kernel_backend)
    assert converted is model, "converted in place"
    assert replaced == REPLACED, f"replaced {replaced}"
    assert model.blocks[0][1] is model.shared, "a ReLU registered twice becomes one module"
    assert type(model.subclass) is SmallCNN.NotAReLU, "a ReLU subclass is not replaced"
    for training in (False, True):
        model.train(training)
        xg = x.clone().requires_grad_()
        y = model(xg)
        y.square().sum().backward()
        assert torch.equal(y, expected[training][0]), f"output (training={training})"
        assert torch.equal(xg.grad, expected[training][1]), f"grad_input (training={training})"
    cls = MODULES[to]
    assert type(model.stem[1]) is cls and type(model.blocks[1][1]) is cls, "lazy modules became the plain class"
    if per_channel:
        assert model.stem[1].channels == 5 and model.blocks[1][1].channels == 7, "channel counts inferred"


@pytest.mark.parametrize("to, options, name, shape, value", [
    ("lslu", dict(num_stages=2), "theta", (2, 5), 1.0),
    ("pvlu", dict(alpha=0.25, beta=2.0), "alpha", (5,), 0.25),
    ("pwlu", dict(intervals=8), "points", (5, 9), None),
])
def test_lazy_parameters_optimizer_and_state_dict(to, options, name, shape, value):
    """Options reach the constructor; parameters take the model's dtype; after a dry run an optimizer
    trains them; a trained state dict loads into a freshly converted (still lazy) model."""
    def make():
        return nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU()).double()

    model, _ = lk.convert_activations(make(), to, per_channel=True, **options)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    model(x)  # dry run
    param = getattr(model[1], name)
    assert param.shape == shape and param.dtype == torch.float64, f"{name}: {param.shape} {param.dtype}"
    if value is not None:
        assert bool((param == value).all()), f"{name} starts at {value}"
    if to == "pwlu":
        model[1].realign()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = param.detach().clone()
    (model(x) - 1).square().sum().backward()
    optimizer.step()
    assert not torch.equal(param, before), f"{name}: not trained by an optimizer made after the dry run"
    fresh, _ = lk.convert_activations(make(), to, per_channel=True, **options)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), model(x)), "output of a lazy model loaded from the trained state dict"
    assert type(fresh[1]) is MODULES[to]


def test_channel_dim_option_for_token_activations():
    mlp = nn.Sequential(nn.Linear(6, 11), nn.ReLU(), nn.Linear(11, 6))
    mlp, replaced = lk.convert_activations(mlp, "lslu", per_channel=True, channel_dim=-1)
    mlp(torch.randn(2, 3, 6))
    assert replaced == ["1"] and mlp[1].theta.shape == (3, 11), "channels read from the last axis"


def test_device_and_dtype_follow_the_model():
    shared, _ = lk.convert_activations(nn.Sequential(nn.Linear(4, 4), nn.ReLU()).to(torch.float64), "pvlu")
    assert shared[1].alpha.dtype == torch.float64
    no_params, _ = lk.convert_activations(nn.Sequential(nn.ReLU()), "lslu")
    assert no_params[0].theta.dtype == torch.get_default_dtype(), "no parameters: torch's default dtype"
    lazy, _ = lk.convert_activations(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "lslu", per_channel=True)
    lazy = lazy.to(torch.float64)  # before the dry run, as with nn.LazyLinear
    lazy(torch.randn(2, 4, dtype=torch.float64))
    assert lazy[1].theta.dtype == torch.float64, "a lazy parameter follows .to() before the dry run"
    explicit, _ = lk.convert_activations(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "lslu", dtype=torch.float64)
    assert explicit[1].theta.dtype == torch.float64, "dtype= overrides the model's"


def test_root_relu_no_relu_and_bad_arguments():
    module, replaced = lk.convert_activations(nn.ReLU(inplace=True), "pvlu")
    assert type(module) is lk.PVLU and replaced == [""]

    class Functional(nn.Module):
        def forward(self, x):
            return torch.relu(x)

    with pytest.warns(UserWarning, match="no nn.ReLU module"):
        assert lk.convert_activations(Functional(), "lslu")[1] == []
    with pytest.raises(ValueError, match="to must be one of"):
        lk.convert_activations(nn.ReLU(), "gelu")
    with pytest.raises(TypeError, match="per_channel=True"):
        lk.convert_activations(nn.ReLU(), "lslu", channels=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpha'"):
        lk.convert_activations(nn.ReLU(), "lslu", alpha=0.5)
    with pytest.raises(IndexError, match="channel count cannot be inferred"):
        lk.convert_activations(nn.ReLU(), "pvlu", per_channel=True, channel_dim=3)[0](torch.randn(2, 3))

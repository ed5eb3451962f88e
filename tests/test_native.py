"""PyTorch-native behaviour of every module: torch.compile over whole models, autocast, channels-last
end to end, state_dict round trips, deepcopy and pickling, optimizer parameter groups."""

import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import backend_device
from ops import lslu_params, pvlu_params, pwlu_params
from torch import nn

import lslu_kernels as lk


@torch.no_grad()
def _set(module, values):
    """Copy ``values`` (float64, in the module's parameter order) into the module's parameters."""
    for p, v in zip(module.parameters(), values):
        p.copy_(v)
    return module


def _lslu(channels, backend=None, **kwargs):
    """Positive thetas and omegas of both signs: a series that is not the identity and does not cut
    everything (a dead activation would hide differences downstream)."""
    shape = (3, channels or 1)
    return _set(lk.LSLU(channels, 3, backend=backend, **kwargs),
                [0.5 + torch.rand(shape, dtype=torch.float64), 0.3 * torch.randn(shape, dtype=torch.float64)])


def _pvlu(channels, backend=None, **kwargs):
    return _set(lk.PVLU(channels, backend=backend, **kwargs), pvlu_params(channels, "random", shared=channels is None))


def _pwlu(channels, backend=None, **kwargs):
    """Phase II with a random table (bounds, points, slopes)."""
    module = lk.PWLU(channels, 16, backend=backend, **kwargs)
    module.realign()
    values = pwlu_params(channels, "N16", shared=channels is None)
    # pwlu_params order: points, left, right, left_slope, right_slope; the module's: bounds, slopes, points.
    return _set(module, values[1:] + values[:1])


@torch.no_grad()
def _layer(channels, stages=2, backend=None, **kwargs):
    """The full layer with a live non-identity series and random BN statistics and affine."""
    layer = lk.LearnableSerieslinearUnit(channels, stages, backend=backend, **kwargs)
    layer.theta.copy_(0.5 + torch.rand_like(layer.theta))
    layer.omega.copy_(0.2 * torch.randn_like(layer.omega))
    layer.weight.normal_(0, 0.3)
    if not layer.deploy:
        layer.bn.running_mean.normal_()
        layer.bn.running_var.uniform_(0.5, 1.5)
        layer.bn.weight.normal_(1, 0.2)
        layer.bn.bias.normal_()
    else:
        layer.bias.normal_()
    return layer


def small_cnn(backend):
    """Every op on NCHW activations: per-channel LSLU, PVLU, PWLU in phase II, the full layer, shared LSLU."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), _lslu(6, backend),
        nn.Conv2d(6, 6, 1), _pvlu(6, backend),
        nn.Conv2d(6, 5, 1), _pwlu(5, backend),
        _layer(5, backend=backend),
        nn.Conv2d(5, 4, 1), _lslu(None, backend),
    )


class TransformerBlock(nn.Module):
    """Attention and an MLP whose activations run on (batch, tokens, C) with channel_dim=-1."""

    def __init__(self, dim, hidden, backend):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = nn.Sequential(_lslu(hidden, backend, channel_dim=-1), _pvlu(hidden, backend, channel_dim=-1),
                                 _pwlu(hidden, backend, channel_dim=-1), _lslu(None, backend, channel_dim=-1))

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def _output_and_grads(model, x, run=None):
    """Output, grad_input and parameter gradients of ``run`` (``model`` or its compiled form)."""
    x = x.detach().clone().requires_grad_()
    model.zero_grad()
    y = (model if run is None else run)(x)
    assert bool((y.flatten(0, -2).std(0) > 1e-3).all()), "an output feature is constant: a dead activation"
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=y.device).reshape(y.shape))
    return y.detach(), x.grad, {name: p.grad.clone() for name, p in model.named_parameters()}


def _assert_same(actual, expected, label):
    """Float64 outputs and gradients (input and every parameter) of two runs of the same model."""
    y, gx, grads = actual
    y_ref, gx_ref, grads_ref = expected
    torch.testing.assert_close(y, y_ref, msg=f"{label}: output")
    torch.testing.assert_close(gx, gx_ref, msg=f"{label}: grad_input")
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], msg=f"{label}: grad of {name}")


@pytest.mark.parametrize("model_name", ["cnn", "transformer"])
def test_torch_compile_fullgraph_whole_models(model_name):
    """Both models compile without graph breaks and match eager, every gradient included (float64:
    Inductor's convolutions and matmuls round differently from eager's). On the `cpu` backend only:
    Inductor needs ~10 s a model here, and test_activations.py compiles every op on every backend."""
    kernel_backend = "cpu" if "cpu" in lk.available_backends() else "reference"
    device = backend_device(kernel_backend)
    torch._dynamo.reset()
    if model_name == "cnn":
        model, x = small_cnn(kernel_backend), torch.randn(2, 3, 7, 5, dtype=torch.float64)
    else:
        model, x = TransformerBlock(8, 13, kernel_backend), torch.randn(2, 5, 8, dtype=torch.float64)
    model = model.double().to(device)
    x = x.to(device)
    compiled = _output_and_grads(model, x, run=torch.compile(model, fullgraph=True))
    _assert_same(compiled, _output_and_grads(model, x), "compiled")


AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]
POINTWISE = {"lslu": _lslu, "pvlu": _pvlu, "pwlu": _pwlu}


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
@pytest.mark.parametrize("op", ["lslu", "pvlu", "pwlu", "layer"])
def test_autocast_half_inputs_float32_parameters(kernel_backend, dtype, op):
    """Under CPU autocast the convolution hands the activation a half-precision input: the output has
    the input's dtype, parameters and their gradients stay float32, and the op computes what it
    computes outside autocast (it is not cast itself)."""
    device = backend_device(kernel_backend)
    act = _layer(6, backend=kernel_backend) if op == "layer" else POINTWISE[op](6, kernel_backend)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), act).to(device)
    seen = {}
    act.register_forward_hook(lambda module, args, output: seen.update(x=args[0], y=output))
    with torch.autocast(device.type, dtype=dtype):
        y = model(torch.randn(2, 3, 7, 6, device=device))
    y.float().square().sum().backward()
    assert seen["x"].dtype == dtype, f"the convolution should hand over {dtype}, gave {seen['x'].dtype}"
    assert seen["y"].dtype == dtype, f"output dtype {seen['y'].dtype}, input's {dtype}"
    for name, p in act.named_parameters():
        assert p.dtype == torch.float32, f"{name}: dtype {p.dtype}"
        assert p.grad is not None and p.grad.dtype == torch.float32, f"grad of {name}: not float32"
        assert bool(p.grad.isfinite().all()), f"grad of {name}: not finite"
    if op != "layer":  # the layer's own convolution is autocast, so it has no dtype-consistent eager twin
        with torch.no_grad():
            assert torch.equal(seen["y"], act(seen["x"])), "output differs from the same op outside autocast"


def _channels_last_model(backend):
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), _lslu(6, backend), nn.Conv2d(6, 6, 1), _pvlu(6, backend),
        _pwlu(6, backend), _layer(6, backend=backend), nn.Conv2d(6, 4, 1), _lslu(None, backend),
    ).double()


def test_channels_last_end_to_end(kernel_backend):
    """A channels-last input through conv and every activation stays channels-last at each activation's
    output, with the contiguous model's output and gradients (float64)."""
    device = backend_device(kernel_backend)
    model = _channels_last_model(kernel_backend).to(device)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, device=device)
    formats = []
    for module in model_cl:
        if not isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, args, out: formats.append(
                (type(m).__name__, out.is_contiguous(memory_format=torch.channels_last))))
    channels_last = _output_and_grads(model_cl, x.to(memory_format=torch.channels_last))
    assert all(is_cl for _, is_cl in formats) and len(formats) == 5, f"channels-last outputs: {formats}"
    assert channels_last[1].is_contiguous(memory_format=torch.channels_last), "grad_input: not channels-last"
    _assert_same(channels_last, _output_and_grads(model, x), "channels-last against contiguous")


@torch.no_grad()
def _pwlu_in_phase_one():
    module = lk.PWLU(5, 8, statistics_steps=10)
    for _ in range(3):
        module(torch.randn(4, 5, 3) * 2 + 1)
    return module


def _trained_layer():
    layer = _layer(5)
    layer.train()
    with torch.no_grad():
        layer(torch.randn(3, 5, 4, 4))  # BN statistics and num_batches_tracked move
    return layer


def _deployed_layer():
    layer = _trained_layer().eval()
    layer.switch_to_deploy()
    return layer


def _dry_run(module, values):
    module(torch.randn(2, 5, 3))
    return _set(module, values)


# (id, fresh module, module with a non-default state): every module, PWLU in both phases,
# the full layer in both forms, and the lazy modules after their dry run.
MODULE_CASES = [
    ("lslu_shared", lambda: lk.LSLU(None, 3), lambda: _lslu(None)),
    ("lslu", lambda: lk.LSLU(5, 3), lambda: _lslu(5)),
    ("pvlu", lambda: lk.PVLU(5), lambda: _pvlu(5)),
    ("pwlu_phase_one", lambda: lk.PWLU(5, 8, statistics_steps=10), _pwlu_in_phase_one),
    ("pwlu_phase_two", lambda: lk.PWLU(5, 16), lambda: _pwlu(5)),
    ("layer", lambda: lk.LearnableSerieslinearUnit(5, 2), _trained_layer),
    ("layer_deploy", lambda: lk.LearnableSerieslinearUnit(5, 2, deploy=True), _deployed_layer),
    ("lazy_lslu", lambda: lk.LazyLSLU(3), lambda: _dry_run(lk.LazyLSLU(3), lslu_params(5, "S3"))),
    ("lazy_pvlu", lambda: lk.LazyPVLU(), lambda: _dry_run(lk.LazyPVLU(), pvlu_params(5, "random"))),
    ("lazy_pwlu", lambda: lk.LazyPWLU(8, statistics_steps=10),
     lambda: _dry_run(lk.LazyPWLU(8, statistics_steps=10), [torch.randn(5) for _ in range(4)])),
]


def _assert_same_module(copied, original, label):
    assert type(copied) is type(original), f"{label}: {type(copied).__name__}"
    state, state_ref = copied.state_dict(), original.state_dict()
    assert list(state) == list(state_ref), f"{label}: keys {list(state)}"
    for key in state_ref:
        assert torch.equal(state[key], state_ref[key]), f"{label}: {key}"
    copied.eval()
    original.eval()
    x = torch.randn(2, 5, 4, 3)
    with torch.no_grad():
        assert torch.equal(copied(x), original(x)), f"{label}: output"
    if isinstance(original, lk.PWLU):
        assert (copied._steps, copied._realigned) == (original._steps, original._realigned), f"{label}: phase"


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_state_dict_round_trip(case):
    _, fresh, prepared = case
    module, target = prepared(), fresh()
    target.load_state_dict(module.state_dict())
    target.eval()  # a training forward would move the statistics
    with torch.no_grad():
        target(torch.randn(2, 5, 4, 3))  # lazy targets become the plain class at their first forward
    _assert_same_module(target, module, "loaded")


def _torch_save_load(module):
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # a whole module is not weights only


COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m)),
          "torch_save": _torch_save_load}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("case", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_deepcopy_and_pickle(case, how):
    """A copy has the same type, state, phase and output, and shares no tensor with the original."""
    module = case[2]()
    copied = COPIES[how](module)
    _assert_same_module(copied, module, how)
    with torch.no_grad():
        next(copied.parameters()).add_(1.0)
    assert not torch.equal(next(copied.parameters()), next(module.parameters())), f"{how}: shares a parameter"


@pytest.mark.parametrize("how", list(COPIES))
def test_lazy_module_copied_before_its_dry_run(how):
    """Still lazy after copying; the dry run then infers the channels. (PyTorch pickles an uninitialized
    parameter without its device and dtype, so those are torch's defaults after pickling.)"""
    copied = COPIES[how](lk.LazyLSLU(2))
    copied(torch.randn(3, 4))
    assert type(copied) is lk.LSLU and copied.theta.shape == (2, 4)


def test_param_groups_leave_activation_and_one_axis_parameters_undecayed():
    conv, linear = nn.Conv2d(3, 6, 3), nn.Linear(4, 2)
    model = nn.Sequential(conv, nn.BatchNorm2d(6), _lslu(6), _pvlu(6), _pwlu(6), _layer(6), _lslu(None),
                          nn.Flatten(2), linear)
    decay, no_decay = lk.param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    expected_decay = {id(conv.weight), id(linear.weight), id(model[5].weight)}
    assert {id(p) for p in decay["params"]} == expected_decay, \
        "decay: only the convolutions' and the linear layer's weights (the full layer's depthwise kernel too)"
    all_params = {id(p) for p in model.parameters()}
    assert {id(p) for p in no_decay["params"]} == all_params - expected_decay, "no decay: every other parameter"
    assert len(decay["params"]) + len(no_decay["params"]) == len(all_params), "a parameter in both groups"
    torch.optim.AdamW(lk.param_groups(model, weight_decay=0.05), lr=1e-3)  # a valid optimizer argument

"""The paper's full LSLU layer, ``lk.LearnableSerieslinearUnit``: against a re-implementation of the
official layer's forward (from its math), BN folding, and official checkpoints both ways."""

import pytest
import torch
import torch.nn.functional as F
from conftest import backend_device
from parity import assert_elementwise
from torch import nn

import lslu_kernels as lk


class OfficialLayer(nn.Module):
    """The official layer's parameter names, shapes and forward (SPEC.md 1.1), written from its math.

    ``alphas``/``biases`` have length ``dim``; the series reads their first ``S``
    entries. The official deploy forward drops the series and scales each
    channel's kernel by ``alphas[c]``.
    """

    def __init__(self, dim, num_activations=3, deploy=False):
        super().__init__()
        self.stages, self.deploy = num_activations, deploy
        size = 2 * num_activations + 1
        self.weight = nn.Parameter(torch.randn(dim, 1, size, size))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.alphas = nn.Parameter(torch.ones(dim))
        self.biases = nn.Parameter(torch.zeros(dim))
        if deploy:
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.bn = nn.BatchNorm2d(dim, eps=1e-6)

    def forward(self, x):
        dim = self.weight.shape[0]
        if self.deploy:
            weight = self.weight * self.alphas.reshape(-1, 1, 1, 1)
            return F.conv2d(torch.relu(x), weight, self.bias, padding=self.stages, groups=dim)
        for s in range(self.stages):
            x = torch.relu(x) * self.alphas[s] + self.biases[s]
        return self.bn(F.conv2d(torch.relu(x), self.weight, None, padding=self.stages, groups=dim))

    @torch.no_grad()
    def switch_to_deploy(self):
        """The official folding: weight * gamma / std, bias = beta - mean * gamma / std; the series is dropped."""
        scale = self.bn.weight / (self.bn.running_var + self.bn.eps).sqrt()
        self.weight.mul_(scale.reshape(-1, 1, 1, 1))
        self.bias = nn.Parameter(self.bn.bias - self.bn.running_mean * scale)
        del self.bn
        self.deploy = True


def _model(layer_cls, dims=(5, 7), stages=(3, 2), **kwargs):
    """conv -> layer -> conv -> layer: a whole model, so checkpoints load by their qualified names."""
    return nn.Sequential(nn.Conv2d(2, dims[0], 3), layer_cls(dims[0], stages[0], **kwargs),
                         nn.Conv2d(dims[0], dims[1], 1), layer_cls(dims[1], stages[1], **kwargs))


@torch.no_grad()
def _randomise(model):
    """Random convolutions, BN statistics and affine, and a series that is neither the identity nor dead:
    stage 0 has a negative theta and a positive omega (small inputs pass, large ones are cut), the
    later stages positive thetas and omegas of both signs."""
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand_like(t))
        elif name.endswith(("alphas", "theta")):
            t.copy_(0.5 + torch.rand_like(t))
            t[0].neg_()
        elif name.endswith(("biases", "omega")):
            t.copy_(0.3 * torch.randn_like(t))
            t[0] = 1.0 + torch.rand_like(t[0])
        else:
            t.copy_(0.3 * torch.randn_like(t))
    return model


def _outputs_and_grads(model, x):
    x = x.detach().clone().requires_grad_()
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
    grads = {name: p.grad for name, p in model.named_parameters()}
    return y.detach(), x.grad, grads


def test_same_seed_draws_the_official_weight():
    torch.manual_seed(3)
    official = OfficialLayer(6, 2)
    torch.manual_seed(3)
    layer = lk.LearnableSerieslinearUnit(6, 2)
    assert torch.equal(layer.weight, official.weight), "weight: not the official draw for the same seed"
    assert layer.theta.shape == layer.omega.shape == (2, 1), "theta/omega: shape (S, 1) when shared"
    assert torch.equal(layer.theta, torch.ones(2, 1)) and torch.equal(layer.omega, torch.zeros(2, 1))
    assert layer.bn.eps == 1e-6 and layer.bias is None
    assert lk.LearnableSerieslinearUnit(6, 2, shared=False).theta.shape == (2, 6), "theta: (S, C) per channel"


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_official_checkpoint_reproduces_the_official_layer(kernel_backend, mode):
    """A whole official model's state dict loads as it is (strict) and gives the official output and
    gradients (float64); in training mode the BN running statistics move the same way."""
    device = backend_device(kernel_backend)
    official = _randomise(_model(OfficialLayer)).double().to(device)
    model = _model(lk.LearnableSerieslinearUnit, backend=kernel_backend).double().to(device)
    model.load_state_dict(official.state_dict())
    official.train(mode == "train")
    model.train(mode == "train")
    x = torch.randn(3, 2, 9, 8, dtype=torch.float64, device=device)
    y_ref, gx_ref, grads_ref = _outputs_and_grads(official, x)
    y, gx, grads = _outputs_and_grads(model, x)
    assert bool((y_ref.std(dim=(2, 3)) > 1e-3).all()), "a channel of the official output is constant: dead series"
    torch.testing.assert_close(y, y_ref, msg="output")
    torch.testing.assert_close(gx, gx_ref, msg="grad_input")
    for layer_name, stages in (("1", 3), ("3", 2)):
        for name in ("weight", "bn.weight", "bn.bias"):
            key = f"{layer_name}.{name}"
            torch.testing.assert_close(grads[key], grads_ref[key], msg=f"grad of {key}")
        for ours, theirs in (("theta", "alphas"), ("omega", "biases")):
            torch.testing.assert_close(grads[f"{layer_name}.{ours}"][:, 0],
                                       grads_ref[f"{layer_name}.{theirs}"][:stages],
                                       msg=f"grad of {layer_name}.{ours} (official {theirs}[:S])")
    for key in ("1.bn.running_mean", "1.bn.running_var", "3.bn.running_mean", "3.bn.running_var"):
        torch.testing.assert_close(model.state_dict()[key], official.state_dict()[key], msg=key)


def test_official_checkpoint_into_per_channel_layer_gives_each_channel_the_stage_value():
    official = _randomise(_model(OfficialLayer)).double().eval()
    model = _model(lk.LearnableSerieslinearUnit, shared=False).double().eval()
    model.load_state_dict(official.state_dict())
    assert model[1].theta.shape == (3, 5), "theta: (S, C) after loading an official checkpoint"
    torch.testing.assert_close(model[1].theta, official[1].alphas[:3, None].expand(3, 5), msg="theta")
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(model(x), official(x), msg="output")


def test_official_deploy_checkpoint_gives_the_official_model_before_the_switch():
    """The series survives in the official deploy checkpoint's alphas/biases: loaded into a deploy=True
    layer it equals the official eval output before switch_to_deploy, and a warning says that the
    official deploy forward (series dropped) differs."""
    official = _randomise(_model(OfficialLayer)).double().eval()
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    before = official(x).detach()
    for layer in (official[1], official[3]):
        layer.switch_to_deploy()
    official_deploy = official(x).detach()
    model = _model(lk.LearnableSerieslinearUnit, deploy=True).double().eval()
    with pytest.warns(UserWarning, match="official deploy forward"):
        model.load_state_dict(official.state_dict())
    torch.testing.assert_close(model(x), before, msg="output against the official model before the switch")
    assert not torch.allclose(official_deploy, before), "the test's series should make the official deploy differ"


def test_official_deploy_checkpoint_with_identity_series_equals_the_official_deploy_forward(recwarn):
    official = _randomise(_model(OfficialLayer)).double().eval()
    with torch.no_grad():
        for layer in (official[1], official[3]):
            layer.alphas.fill_(1.0)
            layer.biases.zero_()
            layer.switch_to_deploy()
    model = _model(lk.LearnableSerieslinearUnit, deploy=True).double().eval()
    model.load_state_dict(official.state_dict())
    assert not [w for w in recwarn if "official deploy" in str(w.message)], "warned for an identity series"
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(model(x), official(x), msg="output against the official deploy forward")


def test_official_checkpoint_errors():
    layer = lk.LearnableSerieslinearUnit(5, 3)
    state = OfficialLayer(5, 3).state_dict()
    with pytest.raises(RuntimeError, match=r"needs both alphas and biases"):
        layer.load_state_dict({k: v for k, v in state.items() if k != "biases"})
    with pytest.raises(RuntimeError, match=r"both the official alphas/biases and theta/omega"):
        layer.load_state_dict({**state, "theta": torch.ones(3, 1)})
    with pytest.raises(RuntimeError, match=r"alphas must have shape \(5,\)"):
        layer.load_state_dict({**state, "alphas": torch.ones(6)})
    small = lk.LearnableSerieslinearUnit(2, 3)
    with pytest.raises(RuntimeError, match=r"fewer than num_activations=3"):
        small.load_state_dict({**OfficialLayer(2, 3).state_dict()})
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*bias"):  # a deploy checkpoint needs deploy=True
        layer.load_state_dict(OfficialLayer(5, 3, deploy=True).state_dict())


def test_official_state_dict_loads_into_the_official_layer():
    model = _randomise(_model(lk.LearnableSerieslinearUnit)).double().eval()
    state = lk.official_state_dict(model)
    assert "1.alphas" in state and "1.theta" not in state, "official names in place of theta/omega"
    assert set(model.state_dict()) >= {"1.theta", "1.omega"}, "state_dict() keeps the project's names"
    official = _model(OfficialLayer).double().eval()
    official.load_state_dict(state)
    torch.testing.assert_close(official[1].alphas[3:], torch.ones(2, dtype=torch.float64),
                               msg="unread alphas entries are 1")
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(official(x), model(x), msg="output of the official layer")
    # ... and back: the official state dict loads into this class again.
    again = _model(lk.LearnableSerieslinearUnit).double().eval()
    again.load_state_dict(official.state_dict())
    torch.testing.assert_close(again(x), model(x), msg="output after the round trip")


@pytest.mark.parametrize("layer, match", [
    (lk.LearnableSerieslinearUnit(4, 2, shared=False), "per-channel"),
    (lk.LearnableSerieslinearUnit(2, 3), "dim=2 < num_activations=3"),
    (lk.LearnableSerieslinearUnit(4, 2, deploy=True), "deploy form"),
])
def test_official_state_dict_refuses_what_the_official_layer_cannot_express(layer, match):
    with pytest.raises(ValueError, match=match):
        lk.official_state_dict(nn.Sequential(layer))


@pytest.mark.parametrize("dim, stages, shared", [(1, 1, True), (7, 3, False), (13, 2, True), (3, 4, False)])
def test_switch_to_deploy_keeps_eval_output(kernel_backend, dim, stages, shared):
    """Eval outputs before and after folding BN agree to float32 precision (non-identity series,
    random BN statistics and affine), and the deploy state dict loads into a deploy=True layer."""
    device = backend_device(kernel_backend)
    layer = _randomise(lk.LearnableSerieslinearUnit(dim, stages, shared=shared, backend=kernel_backend)).to(device)
    layer.eval()
    x = torch.randn(2, dim, 9, 6, device=device)
    with torch.no_grad():
        before = layer(x)
        layer.switch_to_deploy()
        after = layer(x)
    assert layer.deploy and not hasattr(layer, "bn") and layer.bias.shape == (dim,)
    assert_elementwise(after, before.double(), torch.float32, "deploy output against BN output")
    assert set(layer.state_dict()) == {"weight", "theta", "omega", "bias"}
    fresh = lk.LearnableSerieslinearUnit(dim, stages, deploy=True, shared=shared, backend=kernel_backend).to(device)
    fresh.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), after), "a deploy=True layer loaded from the deploy state dict"
    layer.switch_to_deploy()  # a second switch does nothing
    assert torch.equal(layer(x), after)


def test_switch_to_deploy_folds_in_float64():
    """The fold is exact up to one rounding of the weight: float64 layers agree to 1e-12."""
    layer = _randomise(lk.LearnableSerieslinearUnit(6, 3)).double().eval()
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        before = layer(x)
        layer.switch_to_deploy()
        torch.testing.assert_close(layer(x), before, rtol=1e-12, atol=1e-12)


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        lk.LearnableSerieslinearUnit(0)
    with pytest.raises(ValueError, match="num_activations must be >= 1"):
        lk.LearnableSerieslinearUnit(4, 0)
    with pytest.raises(ValueError, match=r"C = 3"):
        lk.LearnableSerieslinearUnit(4, 1, shared=False)(torch.randn(1, 3, 4, 4))
    for deploy in (False, True):  # deploy form has no BN to reject an unbatched (C, H, W) input
        with pytest.raises(ValueError, match=r"must be \(N, C, H, W\), got shape \(4, 5, 5\)"):
            lk.LearnableSerieslinearUnit(4, 1, deploy, shared=False)(torch.randn(4, 5, 5))

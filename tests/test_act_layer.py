"""The modules as ``act_layer``s, the way timm and torchvision build activations: ``act_layer(inplace=True)``
or ``act_layer()``, with no channel count. ``inplace`` is accepted and changes nothing (SPEC.md section 2)."""

import functools

import pytest
import torch
from torch import nn

import lslu_kernels as lk

ACT_LAYERS = [lk.LSLU, lk.PVLU, lk.PWLU, lk.LazyLSLU, lk.LazyPVLU, lk.LazyPWLU,
              functools.partial(lk.LSLU, num_stages=2)]
ACT_IDS = ["LSLU", "PVLU", "PWLU", "LazyLSLU", "LazyPVLU", "LazyPWLU", "LSLU-S2"]


def _perturbed(module, seed):
    """``module`` away from ReLU: random parameters (after a first forward for lazy ones), PWLU realigned."""
    generator = torch.Generator().manual_seed(seed)
    module(torch.randn(2, 4, 3, generator=generator))
    if isinstance(module, lk.PWLU):
        module.realign()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return module


@pytest.mark.parametrize("act_layer", ACT_LAYERS, ids=ACT_IDS)
def test_inplace_is_accepted_and_changes_nothing(act_layer):
    """``inplace=True`` keeps the flag (as nn.ReLU does), leaves the input untouched, and computes what
    ``inplace=False`` computes, gradients included."""
    in_place, out_of_place = _perturbed(act_layer(inplace=True), 0), _perturbed(act_layer(), 0)
    assert in_place.inplace is True and out_of_place.inplace is False
    x = torch.randn(3, 4, 5, requires_grad=True)
    before = x.detach().clone()
    y = in_place(x)
    assert torch.equal(x.detach(), before), "inplace=True wrote into its input"
    assert y.data_ptr() != x.data_ptr(), "inplace=True returned its input's storage"
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    y_expected = out_of_place(x)
    (grad_expected,) = torch.autograd.grad(y_expected.square().sum(), x)
    assert torch.equal(y, y_expected), "output differs from inplace=False"
    assert torch.equal(grad, grad_expected), "grad_input differs from inplace=False"


class BasicBlock(nn.Module):
    """A residual block built the way timm's ResNet BasicBlock builds it: ``act_layer(inplace=True)``."""

    def __init__(self, channels, act_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = act_layer(inplace=True)

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x += shortcut
        return self.act2(x)


class Net(nn.Module):
    """Stem, two blocks and an MLP head whose activation is ``act_layer()`` (timm's Mlp builds it so)."""

    def __init__(self, act_layer):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), act_layer(inplace=True))
        self.blocks = nn.Sequential(BasicBlock(6, act_layer), BasicBlock(6, act_layer))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 5 * 4, 8), act_layer(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def _output_and_grads(model, x):
    y = model(x)
    y.square().sum().backward()
    return y.detach(), [p.grad for p in model.parameters()]


@pytest.mark.parametrize("act_layer", ACT_LAYERS, ids=ACT_IDS)
def test_act_layer_in_a_timm_style_model_starts_as_relu(act_layer):
    """Each unit starts as ReLU, so the model built with it computes what the one built with
    ``nn.ReLU`` (in place, as timm's blocks use it) computes, outputs and weight gradients, in training."""
    x = torch.randn(2, 3, 5, 4)
    torch.manual_seed(0)
    relu_model = Net(nn.ReLU)
    torch.manual_seed(0)
    model = Net(act_layer)
    y, grads = _output_and_grads(model, x)
    y_relu, grads_relu = _output_and_grads(relu_model, x)
    activations = [m for m in model.modules() if isinstance(m, (lk.LSLU, lk.PVLU, lk.PWLU))]
    assert len(activations) == 6 and [m.inplace for m in activations] == [True] * 5 + [False]
    torch.testing.assert_close(y, y_relu, msg="output")
    model_grads = dict(zip((name for name, _ in model.named_parameters()), grads))
    for (name, _), g in zip(relu_model.named_parameters(), grads_relu):
        torch.testing.assert_close(model_grads[name], g, msg=f"grad of {name}")


def test_timm_create_model_with_act_layer():
    """timm itself, where it installs (it needs torchvision, which has no CPU build for this torch on the
    package index; the test is skipped there): ResNet and a ViT take the units as act_layer, start as
    ReLU, and the per-channel lazy units find their channel count in each place."""
    timm = pytest.importorskip("timm")
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    expected = timm.create_model("resnet18", num_classes=4, act_layer=nn.ReLU).eval()(x)
    for act_layer in (lk.LSLU, lk.PVLU, lk.PWLU, lk.LazyLSLU):
        torch.manual_seed(0)
        model = timm.create_model("resnet18", num_classes=4, act_layer=act_layer)
        assert not any(isinstance(m, nn.ReLU) for m in model.modules()), f"{act_layer.__name__}: a ReLU is left"
        torch.testing.assert_close(model.eval()(x), expected, msg=f"resnet18 with {act_layer.__name__}")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=4,
                            act_layer=functools.partial(lk.LazyPVLU, channel_dim=-1))
    vit(x).sum().backward()
    units = [m for m in vit.modules() if isinstance(m, lk.PVLU)]
    assert units and all(m.alpha.shape == (vit.embed_dim * 4,) for m in units)

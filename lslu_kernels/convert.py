"""Drop-in conversion of a model's ReLU modules to learnable activations."""

import itertools
import warnings

from torch import nn
from torch.nn.parameter import is_lazy

from . import registry


def _factory_of(model: nn.Module) -> dict:
    """The device and dtype of the model's first floating-point parameter or buffer (none: torch's defaults)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if not is_lazy(t) and t.is_floating_point():
            return dict(device=t.device, dtype=t.dtype)
    return {}


def convert_activations(model: nn.Module, to: str, *, per_channel: bool = False,
                        **options) -> tuple[nn.Module, list[str]]:
    """Replace every ``nn.ReLU`` module of ``model`` by a learnable activation; return ``(model, replaced)``.

    ``model`` is changed in place and returned (a new module when ``model`` itself
    is a ``nn.ReLU``); ``replaced`` lists the qualified names of the replaced modules
    (``""`` for the root; a ReLU registered at several places is listed at each).

    - ``to``: ``"lslu"``, ``"pvlu"`` or ``"pwlu"`` (any activation with a
      ``"shared"`` module in ``lslu_kernels.registry``). Each module starts as ReLU
      (LSLU: ``theta = 1, omega = 0``; PVLU: ``alpha = 0`` by default; PWLU: phase I),
      so a pretrained model's outputs are unchanged by the conversion.
    - ``per_channel=False``: parameters shared by all channels. ``True``: one per
      channel, with the channel count read from the first forward (lazy modules:
      run one batch before creating the optimizer, as with ``nn.LazyLinear``).
    - ``options`` go to the module's constructor (``num_stages``, ``alpha``,
      ``beta``, ``intervals``, ``statistics_steps``, ``channel_dim``, ``backend``...).
      Parameters get the device and dtype of the model's first floating-point
      parameter or buffer unless ``device``/``dtype`` are given.

    Only modules whose type is exactly ``nn.ReLU`` are replaced (not its subclasses,
    nor ReLU6, LeakyReLU...), ``inplace=True`` ones included: the new modules return
    a new tensor. ``F.relu``/``torch.relu`` calls in ``forward`` code are not modules
    and cannot be converted. One ReLU module called at several places becomes one
    learnable module shared by those places.
    """
    targets = sorted(a.name for a in registry.activations() if registry.conversion_module(a.name, "shared"))
    if to not in targets:
        raise ValueError(f"convert_activations: to must be one of {targets}, got {to!r}")
    if "channels" in options:
        raise TypeError("convert_activations: a ReLU does not know its channel count, so channels= cannot be "
                        "given; use per_channel=True to infer it at the first forward")
    if per_channel and registry.conversion_module(to, "per_channel") is None:
        raise ValueError(f"convert_activations: {to!r} has no per-channel (lazy) module; use per_channel=False")
    shared_cls, lazy_cls = registry.conversion_module(to, "shared"), registry.conversion_module(to, "per_channel")
    options = {**_factory_of(model), **options}

    def make() -> nn.Module:
        return lazy_cls(**options) if per_channel else shared_cls(None, **options)

    if type(model) is nn.ReLU:
        return make(), [""]
    # Every place a ReLU is registered, in named_modules order; collected before anything is replaced,
    # so that a ReLU instance registered at several places gets one new module.
    sites = [name for name, module in model.named_modules(remove_duplicate=False) if type(module) is nn.ReLU]
    new_modules: dict[int, nn.Module] = {}
    for name in sites:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        child = parent._modules[child_name]
        if id(child) not in new_modules:
            new_modules[id(child)] = make()
        setattr(parent, child_name, new_modules[id(child)])
    if not sites:
        warnings.warn("convert_activations: the model has no nn.ReLU module; functional calls "
                      "(F.relu, torch.relu) in forward code cannot be converted", stacklevel=2)
    return model, sites

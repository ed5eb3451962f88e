"""The registry of activations: one description per op, read by every Python layer that needs per-op facts.

An op is described once, by the :class:`Activation` that ``functional.py``
hands to ``_dispatch.define`` (its parameters and their channel axes, its
reference, its checks, how its records are plotted and which parameter sets
are benchmarked); ``define`` registers it with its public function. Each
``nn.Module`` class that computes an op says so with the
:func:`activation_module` class decorator, holding the op's parameters under
their names. The dispatch layer, :class:`~lslu_kernels.ParameterRecorder`,
:func:`~lslu_kernels.param_groups`, :func:`~lslu_kernels.convert_activations`,
``python -m lslu_kernels.plot_params`` and ``benchmarks/run.py`` take their
per-op facts from here and name no op themselves.
"""

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

# A parameter set as the recorder saves it: parameter name -> nested lists of floats.
RecordedParams = dict[str, list]


@dataclasses.dataclass(frozen=True)
class Activation:
    # The public function's name, its custom ops' (``lslu_kernels::<name>``) and ``convert_activations(to=...)``'s.
    name: str
    # Parameter names, in call order.
    params: tuple[str, ...]
    # Per parameter: its number of axes and which axis holds the channels
    # (size C, or 1 when the parameter is shared by all channels).
    param_ndims: tuple[int, ...]
    param_channel_axis: tuple[int, ...]
    # reference(x, *params, channel_dim) -> y
    reference: Callable[..., torch.Tensor]
    # Extra per-op checks on the parameters (raise ValueError), after the generic ones. They must read only
    # the parameters' shapes, dtypes and devices: the dispatch layer runs them once per signature of the inputs.
    check_params: Callable[..., None] | None = None
    # The op's name in records and plots, its module class's name; "" means name.upper().
    label: str = ""
    # plot_params: at most two trajectory panels, (title, names of the one or two parameters drawn in it);
    # () means one panel for each of the first two parameters.
    trajectory_panels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # plot_params: curve_range(params) -> the (lo, hi) inputs the learned curve is drawn on (None: [-4, 4]).
    curve_range: Callable[[RecordedParams], tuple[float, float]] | None = None
    # plot_params: curve_marks(params) -> (x, y), each (channels, K): points marked on each channel's curve.
    curve_marks: Callable[[RecordedParams], tuple[torch.Tensor, torch.Tensor]] | None = None
    # benchmarks/run.py: (variant, make_params(channels, device)) per benchmarked parameter set, whose
    # benchmark label is "<name> <variant>" ("<name>" for variant ""). () means not benchmarked.
    benchmarks: tuple[tuple[str, Callable[[int, torch.device], list[torch.Tensor]]], ...] = ()

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.name.upper())
        if not self.trajectory_panels:
            object.__setattr__(self, "trajectory_panels", tuple((p, (p,)) for p in self.params[:2]))
        if not len(self.params) == len(self.param_ndims) == len(self.param_channel_axis):
            raise ValueError(f"Activation {self.name!r}: params, param_ndims and param_channel_axis must have "
                             f"one entry per parameter, got {len(self.params)}, {len(self.param_ndims)} and "
                             f"{len(self.param_channel_axis)}")
        if len(self.trajectory_panels) > 2:
            raise ValueError(f"Activation {self.name!r}: plot_params draws at most two trajectory panels, "
                             f"got {len(self.trajectory_panels)}")
        for title, names in self.trajectory_panels:
            if not 1 <= len(names) <= 2 or not set(names) <= set(self.params):
                raise ValueError(f"Activation {self.name!r}: trajectory panel {title!r} must name one or two "
                                 f"of its parameters {self.params}, got {names}")

    def benchmark_label(self, variant: str) -> str:
        return f"{self.name} {variant}" if variant else self.name


@dataclasses.dataclass(frozen=True)
class ActivationModule:
    """What the registry knows of a module class that computes an activation."""
    activation: Activation
    # "shared": convert_activations(to=name) builds cls(None, **options); "per_channel": with
    # per_channel=True it builds cls(**options), a lazy module; None: not a conversion target.
    conversion: str | None
    # realigned(module) -> False while the module is still ReLU and its parameters are unused (PWLU's
    # phase I); the recorder saves it as "realigned" and plot_params then draws ReLU. None: always used.
    realigned: Callable[[nn.Module], bool] | None


_CONVERSIONS = ("shared", "per_channel")
# name -> (description, public function), in definition order.
_ACTIVATIONS: dict[str, tuple[Activation, Callable[..., torch.Tensor]]] = {}
_MODULES: dict[type, ActivationModule] = {}


def register(activation: Activation, function: Callable[..., torch.Tensor]) -> None:
    """Record ``activation`` and its public function (``_dispatch.define`` calls this)."""
    if activation.name in _ACTIVATIONS:
        raise ValueError(f"activation {activation.name!r} is already registered")
    if any(a.label == activation.label for a, _ in _ACTIVATIONS.values()):
        raise ValueError(f"activation label {activation.label!r} is already registered")
    _ACTIVATIONS[activation.name] = (activation, function)


def unregister(name: str) -> None:
    """Forget activation ``name`` and its module classes (for tests; its torch.library ops stay defined)."""
    _ACTIVATIONS.pop(name)
    for cls in [cls for cls, m in _MODULES.items() if m.activation.name == name]:
        del _MODULES[cls]


def activations() -> list[Activation]:
    """Every registered activation, in definition order."""
    return [activation for activation, _ in _ACTIVATIONS.values()]


def activation(name: str) -> Activation:
    return _lookup(name)[0]


def function(name: str) -> Callable[..., torch.Tensor]:
    """The public function of activation ``name`` (``lk.lslu`` for ``"lslu"``)."""
    return _lookup(name)[1]


def by_label(label: str) -> Activation:
    """The activation whose records carry ``"op": label`` (``"LSLU"``)."""
    for a in activations():
        if a.label == label:
            return a
    raise KeyError(f"no registered activation has label {label!r}; registered: "
                   f"{', '.join(a.label for a in activations())}")


def _lookup(name: str):
    if name not in _ACTIVATIONS:
        raise KeyError(f"no registered activation is named {name!r}; registered: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def activation_module(name: str, *, conversion: str | None = None,
                      realigned: Callable[[nn.Module], bool] | None = None):
    """Class decorator: the module class computes activation ``name`` and holds its parameters under their names.

    ``conversion`` and ``realigned``: see :class:`ActivationModule`. A ``realigned`` not given is
    taken from the nearest registered base class of the same activation (a lazy variant's from its module).
    """
    described = activation(name)
    if conversion not in (None, *_CONVERSIONS):
        raise ValueError(f"activation_module: conversion must be one of {_CONVERSIONS} or None, got {conversion!r}")

    def register_class(cls: type) -> type:
        if cls in _MODULES:
            raise ValueError(f"{cls.__name__} is already registered for {_MODULES[cls].activation.name!r}")
        if conversion is not None and conversion_module(name, conversion) is not None:
            raise ValueError(f"activation {name!r} already has a {conversion!r} conversion module")
        inherited = module_entry(cls)
        same_op = inherited is not None and inherited.activation is described
        _MODULES[cls] = ActivationModule(described, conversion,
                                         realigned if realigned is not None or not same_op else inherited.realigned)
        return cls

    return register_class


def module_entry(module: nn.Module | type) -> ActivationModule | None:
    """The registry's facts for a module (or module class): those of its nearest registered class, or None."""
    cls = module if isinstance(module, type) else type(module)
    return next((_MODULES[c] for c in cls.__mro__ if c in _MODULES), None)


def conversion_module(name: str, conversion: str) -> type | None:
    """The module class that ``convert_activations(to=name)`` builds (``conversion``: "shared" or "per_channel")."""
    return next((cls for cls, m in _MODULES.items()
                 if m.activation.name == name and m.conversion == conversion), None)


def activation_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of the activation that a registered module computes, by name in call order ({} if none)."""
    entry = module_entry(module)
    return {} if entry is None else {p: getattr(module, p) for p in entry.activation.params}

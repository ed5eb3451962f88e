"""Optimizer parameter groups for models with learnable activations."""

from torch import nn

from . import registry


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups for ``torch.optim``: ``weight_decay`` for weights, 0 for the rest.

    No decay for: the activation parameters of every activation module (those of
    ``LSLU``/``PVLU``/``PWLU`` and their lazy variants, the series ``theta``/``omega``
    of ``LearnableSerieslinearUnit``; any class registered with
    :func:`lslu_kernels.registry.activation_module`), whose values mean a shape of
    the activation rather than a size to shrink (decay pulls ``theta`` and PVLU's
    ``beta`` toward 0, which flattens the unit); and every parameter with at most
    one axis (biases, norm scales), the usual rule and the official LSLU code's.
    The rule "no decay for 1-D parameters" alone would decay ``theta``/``omega`` and
    PWLU's ``points``, which have two axes.
    """
    no_decay_ids = {id(p) for module in model.modules() for p in registry.activation_params(module).values()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

"""Record the learnable parameters of every activation module of a model during training.

The official LSLU code appends each epoch's θ/ω values (its ``alphas`` and
``biases``) to ``learnable_params.txt``. :class:`ParameterRecorder` does the same
for every :class:`~lslu_kernels.LSLU`, :class:`~lslu_kernels.PVLU` and
:class:`~lslu_kernels.PWLU` in a model, at whatever steps you call
:meth:`~ParameterRecorder.record`, and saves JSON lines that
``python -m lslu_kernels.plot_params`` draws::

    recorder = lk.ParameterRecorder(model)
    for step, (x, y) in enumerate(loader):
        ...
        optimizer.step()
        recorder.record(step)
    recorder.save("params.jsonl")

Each line is one module at one step:
``{"step": 3, "module": "features.2", "op": "LSLU", "params": {"theta": [[...]], "omega": [[...]]}}``
(``op`` is the activation's label, ``params`` its parameters in call order, both
from ``lslu_kernels.registry``); PWLU lines add ``"realigned"`` (before
realignment the unit is ReLU and its parameters are not used). Values are the
parameters' own values as Python floats, so a float32 or float64 parameter is
recorded exactly.
"""

import json
import os

from torch import nn

from . import registry


def _labels() -> str:
    """The registered activations' labels as a phrase: "LSLU, PVLU or PWLU"."""
    *others, last = [a.label for a in registry.activations()]
    return f"{', '.join(others)} or {last}" if others else last


class ParameterRecorder:
    """Keeps the parameter values of every activation module of ``model`` at each recorded step.

    An activation module is one whose class is registered with
    :func:`lslu_kernels.registry.activation_module` (LSLU, PVLU, PWLU, their lazy
    variants and the full layer's series). Modules are found once, by
    ``model.named_modules()``, so their names are the model's attribute paths
    (with a ``module.`` prefix when ``model`` is wrapped in DistributedDataParallel;
    in several processes, record on one rank).
    """

    def __init__(self, model: nn.Module):
        self.modules = [(name, module, entry) for name, module in model.named_modules()
                        if (entry := registry.module_entry(module)) is not None]
        if not self.modules:
            raise ValueError(f"ParameterRecorder: {type(model).__name__} contains no {_labels()} module")
        self.records: list[dict] = []

    def record(self, step: int) -> None:
        """Append the current values of every activation parameter, labelled with ``step``."""
        for name, module, entry in self.modules:
            line = {"step": int(step), "module": name, "op": entry.activation.label,
                    "params": {p: t.detach().cpu().tolist() for p, t in registry.activation_params(module).items()}}
            if entry.realigned is not None:
                line["realigned"] = entry.realigned(module)
            self.records.append(line)

    def save(self, path: str | os.PathLike) -> None:
        """Write every record so far to ``path`` as JSON lines (overwriting it)."""
        with open(path, "w") as f:
            for line in self.records:
                f.write(json.dumps(line) + "\n")


def load_records(path: str | os.PathLike) -> list[dict]:
    """The records :meth:`ParameterRecorder.save` wrote to ``path``."""
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise ValueError(f"load_records: {path} holds no records")
    return records

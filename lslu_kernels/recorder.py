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
``{"step": 3, "module": "features.2", "op": "LSLU", "params": {"theta": [[...]], "omega": [[...]]}}``;
PWLU lines add ``"realigned"`` (before realignment the unit is ReLU and its
parameters are not used). Values are the parameters' own values as Python
floats, so a float32 or float64 parameter is recorded exactly.
"""

import json
import os

from torch import nn

from .modules import LSLU, PVLU, PWLU, LearnableSerieslinearUnit

# The learnable parameters of each module, in the order of its functional op.
PARAMETERS = {
    "LSLU": ("theta", "omega"),
    "PVLU": ("alpha", "beta"),
    "PWLU": ("points", "left_bound", "right_bound", "left_slope", "right_slope"),
}
# The op each recorded module type computes; the full layer's series is an LSLU (its conv and BN are not recorded).
_OPS = {LSLU: "LSLU", PVLU: "PVLU", PWLU: "PWLU", LearnableSerieslinearUnit: "LSLU"}


class ParameterRecorder:
    """Keeps the parameter values of every LSLU, PVLU and PWLU module of ``model`` at each recorded step.

    Modules are found once, by ``model.named_modules()``, so their names are the
    model's attribute paths (with a ``module.`` prefix when ``model`` is wrapped
    in DistributedDataParallel; in several processes, record on one rank).
    """

    def __init__(self, model: nn.Module):
        self.modules = [(name, module) for name, module in model.named_modules()
                        if isinstance(module, tuple(_OPS))]
        if not self.modules:
            raise ValueError(f"ParameterRecorder: {type(model).__name__} contains no LSLU, PVLU or PWLU module")
        self.records: list[dict] = []

    def record(self, step: int) -> None:
        """Append the current values of every activation parameter, labelled with ``step``."""
        for name, module in self.modules:
            op = next(op for cls, op in _OPS.items() if isinstance(module, cls))
            line = {"step": int(step), "module": name, "op": op,
                    "params": {p: getattr(module, p).detach().cpu().tolist() for p in PARAMETERS[op]}}
            if op == "PWLU":
                line["realigned"] = bool(module.realigned)
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

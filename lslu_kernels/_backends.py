"""Which backends exist in this process, which devices each serves, and the choice rules.

SPEC.md section 2: ``backend=None`` takes the fastest available backend for the
tensor's device; ``LSLU_KERNELS_BACKEND`` overrides that default; naming a
backend that is unknown, unavailable or does not serve the device is an error
that says what is available.
"""

import dataclasses
import importlib
import os

import torch

ENV_VAR = "LSLU_KERNELS_BACKEND"

# Fastest first: the first available backend serving a device is its default.
BACKEND_NAMES = ("cuda", "triton", "cpu", "reference")


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    # Device types whose tensors it computes on; None means every device.
    serves: frozenset[str] | None
    # Device types for which it may be the default (the Triton interpreter
    # serves CPU tensors for testing, but far too slowly to be a default).
    default_for: frozenset[str] | None
    # Why it is not available here; None when it is.
    missing: str | None = None

    @property
    def available(self) -> bool:
        return self.missing is None

    def serves_device(self, device_type: str) -> bool:
        return self.available and (self.serves is None or device_type in self.serves)


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _probe_triton() -> Backend:
    try:
        importlib.import_module("triton")
    except Exception as exc:  # any import failure only disables this backend
        return Backend("triton", frozenset(), frozenset(), f"triton does not import ({exc})")
    if triton_interpreter_on():
        # TRITON_INTERPRET=1 runs every kernel in the interpreter, on CPU tensors.
        return Backend("triton", frozenset({"cpu"}), frozenset())
    if not torch.cuda.is_available():
        return Backend("triton", frozenset(), frozenset(),
                       "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU tensors)")
    return Backend("triton", frozenset({"cuda"}), frozenset({"cuda"}))


def _probe_extension(name: str) -> Backend:
    """The ``cpu`` or ``cuda`` backend: its extension was built at install time (setup.py) or not."""
    try:
        importlib.import_module(f"lslu_kernels._C_{name}")
    except ModuleNotFoundError as exc:
        return Backend(name, frozenset(), frozenset(),
                       f"extension lslu_kernels._C_{name} was not built at install time ({exc}); see setup.py "
                       f"for what it needs ({'nvcc' if name == 'cuda' else 'a C++ compiler with OpenMP'})")
    except ImportError as exc:  # built, but its loading failed (a missing library, a bad LSLU_KERNELS_CPU_ISA)
        return Backend(name, frozenset(), frozenset(), f"extension lslu_kernels._C_{name} does not load: {exc}")
    if name == "cuda" and not torch.cuda.is_available():
        return Backend(name, frozenset(), frozenset(), "built, but torch sees no CUDA device")
    return Backend(name, frozenset({name}), frozenset({name}))


# Probed once, at import: torch.compile then traces backend resolution as plain
# dict lookups (it refuses to trace the imports a lazy probe would run).
_BACKENDS = {
    "cuda": _probe_extension("cuda"),
    "triton": _probe_triton(),
    "cpu": _probe_extension("cpu"),
    "reference": Backend("reference", None, None),
}


def backends() -> dict[str, Backend]:
    """Every known backend, in the order of :data:`BACKEND_NAMES`."""
    return _BACKENDS


def available_backends() -> list[str]:
    """Names of the backends usable in this process, fastest first."""
    return [b.name for b in backends().values() if b.available]


def _describe_available() -> str:
    parts = []
    for b in backends().values():
        if b.available:
            where = "every device" if b.serves is None else "/".join(sorted(b.serves))
            parts.append(f"{b.name} ({where})")
    return ", ".join(parts)


def resolve(backend: str | None, device: torch.device, op: str) -> str:
    """The backend that computes ``op`` on ``device``: the one asked for, or the default."""
    source = "backend"
    if backend is None:
        backend = os.environ.get(ENV_VAR) or None
        source = f"${ENV_VAR}"
    if backend is None:
        for b in backends().values():
            if b.available and (b.default_for is None or device.type in b.default_for):
                return b.name
    known = backends()
    if backend not in known:
        raise ValueError(f"{op}: unknown {source} {backend!r}; known backends: {', '.join(BACKEND_NAMES)}")
    chosen = known[backend]
    if not chosen.available:
        raise RuntimeError(f"{op}: {source} {backend!r} is not available: {chosen.missing}. "
                           f"Available: {_describe_available()}")
    if not chosen.serves_device(device.type):
        raise RuntimeError(f"{op}: {source} {backend!r} does not serve {device.type} tensors. "
                           f"Available: {_describe_available()}")
    return backend


def kernels(backend: str, op: str):
    """The ``(forward, backward)`` host functions of ``op`` in a kernel backend.

    Convention: backend ``triton`` keeps op ``foo`` in ``triton_kernels/foo.py``
    as ``foo_forward`` and ``foo_backward``; the C++ backends ``cpu`` and
    ``cuda`` share theirs in ``lslu_kernels/cpp_kernels/foo.py``.
    """
    package = "cpp_kernels" if backend in ("cpu", "cuda") else f"{backend}_kernels"
    module = importlib.import_module(f"lslu_kernels.{package}.{op}")
    return getattr(module, f"{op}_forward"), getattr(module, f"{op}_backward")

"""Which backends exist in this process, which devices each serves, and the choice rules.

SPEC.md section 2: ``backend=None`` takes the fastest available backend for the
tensor's device; ``LSLU_KERNELS_BACKEND`` overrides that default; naming a
backend that is unknown, unavailable or does not serve the device is an error
that says what is available.
"""

import dataclasses
import importlib
import importlib.util
import os
import re

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


# os.environ's own store and the key it files ENV_VAR under: reading them is a plain dict lookup,
# where os.environ.get encodes the key and raises and catches a KeyError when the variable is unset.
# Both are what os.environ itself reads, so a change made through os.environ is seen at the next call.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
_ENVIRON_KEY = os.environ.encodekey(ENV_VAR) if hasattr(os.environ, "encodekey") else ENV_VAR


def environment_backend() -> str | None:
    """$LSLU_KERNELS_BACKEND as it is now (None when unset or empty), read at each call."""
    if _ENVIRON_DATA is None:  # not CPython's os._Environ
        return os.environ.get(ENV_VAR) or None
    value = _ENVIRON_DATA.get(_ENVIRON_KEY)
    if value is None:
        return None
    return os.environ.decodevalue(value) or None


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# The oldest Triton the project tests (CI runs the static GPU gate and the interpreter tests with
# it as well as with the newest release): older ones leave the backend unavailable, not untested.
OLDEST_TRITON = "3.6.0"


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as '3.6.0', '3.4.0+git1234' or '3.7.0rc1'."""
    numbers = [int(m.group()) for m in (re.match(r"\d+", part) for part in version.split(".")[:3]) if m]
    return tuple(numbers + [0] * (3 - len(numbers)))


def _probe_triton() -> Backend:
    try:
        triton = importlib.import_module("triton")
    except Exception as exc:  # any import failure only disables this backend
        return Backend("triton", frozenset(), frozenset(), f"triton does not import ({exc})")
    if _release(triton.__version__) < _release(OLDEST_TRITON):
        return Backend("triton", frozenset(), frozenset(),
                       f"triton {triton.__version__} is older than {OLDEST_TRITON}, the oldest release this "
                       f"project tests (pip install 'triton>={OLDEST_TRITON}')")
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


def cuda_support_problem(answer: dict) -> str | None:
    """Why the ``cuda`` extension cannot run on a device, from its ``device_support`` answer; None if it can.

    ``answer``: ``driver_version`` and ``runtime_version`` (CUDA's 1000 * major + 10 * minor),
    ``compute_capability`` (10 * major + minor), ``image_ok`` (a kernel's attributes could be read
    on the device, so the extension has an image or PTX that loads there) and ``error`` (CUDA's
    error string, "" if none).
    """
    def version(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    capability = answer.get("compute_capability", 0)
    driver, runtime = answer.get("driver_version", 0), answer.get("runtime_version", 0)
    if driver == 0:
        return f"no CUDA driver answered ({answer.get('error') or 'cudaDriverGetVersion failed'})"
    # Minor-version compatibility (CUDA >= 11) lets a driver run newer runtimes of its major
    # release; a driver of an older major release cannot run this runtime at all.
    if driver // 1000 < runtime // 1000:
        return (f"the driver supports CUDA {version(driver)}, older than the CUDA {version(runtime)} runtime "
                f"the extension links; update the driver or rebuild with an older CUDA toolkit")
    if not answer.get("image_ok") or answer.get("error"):
        return (f"the extension has no kernel image that loads on this GPU (compute capability "
                f"{capability // 10}.{capability % 10}; CUDA says: {answer.get('error') or 'no image'}); "
                f"rebuild with LSLU_KERNELS_CUDA_ARCHS naming it")
    return None


# device index -> why ``cuda`` cannot run there (None: it can); filled on each device's first use.
_CUDA_DEVICE_PROBLEMS: dict[int, str | None] = {}


def _ask_cuda_extension(index: int) -> dict:
    return importlib.import_module("lslu_kernels._C_cuda").device_support(index)


@torch.compiler.assume_constant_result  # torch.compile calls it while tracing and keeps the answer
def _cuda_device_problem(index: int) -> str | None:
    if index not in _CUDA_DEVICE_PROBLEMS:
        try:
            answer = _ask_cuda_extension(index)
        except Exception as exc:  # a probe that fails must not break the default choice
            _CUDA_DEVICE_PROBLEMS[index] = f"the extension's device probe failed ({exc})"
        else:
            _CUDA_DEVICE_PROBLEMS[index] = cuda_support_problem(answer)
    return _CUDA_DEVICE_PROBLEMS[index]


def device_problem(name: str, device: torch.device) -> str | None:
    """Why available backend ``name``, which serves ``device.type``, cannot run on ``device``; None if it can."""
    if name != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_device_problem(index)


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


def _usable(b: Backend) -> bool:
    """Available, and (for ``cuda``) able to run on at least one GPU of this process."""
    if not b.available:
        return False
    if b.name != "cuda":
        return True
    return any(device_problem("cuda", torch.device("cuda", i)) is None for i in range(torch.cuda.device_count()))


def available_backends() -> list[str]:
    """Names of the backends usable in this process, fastest first.

    ``cuda`` is listed only if it can run on at least one GPU here; :func:`unavailable_backends` says
    why the others are not.
    """
    return [b.name for b in backends().values() if _usable(b)]


def unavailable_backends() -> dict[str, str]:
    """Each backend that is not usable here, with why (for ``cuda``: why not, on each GPU)."""
    reasons = {}
    for b in backends().values():
        if not b.available:
            reasons[b.name] = b.missing
        elif not _usable(b):
            reasons[b.name] = "; ".join(f"cuda:{i}: {device_problem('cuda', torch.device('cuda', i))}"
                                        for i in range(torch.cuda.device_count()))
    return reasons


def _describe_available() -> str:
    parts = []
    for b in backends().values():
        if _usable(b):
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
            if (b.available and (b.default_for is None or device.type in b.default_for)
                    and device_problem(b.name, device) is None):
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
    problem = device_problem(backend, device)
    if problem is not None:
        raise RuntimeError(f"{op}: {source} {backend!r} cannot run on {device}: {problem}. "
                           f"Available: {_describe_available()}")
    return backend


# (backend, op) -> its (forward, backward) host functions, imported on first use.
_KERNELS: dict[tuple[str, str], tuple] = {}


def kernels(backend: str, op: str):
    """The ``(forward, backward)`` host functions of ``op`` in a kernel backend (imported once).

    Convention: backend ``triton`` keeps op ``foo`` in ``triton_kernels/foo.py``
    as ``foo_forward`` and ``foo_backward``; the C++ backends ``cpu`` and
    ``cuda`` share one host for every op, ``lslu_kernels/cpp_kernels``, with a
    row per op in its ``OPS``.
    """
    found = _KERNELS.get((backend, op))
    if found is None:
        if backend in ("cpu", "cuda"):
            found = importlib.import_module("lslu_kernels.cpp_kernels").kernels(op)
        else:
            module = importlib.import_module(f"lslu_kernels.{backend}_kernels.{op}")
            found = getattr(module, f"{op}_forward"), getattr(module, f"{op}_backward")
        _KERNELS[backend, op] = found
    return found


def has_kernels(backend: str, op: str) -> bool:
    """Whether kernel backend ``backend`` has kernels for ``op`` (a new op may have only its reference)."""
    if backend in ("cpu", "cuda"):
        return op in importlib.import_module("lslu_kernels.cpp_kernels").OPS
    return importlib.util.find_spec(f"lslu_kernels.{backend}_kernels.{op}") is not None

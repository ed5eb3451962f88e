"""The C++ extensions are built wherever their toolchain is (setup.py), GPU or not.

On CI (nvcc 13 and gcc, no GPU) this is the test that fails when a .cu or .cpp
source does not compile: the install would have failed or skipped the extension.
"""

import importlib
import platform
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from lslu_kernels import _backends


def _wanted(switch: str) -> bool:
    return os.environ.get(switch, "auto").strip().lower() != "0"


@pytest.mark.skipif(not shutil.which(sysconfig.get_config_var("CXX").split()[0] if sysconfig.get_config_var("CXX")
                                     else "c++"), reason="no C++ compiler here")
@pytest.mark.skipif(not _wanted("LSLU_KERNELS_BUILD_CPU"), reason="LSLU_KERNELS_BUILD_CPU=0")
def test_cpu_extension_was_built():
    module = importlib.import_module("lslu_kernels._C_cpu")
    assert module.max_lslu_stages >= 3
    assert _backends.backends()["cpu"].available, _backends.backends()["cpu"].missing


@pytest.mark.skipif(not (shutil.which("nvcc") or os.environ.get("CUDA_HOME")), reason="no nvcc here")
@pytest.mark.skipif(not _wanted("LSLU_KERNELS_BUILD_CUDA"), reason="LSLU_KERNELS_BUILD_CUDA=0")
def test_cuda_extension_was_built():
    """Importing needs no GPU: the extension links the CUDA runtime statically."""
    module = importlib.import_module("lslu_kernels._C_cuda")
    assert module.max_lslu_stages >= 3
    # Host code that runs without a GPU: the grid arithmetic and the device probe.
    assert module.wave_blocks_per_column(outer=64, channels=32, inner=3136, resident_blocks=4, multiprocessors=132) >= 1
    support = module.device_support(0)
    assert set(support) == {"driver_version", "runtime_version", "compute_capability", "image_ok", "error"}
    cuda = _backends.backends()["cuda"]
    assert cuda.available or cuda.missing == "built, but torch sees no CUDA device", cuda.missing


_CPU_BUILT = pytest.mark.skipif("cpu" not in _backends.backends() or not _backends.backends()["cpu"].available,
                                reason="cpu backend not built")


@_CPU_BUILT
def test_cpu_isa_switch():
    """The cpu kernels' level (csrc/cpu/isa.h): each supported one can be chosen, others are refused clearly."""
    ext = importlib.import_module("lslu_kernels._C_cpu")
    supported = ext.supported_isas()
    assert supported[0] == "baseline" and set(supported) <= {"baseline", "avx2", "avx512"}, supported
    assert supported == [level for level in ("baseline", "avx2", "avx512") if level in supported], "lowest first"
    before = ext.isa()
    try:
        for level in supported:
            ext.set_isa(level)
            assert ext.isa() == level, f"set_isa({level!r}) left the level at {ext.isa()!r}"
            if platform.machine() in ("x86_64", "AMD64"):  # the widths isa.h asks the compiler for
                bits = {"baseline": 128, "avx2": 256, "avx512": 512}[level]
                assert ext.vector_bits() == bits, f"{level}: vector_bits() = {ext.vector_bits()}, expected {bits}"
        for level in {"avx2", "avx512"} - set(supported):
            with pytest.raises(ValueError, match=f"has no {level} level; it supports"):
                ext.set_isa(level)
        with pytest.raises(ValueError, match="unknown CPU instruction-set level 'avx-512'"):
            ext.set_isa("avx-512")
        assert ext.isa() == supported[-1], "a refused level changes nothing"
    finally:
        ext.set_isa(before)


def _load_cpu_extension_with(env_value: str) -> subprocess.CompletedProcess:
    """Loads _C_cpu's shared library alone (no torch) in a fresh process with LSLU_KERNELS_CPU_ISA=env_value."""
    path = importlib.import_module("lslu_kernels._C_cpu").__file__
    code = ("import importlib.machinery, importlib.util, sys\n"
            f"loader = importlib.machinery.ExtensionFileLoader('_C_cpu', {path!r})\n"
            "spec = importlib.util.spec_from_file_location('_C_cpu', loader.path, loader=loader)\n"
            "ext = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(ext)\n"
            "print(ext.isa(), ' '.join(ext.supported_isas()))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LSLU_KERNELS_CPU_ISA": env_value})


@_CPU_BUILT
def test_environment_caps_the_cpu_isa():
    """LSLU_KERNELS_CPU_ISA, read when the extension loads: the best supported level up to it."""
    for cap, allowed in (("auto", ("baseline", "avx2", "avx512")), ("", ("baseline", "avx2", "avx512")),
                         ("avx512", ("baseline", "avx2", "avx512")), ("avx2", ("baseline", "avx2")),
                         ("baseline", ("baseline",))):
        run = _load_cpu_extension_with(cap)
        assert run.returncode == 0, f"LSLU_KERNELS_CPU_ISA={cap!r}: {run.stderr}"
        level, supported = run.stdout.split(maxsplit=1)
        expected = [s for s in supported.split() if s in allowed][-1]
        assert level == expected, f"LSLU_KERNELS_CPU_ISA={cap!r}: level {level}, expected {expected}"
    run = _load_cpu_extension_with("sse4")
    assert run.returncode != 0 and "LSLU_KERNELS_CPU_ISA must be auto, avx512, avx2 or baseline, got 'sse4'" \
        in run.stderr, run.stderr


@_CPU_BUILT
def test_bad_cpu_isa_environment_says_why_the_cpu_backend_is_missing():
    code = ("import torch, lslu_kernels as lk\n"
            "try:\n"
            "    lk.lslu(torch.randn(2, 3), torch.ones(1, 3), torch.zeros(1, 3), backend='cpu')\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LSLU_KERNELS_CPU_ISA": "sse4"})
    assert run.returncode == 0, run.stderr
    assert "lslu_kernels._C_cpu does not load: LSLU_KERNELS_CPU_ISA must be" in run.stdout, run.stdout

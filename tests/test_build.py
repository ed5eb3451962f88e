"""The C++ extensions are built wherever their toolchain is (setup.py), GPU or not.

On CI (nvcc 13 and gcc, no GPU) this is the test that fails when a .cu or .cpp
source does not compile: the install would have failed or skipped the extension.
"""

import importlib
import os
import shutil
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

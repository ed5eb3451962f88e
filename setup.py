"""Build of lslu-kernels.

The Triton sources live in the top-level folder ``triton_kernels/`` and are
installed as ``lslu_kernels.triton_kernels``: the import name ``triton_kernels``
belongs to other projects, so nothing is installed under it.

Two optional C++ extensions, bound with pybind11 (no torch headers: tensors
cross as raw pointers, so the CUDA sources compile against a CPU build of torch):

- ``lslu_kernels._C_cpu``: the CPU kernels (``csrc/cpu``), built with the C++
  compiler and OpenMP. ``LSLU_KERNELS_BUILD_CPU``: ``auto`` (default: built when
  a compiler works, skipped with a warning otherwise), ``1`` (required), ``0``.
  On x86-64 its work functions are compiled for three instruction-set levels
  (baseline SSE2, AVX2 + FMA, AVX-512; csrc/cpu/isa.h), chosen when it loads: the
  best the CPU runs, capped by ``LSLU_KERNELS_CPU_ISA`` (``auto``, ``avx512``,
  ``avx2``, ``baseline``); ``_C_cpu.set_isa(name)`` changes it at run time.
- ``lslu_kernels._C_cuda``: the CUDA kernels (``csrc/cuda``), compiled by nvcc
  through ninja. ``LSLU_KERNELS_BUILD_CUDA``: ``auto`` (default: built when
  nvcc is found on PATH or under ``CUDA_HOME``; a compile error then fails the
  install), ``1`` (required), ``0``. ``LSLU_KERNELS_CUDA_ARCHS``: the GPU
  architectures, default ``80;90`` (sm_80 and sm_90 code plus PTX for the newest).
  Whether the machine has a GPU plays no part.
"""

import os
import pathlib
import shutil
import subprocess
import sys

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
CSRC = "csrc"
# -fno-trapping-math lets the compiler turn the relu branches into vector selects
# (it changes no result: the kernels never read floating-point exception flags).
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]


def _switch(name: str) -> str:
    value = os.environ.get(name, "auto").strip().lower()
    if value not in ("auto", "1", "0"):
        sys.exit(f"{name} must be auto, 1 or 0, got {value!r}")
    return value


def _find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (pathlib.Path(cuda_home) / "bin" / "nvcc").exists():
        return str(pathlib.Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _cuda_lib_dir(nvcc: str) -> pathlib.Path:
    """The folder with libcudart_static.a, from nvcc's own idea of its install."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True).stderr
    for line in out.splitlines():
        if "TOP=" in line:
            top = pathlib.Path(line.split("TOP=", 1)[1].strip())
            for candidate in (top / "lib64", top / "targets" / "x86_64-linux" / "lib", top / "lib"):
                if (candidate / "libcudart_static.a").exists():
                    return candidate
    return pathlib.Path(nvcc).resolve().parent.parent / "lib64"


def _ninja() -> str:
    found = shutil.which("ninja")
    if found:
        return found
    import ninja  # the PyPI package, a build requirement

    return str(pathlib.Path(ninja.BIN_DIR) / "ninja")


class BuildExt(build_ext):
    """Builds each optional extension or explains why not; .cu sources go through nvcc and ninja."""

    def build_extension(self, ext):
        switch = ext.lslu_switch
        try:
            if ext.name.endswith("_C_cuda"):
                self._compile_cuda_sources(ext)
            super().build_extension(ext)
        except Exception as exc:
            if switch == "1" or ext.name.endswith("_C_cuda"):
                raise
            self.warn(f"lslu-kernels: {ext.name} not built ({exc}); the other backends still work")

    def _compile_cuda_sources(self, ext):
        nvcc = ext.lslu_nvcc
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        build_dir = pathlib.Path(self.build_temp).resolve() / "cuda"
        build_dir.mkdir(parents=True, exist_ok=True)
        archs = [a.strip() for a in os.environ.get("LSLU_KERNELS_CUDA_ARCHS", "80;90").replace(",", ";").split(";")
                 if a.strip()]
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        flags = ["-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", f"-I{ROOT / CSRC}",
                 "--threads", "0", *gencode]
        lines = [f"rule nvcc\n  command = {nvcc} {' '.join(flags)} -MD -MF $out.d -c $in -o $out\n"
                 "  depfile = $out.d\n  deps = gcc\n  description = nvcc $in\n"]
        objects = []
        for source in cu_sources:
            obj = build_dir / (pathlib.Path(source).stem + ".o")
            lines.append(f"build {obj}: nvcc {ROOT / source}\n")
            objects.append(str(obj))
        (build_dir / "build.ninja").write_text("\n".join(lines))
        subprocess.run([_ninja(), "-C", str(build_dir)], check=True)
        ext.extra_objects = [*ext.extra_objects, *objects]
        ext.depends = [*ext.depends, *objects]  # relinked when an object is newer, not only bindings.cpp
        ext.library_dirs = [*ext.library_dirs, str(_cuda_lib_dir(nvcc))]


def _sources(backend: str, suffix: str) -> list[str]:
    """One source per op: csrc/<backend>/<op><suffix>."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC / backend).glob(f"*{suffix}"))


def _headers() -> list[str]:
    """The headers the CPU extension's sources include: csrc/*.h and csrc/cpu/*.h."""
    return sorted(str(p.relative_to(ROOT)) for pattern in ("*.h", "cpu/*.h") for p in (ROOT / CSRC).glob(pattern))


def _extensions():
    extensions = []
    cpu = _switch("LSLU_KERNELS_BUILD_CPU")
    if cpu != "0":
        ext = Pybind11Extension(
            "lslu_kernels._C_cpu", [f"{CSRC}/bindings.cpp", *_sources("cpu", ".cpp")],
            include_dirs=[CSRC], extra_compile_args=CXX_FLAGS, extra_link_args=["-fopenmp"], cxx_std=17,
            depends=_headers())  # rebuilt when a shared header changes, not only a .cpp
        ext.lslu_switch = cpu
        extensions.append(ext)
    cuda = _switch("LSLU_KERNELS_BUILD_CUDA")
    nvcc = _find_nvcc() if cuda != "0" else None
    if cuda == "1" and nvcc is None:
        sys.exit("LSLU_KERNELS_BUILD_CUDA=1 but nvcc is not on PATH nor under CUDA_HOME")
    if nvcc is not None:
        ext = Pybind11Extension(
            "lslu_kernels._C_cuda", [f"{CSRC}/bindings.cpp", *_sources("cuda", ".cu")],
            include_dirs=[CSRC], define_macros=[("LSLU_CUDA", "1")], extra_compile_args=["-O3"],
            # The static CUDA runtime: the extension needs no libcudart at run time.
            libraries=["cudart_static", "dl", "rt", "pthread"], cxx_std=17)
        ext.lslu_switch = cuda
        ext.lslu_nvcc = nvcc
        extensions.append(ext)
    return extensions


def _stale(obj: str, src: str) -> bool:
    """Whether a C++ source needs compiling again: its object is missing or older than it or a shared header
    (a rebuild after editing one kernel compiles that one). bindings.cpp always: both extensions compile it,
    with different macros, to the same object."""
    if src.endswith("bindings.cpp") or not os.path.exists(obj):
        return True
    built = os.stat(obj).st_mtime
    return any(os.stat(ROOT / path).st_mtime > built for path in (src, *_headers()))


# The C++ sources of one extension compile in parallel, one job per core (LSLU_KERNELS_BUILD_JOBS to change).
ParallelCompile("LSLU_KERNELS_BUILD_JOBS", default=0, needs_recompile=_stale).install()

setup(
    packages=["lslu_kernels", "lslu_kernels.cpp_kernels", "lslu_kernels.triton_kernels"],
    package_dir={"lslu_kernels": "lslu_kernels", "lslu_kernels.triton_kernels": "triton_kernels"},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExt},
)

"""Build of lslu-kernels.

The Triton sources live in the top-level folder ``triton_kernels/`` and are
installed as ``lslu_kernels.triton_kernels``: the import name ``triton_kernels``
belongs to other projects, so nothing is installed under it.
"""

from setuptools import setup

setup(
    packages=["lslu_kernels", "lslu_kernels.triton_kernels"],
    package_dir={"lslu_kernels": "lslu_kernels", "lslu_kernels.triton_kernels": "triton_kernels"},
)

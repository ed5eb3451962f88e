"""Triton kernels, installed as ``lslu_kernels.triton_kernels``: one file per op."""

"""Pure-PyTorch reference of every activation: SPEC.md section 1, to the letter.

The oracle for every test and benchmark. Written with plain eager ops so that
autograd derives the gradients independently of the hand-written backward
kernels. Arithmetic runs in float32 (float64 for float64 inputs), the output
has ``x``'s dtype and autograd gives each parameter gradient its own dtype.
"""

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def per_channel(p: torch.Tensor, ndim: int, channel_dim: int) -> torch.Tensor:
    """A ``(C,)`` or ``(1,)`` parameter vector shaped to broadcast along ``channel_dim``."""
    shape = [1] * ndim
    shape[channel_dim] = p.shape[0]
    return p.reshape(shape)


def lslu(x: torch.Tensor, theta: torch.Tensor, omega: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Learnable series linear unit, SPEC.md 1.1: ``S`` rounds of relu then affine, then relu."""
    dtype = compute_dtype(x)
    channel_dim = channel_dim % x.dim()
    r = torch.relu(x.to(dtype))
    for s in range(theta.shape[0]):
        th = per_channel(theta[s].to(dtype), x.dim(), channel_dim)
        om = per_channel(omega[s].to(dtype), x.dim(), channel_dim)
        r = torch.relu(th * r + om)
    return r.to(x.dtype)

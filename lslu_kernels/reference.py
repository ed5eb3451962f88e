"""Pure-PyTorch reference of every activation: SPEC.md section 1, to the letter.

The oracle for every test and benchmark. Written with plain eager ops so that
autograd derives the gradients independently of the hand-written backward
kernels. Arithmetic runs in float32 (float64 for float64 inputs), the output
has ``x``'s dtype and autograd gives each parameter gradient its own dtype.
"""

import torch

from ._numerics import compute_dtype  # also imported from here by kernel backends not yet moved to _numerics


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


def pvlu(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Parametric variational linear unit, SPEC.md 1.2: ``relu(x) + alpha * sin(beta * x)``."""
    dtype = compute_dtype(x)
    channel_dim = channel_dim % x.dim()
    xc = x.to(dtype)
    a = per_channel(alpha.to(dtype), x.dim(), channel_dim)
    b = per_channel(beta.to(dtype), x.dim(), channel_dim)
    return (torch.relu(xc) + a * torch.sin(b * xc)).to(x.dtype)


def pwlu(x: torch.Tensor, points: torch.Tensor, left_bound: torch.Tensor, right_bound: torch.Tensor,
         left_slope: torch.Tensor, right_slope: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Piecewise linear unit, SPEC.md 1.3: ``N`` equal intervals between the bounds, linear beyond them.

    Rules where the spec leaves a choice (the kernels follow them too):
    - regions are tested in the order ``x < B_L`` (left), ``x >= B_R`` (right),
      else inside, so with crossed bounds (``B_R <= B_L``) every input is left or
      right of them and the interval width, ``<= 0``, is never divided by;
    - a NaN input takes the inside formula with interval 0 and gives NaN;
    - infinite inputs follow IEEE arithmetic in the outer formulas (``-inf``
      with ``K_L = 0`` gives NaN, as ``(x - B_L) * K_L`` does in PyTorch).
    """
    dtype = compute_dtype(x)
    channel_dim = channel_dim % x.dim()
    intervals = points.shape[1] - 1
    xc = x.to(dtype)
    bl, br, kl, kr = (per_channel(p.to(dtype), x.dim(), channel_dim)
                      for p in (left_bound, right_bound, left_slope, right_slope))
    left, right = xc < bl, xc >= br
    inside = ~(left | right)
    # Inside the bounds B_R > B_L; elsewhere a width of 1 keeps the unused branch finite,
    # so that its zero gradient stays zero (not NaN) through torch.where.
    width = torch.where(inside, (br - bl) / intervals, torch.ones_like(xc))
    u = torch.where(inside, (xc - bl) / width, torch.zeros_like(xc))
    index = torch.nan_to_num(torch.floor(u.detach()), nan=0.0).clamp(0, intervals - 1).long()
    t = u - index
    # Y[c, k] read as a flat table: row (channel, or 0 when shared) * (N + 1) + k.
    table = points.to(dtype).reshape(-1)
    row = per_channel(torch.arange(points.shape[0], device=x.device), x.dim(), channel_dim) * (intervals + 1)
    y_inside = (1 - t) * table[row + index] + t * table[row + index + 1]
    y_left = table[row] + (xc - bl) * kl
    y_right = table[row + intervals] + (xc - br) * kr
    return torch.where(left, y_left, torch.where(right, y_right, y_inside)).to(x.dtype)


def lslu_dwconv(x: torch.Tensor, theta: torch.Tensor, omega: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's full layer before its BN (SPEC.md 1.1): ``depthwise_conv2d(lslu(x), weight, padding S) + bias``.

    ``x`` is ``(N, C, H, W)``, ``weight`` ``(C, 1, 2S+1, 2S+1)``. The series and the
    convolution both run in float32 (float64 for float64 inputs), the series' output
    is not rounded to ``x``'s dtype in between, and the result has ``x``'s dtype.
    """
    dtype = compute_dtype(x)
    r = lslu(x.to(dtype), theta, omega, channel_dim=1)
    y = torch.nn.functional.conv2d(r, weight.to(dtype), None if bias is None else bias.to(dtype),
                                   padding=theta.shape[0], groups=x.shape[1])
    return y.to(x.dtype)

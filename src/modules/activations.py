"""Activations written for speed on CPU.

``tanh(x)`` here is computed as ``2 σ(2x) - 1``: torch's CPU ``tanh`` is about 7x slower than its ``sigmoid``
(9 against 1.3 ms for ``[5, 9000, 64]`` floats on one core of an AMD EPYC VM, fresh output included), which made
it about a third of DM²'s discriminator steps. In float32 the two differ by at most a few 1e-7 (rounding). The
backward is tanh's own, ``grad · (1 - y²)`` from the saved output.
"""
from __future__ import annotations

import torch


def tanh_via_sigmoid(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``tanh(x)`` as ``2 σ(2x) - 1`` (no autograd), written into ``out`` when given (it may be ``x``)."""
    y = torch.mul(x, 2, out=out) if out is not None else x * 2
    return torch.sigmoid(y, out=y).mul_(2).sub_(1)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = tanh_via_sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh(x)`` (same shape, differentiable once), computed as ``2 σ(2x) - 1``; see the module docstring."""
    return _Tanh.apply(x)

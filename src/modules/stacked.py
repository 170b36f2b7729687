"""Layers for K networks with unshared parameters, computed together.

Every parameter carries a leading "stack" dimension of size ``K``: slice ``k`` is the whole of network
``k``'s parameter and nothing else. Inputs are laid out ``[K, M, features]`` (or ``[K, T, M, features]``
for sequences), and each layer is one batched matmul (``torch.baddbmm``) over the K stacks, so the
result is mathematically K separate networks evaluated in a single call. With ``K = 1`` the same layers
give one network shared by everything folded into ``M``.

Because slice ``k`` of a parameter only ever meets slice ``k`` of the input, the gradient of network
j's loss on network i's parameters is exactly zero; one element-wise optimiser (Adam, RMSprop) over the
stacked tensors equals K separate optimisers. Gradient-norm clipping is not element-wise, so it must be
done per stack: :func:`clip_grad_norm_per_stack`.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def _orthogonal_stack_(weight: torch.Tensor, gain: float) -> None:
    """Orthogonal init of each stack's ``[in, out]`` slice, as ``nn.init.orthogonal_`` does on the
    ``[out, in]`` matrix (QR of a Gaussian matrix, signs fixed by R's diagonal), one batched QR."""
    k, n_in, n_out = weight.shape
    with torch.no_grad():
        flat = torch.randn(k, n_out, n_in)
        if n_out < n_in:
            flat = flat.transpose(1, 2)
        q, r = torch.linalg.qr(flat)
        q = q * torch.diagonal(r, dim1=1, dim2=2).sign().unsqueeze(1)
        if n_out < n_in:
            q = q.transpose(1, 2)
        weight.copy_(q.transpose(1, 2) * gain)


class StackedLinear(nn.Module):
    """K independent ``nn.Linear(in_features, out_features)``: ``[K, ..., in] -> [K, ..., out]``.

    Args:
        n_stacks: K.
        init_gain: ``None`` initialises every stack like ``nn.Linear`` (uniform in ``±1/sqrt(in)`` for
            weight and bias); a number gives orthogonal weights with that gain and zero bias (the
            initialisation of the IPPO reference code).
    Parameters: ``weight [K, in, out]`` (the transpose of ``nn.Linear.weight``), ``bias [K, out]``.
    """

    def __init__(self, n_stacks: int, in_features: int, out_features: int, init_gain: float | None = None):
        super().__init__()
        self.n_stacks, self.in_features, self.out_features = n_stacks, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_stacks, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_stacks, out_features))
        if init_gain is None:
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            _orthogonal_stack_(self.weight, init_gain)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [K, *batch, in] -> [K, *batch, out]``."""
        k, *batch, _ = x.shape
        out = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(k, -1, self.in_features), self.weight)
        return out.view(k, *batch, self.out_features)

    def extra_repr(self) -> str:
        return f"n_stacks={self.n_stacks}, in_features={self.in_features}, out_features={self.out_features}"


class StackedLayerNorm(nn.Module):
    """K independent ``nn.LayerNorm(dim)``: ``[K, ..., dim] -> [K, ..., dim]``; weight, bias ``[K, dim]``."""

    def __init__(self, n_stacks: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(n_stacks, dim))
        self.bias = nn.Parameter(torch.zeros(n_stacks, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, *batch, d = x.shape
        y = F.layer_norm(x, (d,), eps=self.eps).view(k, -1, d)
        return torch.addcmul(self.bias.unsqueeze(1), y, self.weight.unsqueeze(1)).view(x.shape)


class StackedGRU(nn.Module):
    """K independent GRUs with ``nn.GRUCell``'s equations (gate order r, z, n).

    The input projection of every timestep is one batched matmul; only the hidden-state recurrence is
    sequential. Parameters: ``weight_ih [K, in, 3H]``, ``weight_hh [K, H, 3H]``, ``bias_ih``,
    ``bias_hh [K, 3H]``.

    Args:
        init_gain: ``None`` initialises like ``nn.GRUCell`` (uniform in ``±1/sqrt(H)``); a number gives
            orthogonal ``weight_ih``/``weight_hh`` (each as one ``[3H, in]`` matrix, as the reference
            applies ``orthogonal_`` to ``nn.GRU``'s weights) with that gain and zero biases.
    """

    def __init__(self, n_stacks: int, input_dim: int, hidden_dim: int, init_gain: float | None = None):
        super().__init__()
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        h3 = 3 * hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(n_stacks, input_dim, h3))
        self.weight_hh = nn.Parameter(torch.empty(n_stacks, hidden_dim, h3))
        self.bias_ih = nn.Parameter(torch.empty(n_stacks, h3))
        self.bias_hh = nn.Parameter(torch.empty(n_stacks, h3))
        if init_gain is None:
            bound = 1.0 / math.sqrt(hidden_dim)
            for p in self.parameters():
                nn.init.uniform_(p, -bound, bound)
        else:
            _orthogonal_stack_(self.weight_ih, init_gain)
            _orthogonal_stack_(self.weight_hh, init_gain)
            nn.init.zeros_(self.bias_ih)
            nn.init.zeros_(self.bias_hh)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        """Run a sequence. ``x [K, T, M, in]``, ``h0 [K, M, H]`` -> hidden states ``[K, T, M, H]``."""
        k, t_len, m, _ = x.shape
        gi = torch.baddbmm(self.bias_ih.unsqueeze(1), x.reshape(k, t_len * m, self.input_dim), self.weight_ih)
        if t_len == 1:  # no recurrence: avoid slicing (its backward allocates and fills a full-size tensor)
            return self.cell(gi, h0).unsqueeze(1)
        gi = gi.view(k, t_len, m, 3 * self.hidden_dim)
        h, out = h0, []
        for t in range(t_len):
            h = self.cell(gi[:, t], h)
            out.append(h)
        return torch.stack(out, dim=1)

    def cell(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from a precomputed input projection ``gi [K, M, 3H]`` and ``h [K, M, H]``."""
        gh = torch.baddbmm(self.bias_hh.unsqueeze(1), h, self.weight_hh)
        sizes = (2 * self.hidden_dim, self.hidden_dim)
        (i_rz, i_n), (h_rz, h_n) = gi.split(sizes, dim=-1), gh.split(sizes, dim=-1)
        r, z = torch.sigmoid(i_rz + h_rz).chunk(2, dim=-1)
        n = torch.tanh(torch.addcmul(i_n, r, h_n))
        return torch.lerp(n, h, z)  # (1 - z) * n + z * h


@torch.no_grad()
def clip_grad_norm_per_stack(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip each stack's gradient to L2 norm ``max_norm`` independently (``clip_grad_norm_`` per network).

    Every parameter must have the stack dimension first. Returns the norms before clipping, ``[K]``.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        raise ValueError("clip_grad_norm_per_stack: no parameter has a gradient; call backward() first")
    k = grads[0].shape[0]
    norms = torch.stack([g.reshape(k, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(k, *([1] * (g.dim() - 1))))
    return norms

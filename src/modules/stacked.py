"""Layers for K networks with unshared parameters, computed together.

Every parameter carries a leading "stack" dimension of size ``K``: slice ``k`` is the whole of network
``k``'s parameter and nothing else. Inputs are laid out ``[K, M, features]`` (or ``[K, T, M, features]``
for sequences), and each layer is one batched matmul (``torch.bmm``) over the K stacks, so the
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

from modules.activations import tanh_via_sigmoid


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


ALL_STACKS = slice(None)


def _bmm_bias(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              norm: StackedLayerNorm | None = None, stacks: slice = ALL_STACKS) -> torch.Tensor:
    """``x [K, M, in] @ weight [K, in, out] + bias [K, out]``, optionally of ``norm(x)``; ``weight``
    and ``bias`` are already the selected stacks, ``stacks`` selects the matching ones of ``norm``.

    A bmm and an in-place bias add: about 1.5x faster on CPU than ``baddbmm`` with a broadcast bias.
    A preceding LayerNorm's affine map is folded into the weights,
    ``(x̂ g + b) W + c = x̂ (g W) + (b W + c)``, which saves two passes over the activations forward and
    four backward; the parameters and the maths are unchanged.
    """
    if norm is not None:
        x = F.layer_norm(x, (x.shape[-1],), eps=norm.eps)
        bias = torch.baddbmm(bias.unsqueeze(1), norm.bias[stacks].unsqueeze(1), weight).squeeze(1)
        weight = norm.weight[stacks].unsqueeze(-1) * weight
    return torch.bmm(x, weight).add_(bias.unsqueeze(1))


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

    def forward(self, x: torch.Tensor, norm: StackedLayerNorm | None = None,
                stacks: slice = ALL_STACKS) -> torch.Tensor:
        """``x [K, *batch, in] -> [K, *batch, out]``; with ``norm``, of ``norm(x)`` (fused). ``stacks``
        runs only those networks (``x`` then holds just their inputs)."""
        k, *batch, _ = x.shape
        out = _bmm_bias(x.reshape(k, -1, self.in_features), self.weight[stacks], self.bias[stacks], norm,
                        stacks)
        return out.view(k, *batch, self.out_features)

    def extra_repr(self) -> str:
        return f"n_stacks={self.n_stacks}, in_features={self.in_features}, out_features={self.out_features}"


class StackedLayerNorm(nn.Module):
    """K independent ``nn.LayerNorm(dim)``: ``[K, ..., dim] -> [K, ..., dim]``; weight, bias ``[K, dim]``.

    When a stacked linear layer follows, pass this module to it (``linear(x, norm=ln)``) instead of
    calling it: the result is the same and cheaper.
    """

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

    def forward(self, x: torch.Tensor, h0: torch.Tensor, input_norm: StackedLayerNorm | None = None,
                stacks: slice = ALL_STACKS) -> torch.Tensor:
        """Run a sequence. ``x [K, T, M, in]``, ``h0 [K, M, H]`` -> hidden states ``[K, T, M, H]``.
        ``input_norm``: a LayerNorm applied to ``x`` first (fused into the input projection). ``stacks``
        runs only those networks."""
        k, t_len, m, _ = x.shape
        gi = _bmm_bias(x.reshape(k, t_len * m, self.input_dim), self.weight_ih[stacks], self.bias_ih[stacks],
                       input_norm, stacks)
        if t_len == 1:
            return self.cell(gi, h0, stacks).unsqueeze(1)
        return _GRUSequenceFunction.apply(gi.view(k, t_len, m, 3 * self.hidden_dim), h0,
                                          self.weight_hh[stacks], self.bias_hh[stacks])

    def cell(self, gi: torch.Tensor, h: torch.Tensor, stacks: slice = ALL_STACKS) -> torch.Tensor:
        """One step from a precomputed input projection ``gi [K, M, 3H]`` and ``h [K, M, H]``."""
        return _GRUCellFunction.apply(gi, _bmm_bias(h, self.weight_hh[stacks], self.bias_hh[stacks]), h)


def _gates_forward(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, rz_out: torch.Tensor | None = None,
                   n_out: torch.Tensor | None = None, h_out: torch.Tensor | None = None):
    """``nn.GRUCell``'s gates from the two projections ``gi = x W_ih + b_ih`` and ``gh = h W_hh + b_hh``
    (``[..., 3H]``, gate order r, z, n)::

        r, z = σ(gi_rz + gh_rz);  n = tanh(gi_n + r ⊙ gh_n);  h' = (1 - z) ⊙ n + z ⊙ h

    (the tanh as ``2 σ(2a) - 1``, :func:`modules.activations.tanh_via_sigmoid`). Returns ``(h' [..., H], rz [..., 2H], n [..., H])``, written into the ``*_out`` tensors when given.
    """
    hd = h.shape[-1]
    rz = torch.sigmoid(gi[..., : 2 * hd] + gh[..., : 2 * hd], out=rz_out)
    pre_n = torch.addcmul(gi[..., 2 * hd:], rz[..., :hd], gh[..., 2 * hd:], out=n_out)
    n = tanh_via_sigmoid(pre_n, out=pre_n)
    return torch.lerp(n, h, rz[..., hd:], out=h_out), rz, n


def _gates_backward(grad: torch.Tensor, rz: torch.Tensor, n: torch.Tensor, h: torch.Tensor, gh_n: torch.Tensor,
                    grad_gi: torch.Tensor, grad_gh: torch.Tensor) -> torch.Tensor:
    """Backward of :func:`_gates_forward` for the gradient ``grad [..., H]`` of ``h'``: writes the gradients
    of ``gi`` and ``gh`` into ``grad_gi``, ``grad_gh [..., 3H]`` and returns the direct gradient of ``h``
    (through ``z ⊙ h``; the path through ``gh`` is the caller's, it owns ``W_hh``).

    Writing the gate gradients straight into one tensor per projection avoids autograd's split and
    re-concatenation, which cost about a fifth of a training step on CPU.
    """
    hd = h.shape[-1]
    grad_h = grad * rz[..., hd:]                                  # z ⊙ grad
    d_n = torch.ops.aten.tanh_backward(grad - grad_h, n)          # d(gi_n) = (1 - z) grad (1 - n²)
    d_rz = torch.empty_like(rz)                                   # d r, d z before the sigmoids
    torch.mul(d_n, gh_n, out=d_rz[..., :hd])
    torch.mul(grad, h - n, out=d_rz[..., hd:])
    torch.ops.aten.sigmoid_backward.grad_input(d_rz, rz, grad_input=grad_gi[..., : 2 * hd])
    grad_gi[..., 2 * hd:] = d_n
    grad_gh[..., : 2 * hd] = grad_gi[..., : 2 * hd]
    torch.mul(d_n, rz[..., :hd], out=grad_gh[..., 2 * hd:])     # d(gh_n) = d(gi_n) ⊙ r
    return grad_h


class _GRUCellFunction(torch.autograd.Function):
    """One GRU step ``(gi, gh, h) -> h'`` (:func:`_gates_forward`) with the hand-written backward."""

    @staticmethod
    def forward(ctx, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_new, rz, n = _gates_forward(gi, gh, h)
        ctx.save_for_backward(rz, n, h, gh[..., 2 * h.shape[-1]:])
        return h_new

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rz, n, h, gh_n = ctx.saved_tensors
        grad_gi, grad_gh = (grad.new_empty(*grad.shape[:-1], 3 * h.shape[-1]) for _ in range(2))
        grad_h = _gates_backward(grad, rz, n, h, gh_n, grad_gi, grad_gh)
        return grad_gi, grad_gh, grad_h


class _GRUSequenceFunction(torch.autograd.Function):
    """A whole GRU sequence as one autograd node: ``(gi [K, T, M, 3H], h0 [K, M, H], W_hh [K, H, 3H],
    b_hh [K, 3H]) -> hidden states [K, T, M, H]``.

    Backward runs the recurrence in reverse, one bmm per step for the gradient flowing into ``h_{t-1}``,
    and computes ``W_hh``'s gradient for all steps at once (one ``[H, T·M] @ [T·M, 3H]`` bmm) instead of
    one small bmm per step, with no autograd node per step. QMIX's update on 5m_vs_6m (32 episodes of
    up to 70 steps, one thread) went from 59 to 52 ms.
    """

    @staticmethod
    def forward(ctx, gi: torch.Tensor, h0: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor):
        k, t_len, m, h3 = gi.shape
        hd = h3 // 3
        hs, n_all, gh_n_all = (gi.new_empty(k, t_len, m, hd) for _ in range(3))
        rz_all = gi.new_empty(k, t_len, m, 2 * hd)
        h = h0
        for t in range(t_len):
            gh = _bmm_bias(h, weight_hh, bias_hh)
            h, _, _ = _gates_forward(gi[:, t], gh, h, rz_out=rz_all[:, t], n_out=n_all[:, t], h_out=hs[:, t])
            gh_n_all[:, t] = gh[..., 2 * hd:]
        ctx.save_for_backward(h0, weight_hh, hs, rz_all, n_all, gh_n_all)
        return hs

    @staticmethod
    def backward(ctx, grad_hs: torch.Tensor):
        h0, weight_hh, hs, rz_all, n_all, gh_n_all = ctx.saved_tensors
        k, t_len, m, hd = hs.shape
        grad_gi, grad_gh = (hs.new_empty(k, t_len, m, 3 * hd) for _ in range(2))
        weight_t = weight_hh.transpose(1, 2)
        h_prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)                          # [K, T, M, H]
        grad_h = torch.zeros_like(h0)
        for t in reversed(range(t_len)):
            grad_direct = _gates_backward(grad_hs[:, t] + grad_h, rz_all[:, t], n_all[:, t], h_prev[:, t],
                                          gh_n_all[:, t], grad_gi[:, t], grad_gh[:, t])
            grad_h = torch.baddbmm(grad_direct, grad_gh[:, t], weight_t)
        flat_gh = grad_gh.view(k, t_len * m, 3 * hd)
        grad_weight = torch.bmm(h_prev.reshape(k, t_len * m, hd).transpose(1, 2), flat_gh)
        return grad_gi, grad_h, grad_weight, flat_gh.sum(1)


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


@torch.no_grad()
def gru_packed_forward(x: torch.Tensor, h0: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                       weight_hh: torch.Tensor, bias_hh: torch.Tensor, batch_sizes: list[int]
                       ) -> tuple[torch.Tensor, tuple]:
    """K GRUs (:class:`StackedGRU`'s equations and parameters) over packed sequences, without autograd;
    :func:`gru_packed_backward` is the backward.

    Packed layout (PyTorch's ``PackedSequence``): M sequences of different lengths, sorted longest first,
    stored time-major without padding: step ``t`` holds the ``batch_sizes[t]`` sequences still running,
    in the rows from ``sum(batch_sizes[:t])`` on (``R = sum(batch_sizes)`` rows in all).
    ``batch_sizes`` is non-increasing; the rows of step ``t`` continue the first ``batch_sizes[t]`` rows
    of step ``t - 1``.

    Args:
        x: ``[K, R, in]``; ``h0``: ``[K, batch_sizes[0], H]``; the weights and biases ``[K, ...]`` as in
            :class:`StackedGRU`.
    Returns:
        ``(hs [K, R, H], saved)``: the hidden state after every packed row, and what the backward needs.

    The input projection of all rows is one bmm, with the recurrent biases of the r and z gates folded
    in (they only appear in the sum ``gi + gh``). Per step: one baddbmm for the r, z pre-activations
    (``gi + h W_hh``), one for ``h W_hn + b_hn``, then sigmoid, addcmul, the n gate's tanh and lerp.

    The tanh is computed as ``tanh(a) = 2 σ(2a) - 1``: torch's CPU tanh is about 8x slower than its
    sigmoid (53 against 6 µs for 20k floats on one core), a tenth of this function's time. The factor 2
    inside is exact (the n columns of the input projection are doubled, and addcmul's ``value=2`` doubles
    ``r ⊙ gh_n``); the result differs from ``tanh`` by at most about 2e-7 in float32 (rounding).
    """
    k, r_total, _ = x.shape
    hd, m0 = weight_hh.shape[1], h0.shape[1]
    gi_weight, gi_bias = weight_ih.clone(), bias_ih.clone()
    gi_bias[:, : 2 * hd] += bias_hh[:, : 2 * hd]
    gi_weight[..., 2 * hd:] *= 2                        # 2 gi_n, for the tanh below
    gi_bias[:, 2 * hd:] *= 2
    gi = torch.bmm(x, gi_weight).add_(gi_bias.unsqueeze(1))
    gi_rz, gi_n = gi[..., : 2 * hd].split(batch_sizes, 1), gi[..., 2 * hd:].split(batch_sizes, 1)
    w_rz, w_n = weight_hh[..., : 2 * hd].contiguous(), weight_hh[..., 2 * hd:].contiguous()
    b_hn = bias_hh[:, 2 * hd:].unsqueeze(1)
    minus_one = x.new_full((), -1.0)
    states = x.new_empty(k, m0 + r_total, hd)          # h0, then the hidden state after every row
    states[:, :m0] = h0
    outputs = states[:, m0:].split(batch_sizes, 1)
    rz_steps, n_steps, gh_n_steps = [], [], []
    h = states[:, :m0]
    for t, m in enumerate(batch_sizes):
        h = h[:, :m]
        rz = torch.baddbmm(gi_rz[t], h, w_rz).sigmoid_()
        gh_n = torch.baddbmm(b_hn, h, w_n)
        sig = torch.addcmul(gi_n[t], rz[..., :hd], gh_n, value=2).sigmoid_()   # σ(2 (gi_n + r ⊙ gh_n))
        n = torch.add(minus_one, sig, alpha=2)                                  # 2σ - 1, in one op
        h = torch.lerp(n, h, rz[..., hd:], out=outputs[t])
        rz_steps.append(rz)
        n_steps.append(n)
        gh_n_steps.append(gh_n)
    return states[:, m0:], (x, states, weight_ih, weight_hh, rz_steps, n_steps, gh_n_steps)


@torch.no_grad()
def gru_packed_backward(grad_hs: torch.Tensor, saved: tuple, batch_sizes: list[int]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of :func:`gru_packed_forward` for its first ``K' = grad_hs.shape[0]`` stacks (the others,
    e.g. target networks run in the same pass, get none).

    ``grad_hs [K', R, H]``: the gradient of ``hs`` (overwritten). Returns the gradients ``(x [K', R, in],
    weight_ih, bias_ih, weight_hh, bias_hh)`` of those stacks; none for ``h0``.

    The recurrence runs in reverse as in ``_GRUSequenceFunction``, but the gates' gradients go straight
    into one ``[K', R, 4H]`` tensor laid out ``(gi_n, r, z, gh_n)``: its first ``3H`` columns are the
    gradient of ``gi`` (gates in the order n, r, z) and its last ``3H`` that of ``h W_hh + b_hh`` (r, z,
    n), so the step's gradient into ``h_{t-1}`` is one baddbmm and no gradient is copied. The weights'
    gradients are one bmm each over all rows.
    """
    x, states, weight_ih, weight_hh, rz_steps, n_steps, gh_n_steps = saved
    k, r_total, hd = grad_hs.shape
    m0 = states.shape[1] - r_total
    x, states, weight_ih, weight_hh = x[:k], states[:k], weight_ih[:k], weight_hh[:k]
    sizes = torch.tensor(batch_sizes, device=states.device)
    prev_sizes = torch.cat([sizes[:1], sizes[:-1]])    # row j of step t continues row j of step t - 1
    prev_rows = m0 + torch.arange(r_total, device=states.device) - prev_sizes.repeat_interleave(sizes)
    h_prev = states.index_select(1, prev_rows)           # [K', R, H]: the hidden state entering every row
    grad = grad_hs.new_empty(k, r_total, 4 * hd)
    grad_gi_n, grad_r, grad_z, grad_gh_n, grad_rz, grad_gh = (
        grad[..., a: b].split(batch_sizes, 1) for a, b in ((0, hd), (hd, 2 * hd), (2 * hd, 3 * hd),
                                                             (3 * hd, 4 * hd), (hd, 3 * hd), (hd, 4 * hd)))
    grad_out, h_in = grad_hs.split(batch_sizes, 1), h_prev.split(batch_sizes, 1)
    weight_hh_t = weight_hh.transpose(1, 2).contiguous()  # a transposed view makes each step's bmm ~1.6x slower
    grad_h = None                                         # gradient of the hidden state entering step t + 1
    for t in reversed(range(len(batch_sizes))):
        g = grad_out[t]
        if grad_h is not None:  # (not ``+=`` on the slice: Python would then copy the slice onto itself)
            g[:, : grad_h.shape[1]].add_(grad_h)
        rz, n = rz_steps[t][:k], n_steps[t][:k]
        z = rz[..., hd:]
        grad_direct = g * z                                                            # through z ⊙ h
        d_n = torch.ops.aten.tanh_backward.grad_input(g - grad_direct, n, grad_input=grad_gi_n[t])
        torch.mul(d_n, gh_n_steps[t][:k], out=grad_r[t])                                # d r, d z before
        torch.mul(g, h_in[t] - n, out=grad_z[t])                                        # the sigmoids
        torch.ops.aten.sigmoid_backward.grad_input(grad_rz[t], rz, grad_input=grad_rz[t])
        torch.mul(d_n, rz[..., :hd], out=grad_gh_n[t])
        grad_h = torch.baddbmm(grad_direct, grad_gh[t], weight_hh_t)
    grad_gi, grad_gh_all = grad[..., : 3 * hd], grad[..., hd:]
    grad_bias = grad.sum(1)                              # both biases' gradients: one contiguous reduction
    weight_ih_nrz = weight_ih.roll(hd, -1)               # columns (n, r, z), the order of grad_gi
    return (torch.bmm(grad_gi, weight_ih_nrz.transpose(1, 2)),
            torch.bmm(x.transpose(1, 2), grad_gi).roll(-hd, -1), grad_bias[:, : 3 * hd].roll(-hd, -1),
            torch.bmm(h_prev.transpose(1, 2), grad_gh_all), grad_bias[:, hd:])

"""PyMARL's RNN agent (QMIX): ``FC(H) + ReLU -> GRUCell(H) -> FC(n_actions)``, K stacks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.stacked import ALL_STACKS, StackedGRU, StackedLinear, gru_packed_backward, gru_packed_forward


class RNNAgent(nn.Module):
    """``forward(x [K, T, M, input_dim], h0 [K, M, H]) -> (q [K, T, M, n_actions], hidden [K, T, M, H])``.

    PyTorch's default initialisation, as PyMARL. ``K`` is the number of agents (unshared parameters) or 1
    (one network shared by all agents, which the controller folds into ``M``). Training runs it through
    :meth:`packed_q_with_target` instead: padding-free, together with the target network.
    """

    def __init__(self, n_stacks: int, input_dim: int, n_actions: int, cfg):
        super().__init__()
        self.hidden_dim = cfg.hidden_dim
        self.fc1 = StackedLinear(n_stacks, input_dim, cfg.hidden_dim)
        self.rnn = StackedGRU(n_stacks, cfg.hidden_dim, cfg.hidden_dim)
        self.fc2 = StackedLinear(n_stacks, cfg.hidden_dim, n_actions)

    def forward(self, x: torch.Tensor, h0: torch.Tensor,
                stacks: slice = ALL_STACKS) -> tuple[torch.Tensor, torch.Tensor]:
        """``stacks`` runs only those networks (``x``, ``h0`` then hold just their inputs)."""
        hidden = self.rnn(F.relu(self.fc1(x, stacks=stacks)), h0, stacks=stacks)
        return self.fc2(hidden, stacks=stacks), hidden

    def packed_q_with_target(self, target: RNNAgent, x: torch.Tensor, h0: torch.Tensor,
                             batch_sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q-values of this network and of ``target`` (same shape, e.g. a target network) on the same
        packed sequences, in one pass (QMIX's update): the GRU runs both networks as ``2K`` stacks, so the
        recurrence's per-step operations are issued once for both.

        ``x [K, R, input_dim]``: packed rows (layout of :func:`modules.stacked.gru_packed_forward`, with
        ``batch_sizes``); ``h0 [K, batch_sizes[0], H]``. Returns ``(q, target_q)``, both
        ``[K, R, n_actions]``; ``q`` is differentiable in this network's parameters (hand-written
        backward, which skips the target network entirely), ``target_q`` in nothing. No gradient for
        ``x`` or ``h0``.
        """
        return _PackedQWithTarget.apply(x, h0, batch_sizes, *self._packed_params(),
                                        *(p.detach() for p in target._packed_params()))

    def _packed_params(self) -> tuple[torch.Tensor, ...]:
        """The order :class:`_PackedQWithTarget` takes the parameters in."""
        return (self.fc1.weight, self.fc1.bias, self.rnn.weight_ih, self.rnn.bias_ih, self.rnn.weight_hh,
                self.rnn.bias_hh, self.fc2.weight, self.fc2.bias)


class _PackedQWithTarget(torch.autograd.Function):
    """``(x, h0, batch_sizes, *online, *target) -> (q, target_q)`` (:meth:`RNNAgent.packed_q_with_target`);
    ``online``/``target``: the 8 tensors of :meth:`RNNAgent._packed_params`, each ``[K, ...]``.

    Forward: fc1 + ReLU, the GRU's input projection, the recurrence and fc2 over ``2K`` stacks (online
    first). Backward, online stacks only: fc2, the recurrence (:func:`gru_packed_backward`), the input
    projection, ReLU and fc1, each weight gradient one bmm over all rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, h0: torch.Tensor, batch_sizes: list[int], *params: torch.Tensor):
        b1, w_ih, b_ih, w_hh, b_hh = (torch.cat([params[i], params[8 + i]]) for i in range(1, 6))
        k, r_total, _ = x.shape
        y1 = x.new_empty(2 * k, r_total, b1.shape[-1])
        torch.bmm(x, params[0], out=y1[:k])
        torch.bmm(x, params[8], out=y1[k:])
        y1.add_(b1.unsqueeze(1)).relu_()
        hs, saved = gru_packed_forward(y1, torch.cat([h0, h0]), w_ih, b_ih, w_hh, b_hh, batch_sizes)
        q = torch.bmm(hs[:k], params[6]).add_(params[7].unsqueeze(1))
        target_q = torch.bmm(hs[k:], params[14]).add_(params[15].unsqueeze(1))
        ctx.mark_non_differentiable(target_q)
        ctx.batch_sizes, ctx.gru_saved = batch_sizes, saved
        ctx.save_for_backward(x, y1[:k], hs[:k], params[6])
        return q, target_q

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, _grad_target_q: torch.Tensor):
        x, y1, hs, w2 = ctx.saved_tensors
        grad_w2, grad_b2 = torch.bmm(hs.transpose(1, 2), grad_q), grad_q.sum(1)
        grad_y1, grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh = gru_packed_backward(
            torch.bmm(grad_q, w2.transpose(1, 2)), ctx.gru_saved, ctx.batch_sizes)
        grad_y1 = torch.ops.aten.threshold_backward(grad_y1, y1, 0)
        grad_w1, grad_b1 = torch.bmm(x.transpose(1, 2), grad_y1), grad_y1.sum(1)
        return (None, None, None, grad_w1, grad_b1, grad_w_ih, grad_b_ih, grad_w_hh, grad_b_hh, grad_w2, grad_b2,
                *([None] * 8))

"""PyMARL's RNN agent (QMIX): ``FC(H) + ReLU -> GRUCell(H) -> FC(n_actions)``, K stacks; ``agent_fc_layers``
sets how many ``FC(H) + ReLU`` layers come before the GRU (1 = PyMARL's agent, 2 = the depth of the IPPO
agent, the paper's Figure 4)."""
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
        n_fc = getattr(cfg, "agent_fc_layers", 1)
        if n_fc < 1:  # (the config loader has checked it is an integer)
            raise ValueError(f"agent_fc_layers={n_fc!r}: the rnn agent needs a whole number >= 1 of FC layers "
                             f"before its GRU (1 = PyMARL's QMIX agent, 2 = the IPPO agent's depth)")
        self.hidden_dim = cfg.hidden_dim
        self.fc1 = StackedLinear(n_stacks, input_dim, cfg.hidden_dim)
        # the FC layers after the first (none in PyMARL's agent, so its checkpoints' keys are unchanged)
        self.more_fc = nn.ModuleList(StackedLinear(n_stacks, cfg.hidden_dim, cfg.hidden_dim)
                                     for _ in range(n_fc - 1))
        self.rnn = StackedGRU(n_stacks, cfg.hidden_dim, cfg.hidden_dim)
        self.fc2 = StackedLinear(n_stacks, cfg.hidden_dim, n_actions)

    def forward(self, x: torch.Tensor, h0: torch.Tensor,
                stacks: slice = ALL_STACKS) -> tuple[torch.Tensor, torch.Tensor]:
        """``stacks`` runs only those networks (``x``, ``h0`` then hold just their inputs)."""
        y = F.relu(self.fc1(x, stacks=stacks))
        for fc in self.more_fc:
            y = F.relu(fc(y, stacks=stacks))
        hidden = self.rnn(y, h0, stacks=stacks)
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
        return _PackedQWithTarget.apply(x, h0, batch_sizes, 1 + len(self.more_fc), *self._packed_params(),
                                        *(p.detach() for p in target._packed_params()))

    def _packed_params(self) -> tuple[torch.Tensor, ...]:
        """The order :class:`_PackedQWithTarget` takes the parameters in."""
        fcs = (p for fc in (self.fc1, *self.more_fc) for p in (fc.weight, fc.bias))
        return (*fcs, self.rnn.weight_ih, self.rnn.bias_ih, self.rnn.weight_hh, self.rnn.bias_hh,
                self.fc2.weight, self.fc2.bias)


class _PackedQWithTarget(torch.autograd.Function):
    """``(x, h0, batch_sizes, n_fc, *online, *target) -> (q, target_q)`` (:meth:`RNNAgent.packed_q_with_target`);
    ``online``/``target``: the ``2·n_fc + 6`` tensors of :meth:`RNNAgent._packed_params`, each ``[K, ...]``.

    Forward: the FC + ReLU layers, the GRU's input projection, the recurrence and fc2 over ``2K`` stacks
    (online first). Backward, online stacks only: fc2, the recurrence (:func:`gru_packed_backward`), the
    input projection, then each ReLU and FC layer in reverse, each weight gradient one bmm over all rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, h0: torch.Tensor, batch_sizes: list[int], n_fc: int, *params: torch.Tensor):
        n_params = len(params) // 2
        online, target = params[:n_params], params[n_params:]
        def both(i: int) -> torch.Tensor:                             # parameter i of all 2K stacks
            return torch.cat([online[i], target[i]])

        k, r_total, _ = x.shape
        y = x.new_empty(2 * k, r_total, online[1].shape[-1])         # the first layer: both read the same x
        torch.bmm(x, online[0], out=y[:k])
        torch.bmm(x, target[0], out=y[k:])
        fc_out = [y.add_(both(1).unsqueeze(1)).relu_()]
        for layer in range(1, n_fc):
            fc_out.append(torch.baddbmm(both(2 * layer + 1).unsqueeze(1), fc_out[-1], both(2 * layer)).relu_())
        gru = 2 * n_fc
        hs, saved = gru_packed_forward(fc_out[-1], torch.cat([h0, h0]), *(both(gru + i) for i in range(4)),
                                       batch_sizes)
        q, target_q = torch.bmm(hs, both(gru + 4)).add_(both(gru + 5).unsqueeze(1)).split(k)
        ctx.mark_non_differentiable(target_q)
        ctx.batch_sizes, ctx.gru_saved, ctx.n_params = batch_sizes, saved, n_params
        ctx.save_for_backward(x, hs[:k], *(y[:k] for y in fc_out), *online[: 2 * n_fc: 2], online[gru + 4])
        return q, target_q

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor, _grad_target_q: torch.Tensor):
        x, hs, *rest = ctx.saved_tensors
        n_fc = (len(rest) - 1) // 2
        fc_out, fc_weights, w2 = rest[:n_fc], rest[n_fc: 2 * n_fc], rest[-1]
        grad_w2, grad_b2 = torch.bmm(hs.transpose(1, 2), grad_q), grad_q.sum(1)
        grad_y, *grad_gru = gru_packed_backward(torch.bmm(grad_q, w2.transpose(1, 2)), ctx.gru_saved,
                                                ctx.batch_sizes)
        grad_fc = []
        for layer in reversed(range(n_fc)):
            grad_y = torch.ops.aten.threshold_backward(grad_y, fc_out[layer], 0)
            layer_in = fc_out[layer - 1] if layer else x
            grad_fc[:0] = [torch.bmm(layer_in.transpose(1, 2), grad_y), grad_y.sum(1)]
            if layer:
                grad_y = torch.bmm(grad_y, fc_weights[layer].transpose(1, 2))
        return (None, None, None, None, *grad_fc, *grad_gru, grad_w2, grad_b2, *([None] * ctx.n_params))

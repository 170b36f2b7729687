"""PyMARL's RNN agent (QMIX): ``FC(H) + ReLU -> GRUCell(H) -> FC(n_actions)``, K stacks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.stacked import ALL_STACKS, StackedGRU, StackedLinear


class RNNAgent(nn.Module):
    """``forward(x [K, T, M, input_dim], h0 [K, M, H]) -> (q [K, T, M, n_actions], hidden [K, T, M, H])``.

    PyTorch's default initialisation, as PyMARL. ``K`` is the number of agents (unshared parameters) or 1
    (one network shared by all agents, which the controller folds into ``M``).
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

"""The recurrent network of the IPPO reference code, for K agents with unshared parameters.

``LayerNorm(in) -> FC(H) + ReLU + LayerNorm -> FC(H) + ReLU + LayerNorm -> GRU(H) -> LayerNorm -> FC(out)``,
orthogonal initialisation (gain ``sqrt(2)`` for the ReLU layers, 1 for the GRU, ``head_gain`` for the
output layer) and zero biases, as in the reference. The actor (``agents``) and the critic (``critics``)
are this network with different heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stacked import ALL_STACKS, StackedGRU, StackedLayerNorm, StackedLinear


class LayerNormRNN(nn.Module):
    """K networks ``[K, T, M, input_dim] -> [K, T, M, output_dim]`` (see the module docstring).

    ``forward(x, h0)`` returns ``(out [K, T, M, output_dim], hidden [K, T, M, H])`` where ``hidden[:, t]``
    is the GRU state after step ``t`` (before the output LayerNorm), the state to carry to ``t + 1``.
    """

    def __init__(self, n_stacks: int, input_dim: int, output_dim: int, hidden_dim: int, head_gain: float):
        super().__init__()
        relu_gain = math.sqrt(2.0)
        self.hidden_dim = hidden_dim
        self.norm_in = StackedLayerNorm(n_stacks, input_dim)
        self.fc1 = StackedLinear(n_stacks, input_dim, hidden_dim, init_gain=relu_gain)
        self.norm1 = StackedLayerNorm(n_stacks, hidden_dim)
        self.fc2 = StackedLinear(n_stacks, hidden_dim, hidden_dim, init_gain=relu_gain)
        self.norm2 = StackedLayerNorm(n_stacks, hidden_dim)
        self.rnn = StackedGRU(n_stacks, hidden_dim, hidden_dim, init_gain=1.0)
        self.norm_out = StackedLayerNorm(n_stacks, hidden_dim)
        self.head = StackedLinear(n_stacks, hidden_dim, output_dim, init_gain=head_gain)

    def forward(self, x: torch.Tensor, h0: torch.Tensor,
                stacks: slice = ALL_STACKS) -> tuple[torch.Tensor, torch.Tensor]:
        """``stacks`` runs only those networks (``x``, ``h0`` then hold just their inputs)."""
        # each LayerNorm is fused into the linear map that follows it (modules.stacked._bmm_bias)
        z = F.relu(self.fc1(x, norm=self.norm_in, stacks=stacks))
        z = F.relu(self.fc2(z, norm=self.norm1, stacks=stacks))
        hidden = self.rnn(z, h0, input_norm=self.norm2, stacks=stacks)
        return self.head(hidden, norm=self.norm_out, stacks=stacks), hidden

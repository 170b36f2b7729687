"""The IPPO reference critic: :class:`modules.ln_rnn.LayerNormRNN` with a scalar value head (gain 1)."""
from __future__ import annotations

import torch

from modules.ln_rnn import LayerNormRNN
from modules.stacked import ALL_STACKS


class LayerNormRNNCritic(LayerNormRNN):
    """Per-agent value ``V_i(o_i history)``: ``forward(x [K, T, M, in], h0 [K, M, H])`` ->
    ``(values [K, T, M], hidden [K, T, M, H])``."""

    def __init__(self, n_stacks: int, input_dim: int, cfg):
        super().__init__(n_stacks, input_dim, 1, cfg.hidden_dim, head_gain=1.0)

    def forward(self, x: torch.Tensor, h0: torch.Tensor,
                stacks: slice = ALL_STACKS) -> tuple[torch.Tensor, torch.Tensor]:
        """``stacks`` runs only those critics (``x``, ``h0`` then hold just their inputs)."""
        values, hidden = super().forward(x, h0, stacks=stacks)
        return values.squeeze(-1), hidden

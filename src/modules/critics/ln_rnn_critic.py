"""The IPPO reference critic: :class:`modules.ln_rnn.LayerNormRNN` with a scalar value head (gain 1)."""
from __future__ import annotations

import torch

from modules.ln_rnn import LayerNormRNN


class LayerNormRNNCritic(LayerNormRNN):
    """Per-agent value ``V_i(o_i history)``: ``forward(x [K, T, M, in], h0 [K, M, H])`` ->
    ``(values [K, T, M], hidden [K, T, M, H])``."""

    def __init__(self, n_stacks: int, input_dim: int, cfg):
        super().__init__(n_stacks, input_dim, 1, cfg.hidden_dim, head_gain=1.0)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, hidden = super().forward(x, h0)
        return values.squeeze(-1), hidden

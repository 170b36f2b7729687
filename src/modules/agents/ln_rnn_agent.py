"""The IPPO reference actor: :class:`modules.ln_rnn.LayerNormRNN` with an action-logit head (gain 0.01)."""
from __future__ import annotations

from modules.ln_rnn import LayerNormRNN


class LayerNormRNNAgent(LayerNormRNN):
    """``forward(x [K, T, M, input_dim], h0 [K, M, H]) -> (logits [K, T, M, n_actions], hidden [K, T, M, H])``."""

    def __init__(self, n_stacks: int, input_dim: int, n_actions: int, cfg):
        super().__init__(n_stacks, input_dim, n_actions, cfg.hidden_dim, head_gain=cfg.actor_head_gain)

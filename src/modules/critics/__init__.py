"""Critic networks: ``REGISTRY[name](n_stacks, input_dim, cfg)``."""
from .ln_rnn_critic import LayerNormRNNCritic

REGISTRY = {
    "ln_rnn": LayerNormRNNCritic,
}

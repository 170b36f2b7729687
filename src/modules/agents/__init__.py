"""Agent networks: ``REGISTRY[name](n_stacks, input_dim, n_actions, cfg)``."""
from .ln_rnn_agent import LayerNormRNNAgent
from .rnn_agent import RNNAgent

REGISTRY = {
    "rnn": RNNAgent,
    "ln_rnn": LayerNormRNNAgent,
}

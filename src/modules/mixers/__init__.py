"""Mixing networks for value factorisation: ``REGISTRY[name](n_agents, state_dim, cfg)``."""
from .qmix import QMixer

REGISTRY = {
    "qmix": QMixer,
}

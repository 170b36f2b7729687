"""Runners: ``REGISTRY[name](env: BatchedMultiAgentEnv, mac, cfg, device)``."""
from .episode_runner import EpisodeRunner

REGISTRY = {
    "episode": EpisodeRunner,
}

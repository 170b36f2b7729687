"""Runners: ``REGISTRY[name](env: BatchedMultiAgentEnv, mac, cfg, device, record_agent_outputs=False)``;
with ``record_agent_outputs`` the batches hold the acting policy's records (``EpisodeBatch.agent_outputs``)."""
from .episode_runner import EpisodeRunner

REGISTRY = {
    "episode": EpisodeRunner,
}

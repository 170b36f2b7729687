"""The two environment interfaces every part of the framework relies on.

``MultiAgentEnv`` is PyMARL's single-environment interface (SMAC's ``StarCraft2Env`` implements it).
``BatchedMultiAgentEnv`` steps ``B`` independent environments per call on arrays; runners only ever
talk to this one, whether the environments behind it are the embedded simulator's batched engine or
real StarCraft II processes.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class MultiAgentEnv:
    """One cooperative multi-agent episode at a time (PyMARL / SMAC semantics)."""

    def step(self, actions) -> tuple[float, bool, dict]:
        """Apply one action per agent; returns ``(reward, terminated, info)``."""
        raise NotImplementedError

    def get_obs(self) -> list[np.ndarray]:
        """Every agent's observation, a list of ``n_agents`` arrays of shape ``[obs_size]``."""
        raise NotImplementedError

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        raise NotImplementedError

    def get_obs_size(self) -> int:
        raise NotImplementedError

    def get_state(self) -> np.ndarray:
        raise NotImplementedError

    def get_state_size(self) -> int:
        raise NotImplementedError

    def get_avail_actions(self) -> list[list[int]]:
        raise NotImplementedError

    def get_avail_agent_actions(self, agent_id: int) -> list[int]:
        raise NotImplementedError

    def get_total_actions(self) -> int:
        raise NotImplementedError

    def reset(self):
        """Start a new episode; returns ``(obs_list, state)`` like SMAC."""
        raise NotImplementedError

    def render(self):
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def seed(self):
        raise NotImplementedError

    def save_replay(self):
        raise NotImplementedError

    def get_stats(self) -> dict:
        raise NotImplementedError

    def get_env_info(self) -> dict[str, Any]:
        """``state_shape``, ``obs_shape``, ``n_actions``, ``n_agents``, ``episode_limit`` (+ extras)."""
        raise NotImplementedError


class BatchedMultiAgentEnv:
    """``n_envs`` independent environments stepped together.

    Shapes (B = ``n_envs``, N = ``n_agents``, A = ``n_actions``):

    * ``reset(env_mask=None)`` resets the environments where ``env_mask[b]`` is true (all if ``None``).
    * ``step(actions)`` takes an integer array ``[B, N]`` and returns
      ``(reward float32[B], terminated bool[B], info)`` where ``info`` maps ``battle_won``,
      ``dead_allies``, ``dead_enemies`` and ``episode_limit`` to arrays ``[B]``. ``episode_limit`` follows
      SMAC: true when the episode ended by timeout and timeouts are not terminal (``continuing_episode``;
      runners then bootstrap), else false. Envs that run real games also report ``crashed`` (the episode
      was cut short by a game crash). An environment whose episode has terminated is frozen until it is reset:
      its actions are ignored, its reward is 0 and it stays terminated.
    * ``get_obs()`` -> float32 ``[B, N, obs_size]``; ``get_state()`` -> float32 ``[B, state_size]``;
      ``get_avail_actions()`` -> int32 ``[B, N, A]``. Each call returns a fresh array.
    * ``state_dict()`` / ``load_state_dict()`` hold what is needed to continue the environments'
      random streams exactly (called between episodes, when every environment is at a reset boundary).
    """

    n_envs: int

    def reset(self, env_mask: np.ndarray | None = None) -> None:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        raise NotImplementedError

    def get_obs(self) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> np.ndarray:
        raise NotImplementedError

    def get_avail_actions(self) -> np.ndarray:
        raise NotImplementedError

    def get_env_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_stats(self) -> dict:
        raise NotImplementedError

    def save_replay(self, env_indices=None) -> list[str]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

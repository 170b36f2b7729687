"""``StarCraft2Env``: SMAC's single-environment API as a view over the batched engine (B = 1)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..multiagentenv import MultiAgentEnv
from .batched_env import BatchedStarCraft2Sim


class StarCraft2Env(MultiAgentEnv):
    """Drop-in for ``smac.env.StarCraft2Env`` on the embedded simulator.

    Takes SMAC's keyword arguments (``map_name``, ``step_mul``, ``obs_*``, ``state_*``, ``reward_*``,
    ``continuing_episode``, ``heuristic_ai``, ``heuristic_rest``, ``seed``, ``replay_dir``, ...) and returns
    the same values SMAC returns for the same unit situation. Every episode is recorded so that
    ``save_replay()`` can draw it.
    """

    def __init__(self, map_name: str = "8m", seed: int | None = None, **smac_kwargs):
        self._batch = BatchedStarCraft2Sim(map_name=map_name, n_envs=1, seed=seed, record_replay=True,
                                           **smac_kwargs)
        b = self._batch
        self.map_name = map_name
        self.n_agents = b.n_agents
        self.n_enemies = b.n_enemies
        self.n_actions = b.n_actions
        self.episode_limit = b.episode_limit
        self.continuing_episode = b.continuing_episode
        self.max_reward = b.max_reward
        self.pathing_grid = b.pathing_grid
        self.ally_unit_names = b.ally_unit_names
        self.enemy_unit_names = b.enemy_unit_names
        self._seed = seed

    @property
    def batch(self) -> BatchedStarCraft2Sim:
        """The underlying batched engine (one environment)."""
        return self._batch

    @property
    def _episode_steps(self) -> int:
        return int(self._batch.episode_steps[0])

    def reset(self):
        self._batch.reset()
        return self.get_obs(), self.get_state()

    def step(self, actions) -> tuple[float, bool, dict]:
        """One step with one action per agent; returns ``(reward, terminated, info)`` as SMAC does.

        With ``heuristic_ai`` SMAC's scripted agents act instead, and, as in SMAC, their actions are
        written back into ``actions`` when it can be assigned to (a list, an array, a tensor).
        """
        if self._batch.terminated[0]:
            raise RuntimeError("The episode has terminated; call reset() before stepping again.")
        acts = np.asarray(actions)
        if acts.ndim != 1:
            raise ValueError(f"actions must be a sequence of {self.n_agents} action ids, one per agent, "
                             f"got shape {acts.shape}.")
        reward, terminated, info = self._batch.step(acts[None])
        if self._batch.heuristic is not None and hasattr(actions, "__setitem__"):
            for i, a in enumerate(info["actions"][0]):
                actions[i] = int(a)
        out = {"battle_won": bool(info["battle_won"][0]), "dead_allies": int(info["dead_allies"][0]),
               "dead_enemies": int(info["dead_enemies"][0])}
        if self.continuing_episode and info["episode_limit"][0]:
            out["episode_limit"] = True
        return float(reward[0]), bool(terminated[0]), out

    def get_obs(self) -> list[np.ndarray]:
        return list(self._batch.get_obs()[0])

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        return self._batch.get_obs()[0, agent_id]

    def get_obs_size(self) -> int:
        return self._batch.get_obs_size()

    def get_state(self) -> np.ndarray:
        return self._batch.get_state()[0]

    def get_state_size(self) -> int:
        return self._batch.get_state_size()

    def get_avail_actions(self) -> list[list[int]]:
        return self._batch.avail[0].tolist()

    def get_avail_agent_actions(self, agent_id: int) -> list[int]:
        return self._batch.avail[0, agent_id].tolist()

    def get_total_actions(self) -> int:
        return self.n_actions

    def get_env_info(self) -> dict[str, Any]:
        return self._batch.get_env_info()

    def get_stats(self) -> dict:
        return self._batch.get_stats()

    def set_unit_situation(self, allies: dict, enemies: dict, last_action=None,
                           episode_steps: int | None = None) -> None:
        """See ``BatchedStarCraft2Sim.set_unit_situation`` (here for the single environment)."""
        self._batch.set_unit_situation(0, allies, enemies, last_action, episode_steps)

    def seed(self):
        return self._seed

    def state_dict(self) -> dict:
        """What is needed to continue this environment's random stream (see the batched engine)."""
        return self._batch.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._batch.load_state_dict(state)

    def save_replay(self) -> str:
        """Write the last episode as an animated GIF into ``replay_dir``; returns its path."""
        return self._batch.save_replay([0])[0]

    def render(self, mode: str = "rgb_array") -> np.ndarray:
        """The current frame as an RGB array ``[H, W, 3]``."""
        from .replay import render_frame

        if mode != "rgb_array":
            raise ValueError(f"render mode {mode!r} is not supported; use 'rgb_array'.")
        return np.asarray(render_frame(self._batch, self._batch._snapshot(0)))

    def close(self) -> None:
        self._batch.close()

"""Shared helpers of the algorithm tests: configs from the real YAML files, and a tiny batched env."""
from __future__ import annotations

import numpy as np
import torch

import controllers
import learners
import runners
from config.loader import load_config
from envs.multiagentenv import BatchedMultiAgentEnv


def make_cfg(alg: str, map_name: str = "3m", **overrides):
    """The resolved config of ``--config=<alg> --env-config=sc2`` with ``overrides`` (dotted keys)."""
    layer = {"env_args.map_name": map_name, "env_args.backend": "sim", "seed": 3}
    layer.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(alg, "sc2", layer, check_components=False)


class ToyBatchedEnv(BatchedMultiAgentEnv):
    """A small, fast, seeded cooperative task with SMAC's conventions.

    Each agent sees a random feature vector whose first ``n_actions`` entries mark a "good" action; the
    team reward is the fraction of agents that picked their good action. Action 0 (no-op) is always
    available, the others at random. Episodes end at random (``battle_won`` when the last reward was
    high) or at ``episode_limit`` (``info["episode_limit"]`` true). Terminated envs are frozen.
    """

    def __init__(self, n_envs: int = 6, n_agents: int = 3, n_actions: int = 5, obs_dim: int = 7,
                 episode_limit: int = 9, seed: int = 0):
        self.n_envs, self.n_agents, self.n_actions, self.obs_dim = n_envs, n_agents, n_actions, obs_dim
        self.episode_limit = episode_limit
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.done = np.zeros(n_envs, dtype=bool)
        self._obs = np.zeros((n_envs, n_agents, obs_dim), np.float32)
        self._avail = np.ones((n_envs, n_agents, n_actions), np.int32)

    def _draw(self, envs: np.ndarray) -> None:
        k = int(envs.sum())
        self._obs[envs] = self.rng.standard_normal((k, self.n_agents, self.obs_dim)).astype(np.float32)
        avail = (self.rng.random((k, self.n_agents, self.n_actions)) < 0.7).astype(np.int32)
        avail[..., 0] = 1
        self._avail[envs] = avail

    def reset(self, env_mask=None) -> None:
        mask = np.ones(self.n_envs, bool) if env_mask is None else np.asarray(env_mask, bool)
        self.t[mask] = 0
        self.done[mask] = False
        self._draw(mask)

    def step(self, actions):
        actions = np.asarray(actions)
        assert actions.shape == (self.n_envs, self.n_agents)
        live = ~self.done
        good = self._obs[..., : self.n_actions].argmax(-1)
        reward = np.where(live, (actions == good).mean(-1), 0.0).astype(np.float32)
        self.t[live] += 1
        timeout = live & (self.t >= self.episode_limit)
        ended = live & (self.rng.random(self.n_envs) < 0.15)
        terminated = self.done | timeout | ended
        info = {"battle_won": (ended & (reward > 0.5)).astype(np.int64),
                "dead_allies": ended.astype(np.int64), "dead_enemies": (ended & (reward > 0.5)).astype(np.int64),
                "episode_limit": timeout & ~ended}
        self.done = terminated.copy()
        self._draw(live & ~terminated)
        return reward, terminated, info

    def get_obs(self):
        return self._obs.copy()

    def get_state(self):
        return self._obs.reshape(self.n_envs, -1).copy()

    def get_avail_actions(self):
        return self._avail.copy()

    def get_env_info(self):
        return {"state_shape": self.n_agents * self.obs_dim, "obs_shape": self.obs_dim,
                "n_actions": self.n_actions, "n_agents": self.n_agents, "episode_limit": self.episode_limit,
                "n_enemies": 1}

    def close(self) -> None:
        pass


def build(alg: str, env: BatchedMultiAgentEnv | None = None, torch_seed: int = 0, **overrides):
    """``(cfg, env, mac, learner, runner)`` on the CPU, parameters initialised from ``torch_seed``."""
    cfg = make_cfg(alg, **overrides)
    env = env if env is not None else ToyBatchedEnv()
    torch.manual_seed(torch_seed)
    info, device = env.get_env_info(), torch.device("cpu")
    mac = controllers.REGISTRY[cfg.mac](info, cfg, device)
    learner = learners.REGISTRY[cfg.learner](mac, info, cfg, device)
    runner = runners.REGISTRY[cfg.runner](env, mac, cfg, device, record_agent_outputs=learner.trains_on_agent_outputs)
    return cfg, env, mac, learner, runner

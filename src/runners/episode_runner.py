"""Run a number of episodes on a batched environment's ``B`` environments with a controller."""
from __future__ import annotations

import logging

import numpy as np
import torch

from components.episode_batch import EpisodeBatch
from envs.multiagentenv import BatchedMultiAgentEnv
from utils.logging import EPISODE_STATS

logger = logging.getLogger(__name__)


class EpisodeRunner:
    """``EpisodeRunner(env, mac, cfg, device, record_agent_outputs=False, n_episodes=None)``;
    ``run(test_mode, t_env) -> (EpisodeBatch, stats)``.

    Each ``run`` plays ``n_episodes`` episodes (default: one per environment, ``env.n_envs``). They are
    played in *waves* of at most ``env.n_envs`` at once: all environments of a wave are stepped together
    until every one has terminated, with one controller call per step for all of them. When there are
    more episodes than environments (real StarCraft II, whose games are capped: ``envs.game_budget``),
    the remaining ones follow in further waves on the first environments. Storage is preallocated for
    ``episode_limit`` steps on the CPU; the returned batch is a copy on ``device`` (safe to keep across
    runs), padded to its longest episode. With ``record_agent_outputs`` the batch also holds the acting
    policy's outputs and recurrent states (``EpisodeBatch.agent_outputs``, ``agent_hidden_in``), for
    learners that train on them.

    Episode ends follow SMAC and PyMARL: an episode that ends is terminal (``EpisodeBatch.terminated``,
    no bootstrapping), except where the env reports ``info["episode_limit"]``, which SMAC does only with
    ``continuing_episode=True``: such a timeout is bootstrapped from the final observation. An episode
    that a game crash cut short (``info["crashed"]``, reported by real-game envs: SMAC restarts the game)
    is discarded and played again, so crashes count neither as losses nor as data; more crashes than
    episodes wanted is an error.

    ``stats`` holds numpy arrays ``[n_episodes]``: ``return``, ``battle_won``, ``ep_length``,
    ``dead_allies``, ``dead_enemies``; and ``env_steps`` (int, the sum of the episode lengths).
    """

    def __init__(self, env: BatchedMultiAgentEnv, mac, cfg, device: torch.device, record_agent_outputs: bool = False,
                 n_episodes: int | None = None):
        self.env, self.mac, self.device = env, mac, device
        info = env.get_env_info()
        self.n_envs = env.n_envs
        self.n_episodes = self.n_envs if n_episodes is None else int(n_episodes)
        if self.n_episodes < 1:
            raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
        self.n_agents, self.n_actions = info["n_agents"], info["n_actions"]
        self.episode_limit = info["episode_limit"]
        self.record_agent_outputs = record_agent_outputs
        self._storage = EpisodeBatch.zeros(self.n_envs, self.episode_limit, info,
                                           agent_hidden_dim=mac.hidden_dim if record_agent_outputs else None)

    @property
    def n_waves(self) -> int:
        """Waves per ``run`` when no episode crashes."""
        return -(-self.n_episodes // self.n_envs)

    def _store_position(self, t: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the first ``k`` environments' observations, states and masks at position ``t``."""
        s = self._storage
        obs = torch.from_numpy(self.env.get_obs()[:k])
        avail = torch.from_numpy(self.env.get_avail_actions()[:k]).bool()
        s.obs[:k, t] = obs
        s.state[:k, t] = torch.from_numpy(self.env.get_state()[:k])
        s.avail_actions[:k, t] = avail
        return obs, avail

    @torch.no_grad()
    def run(self, test_mode: bool, t_env: int) -> tuple[EpisodeBatch, dict]:
        batches, stats, crashes = [], [], 0
        wanted = self.n_episodes
        while wanted > 0:
            batch, wave_stats, crashed = self._run_wave(min(wanted, self.n_envs), test_mode, t_env)
            if crashed.any():
                crashes += int(crashed.sum())
                logger.warning("%d episode(s) were cut short by a game crash (the game was restarted); they are "
                               "discarded and played again", int(crashed.sum()))
                if crashes > self.n_episodes:
                    raise RuntimeError(f"the game crashed in {crashes} episodes while playing {self.n_episodes}; "
                                       "check the StarCraft II install and the machine's free memory (lower "
                                       "env_args.max_concurrent_games)")
                kept = torch.from_numpy(np.flatnonzero(~crashed))
                batch = EpisodeBatch(**{name: x[kept] for name, x in batch.tensors().items()})
                wave_stats = {key: value[~crashed] for key, value in wave_stats.items()}
            batches.append(batch)
            stats.append(wave_stats)
            wanted -= len(wave_stats["return"])
        out = {key: np.concatenate([s[key] for s in stats]) for key in EPISODE_STATS}
        out["env_steps"] = int(out["ep_length"].sum())
        return _concatenate(batches).trimmed(), out

    def _run_wave(self, k: int, test_mode: bool, t_env: int) -> tuple[EpisodeBatch, dict, np.ndarray]:
        """One episode on each of the first ``k`` environments (the others stay as they are). Returns the
        episodes (on ``device``), their per-episode stats and which of them a game crash ended."""
        env, s = self.env, self._storage
        env.reset(None if k == self.n_envs else np.arange(self.n_envs) < k)
        hidden = self.mac.init_hidden(k)
        last_actions = torch.full((k, self.n_agents), self.n_actions, dtype=torch.long, device=self.device)
        active = np.ones(k, dtype=bool)
        crashed = np.zeros(k, dtype=bool)
        ep_return = np.zeros(k, dtype=np.float64)
        ep_length = np.zeros(k, dtype=np.int64)
        end_info = {key: np.zeros(k, dtype=np.int64) for key in ("battle_won", "dead_allies", "dead_enemies")}
        for t in range(self.episode_limit):
            obs, avail = self._store_position(t, k)
            if self.record_agent_outputs:
                s.agent_hidden_in[:k, t] = hidden.transpose(0, 1).cpu()
            actions, hidden, outputs = self.mac.select_actions(obs.to(self.device), avail.to(self.device),
                                                               last_actions, hidden, t_env, test_mode)
            if self.record_agent_outputs:
                s.agent_outputs[:k, t] = outputs.transpose(0, 1).cpu()
            reward, terminated, info = env.step(self._all_actions(actions.cpu().numpy(), k))
            reward, terminated = reward[:k], terminated[:k]
            if "actions" in info:  # the env acted otherwise (SMAC's heuristic_ai): record what was done
                actions = torch.from_numpy(info["actions"][:k]).to(actions)
            active_t = torch.from_numpy(active)
            s.actions[:k, t] = actions.cpu()
            s.reward[:k, t] = torch.from_numpy(np.where(active, reward, 0.0).astype(np.float32))
            # PyMARL's rule: an episode that ended is terminal unless the env says it hit the time limit
            # (SMAC says so only with continuing_episode=True); terminal means no bootstrap after it.
            s.terminated[:k, t] = torch.from_numpy(terminated & ~info["episode_limit"][:k]) & active_t
            s.filled[:k, t] = active_t
            ep_return += np.where(active, reward, 0.0)
            ep_length += active
            ended = terminated & active
            for key, value in end_info.items():
                value[ended] = info[key][:k][ended]
            if "crashed" in info:
                crashed |= ended & info["crashed"][:k]
            active = active & ~terminated
            last_actions = actions
            if not active.any():
                break
        else:
            raise RuntimeError(f"{int(active.sum())} environment(s) did not terminate within episode_limit="
                               f"{self.episode_limit} steps; the environment must end episodes at its limit")
        self._store_position(t + 1, k)
        batch = EpisodeBatch(**{name: x[:k] for name, x in s.truncated(t + 1).tensors().items()})
        stats = {"return": ep_return, "battle_won": end_info["battle_won"], "ep_length": ep_length,
                 "dead_allies": end_info["dead_allies"], "dead_enemies": end_info["dead_enemies"]}
        return batch.clone().to(self.device), stats, crashed

    def _all_actions(self, actions: np.ndarray, k: int) -> np.ndarray:
        """The wave's actions ``[k, N]`` as the env's ``[B, N]``: the environments outside the wave (not
        stepped: terminated) get their first available action."""
        if k == self.n_envs:
            return actions
        return np.concatenate([actions, self.env.get_avail_actions()[k:].argmax(-1)])


def _concatenate(batches: list[EpisodeBatch]) -> EpisodeBatch:
    """The episodes of ``batches`` in order, in one batch padded (with zeros) to the longest."""
    if len(batches) == 1:
        return batches[0]
    max_t = max(b.max_t for b in batches)

    def padded(x: torch.Tensor, b: EpisodeBatch) -> torch.Tensor:
        missing = max_t - b.max_t
        return torch.cat([x, x.new_zeros((x.shape[0], missing, *x.shape[2:]))], 1) if missing else x

    return EpisodeBatch(**{name: torch.cat([padded(getattr(b, name), b) for b in batches])
                           for name in batches[0].tensors()})

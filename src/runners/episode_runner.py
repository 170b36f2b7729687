"""Run one episode in each of a batched environment's ``B`` environments with a controller."""
from __future__ import annotations

import numpy as np
import torch

from components.episode_batch import EpisodeBatch
from envs.multiagentenv import BatchedMultiAgentEnv


class EpisodeRunner:
    """``EpisodeRunner(env, mac, cfg, device, record_agent_outputs=False)``;
    ``run(test_mode, t_env) -> (EpisodeBatch, stats)``.

    Steps all ``env.n_envs`` environments together until every one has terminated, with one controller
    call per step for all environments and agents. Storage is preallocated for ``episode_limit`` steps on
    the CPU; the returned batch is a trimmed copy on ``device`` (safe to keep across runs). With
    ``record_agent_outputs`` the batch also holds the acting policy's outputs and recurrent states
    (``EpisodeBatch.agent_outputs``, ``agent_hidden_in``), for learners that train on them.

    ``stats`` holds numpy arrays ``[B]``: ``return``, ``battle_won``, ``ep_length``, ``dead_allies``,
    ``dead_enemies``; and ``env_steps`` (int, the sum of the episode lengths).
    """

    def __init__(self, env: BatchedMultiAgentEnv, mac, cfg, device: torch.device, record_agent_outputs: bool = False):
        self.env, self.mac, self.device = env, mac, device
        info = env.get_env_info()
        self.n_envs = env.n_envs
        self.n_agents, self.n_actions = info["n_agents"], info["n_actions"]
        self.episode_limit = info["episode_limit"]
        self.record_agent_outputs = record_agent_outputs
        self._storage = EpisodeBatch.zeros(self.n_envs, self.episode_limit, info,
                                           agent_hidden_dim=mac.hidden_dim if record_agent_outputs else None)

    def _store_position(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._storage
        obs = torch.from_numpy(self.env.get_obs())
        avail = torch.from_numpy(self.env.get_avail_actions()).bool()
        s.obs[:, t] = obs
        s.state[:, t] = torch.from_numpy(self.env.get_state())
        s.avail_actions[:, t] = avail
        return obs, avail

    @torch.no_grad()
    def run(self, test_mode: bool, t_env: int) -> tuple[EpisodeBatch, dict]:
        env, s, b = self.env, self._storage, self.n_envs
        env.reset()
        hidden = self.mac.init_hidden(b)
        last_actions = torch.full((b, self.n_agents), self.n_actions, dtype=torch.long, device=self.device)
        active = np.ones(b, dtype=bool)
        ep_return = np.zeros(b, dtype=np.float64)
        ep_length = np.zeros(b, dtype=np.int64)
        end_info = {k: np.zeros(b, dtype=np.int64) for k in ("battle_won", "dead_allies", "dead_enemies")}
        for t in range(self.episode_limit):
            obs, avail = self._store_position(t)
            if self.record_agent_outputs:
                s.agent_hidden_in[:, t] = hidden.transpose(0, 1).cpu()
            actions, hidden, outputs = self.mac.select_actions(obs.to(self.device), avail.to(self.device),
                                                               last_actions, hidden, t_env, test_mode)
            if self.record_agent_outputs:
                s.agent_outputs[:, t] = outputs.transpose(0, 1).cpu()
            reward, terminated, info = env.step(actions.cpu().numpy())
            active_t = torch.from_numpy(active)
            s.actions[:, t] = actions.cpu()
            s.reward[:, t] = torch.from_numpy(np.where(active, reward, 0.0).astype(np.float32))
            s.terminated[:, t] = torch.from_numpy(terminated & ~info["episode_limit"]) & active_t
            s.filled[:, t] = active_t
            ep_return += np.where(active, reward, 0.0)
            ep_length += active
            ended = terminated & active
            for k, v in end_info.items():
                v[ended] = info[k][ended]
            active = active & ~terminated
            last_actions = actions
            if not active.any():
                break
        else:
            raise RuntimeError(f"{int(active.sum())} environment(s) did not terminate within episode_limit="
                               f"{self.episode_limit} steps; the environment must end episodes at its limit")
        self._store_position(t + 1)
        batch = s.truncated(t + 1).clone().to(self.device)
        stats = {"return": ep_return, "battle_won": end_info["battle_won"], "ep_length": ep_length,
                 "dead_allies": end_info["dead_allies"], "dead_enemies": end_info["dead_enemies"],
                 "env_steps": int(ep_length.sum())}
        return batch, stats

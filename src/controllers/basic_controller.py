"""The agents' decentralised policies as one object (PyMARL's ``BasicMAC``).

Agent ``i`` acts on its own input only: its observation, optionally its own last action (one-hot) and
its agent id (one-hot). With ``agent_parameter_sharing: false`` (the default) the agent network has one
stack of parameters per agent (see ``modules.stacked``); with ``true`` one network serves every agent
(the agents are folded into the batch, so the agent-id input is what tells them apart).

The controller is stateless across calls: the caller owns the recurrent hidden state, so a train runner
and a test runner can share one controller.

Layout: agent-first and time-major, ``[N, T, B, ...]`` for sequences and ``[N, B, ...]`` for one step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from components import action_selectors
from components.episode_batch import EpisodeBatch
from modules import agents, lookup


class BasicMAC:
    """``BasicMAC(env_info, cfg, device)``; see the module docstring."""

    def __init__(self, env_info: dict, cfg, device: torch.device):
        self.n_agents, self.n_actions = env_info["n_agents"], env_info["n_actions"]
        self.obs_dim = env_info["obs_shape"]
        self.device = device
        self.shared = cfg.agent_parameter_sharing
        self.obs_last_action, self.obs_agent_id = cfg.obs_last_action, cfg.obs_agent_id
        self.input_dim = (self.obs_dim + self.n_actions * self.obs_last_action
                          + self.n_agents * self.obs_agent_id)
        n_stacks = 1 if self.shared else self.n_agents
        self.agent = lookup(agents.REGISTRY, cfg.agent, "agent")(n_stacks, self.input_dim, self.n_actions, cfg)
        self.agent.to(device)
        self.hidden_dim = self.agent.hidden_dim
        self.selector = lookup(action_selectors.REGISTRY, cfg.action_selector, "action_selector")(cfg)
        self._agent_ids = torch.eye(self.n_agents, device=device)

    # ---- inputs -----------------------------------------------------------------------------------
    def build_inputs(self, obs: torch.Tensor, last_actions: torch.Tensor) -> torch.Tensor:
        """``obs [B, T, N, obs_dim]``, ``last_actions`` int64 ``[B, T, N]`` (``n_actions`` = none yet)
        -> ``[N, T, B, input_dim]``."""
        parts = [obs.permute(2, 1, 0, 3)]
        if self.obs_last_action:
            one_hot = F.one_hot(last_actions.permute(2, 1, 0), self.n_actions + 1)[..., : self.n_actions]
            parts.append(one_hot.to(obs.dtype))
        if self.obs_agent_id:
            n, t, b = parts[0].shape[:3]
            parts.append(self._agent_ids[:, None, None, :].expand(n, t, b, self.n_agents))
        return torch.cat(parts, dim=-1)

    def sequence_inputs(self, batch: EpisodeBatch) -> torch.Tensor:
        """Inputs for every observation position of ``batch``: ``[N, T+1, B, input_dim]``."""
        none = torch.full_like(batch.actions[:, :1], self.n_actions)
        return self.build_inputs(batch.obs, torch.cat([none, batch.actions], dim=1))

    # ---- forward ----------------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> torch.Tensor:
        """Zero hidden state ``[N, B, H]``."""
        return torch.zeros(self.n_agents, batch_size, self.hidden_dim, device=self.device)

    def forward(self, inputs: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs [N, T, B, in]``, ``h0 [N, B, H]`` -> ``(outputs [N, T, B, A], hidden [N, T, B, H])``."""
        if not self.shared:
            return self.agent(inputs, h0)
        n, t, b, d = inputs.shape
        x = inputs.transpose(0, 1).reshape(1, t, n * b, d)
        out, hidden = self.agent(x, h0.reshape(1, n * b, -1))
        unfold = lambda y: y.view(t, n, b, y.shape[-1]).transpose(0, 1)  # noqa: E731
        return unfold(out), unfold(hidden)

    @torch.no_grad()
    def select_actions(self, obs: torch.Tensor, avail: torch.Tensor, last_actions: torch.Tensor,
                       hidden: torch.Tensor, t_env: int, test_mode: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for ``B`` environments: ``obs [B, N, obs_dim]``, ``avail`` bool ``[B, N, A]``,
        ``last_actions`` int64 ``[B, N]``, ``hidden [N, B, H]`` -> ``(actions int64 [B, N], the new
        hidden [N, B, H], the agent outputs that chose the actions [N, B, A])``."""
        inputs = self.build_inputs(obs.unsqueeze(1), last_actions.unsqueeze(1))
        out, new_hidden = self.forward(inputs, hidden)
        actions = self.selector.select(out[:, 0], avail.transpose(0, 1), t_env, test_mode)
        return actions.t(), new_hidden[:, 0], out[:, 0]

    # ---- parameters -------------------------------------------------------------------------------
    def parameters(self):
        return self.agent.parameters()

    def state_dict(self) -> dict:
        return self.agent.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state)

    def load_state(self, other: "BasicMAC") -> None:
        """Copy ``other``'s parameters (target-network updates)."""
        self.agent.load_state_dict(other.agent.state_dict())

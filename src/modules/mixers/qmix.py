"""QMIX's monotonic mixing network (Rashid et al. 2018, as in PyMARL).

``Q_tot = elu(q · |W1(s)| + b1(s)) · |W2(s)| + V(s)``: the hypernetworks turn the state into mixing
weights; their absolute value makes ``Q_tot`` monotonically non-decreasing in every agent's Q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _hypernet(state_dim: int, hidden: int, out: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(state_dim, out)
    if layers == 2:
        return nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))
    raise ValueError(f"hypernet_layers={layers!r} is not supported; valid choices: 1, 2")


class QMixer(nn.Module):
    """``forward(agent_qs [*batch, N], states [*batch, state_dim]) -> q_tot [*batch]``."""

    def __init__(self, n_agents: int, state_dim: int, cfg):
        super().__init__()
        self.n_agents, self.embed = n_agents, cfg.mixing_embed_dim
        self.hyper_w1 = _hypernet(state_dim, cfg.hypernet_embed, self.embed * n_agents, cfg.hypernet_layers)
        self.hyper_w2 = _hypernet(state_dim, cfg.hypernet_embed, self.embed, cfg.hypernet_layers)
        self.hyper_b1 = nn.Linear(state_dim, self.embed)
        self.hyper_v = nn.Sequential(nn.Linear(state_dim, self.embed), nn.ReLU(), nn.Linear(self.embed, 1))

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """The mixing is a weighted sum per sample: with the per-sample weights ``w1 [M, N, E]`` and
        ``w2 [M, E]``, element-wise products and sums (a bmm of ``M`` tiny matrices is slower on CPU)."""
        batch = agent_qs.shape[:-1]
        qs = agent_qs.reshape(-1, self.n_agents)
        s = states.reshape(qs.shape[0], -1)
        w1 = self.hyper_w1(s).abs().view(-1, self.n_agents, self.embed)
        hidden = F.elu((qs.unsqueeze(-1) * w1).sum(1) + self.hyper_b1(s))       # [M, E]
        w2 = self.hyper_w2(s).abs()
        return ((hidden * w2).sum(-1) + self.hyper_v(s).squeeze(-1)).view(batch)

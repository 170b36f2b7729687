"""Turn per-agent network outputs into actions, never choosing an unavailable action.

``select(outputs [..., A], avail [..., A] bool, t_env, test_mode) -> actions int64 [...]``.
"""
from __future__ import annotations

import torch

from .schedules import LinearSchedule

MASKED_LOGIT = -1e10
"""Logit given to unavailable actions (finite so that ``0 * logit`` stays 0 in entropies)."""


def masked_logits(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(~avail, MASKED_LOGIT)


class CategoricalSelector:
    """Sample from the softmax over available actions; greedy (argmax) in test mode."""

    def __init__(self, cfg):
        pass

    def select(self, logits: torch.Tensor, avail: torch.Tensor, t_env: int, test_mode: bool) -> torch.Tensor:
        logits = masked_logits(logits, avail)
        if test_mode:
            return logits.argmax(-1)
        # Gumbel-max: argmax(logits + Gumbel noise) is a sample from softmax(logits).
        u = torch.rand_like(logits).clamp_(min=1e-20)
        return (logits - torch.log(-torch.log(u))).argmax(-1)


class EpsilonGreedySelector:
    """With probability ε a uniformly random available action, else the available action with the highest
    Q; ε follows a linear schedule on ``t_env`` (``epsilon_start -> epsilon_finish`` over
    ``epsilon_anneal_time`` steps). Greedy (ε = 0) in test mode."""

    def __init__(self, cfg):
        self.schedule = LinearSchedule(cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time)

    def epsilon(self, t_env: int) -> float:
        return self.schedule.value(t_env)

    def select(self, q: torch.Tensor, avail: torch.Tensor, t_env: int, test_mode: bool) -> torch.Tensor:
        greedy = q.masked_fill(~avail, -float("inf")).argmax(-1)
        if test_mode:
            return greedy
        random_actions = torch.rand(avail.shape, device=q.device).masked_fill_(~avail, -1.0).argmax(-1)
        explore = torch.rand(greedy.shape, device=q.device) < self.epsilon(t_env)
        return torch.where(explore, random_actions, greedy)


REGISTRY = {
    "categorical": CategoricalSelector,
    "epsilon_greedy": EpsilonGreedySelector,
}

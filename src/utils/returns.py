"""Return and advantage estimators shared by the learners.

Time is the first dimension; any trailing dimensions (agents, episodes) are batch. Conventions:

* ``rewards``, ``terminated``, ``mask``: ``[T, ...]`` per transition. ``terminated[t] = 1`` when the
  episode really ended at ``t`` (no bootstrap); an episode cut by the time limit has ``terminated = 0``
  at its last transition and is bootstrapped from the value of its final observation.
  ``mask[t] = 1`` for real transitions, 0 for padding after the episode's end.
* ``values``: ``[T+1, ...]`` value of every observation position, including the final one.

Outputs are 0 where ``mask`` is 0.
"""
from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, mask: torch.Tensor,
        gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016): advantages ``[T, ...]``.

    ``δ_t = r_t + γ (1 - term_t) V_{t+1} - V_t`` and ``A_t = δ_t + γ λ (1 - term_t) A_{t+1}``, where
    ``A_{t+1} = 0`` past the episode's last transition. The return target is ``A_t + V_t``.
    """
    not_term = 1.0 - terminated
    deltas = (rewards + gamma * not_term * values[1:] - values[:-1]) * mask
    decay = gamma * lam * not_term
    adv = torch.zeros_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        running = running * mask[t]
        adv[t] = running
    return adv


def lambda_returns(rewards: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
                   mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(λ) targets ``[T, ...]``; ``next_values[t]`` is the bootstrap value of position ``t + 1``.

    ``G_t = r_t + γ (1 - term_t) [(1 - λ) V_{t+1} + λ G_{t+1}]``, with ``G_{t+1} := V_{t+1}`` past the
    episode's last transition. ``λ = 0`` gives one-step targets ``r_t + γ (1 - term_t) V_{t+1}``.
    """
    not_term = 1.0 - terminated
    one_step = (rewards + gamma * not_term * next_values) * mask
    if lam == 0.0:
        return one_step
    out = torch.zeros_like(rewards)
    out[-1] = one_step[-1]
    for t in range(rewards.shape[0] - 2, -1, -1):
        g_next = torch.where(mask[t + 1] > 0, out[t + 1], next_values[t])
        out[t] = (rewards[t] + gamma * not_term[t] * ((1 - lam) * next_values[t] + lam * g_next)) * mask[t]
    return out

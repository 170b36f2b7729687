"""Running mean / standard deviation of value targets, one per agent."""
from __future__ import annotations

import torch
from torch import nn


class ValueNorm(nn.Module):
    """Per-agent running statistics of the return targets (exact, Chan et al.'s parallel update).

    The critic learns ``normalize(R)``; its outputs are mapped back with ``denormalize`` for GAE.
    Statistics are buffers, so they are part of ``state_dict()``. Shapes: ``x [K, ...]`` with the agent
    first; ``update`` takes ``x [K, M]`` and a 0/1 ``mask [K, M]`` of the entries to count.
    """

    def __init__(self, n_agents: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_agents, dtype=torch.float64))
        self.register_buffer("var", torch.ones(n_agents, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(n_agents, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        x, mask = x.double(), mask.double()
        n = mask.sum(1)
        batch_mean = (x * mask).sum(1) / n.clamp(min=1)
        batch_var = (((x - batch_mean[:, None]) ** 2) * mask).sum(1) / n.clamp(min=1)
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * n / total.clamp(min=1)
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total.clamp(min=1)
        has = n > 0
        self.mean.copy_(torch.where(has, new_mean, self.mean))
        self.var.copy_(torch.where(has, m2 / total.clamp(min=1), self.var))
        self.count.copy_(total)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1,) + (1,) * (like.dim() - 1)
        std = torch.sqrt(self.var + self.eps)
        return self.mean.to(like.dtype).view(shape), std.to(like.dtype).view(shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(x)
        return x * std + mean

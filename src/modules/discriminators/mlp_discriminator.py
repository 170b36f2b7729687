"""DM²'s per-agent discriminator: ``FC(H) + Tanh -> FC(H) + Tanh -> FC(1)`` (a logit), K unshared stacks.

The reference (a GAIL discriminator as in Kostrikov's PyTorch GAIL) uses this network with PyTorch's
default ``nn.Linear`` initialisation, which :class:`modules.stacked.StackedLinear` reproduces per stack. Its tanh
is :func:`modules.activations.tanh` (the same function, about 7x faster on CPU).
"""
from __future__ import annotations

import torch
from torch import nn

from modules.activations import tanh
from modules.stacked import ALL_STACKS, StackedLinear


class MLPDiscriminator(nn.Module):
    """``forward(x [K, M, input_dim], stacks) -> logits [K, M]``; ``D = sigmoid(logit)`` is the
    probability that a row came from the expert. ``stacks`` runs only those networks."""

    def __init__(self, n_stacks: int, input_dim: int, cfg):
        super().__init__()
        hidden = cfg.gail_hidden_dim
        self.fc1 = StackedLinear(n_stacks, input_dim, hidden)
        self.fc2 = StackedLinear(n_stacks, hidden, hidden)
        self.head = StackedLinear(n_stacks, hidden, 1)

    def forward(self, x: torch.Tensor, stacks: slice = ALL_STACKS) -> torch.Tensor:
        z = tanh(self.fc1(x, stacks=stacks))
        z = tanh(self.fc2(z, stacks=stacks))
        return self.head(z, stacks=stacks).squeeze(-1)

    def input_gradient(self, x: torch.Tensor, stacks: slice = ALL_STACKS) -> torch.Tensor:
        """``d logit / d x`` of every row, ``[K, M, input_dim]``, as a differentiable function of the
        parameters (for gradient penalties).

        Written out by the chain rule, ``(((1 - h2²) ⊙ w3ᵀ) W2ᵀ ⊙ (1 - h1²)) W1ᵀ`` with ``h1, h2`` the
        hidden activations, so that penalising it needs one ordinary backward pass instead of autograd's
        double backward (``create_graph=True``): same values, about half the time.
        """
        h1 = tanh(self.fc1(x, stacks=stacks))
        h2 = tanh(self.fc2(h1, stacks=stacks))
        g2 = (1 - h2 * h2) * self.head.weight[stacks].transpose(1, 2)           # [K, M, H]
        g1 = torch.bmm(g2, self.fc2.weight[stacks].transpose(1, 2)) * (1 - h1 * h1)
        return torch.bmm(g1, self.fc1.weight[stacks].transpose(1, 2))

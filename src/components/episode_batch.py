"""A batch of whole episodes as torch tensors, the unit that runners produce and learners consume."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class EpisodeBatch:
    """``B`` episodes, padded to ``T`` transitions (B = episodes, N = agents, A = actions).

    Per time position ``t = 0..T`` (``T + 1`` positions, the last one holds the observation after the
    final transition, needed for bootstrapping):

    * ``obs`` float32 ``[B, T+1, N, obs_dim]``, ``state`` float32 ``[B, T+1, state_dim]``,
      ``avail_actions`` bool ``[B, T+1, N, A]``.

    Per transition ``t = 0..T-1``:

    * ``actions`` int64 ``[B, T, N]``, ``reward`` float32 ``[B, T]`` (the team reward),
    * ``terminated`` float32 ``[B, T]``: 1 where the episode ended for real at ``t`` (not by the time
      limit, so no bootstrapping from ``t + 1``),
    * ``filled`` float32 ``[B, T]``: 1 for real transitions, 0 for padding after the episode's end.

    Episode ``b`` has ``filled[b].sum()`` transitions; its final observation is at ``obs[b, len_b]``.
    """

    obs: torch.Tensor
    state: torch.Tensor
    avail_actions: torch.Tensor
    actions: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    filled: torch.Tensor

    @classmethod
    def zeros(cls, batch_size: int, max_t: int, env_info: dict, device: torch.device | str = "cpu") -> "EpisodeBatch":
        """An all-zero batch of ``batch_size`` episodes with ``max_t`` transition slots."""
        b, t, n, a = batch_size, max_t, env_info["n_agents"], env_info["n_actions"]
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        return cls(obs=z(b, t + 1, n, env_info["obs_shape"]), state=z(b, t + 1, env_info["state_shape"]),
                   avail_actions=z(b, t + 1, n, a, dtype=torch.bool), actions=z(b, t, n, dtype=torch.long),
                   reward=z(b, t), terminated=z(b, t), filled=z(b, t))

    def clone(self) -> "EpisodeBatch":
        return EpisodeBatch(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return self.reward.shape[0]

    @property
    def max_t(self) -> int:
        """``T``, the number of transition slots."""
        return self.reward.shape[1]

    @property
    def device(self) -> torch.device:
        return self.obs.device

    def episode_lengths(self) -> torch.Tensor:
        """int64 ``[B]``."""
        return self.filled.sum(1).long()

    def to(self, device: torch.device | str) -> "EpisodeBatch":
        return EpisodeBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def truncated(self, max_t: int) -> "EpisodeBatch":
        """The first ``max_t`` transitions (and ``max_t + 1`` observation positions), as views."""
        kw = {}
        for f in fields(self):
            x = getattr(self, f.name)
            kw[f.name] = x[:, : max_t + 1] if f.name in _POSITION_FIELDS else x[:, :max_t]
        return EpisodeBatch(**kw)

    def trimmed(self) -> "EpisodeBatch":
        """Drop the padding shared by every episode: truncate to the longest episode."""
        return self.truncated(int(self.episode_lengths().max()))


_POSITION_FIELDS = ("obs", "state", "avail_actions")

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

    Optional records of the acting policy (``None`` unless the runner was asked for them; learners that
    train on the behaviour policy, such as IPPO, need them):

    * ``agent_outputs`` float32 ``[B, T, N, A]``: the agent networks' outputs that chose ``actions``
      (IPPO: the policy logits, before masking unavailable actions),
    * ``agent_hidden_in`` float32 ``[B, T, N, H]``: the agent networks' recurrent state entering each
      transition (zeros at ``t = 0``).
    """

    obs: torch.Tensor
    state: torch.Tensor
    avail_actions: torch.Tensor
    actions: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    filled: torch.Tensor
    agent_outputs: torch.Tensor | None = None
    agent_hidden_in: torch.Tensor | None = None

    @classmethod
    def zeros(cls, batch_size: int, max_t: int, env_info: dict, device: torch.device | str = "cpu",
              agent_hidden_dim: int | None = None) -> "EpisodeBatch":
        """An all-zero batch of ``batch_size`` episodes with ``max_t`` transition slots; with
        ``agent_hidden_dim``, also the acting-policy records."""
        b, t, n, a = batch_size, max_t, env_info["n_agents"], env_info["n_actions"]
        z = lambda *shape, dtype=torch.float32: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        records = {} if agent_hidden_dim is None else {
            "agent_outputs": z(b, t, n, a), "agent_hidden_in": z(b, t, n, agent_hidden_dim)}
        return cls(obs=z(b, t + 1, n, env_info["obs_shape"]), state=z(b, t + 1, env_info["state_shape"]),
                   avail_actions=z(b, t + 1, n, a, dtype=torch.bool), actions=z(b, t, n, dtype=torch.long),
                   reward=z(b, t), terminated=z(b, t), filled=z(b, t), **records)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields that hold a tensor, by name (the optional records only when present)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def clone(self) -> "EpisodeBatch":
        return EpisodeBatch(**{name: x.clone() for name, x in self.tensors().items()})

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
        return EpisodeBatch(**{name: x.to(device) for name, x in self.tensors().items()})

    def truncated(self, max_t: int) -> "EpisodeBatch":
        """The first ``max_t`` transitions (and ``max_t + 1`` observation positions), as views."""
        return EpisodeBatch(**{name: x[:, : max_t + 1] if name in _POSITION_FIELDS else x[:, :max_t]
                               for name, x in self.tensors().items()})

    def trimmed(self) -> "EpisodeBatch":
        """Drop the padding shared by every episode: truncate to the longest episode."""
        return self.truncated(int(self.episode_lengths().max()))


_POSITION_FIELDS = ("obs", "state", "avail_actions")

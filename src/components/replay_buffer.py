"""Episode replay buffer (QMIX): a ring of whole episodes in preallocated tensors."""
from __future__ import annotations

import torch

from .episode_batch import EpisodeBatch


class EpisodeReplayBuffer:
    """Holds up to ``capacity`` episodes of at most ``episode_limit`` transitions; the oldest is
    overwritten first. Sampling (uniform, without replacement) uses its own ``torch.Generator``, whose
    state is in ``state_dict()``, so a resumed run samples exactly what the original would have.

    Args:
        env_info: the environment's ``get_env_info()`` (shapes and ``episode_limit``).
    """

    def __init__(self, capacity: int, env_info: dict, seed: int):
        self.capacity, self.episode_limit = capacity, env_info["episode_limit"]
        self.size, self.next_slot = 0, 0
        self.generator = torch.Generator().manual_seed(seed)
        empty = EpisodeBatch.zeros(capacity, self.episode_limit, env_info)
        self.storage = empty.tensors()

    def __len__(self) -> int:
        return self.size

    def insert(self, batch: EpisodeBatch) -> None:
        """Copy the episodes of ``batch`` (on any device) into the ring."""
        if batch.max_t > self.episode_limit:
            raise ValueError(f"batch has {batch.max_t} transitions, more than episode_limit={self.episode_limit}")
        slots = (self.next_slot + torch.arange(batch.batch_size)) % self.capacity
        t = batch.max_t
        for name, buf in self.storage.items():
            x = getattr(batch, name).cpu()
            buf[slots, : x.shape[1]] = x
        # Padding of the slots' earlier occupants must not leak: no transitions, all actions "available".
        self.storage["filled"][slots, t:] = 0
        self.storage["avail_actions"][slots, t + 1 :] = True
        self.next_slot = int((self.next_slot + batch.batch_size) % self.capacity)
        self.size = min(self.size + batch.batch_size, self.capacity)

    def can_sample(self, batch_size: int) -> bool:
        return self.size >= batch_size

    def sample(self, batch_size: int) -> EpisodeBatch:
        """``batch_size`` distinct episodes, trimmed to the longest of them."""
        if not self.can_sample(batch_size):
            raise ValueError(f"cannot sample {batch_size} episodes from a buffer holding {self.size}")
        idx = torch.randperm(self.size, generator=self.generator)[:batch_size]
        # Only the time steps the longest sampled episode needs, each field in one index_select: about 4x
        # faster on CPU than ``buf[idx]`` (advanced indexing), and the results are contiguous.
        max_t = int(self.storage["filled"].index_select(0, idx).sum(1).max())
        window = EpisodeBatch(**self.storage).truncated(max_t)
        return EpisodeBatch(**{name: x.index_select(0, idx) for name, x in window.tensors().items()})

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "next_slot": self.next_slot,
            "generator": self.generator.get_state(),
            "storage": {name: buf[: self.size].clone() for name, buf in self.storage.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        size = state["size"]
        if size > self.capacity:
            raise ValueError(f"replay buffer state holds {size} episodes, more than capacity={self.capacity}")
        for name, buf in self.storage.items():
            saved = state["storage"][name]
            if saved.shape[1:] != buf.shape[1:]:
                raise ValueError(f"replay buffer field {name!r} has shape {tuple(saved.shape[1:])} in the "
                                 f"saved state but {tuple(buf.shape[1:])} here (different map or settings?)")
            buf[:size] = saved
        self.size, self.next_slot = size, state["next_slot"]
        self.generator.set_state(state["generator"])

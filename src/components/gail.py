"""DM²'s distribution matching: one discriminator per agent, trained on that agent's demonstrations
against its own recent observations, and the imitation reward it gives.

Per PPO iteration (:meth:`AgentDiscriminators.train`), for every agent ``k`` separately, ``gail_epochs``
steps of: sample ``gail_batch_size`` of slot ``k``'s demonstration episodes and as many of agent ``k``'s
episodes from the latest batch (only the latest: the policy side is never replayed), and minimise

    BCE(D_k(expert rows), 1) + BCE(D_k(policy rows), 0) + λ · mean((‖∇_x D_k(x̂)‖₂ - 1)²)

with Adam (``gail_lr``), where ``x̂ = α·e + (1 - α)·p`` interpolates expert and policy rows paired at
random, ``α ~ U(0, 1)`` per pair, and λ = ``gail_grad_pen`` (the WGAN-GP penalty the reference uses).
Each BCE is the mean over that side's rows. Then :meth:`AgentDiscriminators.rewards` scores every step of
the batch: ``r_gail = log D - log(1 - D)`` (the logit, ``gail_reward: logit``), ``-log(1 - D)``
(``positive``) or ``log D`` (``negative``), no normalisation and no clipping.

**Rows.** A row is one step of one agent: its raw SMAC observation (``gail_input: obs``), or the
observation and the one-hot action taken (``obs_action``, the AAAI state-action ablation). Which steps
count is ``gail_mask``:

* ``padding`` (default): every step of the episodes, dead steps included, never padding. A dead agent's
  all-zero observation is part of its observation distribution (how often and how early the experts'
  units die is what the discriminator can see), while padding is an artefact of batching.
* ``none``: the reference's behaviour: every episode padded with zero rows to ``episode_limit`` steps on
  both sides, so zero rows mean "dead or already over".
* ``padding_and_dead``: only steps where the agent is alive; dead steps get ``r_gail = 0``.

A dead agent is recognised by its all-zero observation (SMAC's convention), on both sides.

**Decentralisation.** Agent ``k``'s discriminator, optimiser moments, random generator and reward depend
on slot ``k``'s demonstrations and agent ``k``'s own observations only. Each agent's network runs on
exactly its own rows (one stack per call: the amount of work never depends on another agent's data), and
each agent draws its samples from its own generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from components.demonstrations import Demonstrations
from modules import discriminators, lookup

GAIL_REWARDS = ("logit", "positive", "negative")
GAIL_MASKS = ("padding", "none", "padding_and_dead")
GAIL_INPUTS = ("obs", "obs_action")


def alive_steps(obs: torch.Tensor) -> torch.Tensor:
    """bool ``[...]`` of ``obs [..., D]``: false where the observation is all zeros (a dead SMAC agent)."""
    return obs.ne(0).any(-1)


class EpisodeRows:
    """Per agent, the counted rows of ``E`` episodes, stored episode after episode for sampling whole
    episodes.

    ``EpisodeRows(x [N, E, T, D], keep bool [N, E, T])``: agent ``k``'s rows are ``x[k][keep[k]]``.
    """

    def __init__(self, x: torch.Tensor, keep: torch.Tensor):
        self.n_agents, self.n_episodes = keep.shape[:2]
        self.rows = [x[k][keep[k]] for k in range(self.n_agents)]  # [R_k, D]
        self.counts = keep.sum(-1)                                  # [N, E]
        self.starts = self.counts.cumsum(-1) - self.counts          # [N, E]

    def gather(self, agent: int, episodes: torch.Tensor) -> torch.Tensor:
        """The rows of ``episodes`` (int64 ``[M]``) of ``agent``, in that order: ``[S, D]``."""
        counts, starts = self.counts[agent, episodes], self.starts[agent, episodes]
        first_out = counts.cumsum(0) - counts                      # where each episode begins in the output
        index = torch.arange(int(counts.sum()), device=counts.device) + torch.repeat_interleave(
            starts - first_out, counts)
        return self.rows[agent][index]


@dataclass
class RowSpec:
    """How steps become discriminator rows (``gail_input``, ``gail_mask``; see the module docstring)."""

    n_actions: int
    episode_limit: int
    with_actions: bool
    mask: str

    def rows(self, obs: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor) -> EpisodeRows:
        """``obs [N, E, T, D]``, ``actions`` int64 ``[N, E, T]``, ``lengths`` int64 ``[N, E]`` (steps of each
        episode) -> the rows that count."""
        x = self.inputs(obs, actions)
        n, e, t_len = actions.shape
        if self.mask == "none":
            pad = self.episode_limit - t_len
            x = torch.cat([x, x.new_zeros(n, e, pad, x.shape[-1])], dim=2) if pad > 0 else x
            keep = torch.ones(n, e, x.shape[2], dtype=torch.bool, device=x.device)
            return EpisodeRows(x, keep)
        keep = torch.arange(t_len, device=x.device) < lengths.unsqueeze(-1)
        if self.mask == "padding_and_dead":
            keep &= alive_steps(obs)
        return EpisodeRows(x, keep)

    def inputs(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``obs [..., D]``, ``actions [...]`` -> the discriminator's input ``[..., D (+ A)]``."""
        if not self.with_actions:
            return obs
        return torch.cat([obs, F.one_hot(actions, self.n_actions).to(obs.dtype)], dim=-1)


class AgentDiscriminators:
    """``AgentDiscriminators(demos, env_info, cfg, device)``: the N discriminators, their optimiser
    and random generators, and slot ``k``'s demonstration rows for each; see the module docstring.

    ``train(obs, actions, lengths) -> stats`` on the latest batch, ``rewards(obs, actions) -> r_gail``;
    ``state_dict`` / ``load_state_dict`` hold everything that changes during training.
    """

    def __init__(self, demos: Demonstrations, env_info: dict, cfg, device: torch.device):
        for key, value, choices in (("gail_reward", cfg.gail_reward, GAIL_REWARDS),
                                    ("gail_mask", cfg.gail_mask, GAIL_MASKS),
                                    ("gail_input", cfg.gail_input, GAIL_INPUTS)):
            if value not in choices:
                raise ValueError(f"{key}={value!r} is not one of {', '.join(choices)}")
        self.cfg, self.device = cfg, device
        self.n_agents = env_info["n_agents"]
        self.spec = RowSpec(env_info["n_actions"], env_info["episode_limit"], cfg.gail_input == "obs_action",
                            cfg.gail_mask)
        input_dim = env_info["obs_shape"] + env_info["n_actions"] * self.spec.with_actions
        self.net = lookup(discriminators.REGISTRY, cfg.discriminator, "discriminator")(
            self.n_agents, input_dim, cfg).to(device)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=cfg.gail_lr)
        seeds = np.random.SeedSequence(cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, ())),
                                       spawn_key=(7,)).generate_state(self.n_agents, dtype=np.uint64)
        self.generators = [torch.Generator().manual_seed(int(s) >> 1) for s in seeds]
        self.expert = self.spec.rows(*(torch.tensor(x, device=device) for x in (demos.obs, demos.actions, demos.lengths)))

    def _sample(self, agent: int, n_episodes: int) -> torch.Tensor:
        """``min(gail_batch_size, n_episodes)`` distinct episode indices for ``agent``, from its generator."""
        m = min(self.cfg.gail_batch_size, n_episodes)
        return torch.randperm(n_episodes, generator=self.generators[agent])[:m].to(self.device)

    def train(self, obs: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor) -> dict[str, float]:
        """``gail_epochs`` steps on the latest batch: ``obs [N, B, T, D]``, ``actions [N, B, T]``, ``lengths
        [N, B]`` (agent-first, episode-major). Returns the statistics averaged over steps and agents."""
        cfg = self.cfg
        policy = self.spec.rows(obs, actions, lengths)
        sums = torch.zeros(6, device=self.device)
        for _ in range(cfg.gail_epochs):
            losses, step_stats = [], []
            for k in range(self.n_agents):
                expert_rows = self.expert.gather(k, self._sample(k, self.expert.n_episodes))
                policy_rows = policy.gather(k, self._sample(k, policy.n_episodes))
                loss, stats = self._agent_loss(k, expert_rows, policy_rows)
                losses.append(loss)
                step_stats.append(stats)
            self.optim.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()  # separate networks: the sum is N separate backwards
            self.optim.step()
            sums += torch.stack(step_stats).mean(0)
        sums /= cfg.gail_epochs
        names = ("gail_disc_loss", "gail_grad_penalty", "gail_expert_accuracy", "gail_policy_accuracy",
                 "gail_d_expert_mean", "gail_d_policy_mean")
        return {name: float(value) for name, value in zip(names, sums)}

    def _agent_loss(self, k: int, expert_rows: torch.Tensor, policy_rows: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent ``k``'s loss on ``expert_rows [S_e, D]`` and ``policy_rows [S_p, D]`` (one forward over
        both sides and the interpolates) and its statistics ``[6]`` (see ``train``'s names)."""
        g = self.generators[k]
        n_pairs = min(len(expert_rows), len(policy_rows))
        partner = torch.randperm(len(policy_rows), generator=g)[:n_pairs].to(self.device)
        alpha = torch.rand(n_pairs, 1, generator=g).to(self.device)
        mixed = alpha * expert_rows[:n_pairs] + (1 - alpha) * policy_rows[partner]
        stack = slice(k, k + 1)
        logits = self.net(torch.cat([expert_rows, policy_rows]).unsqueeze(0), stacks=stack)[0]
        expert_logits, policy_logits = logits.split([len(expert_rows), len(policy_rows)])
        grad = self.net.input_gradient(mixed.unsqueeze(0), stacks=stack)[0]   # d D_k / d x at the interpolates
        penalty = (grad.norm(dim=-1) - 1).pow(2).mean()
        bce = (F.binary_cross_entropy_with_logits(expert_logits, torch.ones_like(expert_logits))
               + F.binary_cross_entropy_with_logits(policy_logits, torch.zeros_like(policy_logits)))
        with torch.no_grad():
            stats = torch.stack([bce, penalty, (expert_logits > 0).float().mean(), (policy_logits < 0).float().mean(),
                                 torch.sigmoid(expert_logits).mean(), torch.sigmoid(policy_logits).mean()])
        return bce + self.cfg.gail_grad_pen * penalty, stats

    @torch.no_grad()
    def rewards(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``r_gail [N, T, B]`` of every step: ``obs [N, T, B, D]``, ``actions [N, T, B]``. Steps that
        ``gail_mask: padding_and_dead`` leaves out (dead agents) get 0; padding is left to the caller."""
        n, t_len, b = actions.shape
        logits = self.net(self.spec.inputs(obs, actions).reshape(n, t_len * b, -1)).view(n, t_len, b)
        if self.cfg.gail_reward == "logit":        # log D - log(1 - D)
            reward = logits
        elif self.cfg.gail_reward == "positive":   # -log(1 - D)
            reward = F.softplus(logits)
        else:                                      # log D
            reward = -F.softplus(-logits)
        if self.spec.mask == "padding_and_dead":
            reward = reward * alive_steps(obs)
        return reward

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optim": self.optim.state_dict(),
                "generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["generators"]) != self.n_agents:
            raise ValueError(f"discriminator state for {len(state['generators'])} agents, this run has {self.n_agents}")
        self.net.load_state_dict(state["net"])
        self.optim.load_state_dict(state["optim"])
        for g, s in zip(self.generators, state["generators"]):
            g.set_state(s)

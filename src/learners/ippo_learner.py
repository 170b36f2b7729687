"""Independent PPO (IPPO) as in the DM² reference code: K agents, each with its own recurrent actor and
critic, optimiser state and gradient clipping, trained on the shared team reward.

Per update, on the latest batch of whole episodes (on-policy):

1. The behaviour log-probs ``log π_old(a_t)`` and the actors' GRU states come from the rollout's records
   (``EpisodeBatch.agent_outputs``, ``agent_hidden_in``: the runner keeps what the acting policy
   computed, so no actor pass is repeated). One pass of every critic over the episodes (no gradient)
   gives the values ``V(o_t)`` of every position and the critics' GRU states.
2. Generalised advantage estimation per agent (``gamma``, ``gae_lambda``; ``utils.returns.gae``),
   bootstrapping where an episode was cut without terminating (a timeout with ``continuing_episode``;
   without it a timeout is terminal, as in SMAC and PyMARL); return targets ``R_t = A_t + V_t``. With ``use_value_norm`` the
   critic predicts per-agent normalised returns (``components.value_norm``), denormalised for GAE.
3. Advantages are normalised per agent over the batch's real (unpadded) transitions, whether the agent
   is alive or dead there, as in the reference.
4. ``ppo_epochs`` full-batch epochs. Actor loss per agent:
   ``-mean(min(ρ A, clip(ρ, 1 ± ppo_clip) A)) - entropy_coef · mean(H[π])`` over real transitions,
   with ``ρ = π(a)/π_old(a)`` and the policy a softmax over the available actions only. Critic loss per
   agent: ``value_loss_coef · mean(max(huber(R - V), huber(R - V_clip)))`` with
   ``V_clip = V_old + clip(V - V_old, ± ppo_clip)`` (``use_value_clip``; the reference clips values
   with the policy's clip parameter) and Huber ``δ = huber_delta``. Adam (``lr``, ``optim_eps``),
   one for all actors' stacked weights and one for all critics' (Adam is element-wise, so this is K
   separate Adams), gradient norm clipped to ``grad_norm_clip`` per agent, separately for actor and
   critic.

**Recurrent training** (``bptt``). ``false`` (the default) trains the GRU as the reference does: each
step is computed from a stored hidden state (the rollout's for the actor, the no-gradient pass's for
the critic), so no gradient flows through time, every transition is independent and an epoch is one
batched pass over the real transitions (padding is skipped entirely). This is the default because it
reproduces the paper's baseline and is the fastest: one IPPO update on 5m_vs_6m (256 episodes, 7,558
transitions, 10 epochs, 2 threads of a 2-core CPU) took 1.4 s, against 2.1 s with 10-step BPTT chunks
and 4.1 s with whole-episode BPTT. ``true`` backpropagates through time over chunks of
``bptt_chunk_len`` steps (0: whole episodes); each chunk starts from the stored hidden state, chunks
run in parallel and all-padding chunks are skipped.

Nothing crosses between agents: every loss term, normalisation and clipping above is per agent. The
only shared inputs are the team reward and the episode boundaries (``tests/test_decentralisation.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from components.action_selectors import CategoricalSelector, masked_logits
from components.episode_batch import EpisodeBatch
from components.value_norm import ValueNorm
from modules import critics, lookup
from modules.stacked import clip_grad_norm_per_stack
from utils.checkpoint import check_state_keys
from utils.returns import gae


def _log_prob_entropy(logits: torch.Tensor, avail: torch.Tensor, actions: torch.Tensor):
    """Masked categorical: ``logits, avail [..., A]``, ``actions [...]`` -> ``(log π(a) [...], H [...])``."""
    logp_all = F.log_softmax(masked_logits(logits, avail), dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def ppo_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped surrogate objective per sample (to maximise): ``min(ρ A, clip(ρ, 1 ± clip) A)``."""
    ratio = torch.exp(logp - old_logp)
    return torch.min(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip: float | None,
               huber_delta: float) -> torch.Tensor:
    """Huber value loss per sample; with ``clip``, PPO value clipping:
    ``max(huber(R - V), huber(R - (V_old + clip(V - V_old, ± clip))))``."""
    loss = F.huber_loss(values, targets, reduction="none", delta=huber_delta)
    if clip is None:
        return loss
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return torch.max(loss, F.huber_loss(clipped, targets, reduction="none", delta=huber_delta))


class _Chunker:
    """Cuts ``[N, T, B, ...]`` sequences into ``[N, L, M, ...]`` chunks of ``L`` steps, keeping the ``M``
    chunks that contain at least one real transition (``L = 1``: exactly the real transitions)."""

    def __init__(self, mask: torch.Tensor, chunk_len: int):
        t_len, b = mask.shape
        self.t_len, self.b = t_len, b
        self.chunk_len = chunk_len if chunk_len > 0 else t_len
        self.n_chunks = -(-t_len // self.chunk_len)
        self.keep = None  # cut() keeps every chunk while ``keep`` is being computed
        self.keep = self.cut(mask.unsqueeze(0))[0, 0].nonzero().squeeze(-1)

    def cut(self, x: torch.Tensor) -> torch.Tensor:
        n, t_len, b, *rest = x.shape
        pad = self.n_chunks * self.chunk_len - t_len
        if pad:
            x = torch.cat([x, x.new_zeros(n, pad, b, *rest)], dim=1)
        x = x.view(n, self.n_chunks, self.chunk_len, b, *rest).transpose(1, 2)
        x = x.reshape(n, self.chunk_len, self.n_chunks * b, *rest)
        return x if self.keep is None else x[:, :, self.keep]

    def initial_hidden(self, hidden_in: torch.Tensor) -> torch.Tensor:
        """``hidden_in [N, T, B, H]`` (the state entering each step) -> the state entering each kept chunk
        ``[N, M, H]``."""
        starts = hidden_in[:, :: self.chunk_len]
        return starts.reshape(starts.shape[0], -1, starts.shape[-1])[:, self.keep]


class _LiveTransitions:
    """The transitions where an agent has a choice, for the actor update without BPTT.

    Where an agent has exactly one available action (a dead SMAC agent's no-op), its policy is
    deterministic whatever the parameters: ``log π = 0`` and entropy 0, so those transitions add nothing
    to the actor's gradient. Each agent's network runs on its own remaining transitions only (one
    network per call, so the work for agent i never depends on another agent's data), and the results
    are put back into the full ``[N, 1, M]`` layout with zeros elsewhere: the losses equal the full
    computation's.
    """

    def __init__(self, x: torch.Tensor, h0: torch.Tensor, avail: torch.Tensor, actions: torch.Tensor):
        """``x [N, 1, M, in]``, ``h0 [N, M, H]``, ``avail [N, 1, M, A]``, ``actions [N, 1, M]``."""
        self.shape, self.device = actions.shape, actions.device
        n, _, m = self.shape
        self.agents, self.flat_index, self.inputs = [], [], []
        for k in range(n):
            idx = (avail[k, 0].sum(-1) > 1).nonzero().squeeze(-1)
            if idx.numel():
                self.agents.append(k)
                self.flat_index.append(k * m + idx)
                self.inputs.append((x[k:k + 1, :, idx], h0[k:k + 1, idx], avail[k:k + 1, :, idx],
                                    actions[k:k + 1, :, idx]))
        self.flat_index = torch.cat(self.flat_index) if self.flat_index else None

    def log_prob_entropy(self, actor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log π(a) [N, 1, M], entropy [N, 1, M])`` of the stacked ``actor``."""
        zeros = torch.zeros(self.shape.numel(), device=self.device)
        if self.flat_index is None:
            return zeros.view(self.shape), zeros.view(self.shape)
        logps, entropies = [], []
        for k, (x, h0, avail, actions) in zip(self.agents, self.inputs):
            logits, _ = actor(x, h0, stacks=slice(k, k + 1))
            logp, entropy = _log_prob_entropy(logits, avail, actions)
            logps.append(logp.reshape(-1))
            entropies.append(entropy.reshape(-1))
        put = lambda values: zeros.index_put((self.flat_index,), torch.cat(values)).view(self.shape)  # noqa: E731
        return put(logps), put(entropies)


@dataclass
class Rollout:
    """The latest batch seen per agent (agent-first, time-major), as the PPO stages consume it.

    ``T`` transitions, ``B`` episodes, ``N`` agents. Built once per update with no gradient.

    * ``inputs [N, T+1, B, in]``: every agent's network input at every observation position.
    * ``mask [T, B]``: 1 for real transitions, 0 for padding (shared: the episodes end for all agents).
    * ``terminated [T, B]``: 1 where the episode really ended (no bootstrap), the team's.
    * ``env_reward [T, B]``: the team reward.
    * ``actions [N, T, B]``, ``avail [N, T, B, A]``, ``old_logp [N, T, B]`` (the acting policy's
      log-probabilities), ``actor_hidden_in [N, T, B, H]`` (the actor GRU state entering each step).
    * ``critic_out [N, T+1, B]``: the critics' outputs (normalised returns with ``use_value_norm``),
      ``values [N, T+1, B]``: the same as values in reward units, ``critic_hidden_in [N, T, B, H]``.
    """

    inputs: torch.Tensor
    mask: torch.Tensor
    terminated: torch.Tensor
    env_reward: torch.Tensor
    actions: torch.Tensor
    avail: torch.Tensor
    old_logp: torch.Tensor
    actor_hidden_in: torch.Tensor
    critic_out: torch.Tensor
    values: torch.Tensor
    critic_hidden_in: torch.Tensor

    @property
    def n_valid(self) -> torch.Tensor:
        """The number of real transitions (a 0-d tensor)."""
        return self.mask.sum()


def agent_advantages(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, mask: torch.Tensor,
                     gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE per agent: ``rewards [N, T, B]`` (each agent's own reward), ``values [N, T+1, B]``,
    ``terminated, mask [T, B]`` -> ``(advantages [N, T, B], return targets A + V [N, T, B])``."""
    adv = gae(rewards.transpose(0, 1), values.transpose(0, 1), terminated[:, None], mask[:, None],
              gamma, lam).transpose(0, 1)
    return adv, adv + values[:, : rewards.shape[1]]


def normalise_advantages(adv: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each agent's advantages ``[N, T, B]`` shifted and scaled to mean 0, standard deviation 1 over the
    real transitions (``mask [T, B]``; population std, ``+ 1e-5`` in the denominator as in the
    reference). Returns ``(normalised [N, T, B], the per-agent means [N, 1, 1])``."""
    n_valid = mask.sum()
    mean = (adv * mask).sum((1, 2), keepdim=True) / n_valid
    std = (((adv - mean) ** 2 * mask).sum((1, 2), keepdim=True) / n_valid).sqrt()
    return (adv - mean) / (std + 1e-5), mean


class IPPOLearner:
    """``IPPOLearner(mac, env_info, cfg, device)``; see the module docstring.

    ``train(batch, t_env, episode) -> stats`` performs one PPO update on ``batch`` (an
    :class:`EpisodeBatch` from a runner that records the agent outputs), in named stages that subclasses
    may override (``ippo_gail`` overrides the reward stage):

    1. :meth:`rollout` -> :class:`Rollout` (behaviour log-probs, critic values, stored GRU states);
    2. :meth:`agent_rewards` -> each agent's reward ``[N, T, B]`` (IPPO: the team reward for everyone);
    3. :meth:`advantage_stage` -> normalised advantages and critic targets (GAE, value normalisation);
    4. :meth:`ppo_epochs` -> ``ppo_epochs`` PPO updates of every actor and critic.

    The actors are the controller's agent network; the critics live here.
    """

    trains_on_agent_outputs = True

    def __init__(self, mac, env_info: dict, cfg, device: torch.device):
        if mac.shared:
            raise ValueError("IPPO agents share nothing: set agent_parameter_sharing=False for the ippo learner")
        if not isinstance(mac.selector, CategoricalSelector):
            raise ValueError("IPPO samples from its policy: set action_selector=categorical "
                             f"(got {cfg.action_selector!r})")
        self.mac, self.cfg, self.device = mac, cfg, device
        self.n_agents = env_info["n_agents"]
        self.critic = lookup(critics.REGISTRY, cfg.critic, "critic")(self.n_agents, mac.input_dim, cfg).to(device)
        self.actor_optim = torch.optim.Adam(mac.parameters(), lr=cfg.lr, eps=cfg.optim_eps)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, eps=cfg.optim_eps)
        self.value_norm = ValueNorm(self.n_agents).to(device) if cfg.use_value_norm else None
        self.chunk_len = cfg.bptt_chunk_len if cfg.bptt else 1
        if cfg.bptt and cfg.bptt_chunk_len < 0:
            raise ValueError(f"bptt_chunk_len={cfg.bptt_chunk_len} must be >= 0 (0 = whole episodes)")

    def train(self, batch: EpisodeBatch, t_env: int, episode: int) -> dict[str, float]:
        batch = batch.to(self.device)
        if batch.agent_outputs is None or batch.agent_hidden_in is None:
            raise ValueError("IPPO trains on the acting policy's records, and this batch has none "
                             "(agent_outputs / agent_hidden_in): collect it with a runner built with "
                             "record_agent_outputs=True, as run.py does for this learner.")
        rollout = self.rollout(batch)
        rewards, stats = self.agent_rewards(batch, rollout)
        adv, targets, returns, adv_mean = self.advantage_stage(rollout, rewards)
        stats.update(self.ppo_epochs(rollout, adv, targets))
        with torch.no_grad():
            mask, n_valid = rollout.mask, rollout.n_valid
            stats["advantage_mean"] = float(adv_mean.mean())
            stats["return_mean"] = float((returns * mask).sum() / (n_valid * self.n_agents))
            stats["value_mean"] = float((rollout.values[:, : batch.max_t] * mask).sum() / (n_valid * self.n_agents))
        return stats

    @torch.no_grad()
    def rollout(self, batch: EpisodeBatch) -> Rollout:
        """Stage 1: the batch per agent, with the behaviour log-probs (from the rollout's recorded logits)
        and one no-gradient pass of every critic over the episodes."""
        t_len, b = batch.max_t, batch.batch_size
        inputs = self.mac.sequence_inputs(batch)                    # [N, T+1, B, in]
        actions = batch.actions.permute(2, 1, 0)                    # [N, T, B]
        avail = batch.avail_actions[:, :t_len].permute(2, 1, 0, 3)  # [N, T, B, A]
        old_logp, _ = _log_prob_entropy(batch.agent_outputs.permute(2, 1, 0, 3), avail, actions)
        h0 = torch.zeros(self.n_agents, b, self.critic.hidden_dim, device=self.device)
        critic_out, h_critic = self.critic(inputs, h0)              # [N, T+1, B], [N, T+1, B, H] (after each step)
        values = self.value_norm.denormalize(critic_out) if self.value_norm is not None else critic_out
        return Rollout(inputs=inputs, mask=batch.filled.t(), terminated=batch.terminated.t(),
                       env_reward=batch.reward.t(), actions=actions, avail=avail, old_logp=old_logp,
                       actor_hidden_in=batch.agent_hidden_in.permute(2, 1, 0, 3), critic_out=critic_out,
                       values=values, critic_hidden_in=torch.cat([h0.unsqueeze(1), h_critic[:, : t_len - 1]], dim=1))

    def agent_rewards(self, batch: EpisodeBatch, rollout: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """Stage 2: each agent's reward ``[N, T, B]`` and any statistics of computing it. IPPO: every
        agent is trained on the team reward."""
        return rollout.env_reward.expand(self.n_agents, *rollout.env_reward.shape), {}

    @torch.no_grad()
    def advantage_stage(self, rollout: Rollout, rewards: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 3: ``rewards [N, T, B]`` -> ``(normalised advantages, critic targets, returns,
        advantage means [N, 1, 1])``, all ``[N, T, B]`` but the means. With ``use_value_norm`` the
        normaliser is updated with the returns and the targets are the normalised returns."""
        cfg, mask = self.cfg, rollout.mask
        adv, returns = agent_advantages(rewards, rollout.values, rollout.terminated, mask, cfg.gamma, cfg.gae_lambda)
        targets = returns
        if self.value_norm is not None:
            agent_mask = mask.expand(self.n_agents, *mask.shape)
            self.value_norm.update(returns.reshape(self.n_agents, -1), agent_mask.reshape(self.n_agents, -1))
            targets = self.value_norm.normalize(returns)
        adv, adv_mean = normalise_advantages(adv, mask)
        return adv, targets, returns, adv_mean

    def ppo_epochs(self, rollout: Rollout, adv: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Stage 4: ``ppo_epochs`` full-batch PPO updates of every actor and critic on the normalised
        advantages and critic targets ``[N, T, B]``; returns the statistics averaged over the epochs."""
        cfg, mask, n_valid = self.cfg, rollout.mask, rollout.n_valid
        with torch.no_grad():
            chunks = _Chunker(mask, self.chunk_len)
            x = chunks.cut(rollout.inputs[:, : mask.shape[0]])
            h0_actor = chunks.initial_hidden(rollout.actor_hidden_in)
            h0_critic = chunks.initial_hidden(rollout.critic_hidden_in)
            # [1, L, M] real-transition mask of the chunks; None when every chunk entry is real (L = 1).
            c_mask = chunks.cut(mask.unsqueeze(0)) if chunks.chunk_len > 1 else None
            c_actions, c_avail, c_old_logp, c_adv, c_targets, c_old_values = (
                chunks.cut(y) for y in (rollout.actions, rollout.avail, rollout.old_logp, adv, targets,
                                        rollout.critic_out[:, : mask.shape[0]]))
            live = _LiveTransitions(x, h0_actor, c_avail, c_actions) if c_mask is None else None

        def agent_mean(y: torch.Tensor) -> torch.Tensor:
            """``[N, L, M]`` -> ``[N]``: each agent's mean over the batch's real transitions."""
            return (y if c_mask is None else y * c_mask).sum((1, 2)) / n_valid

        sums: dict[str, torch.Tensor] = {}
        for _ in range(cfg.ppo_epochs):
            if live is None:
                logits, _ = self.mac.forward(x, h0_actor)
                logp, entropy = _log_prob_entropy(logits, c_avail, c_actions)
            else:
                logp, entropy = live.log_prob_entropy(self.mac.agent)
            v, _ = self.critic(x, h0_critic)
            policy_loss = -agent_mean(ppo_surrogate(logp, c_old_logp, c_adv, cfg.ppo_clip))  # [N]
            mean_entropy = agent_mean(entropy)                                                 # [N]
            actor_loss = (policy_loss - cfg.entropy_coef * mean_entropy).sum()
            v_loss = value_loss(v, c_old_values, c_targets, cfg.ppo_clip if cfg.use_value_clip else None,
                                cfg.huber_delta)
            critic_loss = cfg.value_loss_coef * agent_mean(v_loss).sum()
            # Actors and critics share no parameter: one backward of the sum is two separate backwards.
            self.actor_optim.zero_grad(set_to_none=True)
            self.critic_optim.zero_grad(set_to_none=True)
            (actor_loss + critic_loss).backward()
            actor_norm = clip_grad_norm_per_stack(self.mac.parameters(), cfg.grad_norm_clip)
            critic_norm = clip_grad_norm_per_stack(self.critic.parameters(), cfg.grad_norm_clip)
            self.actor_optim.step()
            self.critic_optim.step()

            with torch.no_grad():
                log_ratio = logp - c_old_logp
                ratio = log_ratio.exp()
                epoch_stats = {
                    "policy_loss": policy_loss.mean(), "critic_loss": critic_loss / self.n_agents,
                    "entropy": mean_entropy.mean(), "approx_kl": agent_mean(ratio - 1.0 - log_ratio).mean(),
                    "clip_fraction": agent_mean(((ratio - 1.0).abs() > cfg.ppo_clip).float()).mean(),
                    "actor_grad_norm": actor_norm.mean(), "critic_grad_norm": critic_norm.mean()}
                for name, value in epoch_stats.items():
                    sums[name] = sums[name] + value if name in sums else value
        return {name: float(total / cfg.ppo_epochs) for name, total in sums.items()}

    def state_dict(self) -> dict:
        state = {"mac": self.mac.state_dict(), "critic": self.critic.state_dict(),
                 "actor_optim": self.actor_optim.state_dict(), "critic_optim": self.critic_optim.state_dict()}
        if self.value_norm is not None:
            state["value_norm"] = self.value_norm.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        parts = ("mac", "critic", "actor_optim", "critic_optim")
        parts += ("value_norm",) if self.value_norm is not None else ()
        check_state_keys(state, set(parts), "IPPO learner",
                         "was it saved with a different learner or use_value_norm setting?")
        for name in parts:
            getattr(self, name).load_state_dict(state[name])

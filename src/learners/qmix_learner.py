"""QMIX (Rashid et al. 2018) with PyMARL's defaults: the paper's centralised baseline.

Every batch from the runner goes into an episode replay buffer (``buffer_size`` episodes, inside this
learner). Once it holds ``batch_size`` episodes, each ``train`` call does
``max(1, round(updates_per_episode · episodes in the batch))`` gradient updates — with
``updates_per_episode: 1`` the ratio of updates to collected episodes is that of PyMARL's single-env
runner, whatever ``batch_size_run`` is. Each update samples ``batch_size`` episodes uniformly and:

* runs the agents' Q-networks (``mac``) and the target networks over the whole episodes;
* double Q (``double_q``): the next action is the current network's best *available* action, valued by
  the target network; otherwise the target network's best available action;
* mixes chosen Qs with the monotonic mixer, next-state values with the target mixer;
* targets: TD(λ) over the target mixer's values (``td_lambda``; 0 = PyMARL's one-step targets);
* loss: mean squared TD error over real transitions; RMSprop (``lr``, ``optim_alpha``, ``optim_eps``)
  over agents + mixer, global gradient-norm clipping at ``grad_norm_clip``.

The target networks are copied from the online ones every ``target_update_interval`` episodes.
"""
from __future__ import annotations

import copy

import torch

from components.action_selectors import MASKED_LOGIT, EpsilonGreedySelector
from components.episode_batch import EpisodeBatch
from components.replay_buffer import EpisodeReplayBuffer
from modules import lookup, mixers
from utils.checkpoint import check_state_keys
from utils.returns import lambda_returns


class QMIXLearner:
    """``QMIXLearner(mac, env_info, cfg, device)``; ``train(batch, t_env, episode) -> stats`` (empty until
    the buffer holds ``batch_size`` episodes)."""

    trains_on_agent_outputs = False

    def __init__(self, mac, env_info: dict, cfg, device: torch.device):
        if not isinstance(mac.selector, EpsilonGreedySelector):
            raise ValueError(f"QMIX acts epsilon-greedily on its Q-values: set action_selector=epsilon_greedy "
                             f"(got {cfg.action_selector!r})")
        self.mac, self.cfg, self.device = mac, cfg, device
        self.target_mac = copy.deepcopy(mac)
        self.mixer = lookup(mixers.REGISTRY, cfg.mixer, "mixer")(env_info["n_agents"], env_info["state_shape"], cfg)
        self.mixer.to(device)
        self.target_mixer = copy.deepcopy(self.mixer)
        self.params = list(mac.parameters()) + list(self.mixer.parameters())
        self.optim = torch.optim.RMSprop(self.params, lr=cfg.lr, alpha=cfg.optim_alpha, eps=cfg.optim_eps)
        # Replay sampling has its own generator (saved in state_dict); seeded from the run's seed, or from
        # torch's global generator (seeded by the framework) when the config leaves the seed to Sacred.
        seed = cfg.seed if cfg.seed is not None else int(torch.randint(0, 2**62, ()))
        self.buffer = EpisodeReplayBuffer(cfg.buffer_size, env_info, seed=seed)
        self.last_target_update_episode = 0

    def train(self, batch: EpisodeBatch, t_env: int, episode: int) -> dict[str, float]:
        self.buffer.insert(batch)
        if not self.buffer.can_sample(self.cfg.batch_size):
            return {}
        n_updates = max(1, round(self.cfg.updates_per_episode * batch.batch_size))
        sums: dict[str, float] = {}
        for _ in range(n_updates):
            for k, v in self._update(self.buffer.sample(self.cfg.batch_size).to(self.device)).items():
                sums[k] = sums.get(k, 0.0) + v / n_updates
        if (episode - self.last_target_update_episode) / self.cfg.target_update_interval >= 1.0:
            self.update_targets()
            self.last_target_update_episode = episode
        sums["epsilon"] = self.mac.selector.epsilon(t_env)
        return sums

    def update_targets(self) -> None:
        self.target_mac.load_state(self.mac)
        self.target_mixer.load_state_dict(self.mixer.state_dict())

    def _update(self, batch: EpisodeBatch) -> dict[str, float]:
        cfg = self.cfg
        t_len, b = batch.max_t, batch.batch_size
        inputs = self.mac.sequence_inputs(batch)                   # [N, T+1, B, in]
        h0 = self.mac.init_hidden(b)
        q, _ = self.mac.forward(inputs, h0)                        # [N, T+1, B, A]
        actions = batch.actions.permute(2, 1, 0).unsqueeze(-1)     # [N, T, B, 1]
        chosen_q = q[:, :t_len].gather(-1, actions).squeeze(-1)    # [N, T, B]
        next_avail = batch.avail_actions[:, 1:].permute(2, 1, 0, 3)
        with torch.no_grad():
            target_q, _ = self.target_mac.forward(inputs, h0)
            target_next = target_q[:, 1:]
            if cfg.double_q:
                best = q.detach()[:, 1:].masked_fill(~next_avail, MASKED_LOGIT).argmax(-1, keepdim=True)
                target_next_q = target_next.gather(-1, best).squeeze(-1)
            else:
                target_next_q = target_next.masked_fill(~next_avail, MASKED_LOGIT).max(-1).values
        states = batch.state.transpose(0, 1)                       # [T+1, B, S]
        q_tot = self.mixer(chosen_q.permute(1, 2, 0), states[:t_len])   # [T, B]
        mask = batch.filled.t()
        with torch.no_grad():
            target_next_tot = self.target_mixer(target_next_q.permute(1, 2, 0), states[1:])
            targets = lambda_returns(batch.reward.t(), target_next_tot, batch.terminated.t(), mask,
                                     cfg.gamma, cfg.td_lambda)
        td = (q_tot - targets) * mask
        n_valid = mask.sum()
        loss = td.pow(2).sum() / n_valid
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_norm_clip)
        self.optim.step()
        n_q = n_valid * chosen_q.shape[0]
        return {"loss": loss.item(), "grad_norm": grad_norm.item(),
                "td_error_abs": (td.detach().abs().sum() / n_valid).item(),
                "q_taken_mean": ((chosen_q.detach() * mask).sum() / n_q).item(),
                "target_mean": ((targets * mask).sum() / n_valid).item()}

    def state_dict(self) -> dict:
        return {"mac": self.mac.state_dict(), "target_mac": self.target_mac.state_dict(),
                "mixer": self.mixer.state_dict(), "target_mixer": self.target_mixer.state_dict(),
                "optim": self.optim.state_dict(), "buffer": self.buffer.state_dict(),
                "last_target_update_episode": self.last_target_update_episode}

    def load_state_dict(self, state: dict) -> None:
        parts = ("mac", "target_mac", "mixer", "target_mixer", "optim", "buffer")
        check_state_keys(state, {*parts, "last_target_update_episode"}, "QMIX learner",
                         "was it saved with a different learner?")
        for name in parts:
            getattr(self, name).load_state_dict(state[name])
        self.last_target_update_episode = state["last_target_update_episode"]

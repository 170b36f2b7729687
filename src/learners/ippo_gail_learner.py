"""DM² (``ippo_gail``): IPPO whose agents are each also rewarded for matching the observation distribution
of one expert agent (Wang, Liebman, Durugkar & Stone; paper eq. 3).

Everything of :class:`learners.ippo_learner.IPPOLearner` is reused: the rollout records, GAE, advantage
normalisation and the PPO epochs. Only the reward stage differs: before computing advantages, every
agent's discriminator is trained on the latest batch against its demonstrations
(:class:`components.gail.AgentDiscriminators`), and agent ``k``'s reward becomes, by ``reward_mix``:

* ``mixed`` (default, DM²): ``r_env + gail_rew_coef · r_gail,k``;
* ``env``: ``r_env`` (plain IPPO; the discriminators still train and log, for comparison);
* ``gail``: ``r_gail,k`` (imitation only, the AAAI comparison).

The demonstrations (``gail_data_path``, made with ``src/demos.py``) are loaded once and checked against
the run: map, agent count, observation size and the observation flags must match.
"""
from __future__ import annotations

import os

import torch

from components.demonstrations import DemonstrationError, load_demonstrations
from components.episode_batch import EpisodeBatch
from components.gail import AgentDiscriminators
from learners.ippo_learner import IPPOLearner, Rollout

REWARD_MIXES = ("mixed", "env", "gail")
MAKE_DEMOS_HINT = ("Make demonstrations from an IPPO run trained with save_model=True: `python src/demos.py pipeline "
                   "--runs results/models/<token> --targets 0.3 0.5 --out-dir demos/<map>` (or `src/demos.py "
                   "record <checkpoint> --out <file.npz>`; see docs/demonstrations.md), then pass "
                   "gail_data_path=demos/<map>/dm2_wr0.5.npz.")


class IPPOGAILLearner(IPPOLearner):
    """``IPPOGAILLearner(mac, env_info, cfg, device)``; see the module docstring."""

    @staticmethod
    def check_config(cfg) -> None:
        """Raise ``ValueError`` before a run starts if its DM² settings cannot work."""
        if cfg.reward_mix not in REWARD_MIXES:
            raise ValueError(f"reward_mix={cfg.reward_mix!r} is not one of {', '.join(REWARD_MIXES)}")
        if not cfg.gail_data_path:
            raise ValueError(f"ippo_gail needs demonstrations: gail_data_path is empty. {MAKE_DEMOS_HINT}")
        if not os.path.isfile(cfg.gail_data_path):
            raise ValueError(f"gail_data_path={cfg.gail_data_path!r} is not a file. {MAKE_DEMOS_HINT}")

    def __init__(self, mac, env_info: dict, cfg, device: torch.device):
        super().__init__(mac, env_info, cfg, device)
        self.check_config(cfg)
        demos = load_demonstrations(cfg.gail_data_path)
        demos.check_compatible(cfg.env_args.get("map_name", cfg.env), env_info, cfg.env_args)
        if demos.n_episodes < 1:
            raise DemonstrationError(f"{cfg.gail_data_path} holds no episodes. {MAKE_DEMOS_HINT}")
        self.gail = AgentDiscriminators(demos, env_info, cfg, device)

    def agent_rewards(self, batch: EpisodeBatch, rollout: Rollout) -> tuple[torch.Tensor, dict[str, float]]:
        """Train every discriminator on ``batch``, then each agent's reward ``[N, T, B]`` by ``reward_mix``."""
        t_len = batch.max_t
        obs = batch.obs[:, :t_len].permute(2, 1, 0, 3)              # [N, T, B, D]
        stats = self.gail.train(obs.transpose(1, 2), rollout.actions.transpose(1, 2),
                                batch.episode_lengths().expand(self.n_agents, -1))
        r_gail = self.gail.rewards(obs, rollout.actions)             # [N, T, B]
        mask = rollout.mask
        stats["gail_reward_mean"] = float((r_gail * mask).sum() / (rollout.n_valid * self.n_agents))
        r_env = rollout.env_reward.expand(self.n_agents, *mask.shape)
        if self.cfg.reward_mix == "env":
            return r_env, stats
        if self.cfg.reward_mix == "gail":
            return r_gail * mask, stats
        return r_env + self.cfg.gail_rew_coef * r_gail * mask, stats

    def state_dict(self) -> dict:
        return {**super().state_dict(), "gail": self.gail.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "gail" not in state:
            raise ValueError("the learner state has no discriminators ('gail'): it was saved by another learner "
                             "than ippo_gail")
        state = dict(state)
        gail_state = state.pop("gail")
        super().load_state_dict(state)
        self.gail.load_state_dict(gail_state)

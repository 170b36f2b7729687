"""DM² (``ippo_gail``): the discriminators, the reward forms and mixes, masking, decentralisation, config
errors, and that the stage split leaves IPPO's numbers alone."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alg_helpers import ToyBatchedEnv, build, make_cfg
from components.demonstrations import (Demonstrations, DemonstrationError, make_demonstrations,
                                       save_demonstrations)
from components.gail import AgentDiscriminators, EpisodeRows, RowSpec, alive_steps
from config.loader import ConfigError, load_config

N_AGENTS, N_ACTIONS, OBS_DIM, LIMIT = 3, 5, 7, 9


def demonstrations_from_arrays(obs, actions, lengths) -> Demonstrations:
    """A dataset on "3m" of slot-major arrays ``obs [N, E, T, D]``, ``actions [N, E, T]``, ``lengths [N, E]``."""
    return make_demonstrations(obs, np.broadcast_to(lengths, actions.shape[:2]), map_name="3m", n_actions=N_ACTIONS,
                               episode_limit=LIMIT, actions=actions)


def demonstrations_from(batch) -> Demonstrations:
    """A dataset whose slot i holds agent i's observations and actions of the episodes of ``batch``."""
    return demonstrations_from_arrays(batch.obs[:, : batch.max_t].numpy().transpose(2, 0, 1, 3),
                                      batch.actions.numpy().transpose(2, 0, 1), batch.episode_lengths().numpy())


def toy_batch(seed: int, n_envs: int = 16, torch_seed: int = 0):
    _, _, _, _, runner = build("ippo", env=ToyBatchedEnv(n_envs=n_envs, seed=seed), torch_seed=torch_seed)
    return runner.run(test_mode=False, t_env=0)[0]


@pytest.fixture
def demo_file(tmp_path):
    path = str(tmp_path / "demos.npz")
    save_demonstrations(path, demonstrations_from(toy_batch(seed=100, n_envs=24)))
    return path


def build_gail(demo_file, torch_seed=0, **overrides):
    settings = dict(gail_data_path=demo_file, gail_epochs=3, gail_batch_size=8, ppo_epochs=2)
    settings.update(overrides)
    return build("ippo_gail", torch_seed=torch_seed, **settings)


# ---- configuration --------------------------------------------------------------------------------------

def test_ippo_gail_builds_on_ippo_with_the_papers_reward_coefficients():
    for map_name, coef in (("5m_vs_6m", 0.3), ("3s_vs_4z", 0.05), ("3s_vs_3z", 0.3), ("3s_vs_5z", 0.1),
                           ("8m_vs_9m", 0.4)):
        cfg, ippo = make_cfg("ippo_gail", map_name=map_name), make_cfg("ippo", map_name=map_name)
        assert cfg.gail_rew_coef == coef and cfg.learner == "ippo_gail" and cfg.name == "ippo_gail"
        for key in ("ppo_epochs", "ppo_clip", "batch_size_run", "lr", "entropy_coef", "agent", "critic"):
            assert getattr(cfg, key) == getattr(ippo, key), key
    cfg = make_cfg("ippo_gail")
    assert (cfg.gail_epochs, cfg.gail_batch_size, cfg.gail_lr, cfg.gail_grad_pen, cfg.gail_hidden_dim) == (
        120, 64, 1e-3, 10.0, 64)
    assert (cfg.gail_reward, cfg.reward_mix, cfg.gail_input, cfg.gail_mask) == ("logit", "mixed", "obs", "padding")


def test_missing_or_bad_demonstrations_stop_before_the_run(tmp_path):
    base = {"env_args.map_name": "3m", "env_args.backend": "sim"}
    with pytest.raises(ConfigError, match=r"gail_data_path is empty\. Make demonstrations from an IPPO run .*src/demos\.py pipeline"):
        load_config("ippo_gail", "sc2", base)
    with pytest.raises(ConfigError, match=r"gail_data_path='.*nowhere.npz' is not a file"):
        load_config("ippo_gail", "sc2", {**base, "gail_data_path": str(tmp_path / "nowhere.npz")})
    with pytest.raises(ConfigError, match=r"reward_mix='both' is not one of mixed, env, gail"):
        load_config("ippo_gail", "sc2", {**base, "gail_data_path": __file__, "reward_mix": "both"})


def test_demonstrations_of_another_setting_are_refused(demo_file):
    with pytest.raises(DemonstrationError, match=r"recorded on map '3m' but this run uses map '8m'"):
        build_gail(demo_file, env_args__map_name="8m")
    with pytest.raises(DemonstrationError, match=r"obs_dim=7 but this run's environment has obs_shape=4"):
        build("ippo_gail", env=ToyBatchedEnv(obs_dim=4), gail_data_path=demo_file)
    with pytest.raises(ValueError, match=r"gail_mask='dead' is not one of padding, none, padding_and_dead"):
        build_gail(demo_file, gail_mask="dead")


# ---- rows and masks ---------------------------------------------------------------------------------------

def test_rows_follow_the_mask_setting():
    obs = torch.arange(1.0, 1 + 2 * 2 * 3).view(1, 2, 3, 2).repeat(2, 1, 1, 1)  # [N=2, E=2, T=3, D=2]
    obs[:, 0, 1] = 0.0                     # the agents are dead at step 1 of episode 0
    obs[:, 1, 2] = 0.0                     # episode 1 has 2 steps: step 2 is padding
    actions = torch.zeros(2, 2, 3, dtype=torch.long)
    lengths = torch.tensor([[3, 2], [3, 2]])
    spec = lambda mask: RowSpec(n_actions=3, episode_limit=5, with_actions=False, mask=mask)  # noqa: E731
    padding = spec("padding").rows(obs, actions, lengths)
    assert padding.gather(0, torch.tensor([0, 1])).shape == (5, 2)         # 3 + 2 steps, the dead one included
    assert torch.equal(padding.gather(1, torch.tensor([1])), obs[1, 1, :2])
    alive = spec("padding_and_dead").rows(obs, actions, lengths)
    assert torch.equal(alive.gather(0, torch.tensor([0])), obs[0, 0, [0, 2]])
    reference = spec("none").rows(obs, actions, lengths)                   # every episode padded to the limit
    rows = reference.gather(0, torch.tensor([1, 0]))
    assert rows.shape == (10, 2) and torch.equal(rows[:3], obs[0, 1]) and not rows[3:5].any()
    with_actions = RowSpec(3, 5, True, "padding").inputs(obs[:, :, :1], torch.full((2, 2, 1), 2))
    assert torch.equal(with_actions[..., 2:], torch.tensor([0.0, 0.0, 1.0]).expand(2, 2, 1, 3))
    assert torch.equal(alive_steps(obs)[0], torch.tensor([[True, False, True], [True, True, False]]))


def test_episode_rows_gather_whole_episodes_in_order():
    x = torch.randn(2, 4, 5, 3)
    keep = torch.rand(2, 4, 5) < 0.6
    rows = EpisodeRows(x, keep)
    for k in range(2):
        episodes = torch.tensor([3, 0, 3])
        expected = torch.cat([x[k, e][keep[k, e]] for e in episodes.tolist()])
        assert torch.equal(rows.gather(k, episodes), expected)


# ---- the discriminators -----------------------------------------------------------------------------------

def _discriminators(demos: Demonstrations, **overrides) -> AgentDiscriminators:
    settings = dict(gail_epochs=200, gail_batch_size=16, seed=0)
    settings.update(overrides)
    cfg = make_cfg("ippo_gail", **settings)
    info = {"n_agents": demos.n_agents, "n_actions": N_ACTIONS, "obs_shape": demos.obs_dim, "episode_limit": LIMIT}
    torch.manual_seed(0)
    return AgentDiscriminators(demos, info, cfg, torch.device("cpu"))


def _gaussian_episodes(mean: float, n_episodes: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(2, n_episodes, LIMIT, OBS_DIM, generator=g) + mean
    lengths = torch.randint(3, LIMIT + 1, (n_episodes,), generator=g).expand(2, -1).clone()
    keep = torch.arange(LIMIT) < lengths.unsqueeze(-1)
    return obs * keep.unsqueeze(-1), torch.zeros(2, n_episodes, LIMIT, dtype=torch.long), lengths


def test_discriminator_separates_two_known_distributions():
    """Expert observations ~ N(+1, 1), policy observations ~ N(-1, 1) in every feature: the Bayes-optimal
    classifier is right 99.9% of the time per row; after training, each agent's D is right on more than
    95% of rows on both sides, and the logit reward is higher on expert-like rows."""
    expert_obs, expert_actions, expert_lengths = _gaussian_episodes(+1.0)
    demos = demonstrations_from_arrays(expert_obs.numpy(), expert_actions.numpy(), expert_lengths.numpy())
    gail = _discriminators(demos)
    policy_obs, policy_actions, policy_lengths = _gaussian_episodes(-1.0, seed=1)
    stats = gail.train(policy_obs, policy_actions, policy_lengths)
    assert set(stats) == {"gail_disc_loss", "gail_grad_penalty", "gail_expert_accuracy", "gail_policy_accuracy",
                          "gail_d_expert_mean", "gail_d_policy_mean"}
    test_expert, test_policy = torch.randn(2, LIMIT, 64, OBS_DIM) + 1, torch.randn(2, LIMIT, 64, OBS_DIM) - 1
    actions = torch.zeros(2, LIMIT, 64, dtype=torch.long)
    r_expert, r_policy = gail.rewards(test_expert, actions), gail.rewards(test_policy, actions)
    assert ((r_expert > 0).float().mean(dim=(1, 2)) > 0.95).all()
    assert ((r_policy < 0).float().mean(dim=(1, 2)) > 0.95).all()
    assert stats["gail_d_expert_mean"] > stats["gail_d_policy_mean"]


def test_gradient_penalty_and_loss_equal_a_plain_autograd_computation():
    """Agent 1's loss on given rows equals the same loss computed with plain ``nn.Linear`` layers holding
    agent 1's weights: BCE on each side plus λ · mean((‖∇_x D(x̂)‖ - 1)²), x̂ from the same α and pairing."""
    expert_obs, actions, lengths = _gaussian_episodes(+1.0, n_episodes=8)
    gail = _discriminators(demonstrations_from_arrays(expert_obs.numpy(), actions.numpy(), lengths.numpy()))
    expert_rows, policy_rows = torch.randn(30, OBS_DIM), torch.randn(22, OBS_DIM) - 1
    g = torch.Generator()
    g.set_state(gail.generators[1].get_state())
    loss, stats = gail._agent_loss(1, expert_rows, policy_rows)
    partner = torch.randperm(22, generator=g)[:22]
    alpha = torch.rand(22, 1, generator=g)

    plain = torch.nn.Sequential(torch.nn.Linear(OBS_DIM, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                torch.nn.Tanh(), torch.nn.Linear(64, 1))
    with torch.no_grad():
        for layer, stacked in zip((plain[0], plain[2], plain[4]), (gail.net.fc1, gail.net.fc2, gail.net.head)):
            layer.weight.copy_(stacked.weight[1].t())
            layer.bias.copy_(stacked.bias[1])
    x_hat = (alpha * expert_rows[:22] + (1 - alpha) * policy_rows[partner]).requires_grad_(True)
    (grad,) = torch.autograd.grad(plain(x_hat).sum(), x_hat, create_graph=True)
    penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
    bce = (-F.logsigmoid(plain(expert_rows))).mean() + (-F.logsigmoid(-plain(policy_rows))).mean()
    torch.testing.assert_close(stats[:2], torch.stack([bce, penalty]).detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(loss, bce + 10.0 * penalty, atol=1e-5, rtol=1e-6)
    # the penalty's own gradient reaches the weights (a second-order term)
    (w_grad,) = torch.autograd.grad(penalty, plain[0].weight, retain_graph=True)
    (stacked_grad,) = torch.autograd.grad(loss, gail.net.fc1.weight)
    (plain_grad,) = torch.autograd.grad(bce + 10.0 * penalty, plain[0].weight)
    assert w_grad.abs().sum() > 0
    torch.testing.assert_close(stacked_grad[1].t(), plain_grad, atol=1e-5, rtol=1e-5)
    assert not stacked_grad[0].any()  # agent 0's network gets nothing from agent 1's loss


@pytest.mark.parametrize("form", ["logit", "positive", "negative"])
def test_reward_forms(form):
    expert_obs, actions, lengths = _gaussian_episodes(+1.0, n_episodes=8)
    demos = demonstrations_from_arrays(expert_obs.numpy(), actions.numpy(), lengths.numpy())
    gail = _discriminators(demos, gail_reward=form)
    obs = torch.randn(2, 4, 3, OBS_DIM) * 3
    reward = gail.rewards(obs, torch.zeros(2, 4, 3, dtype=torch.long)).double()
    d = torch.sigmoid(gail.net(obs.reshape(2, 12, OBS_DIM)).double()).view(2, 4, 3)
    expected = {"logit": d.log() - (1 - d).log(), "positive": -(1 - d).log(), "negative": d.log()}[form]
    torch.testing.assert_close(reward, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mix", ["mixed", "env", "gail"])
def test_reward_mixes(demo_file, mix):
    _, _, _, learner, _ = build_gail(demo_file, reward_mix=mix, gail_rew_coef=0.25)
    batch = toy_batch(seed=5)
    rollout = learner.rollout(batch)
    gail_before = copy.deepcopy(learner.gail.state_dict())
    rewards, stats = learner.agent_rewards(batch, rollout)
    assert {"gail_disc_loss", "gail_reward_mean", "gail_expert_accuracy"} <= set(stats)
    assert not torch.equal(gail_before["net"]["fc1.weight"], learner.gail.net.fc1.weight)  # D trained first
    obs = batch.obs[:, : batch.max_t].permute(2, 1, 0, 3)
    r_gail = learner.gail.rewards(obs, rollout.actions) * rollout.mask
    r_env = batch.reward.t().expand(N_AGENTS, -1, -1)
    expected = {"mixed": r_env + 0.25 * r_gail, "env": r_env, "gail": r_gail}[mix]
    torch.testing.assert_close(rewards, expected, atol=1e-6, rtol=0)


def test_padding_and_dead_gives_dead_steps_no_imitation_reward(demo_file):
    _, _, _, learner, _ = build_gail(demo_file, gail_mask="padding_and_dead")
    obs = torch.randn(N_AGENTS, 4, 2, OBS_DIM)
    obs[1, 2:, 0] = 0.0  # agent 1 dead in episode 0 from step 2
    reward = learner.gail.rewards(obs, torch.zeros(N_AGENTS, 4, 2, dtype=torch.long))
    assert not reward[1, 2:, 0].any() and reward[1, :2].all() and reward[0].all()


# ---- IPPO's numbers and decentralisation ---------------------------------------------------------------------

def test_reward_mix_env_trains_exactly_like_ippo(demo_file):
    """The discriminators have their own generators and the reward stage is the only difference: with
    ``reward_mix: env`` every actor and critic parameter after two updates equals plain IPPO's."""
    batches = [toy_batch(seed=s) for s in (1, 2)]
    _, _, _, ippo, _ = build("ippo", torch_seed=3, ppo_epochs=2)
    _, _, _, gail, _ = build_gail(demo_file, torch_seed=3, reward_mix="env")
    for batch in batches:
        ippo_stats, gail_stats = ippo.train(batch, 0, 0), gail.train(batch, 0, 0)
        assert all(gail_stats[k] == v for k, v in ippo_stats.items())
    for part in ("mac", "critic", "actor_optim", "critic_optim"):
        a, b = ippo.state_dict()[part], gail.state_dict()[part]
        for key, value in (a.items() if part in ("mac", "critic") else a["state"].items()):
            other = b[key] if part in ("mac", "critic") else b["state"][key]
            assert all(torch.equal(x, y) for x, y in zip(value.values(), other.values())) if isinstance(
                value, dict) else torch.equal(value, other), (part, key)


def _agent_slices(learner, k: int) -> dict[str, torch.Tensor]:
    """Everything of agent ``k``: its actor, critic and discriminator parameters and Adam moments."""
    out = {}
    for name, module in (("actor", learner.mac.agent), ("critic", learner.critic), ("disc", learner.gail.net)):
        for pname, p in module.named_parameters():
            out[f"{name}.{pname}"] = p.detach()[k].clone()
    for name, optim in (("actor_optim", learner.actor_optim), ("critic_optim", learner.critic_optim),
                        ("disc_optim", learner.gail.optim)):
        for i, state in enumerate(optim.state.values()):
            for key in ("exp_avg", "exp_avg_sq"):
                out[f"{name}.{i}.{key}"] = state[key][k].clone()
    return out


@pytest.mark.parametrize("gail_mask", ["padding", "padding_and_dead"])
def test_agent_i_is_unaffected_by_agent_j_observations_and_demonstrations(tmp_path, gail_mask):
    """Change agent 2's observations in the batch (values and where it is dead) and slot 2's
    demonstrations (values and episode lengths): agent 0's and agent 1's discriminator updates, rewards and
    PPO updates are bit-identical."""
    batch = toy_batch(seed=3, n_envs=12)
    demos = demonstrations_from(toy_batch(seed=100, n_envs=24))
    original = str(tmp_path / "a.npz")
    save_demonstrations(original, demos)
    changed_demos = copy.deepcopy(demos)
    changed_demos.obs[2] = np.random.default_rng(0).standard_normal(changed_demos.obs[2].shape).astype(np.float32)
    changed_demos.lengths[2] = np.maximum(changed_demos.lengths[2] - 1, 1)
    changed_demos.obs[2, :, -1] = 0.0
    for e, length in enumerate(changed_demos.lengths[2]):
        changed_demos.obs[2, e, length:] = 0.0
        changed_demos.actions[2, e, length:] = 0
    changed = str(tmp_path / "b.npz")
    save_demonstrations(changed, changed_demos)
    changed_batch = copy.deepcopy(batch)
    changed_batch.obs[:, :, 2] = torch.randn_like(changed_batch.obs[:, :, 2]) * 5
    changed_batch.obs[:, 2:, 2] = 0.0  # agent 2 now looks dead from step 2

    results = []
    for path, b in ((original, batch), (changed, changed_batch)):
        _, _, _, learner, _ = build_gail(path, torch_seed=0, gail_mask=gail_mask)
        rollout = learner.rollout(b)
        rewards, _ = learner.agent_rewards(b, rollout)
        learner.train(b, 0, 0)
        results.append((rewards, [_agent_slices(learner, k) for k in range(N_AGENTS)]))
    (rewards_a, agents_a), (rewards_b, agents_b) = results
    for k in (0, 1):
        assert torch.equal(rewards_a[k], rewards_b[k])
        for name, value in agents_a[k].items():
            assert torch.equal(value, agents_b[k][name]), (k, name)
    assert not torch.equal(rewards_a[2], rewards_b[2])


def test_state_dict_round_trip_continues_identically(demo_file):
    b1, b2 = toy_batch(seed=1), toy_batch(seed=2)
    _, _, _, a, _ = build_gail(demo_file, torch_seed=0)
    a.train(b1, 0, 0)
    saved = copy.deepcopy(a.state_dict())
    assert set(saved) == {"mac", "critic", "actor_optim", "critic_optim", "gail"}
    _, _, _, b, _ = build_gail(demo_file, torch_seed=9)
    b.load_state_dict(saved)
    assert a.train(b2, 0, 0) == b.train(b2, 0, 0)
    for name, value in a.gail.net.state_dict().items():
        assert torch.equal(value, b.gail.net.state_dict()[name]), name
    _, _, _, ippo, _ = build("ippo")
    with pytest.raises(ValueError, match="no discriminators"):
        b.load_state_dict(ippo.state_dict())

"""QMIX: exploration schedule, action masking, replay buffer, target updates, parameter sharing, exact
state_dict round trips, and the update against PyMARL's computation written plainly."""
import copy

import pytest
import torch
import torch.nn.functional as F

from alg_helpers import ToyBatchedEnv, build, make_cfg
from components.action_selectors import MASKED_LOGIT, CategoricalSelector, EpsilonGreedySelector
from components.episode_batch import EpisodeBatch
from components.replay_buffer import EpisodeReplayBuffer
from components.schedules import LinearSchedule
from utils.returns import lambda_returns


def test_epsilon_schedule_is_linear_then_flat():
    cfg = make_cfg("qmix")
    assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.epsilon_anneal_time) == (1.0, 0.05, 50000)
    sel = EpsilonGreedySelector(cfg)
    assert sel.epsilon(0) == 1.0
    assert sel.epsilon(25000) == pytest.approx(0.525)
    assert sel.epsilon(50000) == pytest.approx(0.05) and sel.epsilon(10**7) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="duration"):
        LinearSchedule(1.0, 0.05, 0)


@pytest.mark.parametrize("t_env", [0, 10**6])
@pytest.mark.parametrize("test_mode", [False, True])
def test_unavailable_actions_are_never_selected(t_env, test_mode):
    torch.manual_seed(0)
    avail = torch.rand(4000, 3, 9) < 0.3
    avail[..., 4] = True
    q = torch.randn(4000, 3, 9) * 100
    q[~avail] += 1e6  # the best-looking actions are unavailable
    for sel in (EpsilonGreedySelector(make_cfg("qmix")), CategoricalSelector(make_cfg("ippo"))):
        actions = sel.select(q, avail, t_env, test_mode)
        assert avail.gather(-1, actions.unsqueeze(-1)).all()
    greedy = EpsilonGreedySelector(make_cfg("qmix")).select(q, avail, t_env, True)
    assert torch.equal(greedy, q.masked_fill(~avail, -float("inf")).argmax(-1))


def test_epsilon_one_explores_uniformly_over_available_actions():
    torch.manual_seed(0)
    avail = torch.zeros(30000, 1, 5, dtype=torch.bool)
    avail[..., [0, 2, 3]] = True
    actions = EpsilonGreedySelector(make_cfg("qmix")).select(torch.randn(30000, 1, 5), avail, 0, False)
    counts = torch.bincount(actions.flatten(), minlength=5).float() / 30000
    torch.testing.assert_close(counts, torch.tensor([1 / 3, 0, 1 / 3, 1 / 3, 0]), atol=0.02, rtol=0)


def _batches(n, seed=0, n_envs=8):
    _, _, _, _, runner = build("qmix", env=ToyBatchedEnv(n_envs=n_envs, seed=seed), torch_seed=seed)
    return [runner.run(test_mode=False, t_env=0)[0] for _ in range(n)]


def test_replay_buffer_ring_and_padding():
    env = ToyBatchedEnv()
    buf = EpisodeReplayBuffer(10, env.get_env_info(), seed=0)
    batches = _batches(3, n_envs=4)
    for b in batches:
        buf.insert(b)
    assert len(buf) == 10 and buf.next_slot == 2
    # the third batch went to slots 8, 9, 0, 1; no stale transitions remain after its episodes' ends
    third = batches[2]
    for slot, episode in ((8, 0), (9, 1), (0, 2), (1, 3)):
        length = int(third.filled[episode].sum())
        assert buf.storage["filled"][slot].sum() == length
        assert torch.equal(buf.storage["obs"][slot, : third.max_t + 1], third.obs[episode])
    sample = buf.sample(6)
    assert sample.batch_size == 6 and sample.max_t == int(sample.filled.sum(1).max())
    with pytest.raises(ValueError, match="cannot sample 11"):
        buf.sample(11)


def test_replay_buffer_state_round_trip_resumes_sampling():
    env = ToyBatchedEnv()
    a = EpisodeReplayBuffer(20, env.get_env_info(), seed=1)
    for b in _batches(2):
        a.insert(b)
    a.sample(4)
    b = EpisodeReplayBuffer(20, env.get_env_info(), seed=2)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    sa, sb = a.sample(5), b.sample(5)
    assert torch.equal(sa.obs, sb.obs) and torch.equal(sa.actions, sb.actions)


def test_train_waits_for_a_full_batch_then_updates():
    _, _, mac, learner, _ = build("qmix", batch_size=12)
    b1, b2 = _batches(2)
    assert learner.train(b1, t_env=50, episode=8) == {}
    before = copy.deepcopy(mac.state_dict())
    stats = learner.train(b2, t_env=100, episode=16)
    assert {"loss", "grad_norm", "td_error_abs", "q_taken_mean", "target_mean", "epsilon"} <= set(stats)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(v, mac.state_dict()[k]) for k, v in before.items())


def test_target_networks_update_every_interval_episodes():
    _, _, mac, learner, _ = build("qmix", batch_size=8, target_update_interval=20)
    b = _batches(1)[0]
    target0 = copy.deepcopy(learner.target_mac.state_dict())
    learner.train(b, 0, episode=8)
    learner.train(b, 0, episode=16)
    assert all(torch.equal(v, learner.target_mac.state_dict()[k]) for k, v in target0.items())
    learner.train(b, 0, episode=24)  # 24 - 0 >= 20: copy
    for k, v in mac.state_dict().items():
        assert torch.equal(v, learner.target_mac.state_dict()[k])
    for k, v in learner.mixer.state_dict().items():
        assert torch.equal(v, learner.target_mixer.state_dict()[k])
    assert learner.last_target_update_episode == 24


@pytest.mark.parametrize("overrides", [{}, {"double_q": False, "td_lambda": 0.6}, {"agent_parameter_sharing": True}])
def test_state_dict_round_trip_gives_identical_updates(overrides):
    batches = _batches(3)
    _, _, mac_a, learner_a, _ = build("qmix", batch_size=8, torch_seed=0, **overrides)
    learner_a.train(batches[0], 0, 8)
    learner_a.train(batches[1], 0, 16)
    saved = copy.deepcopy(learner_a.state_dict())
    _, _, mac_b, learner_b, _ = build("qmix", batch_size=8, torch_seed=5, **overrides)
    learner_b.load_state_dict(saved)
    assert learner_a.train(batches[2], 0, 24) == learner_b.train(batches[2], 0, 24)
    sa, sb = learner_a.state_dict(), learner_b.state_dict()
    for part in ("mac", "target_mac", "mixer", "target_mixer"):
        for k, v in sa[part].items():
            assert torch.equal(v, sb[part][k]), (part, k)


def test_parameter_sharing_uses_one_network_for_all_agents():
    _, env, mac, _, runner = build("qmix", agent_parameter_sharing=True)
    _, _, unshared, _, _ = build("qmix")
    assert all(p.shape[0] == 1 for p in mac.parameters())
    n_shared = sum(p.numel() for p in mac.parameters())
    assert sum(p.numel() for p in unshared.parameters()) == env.n_agents * n_shared
    batch, _ = runner.run(test_mode=False, t_env=0)
    q, hidden = mac.forward(mac.sequence_inputs(batch), mac.init_hidden(batch.batch_size))
    assert q.shape == (env.n_agents, batch.max_t + 1, batch.batch_size, env.n_actions)
    # folding agents into the batch is exact: agent k's output is the shared net on agent k's inputs
    x = mac.sequence_inputs(batch)
    q1, _ = mac.agent(x[1:2], mac.init_hidden(batch.batch_size)[1:2])
    torch.testing.assert_close(q[1], q1[0])


def test_learners_check_their_action_selector():
    with pytest.raises(ValueError, match="action_selector=epsilon_greedy"):
        build("qmix", action_selector="categorical")
    with pytest.raises(ValueError, match="action_selector=categorical"):
        build("ippo", action_selector="epsilon_greedy")


def test_load_state_dict_rejects_foreign_state():
    _, _, _, learner, _ = build("qmix")
    _, _, _, ippo, _ = build("ippo")
    with pytest.raises(ValueError, match="different learner"):
        learner.load_state_dict(ippo.state_dict())


@pytest.mark.parametrize("bad, message", [(0, "agent_fc_layers=0: .*whole number >= 1"),
                                          (-1, "agent_fc_layers=-1: .*whole number >= 1"),
                                          (1.5, "'agent_fc_layers' .*must be an integer.*got float 1.5"),
                                          ("2", "'agent_fc_layers' .*must be an integer.*got str '2'")])
def test_agent_fc_layers_must_be_a_whole_number_of_layers(bad, message):
    with pytest.raises(ValueError, match=message):
        build("qmix", agent_fc_layers=bad)


def test_learner_needs_the_fused_agent():
    with pytest.raises(ValueError, match="set agent=rnn"):
        build("qmix", agent="ln_rnn")


# ---- the update against the plain computation --------------------------------------------------------
# The learner packs the episodes by length, runs the online and target agents in one pass with a
# hand-written backward and mixes the real transitions only. The reference below is the update as PyMARL
# (and this learner before those changes) computes it: every padded position through the agents' plain
# forward (autograd), the mixer with bmm over every slot, lambda_returns over the padded batch.

def _reference_mix(mixer, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    qs = agent_qs.reshape(-1, 1, mixer.n_agents)
    s = states.reshape(qs.shape[0], -1)
    w1 = mixer.hyper_w1(s).abs().view(-1, mixer.n_agents, mixer.embed)
    hidden = F.elu(torch.bmm(qs, w1) + mixer.hyper_b1(s).view(-1, 1, mixer.embed))
    w2 = mixer.hyper_w2(s).abs().view(-1, mixer.embed, 1)
    return (torch.bmm(hidden, w2) + mixer.hyper_v(s).view(-1, 1, 1)).view(agent_qs.shape[:-1])


def _reference_update(learner, batch: EpisodeBatch) -> dict[str, float]:
    cfg, mac = learner.cfg, learner.mac
    t_len, b = batch.max_t, batch.batch_size
    inputs = mac.sequence_inputs(batch)                                   # [N, T+1, B, in]
    h0 = mac.init_hidden(b).to(inputs.dtype)
    q, _ = mac.forward(inputs, h0)
    chosen_q = q[:, :t_len].gather(-1, batch.actions.permute(2, 1, 0).unsqueeze(-1)).squeeze(-1)
    next_avail = batch.avail_actions[:, 1:].permute(2, 1, 0, 3)
    with torch.no_grad():
        target_next = learner.target_mac.forward(inputs, h0)[0][:, 1:]
        if cfg.double_q:
            best = q.detach()[:, 1:].masked_fill(~next_avail, MASKED_LOGIT).argmax(-1, keepdim=True)
            target_next_q = target_next.gather(-1, best).squeeze(-1)
        else:
            target_next_q = target_next.masked_fill(~next_avail, MASKED_LOGIT).max(-1).values
    states = batch.state.transpose(0, 1)
    q_tot = _reference_mix(learner.mixer, chosen_q.permute(1, 2, 0), states[:t_len])
    mask = batch.filled.t()
    with torch.no_grad():
        next_tot = _reference_mix(learner.target_mixer, target_next_q.permute(1, 2, 0), states[1:])
        targets = lambda_returns(batch.reward.t(), next_tot, batch.terminated.t(), mask, cfg.gamma, cfg.td_lambda)
    td = (q_tot - targets) * mask
    n_valid = mask.sum()
    loss = td.pow(2).sum() / n_valid
    learner.optim.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(learner.params, cfg.grad_norm_clip)
    learner.optim.step()
    return {"loss": loss.item(), "grad_norm": grad_norm.item(), "td_error_abs": (td.abs().sum() / n_valid).item(),
            "q_taken_mean": ((chosen_q.detach() * mask).sum() / (n_valid * chosen_q.shape[0])).item(),
            "target_mean": ((targets * mask).sum() / n_valid).item()}


def _assert_learners_agree(a, b, rel: float, what: str):
    """Gradients of the last update and parameters of every network, each relative to its tensor's scale."""
    for part in ("mac", "target_mac", "mixer", "target_mixer"):
        for (name, x), y in zip(a.state_dict()[part].items(), b.state_dict()[part].values()):
            assert (x - y).abs().max() <= rel * y.abs().max(), f"{what}: {part}.{name}"
    for i, (pa, pb) in enumerate(zip(a.params, b.params)):
        assert (pa.grad - pb.grad).abs().max() <= rel * pb.grad.abs().max(), f"{what}: gradient of parameter {i}"


def _to_float64(batch: EpisodeBatch) -> EpisodeBatch:
    return EpisodeBatch(**{k: x.double() if x.is_floating_point() else x for k, x in batch.tensors().items()})


EQUIVALENCE_CASES = [{}, {"double_q": False}, {"td_lambda": 0.6}, {"agent_parameter_sharing": True},
                     {"agent_parameter_sharing": True, "double_q": False, "td_lambda": 0.8},
                     {"agent_fc_layers": 2}]


@pytest.mark.parametrize("overrides", EQUIVALENCE_CASES)
def test_update_equals_the_plain_computation(overrides):
    """Ten consecutive updates (the target networks copied after the fourth), from the same initial networks:
    losses, statistics, gradients and parameters agree with the plain computation to rounding. In float64,
    where rounding is far below the tolerance and any real difference is not."""
    buffer = EpisodeReplayBuffer(64, ToyBatchedEnv().get_env_info(), seed=0)
    for batch in _batches(4):  # episodes of 1 to 9 steps, some cut by the time limit
        buffer.insert(batch)
    _, _, _, new, _ = build("qmix", batch_size=8, torch_seed=0, **overrides)
    _, _, _, ref, _ = build("qmix", batch_size=8, torch_seed=0, **overrides)
    for learner in (new, ref):
        for net in (learner.mac.agent, learner.target_mac.agent, learner.mixer, learner.target_mixer):
            net.double()
    for i in range(10):
        batch = _to_float64(buffer.sample(8))
        stats_new, stats_ref = new._update(batch), _reference_update(ref, batch)
        assert stats_new == pytest.approx(stats_ref, rel=1e-9, abs=1e-12), i
        _assert_learners_agree(new, ref, 1e-9, f"update {i}")
        if i == 3:
            new.update_targets()
            ref.update_targets()


def test_training_equals_the_plain_computation_in_float32():
    """The real path in float32: two ``train`` calls (16 updates) through the replay buffer, against the
    plain update, agree to 1e-5 relative."""
    batches = _batches(2)
    _, _, _, new, _ = build("qmix", batch_size=8, torch_seed=0)
    _, _, _, ref, _ = build("qmix", batch_size=8, torch_seed=0)
    ref._update = lambda batch: _reference_update(ref, batch)
    for i, batch in enumerate(batches):
        stats_new, stats_ref = new.train(batch, 50 * i, 8 * (i + 1)), ref.train(batch, 50 * i, 8 * (i + 1))
        assert stats_new == pytest.approx(stats_ref, rel=1e-5, abs=1e-7)
        _assert_learners_agree(new, ref, 1e-5, f"train call {i}")

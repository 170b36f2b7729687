"""IPPO: GAE and TD(λ) on hand-computed cases, PPO loss pieces, recurrent training modes, configs,
value normalisation and exact state_dict round trips."""
import copy

import pytest
import torch
from torch import nn

from alg_helpers import ToyBatchedEnv, build, make_cfg
from components.value_norm import ValueNorm
from learners import ippo_learner
from learners.ippo_learner import ppo_surrogate, value_loss
from utils.returns import gae, lambda_returns

# Two episodes, time first ([T, B]): A times out after 3 steps (bootstrapped from V3), B ends for real
# after 2 steps (no bootstrap) and has one padded step.
REWARDS = torch.tensor([[1.0, 1.0], [2.0, 5.0], [3.0, 0.0]])
TERMINATED = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
MASK = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
VALUES = torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 7.0], [2.0, 9.0]])


def test_gae_hand_computed():
    # γ = 0.9, λ = 0.5. A: δ = 1.4, 2.35, 3.3 -> A2 = 3.3, A1 = 2.35 + .45·3.3, A0 = 1.4 + .45·A1.
    # B: δ0 = 1 + .9·2 - 1 = 1.8, δ1 = 5 - 2 = 3 (terminal: V2 ignored) -> A1 = 3, A0 = 1.8 + .45·3.
    adv = gae(REWARDS, VALUES, TERMINATED, MASK, gamma=0.9, lam=0.5)
    expected = torch.tensor([[3.12575, 3.15], [3.835, 3.0], [3.3, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    adv = gae(REWARDS, VALUES, TERMINATED, MASK, gamma=0.9, lam=1.0)
    mc_a = torch.tensor([1 + .9 * 2 + .81 * 3 + .729 * 2.0, 2 + .9 * 3 + .81 * 2.0, 3 + .9 * 2.0])
    torch.testing.assert_close(adv[:, 0], mc_a - VALUES[:3, 0])
    torch.testing.assert_close(adv[:, 1], torch.tensor([1 + .9 * 5 - 1.0, 5 - 2.0, 0.0]))


def test_lambda_returns_hand_computed():
    next_values = VALUES[1:]
    one_step = lambda_returns(REWARDS, next_values, TERMINATED, MASK, gamma=0.9, lam=0.0)
    torch.testing.assert_close(one_step, torch.tensor([[1.9, 2.8], [3.35, 5.0], [4.8, 0.0]]))
    # λ = 0.5: A: G2 = 3 + .9·2 = 4.8, G1 = 2 + .9(.5·1.5 + .5·4.8), G0 = 1 + .9(.5·1 + .5·G1)
    #          B: G1 = 5 (terminal), G0 = 1 + .9(.5·2 + .5·5)
    g = lambda_returns(REWARDS, next_values, TERMINATED, MASK, gamma=0.9, lam=0.5)
    torch.testing.assert_close(g, torch.tensor([[3.62575, 4.15], [4.835, 5.0], [4.8, 0.0]]))


def test_ppo_surrogate_clipping():
    clip = 0.2
    old = torch.zeros(4)
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    logp = ratio.log().requires_grad_()
    surr = ppo_surrogate(logp, old, adv, clip)
    # positive advantage: gain capped at 1 + clip; negative advantage: loss capped at 1 - clip
    torch.testing.assert_close(surr.detach(), torch.tensor([1.2, 0.5, -1.5, -0.8]))
    (grad,) = torch.autograd.grad(surr.sum(), logp)
    assert grad[0] == 0 and grad[3] == 0  # clipped samples give no gradient
    torch.testing.assert_close(grad[1:3], torch.tensor([0.5, -1.5]))  # d(ρA)/dlogπ = ρA


def test_value_loss_clipping_and_huber():
    old = torch.tensor([0.0, 0.0, 0.0])
    target = torch.tensor([1.0, -1.0, 30.0])
    values = torch.tensor([0.5, 0.5, 29.0], requires_grad=True)
    plain = value_loss(values, old, target, clip=None, huber_delta=10.0)
    torch.testing.assert_close(plain.detach(), torch.tensor([0.125, 1.125, 0.5]))
    clipped = value_loss(values, old, target, clip=0.2, huber_delta=10.0)
    # v_clip = 0.2, 0.2, 0.2 -> losses 0.32, 0.72, huber(29.8) = 10·(29.8 - 5) = 248
    torch.testing.assert_close(clipped.detach(), torch.tensor([0.32, 1.125, 248.0]))
    (grad,) = torch.autograd.grad(clipped.sum(), values)
    assert grad[0] == 0 and grad[2] == 0  # the clipped term is the max: no gradient through V
    torch.testing.assert_close(grad[1], torch.tensor(1.5))


def _toy_batch(seed=0, n_envs=12):
    _, _, _, _, runner = build("ippo", env=ToyBatchedEnv(n_envs=n_envs, seed=seed), torch_seed=seed)
    return runner.run(test_mode=False, t_env=0)[0]


def _cut(x, filled, chunk_len):
    """``x [N, T, B]`` in the learner's chunk layout ``[N, L, M]``: chunks of ``chunk_len`` steps of each
    episode (0: whole episodes) side by side, chunk ``c`` of episode ``b`` in column ``c * B + b``, only the
    chunks that hold a real transition; ``chunk_len = 1`` (no BPTT) leaves exactly the real transitions."""
    n, t_len, b = x.shape
    chunk_len = chunk_len or t_len
    n_chunks = -(-t_len // chunk_len)
    pad = n_chunks * chunk_len - t_len
    mask = torch.cat([filled.t(), filled.new_zeros(pad, b)])
    x = torch.cat([x, x.new_zeros(n, pad, b)], dim=1)

    def cut(y):
        return y.view(y.shape[0], n_chunks, chunk_len, b).transpose(1, 2).reshape(y.shape[0], chunk_len, -1)

    c_mask = cut(mask[None])
    keep = c_mask[0].sum(0) > 0
    return cut(x)[:, :, keep], c_mask[:, :, keep].bool()


@pytest.mark.parametrize("bptt,chunk", [(False, 0), (True, 0), (True, 3)])
def test_first_epoch_reproduces_the_behaviour_policy(bptt, chunk, monkeypatch):
    """The chunked training forward must recompute the rollout's log-probabilities, transition by
    transition (ratio 1 on the first epoch), on a peaked policy where a wrong hidden state, input or
    action shows."""
    env = ToyBatchedEnv(n_envs=12, seed=0)
    _, _, _, _, runner = build("ippo", env=env, torch_seed=0, actor_head_gain=5.0)
    batch = runner.run(test_mode=False, t_env=0)[0]
    # the recorded log-probabilities of the actions taken, computed here from the definition
    real = batch.filled.bool()
    avail = batch.avail_actions[:, :-1]
    logp_all = torch.log_softmax(batch.agent_outputs.masked_fill(~avail, -float("inf")), -1)
    recorded = logp_all.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)            # [B, T, N]
    choice = real.unsqueeze(-1) & (avail.sum(-1) > 1)
    # far from uniform (the gain-0.01 default is near-uniform: most likely action 0.29 on average)
    assert logp_all.exp().max(-1).values[choice].mean() > 0.8
    assert recorded[choice].min() < -2.5  # and some unlikely actions were taken

    calls = []
    surrogate = ippo_learner.ppo_surrogate

    def spy(logp, old_logp, adv, clip):
        calls.append((logp.detach().clone(), old_logp.clone()))
        return surrogate(logp, old_logp, adv, clip)

    monkeypatch.setattr(ippo_learner, "ppo_surrogate", spy)
    _, _, _, learner, _ = build("ippo", ppo_epochs=1, bptt=bptt, bptt_chunk_len=chunk, torch_seed=0,
                                actor_head_gain=5.0)
    stats = learner.train(batch, t_env=0, episode=0)
    assert stats["approx_kl"] < 1e-6 and stats["clip_fraction"] == 0.0
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    ((logp, old_logp),) = calls
    expected, c_real = _cut(recorded.permute(2, 1, 0), batch.filled, chunk if bptt else 1)
    assert logp.shape == old_logp.shape == expected.shape
    c_real = c_real.expand_as(logp)
    assert int(c_real.sum()) == 3 * int(real.sum())
    # up to float rounding: the rollout's and the training's batches round the GRU's gates differently by an ulp,
    # which the peaked head (gain 5) turns into a few 1e-6 of log-probability; a wrong hidden state, input or action
    # is off by far more
    torch.testing.assert_close(old_logp[c_real], expected[c_real], rtol=0, atol=1e-5)
    torch.testing.assert_close(logp[c_real], expected[c_real], rtol=0, atol=1e-5)


def test_ippo_rejects_a_batch_without_the_acting_policy_records():
    _, _, _, learner, _ = build("ippo")
    batch = _toy_batch()
    batch.agent_outputs = None
    before = copy.deepcopy(learner.state_dict())
    with pytest.raises(ValueError, match="record_agent_outputs=True"):
        learner.train(batch, 0, 0)
    for name, value in learner.state_dict()["mac"].items():
        assert torch.equal(value, before["mac"][name])


def test_bptt_changes_the_gradient_but_not_the_loss():
    batch = _toy_batch(seed=1)  # collected by the policy the learners start from (torch_seed=1)
    results = {}
    for bptt in (False, True):
        _, _, mac, learner, _ = build("ippo", ppo_epochs=1, bptt=bptt, torch_seed=1)
        stats = learner.train(batch, 0, 0)
        results[bptt] = (stats, copy.deepcopy(mac.state_dict()))
    no_bptt, bptt = results[False][0], results[True][0]
    # The same forward values, so the same losses. Not bit for bit: each per-agent mean sums the same
    # float32 numbers laid out differently (one column per transition vs. [T, B] chunks), which moves the
    # entropy by about 1e-7 relative; the policy loss is a mean of normalised advantages at ratio 1 (~1e-8).
    assert no_bptt["policy_loss"] == pytest.approx(bptt["policy_loss"], abs=1e-6)
    assert no_bptt["entropy"] == pytest.approx(bptt["entropy"], rel=1e-6, abs=0)
    assert no_bptt["critic_loss"] == pytest.approx(bptt["critic_loss"], rel=1e-6, abs=0)
    assert no_bptt["approx_kl"] < 1e-6 and bptt["approx_kl"] < 1e-6
    # the recurrent weights get gradient through time only with BPTT
    w = "rnn.weight_hh"
    assert not torch.equal(results[False][1][w], results[True][1][w])


def _plain_actor(mac, k):
    """Agent ``k``'s actor as plain torch modules (unfused LayerNorms, ``nn.GRUCell``) holding copies of its
    slice of the stacked parameters; returns ``(modules by stacked-parameter prefix, step function)``."""
    net = mac.agent
    d_in, h, a = mac.input_dim, mac.hidden_dim, mac.n_actions
    mods = {"norm_in": nn.LayerNorm(d_in), "fc1": nn.Linear(d_in, h), "norm1": nn.LayerNorm(h),
            "fc2": nn.Linear(h, h), "norm2": nn.LayerNorm(h), "rnn": nn.GRUCell(h, h),
            "norm_out": nn.LayerNorm(h), "head": nn.Linear(h, a)}
    with torch.no_grad():
        for name, mod in mods.items():
            stacked = getattr(net, name)
            if name == "rnn":
                for p in ("weight_ih", "weight_hh"):
                    getattr(mod, p).copy_(getattr(stacked, p)[k].t())
                for p in ("bias_ih", "bias_hh"):
                    getattr(mod, p).copy_(getattr(stacked, p)[k])
            else:
                mod.weight.copy_(stacked.weight[k].t() if isinstance(mod, nn.Linear) else stacked.weight[k])
                mod.bias.copy_(stacked.bias[k])

    def step(x, hidden):
        z = torch.relu(mods["fc1"](mods["norm_in"](x)))
        z = torch.relu(mods["fc2"](mods["norm1"](z)))
        hidden = mods["rnn"](mods["norm2"](z), hidden)
        return mods["head"](mods["norm_out"](hidden)), hidden

    return mods, step


def _plain_grad(mods, name, param):
    """The gradient of plain module ``mods[name]``'s ``param`` in the stacked layout."""
    g = getattr(mods[name], param).grad
    return g.t() if param.startswith("weight") and isinstance(mods[name], (nn.Linear, nn.GRUCell)) else g


@pytest.mark.parametrize("chunk", [0, 3])
def test_bptt_actor_gradient_equals_an_unrolled_gru_cell(chunk, monkeypatch):
    """The learner's actor gradient with BPTT (whole episodes, or 3-step chunks that start from the
    recorded hidden state) equals autograd through agent k's network built from plain torch modules and
    unrolled step by step over each episode, with the same PPO loss (first epoch, before clipping).
    Measured difference: at most 5e-8 (float32 rounding) for gradients up to 0.3; tolerance 1e-6."""
    batch = _toy_batch(seed=2, n_envs=5)
    t_len, b = batch.max_t, batch.batch_size
    assert len(set(batch.episode_lengths().tolist())) > 1 and t_len > 3  # padding and several chunks
    # the advantages and behaviour log-probs the loss uses, in the whole-episode layout [N, T, B]
    captured = {}
    surrogate = ippo_learner.ppo_surrogate

    def spy(logp, old_logp, adv, clip):
        captured.setdefault("old_logp", old_logp.clone())
        captured.setdefault("adv", adv.clone())
        return surrogate(logp, old_logp, adv, clip)

    monkeypatch.setattr(ippo_learner, "ppo_surrogate", spy)
    _, _, mac, learner, _ = build("ippo", ppo_epochs=1, bptt=True, bptt_chunk_len=0, torch_seed=2)
    learner.train(batch, 0, 0)
    assert captured["adv"].shape == (3, t_len, b)  # whole episodes: chunk layout = [N, T, B]
    # the learner under test: grad_norm_clip out of reach, so .grad after the update is the raw gradient
    _, _, mac, learner, _ = build("ippo", ppo_epochs=1, bptt=True, bptt_chunk_len=chunk, torch_seed=2,
                                  grad_norm_clip=1e9)
    cfg = learner.cfg
    plain = [_plain_actor(mac, k) for k in range(3)]  # copies of the parameters before the update
    learner.train(batch, 0, 0)

    inputs = mac.sequence_inputs(batch)                          # [N, T+1, B, in]
    mask = batch.filled.t()                                      # [T, B]
    avail = batch.avail_actions[:, :t_len].permute(2, 1, 0, 3)   # [N, T, B, A]
    actions = batch.actions.permute(2, 1, 0)                     # [N, T, B]
    hidden_in = batch.agent_hidden_in.permute(2, 1, 0, 3)        # [N, T, B, H]
    n_valid = mask.sum()
    for k, (mods, step) in enumerate(plain):
        hidden, logps, entropies = None, [], []
        for t in range(t_len):
            if t % (chunk or t_len) == 0:
                hidden = hidden_in[k, t]  # a chunk starts from the recorded state (zeros at t = 0)
            logits, hidden = step(inputs[k, t], hidden)
            logp_all = torch.log_softmax(logits.masked_fill(~avail[k, t], -1e10), -1)
            logps.append(logp_all.gather(-1, actions[k, t].unsqueeze(-1)).squeeze(-1))
            entropies.append(-(logp_all.exp() * logp_all).sum(-1))
        logp, entropy = torch.stack(logps), torch.stack(entropies)  # [T, B]
        ratio = torch.exp(logp - captured["old_logp"][k])
        adv = captured["adv"][k]
        surr = torch.min(ratio * adv, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv)
        loss = -(surr * mask).sum() / n_valid - cfg.entropy_coef * (entropy * mask).sum() / n_valid
        loss.backward()
        for full_name, param in mac.agent.named_parameters():
            name, pname = full_name.split(".")
            torch.testing.assert_close(param.grad[k], _plain_grad(mods, name, pname), rtol=0, atol=1e-6,
                                       msg=lambda m: f"agent {k} {full_name}: {m}")
        assert mods["rnn"].weight_hh.grad.abs().max() > 1e-4  # not trivially zero gradients being compared


def test_train_stats_and_learning_signal():
    _, _, mac, learner, _ = build("ippo")
    before = copy.deepcopy(mac.state_dict())
    stats = learner.train(_toy_batch(), t_env=100, episode=12)
    expected = {"policy_loss", "critic_loss", "entropy", "approx_kl", "clip_fraction", "actor_grad_norm",
                "critic_grad_norm", "advantage_mean", "return_mean", "value_mean"}
    assert set(stats) == expected
    assert 0 < stats["entropy"] <= torch.log(torch.tensor(5.0)).item()
    assert any(not torch.equal(before[k], v) for k, v in mac.state_dict().items())


@pytest.mark.parametrize("use_value_norm", [False, True])
def test_state_dict_round_trip_gives_identical_updates(use_value_norm):
    b1, b2 = _toy_batch(1), _toy_batch(2)
    _, _, mac_a, learner_a, _ = build("ippo", torch_seed=0, use_value_norm=use_value_norm, ppo_epochs=3)
    learner_a.train(b1, 0, 0)
    saved = copy.deepcopy(learner_a.state_dict())
    assert ("value_norm" in saved) == use_value_norm
    _, _, mac_b, learner_b, _ = build("ippo", torch_seed=99, use_value_norm=use_value_norm, ppo_epochs=3)
    learner_b.load_state_dict(saved)
    stats_a, stats_b = learner_a.train(b2, 0, 0), learner_b.train(b2, 0, 0)
    assert stats_a == stats_b
    for (k, va), vb in zip(learner_a.state_dict()["critic"].items(), learner_b.state_dict()["critic"].values()):
        assert torch.equal(va, vb), k
    for k, v in mac_a.state_dict().items():
        assert torch.equal(v, mac_b.state_dict()[k]), k


def test_load_state_dict_rejects_mismatched_state():
    _, _, _, learner, _ = build("ippo")
    state = learner.state_dict()
    _, _, _, normed, _ = build("ippo", use_value_norm=True)
    with pytest.raises(ValueError, match="use_value_norm"):
        normed.load_state_dict(state)


def test_value_norm_matches_batch_statistics():
    norm = ValueNorm(2)
    x1, x2 = torch.randn(2, 50) * 3 + 1, torch.randn(2, 30) * 0.5 - 2
    m1, m2 = torch.ones(2, 50), (torch.rand(2, 30) < 0.7).float()
    norm.update(x1, m1)
    norm.update(x2, m2)
    for k in range(2):
        seen = torch.cat([x1[k], x2[k][m2[k].bool()]]).double()
        torch.testing.assert_close(norm.mean[k], seen.mean())
        torch.testing.assert_close(norm.var[k], seen.var(unbiased=False))
    y = torch.randn(2, 4)
    torch.testing.assert_close(norm.denormalize(norm.normalize(y)), y)


def test_ippo_refuses_parameter_sharing():
    with pytest.raises(ValueError, match="agent_parameter_sharing=False"):
        build("ippo", agent_parameter_sharing=True)


@pytest.mark.parametrize("map_name,epochs,clip,batch", [
    ("5m_vs_6m", 10, 0.05, 256), ("3s_vs_4z", 15, 0.2, 1024), ("3s_vs_3z", 15, 0.2, 1024),
    ("3s_vs_5z", 15, 0.05, 1024), ("8m_vs_9m", 15, 0.05, 1024)])
def test_paper_settings_per_map(map_name, epochs, clip, batch):
    cfg = make_cfg("ippo", map_name=map_name)
    assert (cfg.ppo_epochs, cfg.ppo_clip, cfg.batch_size_run) == (epochs, clip, batch)
    assert (cfg.gae_lambda, cfg.gamma, cfg.entropy_coef, cfg.lr, cfg.optim_eps) == (0.95, 0.99, 0.01, 5e-4, 1e-5)
    assert (cfg.grad_norm_clip, cfg.huber_delta, cfg.value_loss_coef, cfg.hidden_dim) == (10.0, 10.0, 0.5, 64)
    assert cfg.obs_last_action and cfg.obs_agent_id and not cfg.agent_parameter_sharing

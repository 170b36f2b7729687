"""IPPO agents share nothing: no gradient path and no data path from agent j into agent i's update.

Agents' parameters are stacked ``[N, ...]`` tensors (``modules.stacked``); slice i is agent i's network.
"""
import copy

import pytest
import torch

from alg_helpers import ToyBatchedEnv, build
from learners import ippo_learner
from modules import critics


def _assert_grads_of_agent_j_only(named_grads, j: int, n_agents: int, what: str):
    """Every gradient ``[N, ...]`` of agent j's loss is exactly zero in every other agent i's slice, pair
    by pair, and not zero in agent j's own slice."""
    for name, grad in named_grads:
        assert grad is not None and grad.shape[0] == n_agents, name
        for i in range(n_agents):
            if i != j:
                assert torch.count_nonzero(grad[i]) == 0, f"{what}: agent {j}'s loss has gradient on agent {i}'s {name}"
        assert torch.count_nonzero(grad[j]) > 0, f"{what}: agent {j}'s loss has no gradient on its own {name}"


@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_agent_j_loss_has_zero_gradient_on_other_agents(alg):
    """Agent j's output has no gradient on agent i's parameters, inputs or initial hidden state."""
    cfg, env, mac, learner, _ = build(alg, env=ToyBatchedEnv(n_agents=4))
    nets = [mac.agent] + ([learner.critic] if alg == "ippo" else [])
    for net in nets:
        for j in range(4):
            x = torch.randn(4, 6, 5, mac.input_dim, requires_grad=True)
            h0 = torch.randn(4, 5, mac.hidden_dim, requires_grad=True)
            net.zero_grad(set_to_none=True)
            out, hidden = net(x, h0)
            (out[j].pow(2).sum() + hidden[j].pow(2).sum()).backward()
            grads = [(name, p.grad) for name, p in net.named_parameters()] + [("input", x.grad), ("h0", h0.grad)]
            _assert_grads_of_agent_j_only(grads, j, 4, type(net).__name__)


@pytest.mark.parametrize("bptt", [False, True])
def test_ippo_training_loss_of_agent_j_has_zero_gradient_on_agent_i(bptt, monkeypatch):
    """In a real update (the learner's own forward: live transitions or BPTT chunks), agent j's clipped
    surrogate and agent j's value loss have exactly zero gradient on agent i's actor and critic, for every
    pair i != j: the learner's summed loss is a sum of independent per-agent losses."""
    n = 3
    env = ToyBatchedEnv(n_envs=8, n_agents=n, seed=7)
    kw = dict(bptt=bptt, bptt_chunk_len=4, ppo_epochs=2, use_value_norm=True)
    _, _, _, _, runner = build("ippo", env=env, **kw)
    batch = runner.run(test_mode=False, t_env=0)[0]
    _, _, mac, learner, _ = build("ippo", env=env, **kw)
    actor = list(mac.agent.named_parameters())
    critic = list(learner.critic.named_parameters())
    checked = {"surrogate": 0, "value_loss": 0}

    def per_agent_grads(loss, params, what):
        for j in range(n):
            grads = torch.autograd.grad(loss[j].sum(), [p for _, p in params], retain_graph=True)
            _assert_grads_of_agent_j_only([(name, g) for (name, _), g in zip(params, grads)], j, n, what)
        checked[what] += 1

    surrogate, value_loss = ippo_learner.ppo_surrogate, ippo_learner.value_loss

    def surrogate_spy(logp, *args):
        out = surrogate(logp, *args)
        per_agent_grads(out, actor, "surrogate")
        return out

    def value_loss_spy(values, *args):
        out = value_loss(values, *args)
        per_agent_grads(out, critic, "value_loss")
        return out

    monkeypatch.setattr(ippo_learner, "ppo_surrogate", surrogate_spy)
    monkeypatch.setattr(ippo_learner, "value_loss", value_loss_spy)
    learner.train(batch, 0, 0)
    assert checked == {"surrogate": 2, "value_loss": 2}  # every epoch's losses were checked


def _altered_for_agent(batch, j: int, seed: int):
    """Agent j's observations, actions, action masks and acting-policy records replaced; everything else
    (team reward, episode boundaries, other agents' data) unchanged."""
    g = torch.Generator().manual_seed(seed)
    alt = batch.clone()
    alt.obs[:, :, j] = torch.randn(alt.obs[:, :, j].shape, generator=g)
    avail = torch.rand(alt.avail_actions[:, :, j].shape, generator=g) < 0.5
    avail[..., 0] = True
    alt.avail_actions[:, :, j] = avail
    alt.actions[:, :, j] = 0  # no-op, always available
    alt.agent_outputs[:, :, j] = torch.randn(alt.agent_outputs[:, :, j].shape, generator=g)
    alt.agent_hidden_in[:, 1:, j] = torch.rand(alt.agent_hidden_in[:, 1:, j].shape, generator=g)
    return alt


@pytest.mark.parametrize("bptt", [False, True])
def test_ippo_update_of_agent_i_ignores_agent_j_data(bptt):
    env = ToyBatchedEnv(n_envs=10, n_agents=3, seed=4)
    kw = dict(bptt=bptt, bptt_chunk_len=4, ppo_epochs=3, grad_norm_clip=0.05, use_value_norm=True)
    _, _, _, _, runner = build("ippo", env=env, **kw)
    batch = runner.run(test_mode=False, t_env=0)[0]

    def update(b):
        _, _, _, learner, _ = build("ippo", env=env, torch_seed=0, **kw)
        stats = learner.train(b, 0, 0)
        return stats, copy.deepcopy(learner.state_dict())

    stats, base = update(batch)
    assert stats["actor_grad_norm"] > 0.05  # gradient clipping was active, and per agent
    for j in range(3):  # every pair (i, j), i != j
        _, altered = update(_altered_for_agent(batch, j, seed=5 + j))
        others = [i for i in range(3) if i != j]
        for part in ("mac", "critic"):
            for name, before in base[part].items():
                after = altered[part][name]
                for i in others:
                    assert torch.equal(before[i], after[i]), f"{part}.{name} of agent {i} changed with agent {j}'s data"
            assert any(not torch.equal(v[j], altered[part][k][j]) for k, v in base[part].items())
        for part in ("actor_optim", "critic_optim"):  # Adam moments of the other agents identical too
            for pid, s0 in base[part]["state"].items():
                s1 = altered[part]["state"][pid]
                for key in ("exp_avg", "exp_avg_sq"):
                    for i in others:
                        assert torch.equal(s0[key][i], s1[key][i]), (part, pid, key, i, j)
        for key in ("mean", "var", "count"):
            for i in others:
                assert torch.equal(base["value_norm"][key][i], altered["value_norm"][key][i]), (key, i, j)


def test_ippo_critics_are_per_agent_and_see_only_own_inputs():
    cfg, env, mac, learner, _ = build("ippo")
    assert isinstance(learner.critic, critics.REGISTRY["ln_rnn"])
    n = env.n_agents
    for p in list(learner.critic.parameters()) + list(mac.parameters()):
        assert p.shape[0] == n  # one slice per agent, no shared tensor
    actor_ids = {id(p) for p in mac.parameters()}
    assert not actor_ids & {id(p) for p in learner.critic.parameters()}
    assert {id(p) for g in learner.actor_optim.param_groups for p in g["params"]} == actor_ids

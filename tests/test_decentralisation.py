"""IPPO agents share nothing: no gradient path and no data path from agent j into agent i's update.

Agents' parameters are stacked ``[N, ...]`` tensors (``modules.stacked``); slice i is agent i's network.
"""
import copy

import pytest
import torch

from alg_helpers import ToyBatchedEnv, build
from modules import critics


def _assert_only_slice_has_grad(module: torch.nn.Module, j: int):
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        others = torch.cat([p.grad[:j], p.grad[j + 1:]])
        assert torch.count_nonzero(others) == 0, f"{name}: agent {j}'s loss reached another agent"
        assert torch.count_nonzero(p.grad[j]) > 0, name


@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_agent_j_loss_has_zero_gradient_on_other_agents(alg):
    cfg, env, mac, learner, _ = build(alg, env=ToyBatchedEnv(n_agents=4))
    x = torch.randn(4, 6, 5, mac.input_dim)
    h0 = torch.randn(4, 5, mac.hidden_dim)
    nets = [mac.agent] + ([learner.critic] if alg == "ippo" else [])
    for net in nets:
        for j in range(4):
            net.zero_grad(set_to_none=True)
            out, _ = net(x, h0)
            out[j].pow(2).sum().backward()
            _assert_only_slice_has_grad(net, j)


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
    j = 1
    altered = _altered_for_agent(batch, j, seed=5)

    states, stats = [], []
    for b in (batch, altered):
        _, _, _, learner, _ = build("ippo", env=env, torch_seed=0, **kw)
        stats.append(learner.train(b, 0, 0))
        states.append(copy.deepcopy(learner.state_dict()))
    for part in ("mac", "critic"):
        for name, before in states[0][part].items():
            after = states[1][part][name]
            for i in (0, 2):
                assert torch.equal(before[i], after[i]), f"{part}.{name} of agent {i} changed"
        assert any(not torch.equal(v[j], states[1][part][k][j]) for k, v in states[0][part].items())
    for part in ("actor_optim", "critic_optim"):  # Adam moments of agents 0 and 2 identical too
        for pid, s0 in states[0][part]["state"].items():
            s1 = states[1][part]["state"][pid]
            for key in ("exp_avg", "exp_avg_sq"):
                for i in (0, 2):
                    assert torch.equal(s0[key][i], s1[key][i])
    for key in ("mean", "var", "count"):
        for i in (0, 2):
            assert torch.equal(states[0]["value_norm"][key][i], states[1]["value_norm"][key][i])
    assert stats[0]["actor_grad_norm"] > 0.05  # gradient clipping was active, and per agent


def test_ippo_critics_are_per_agent_and_see_only_own_inputs():
    cfg, env, mac, learner, _ = build("ippo")
    assert isinstance(learner.critic, critics.REGISTRY["ln_rnn"])
    n = env.n_agents
    for p in list(learner.critic.parameters()) + list(mac.parameters()):
        assert p.shape[0] == n  # one slice per agent, no shared tensor
    actor_ids = {id(p) for p in mac.parameters()}
    assert not actor_ids & {id(p) for p in learner.critic.parameters()}
    assert {id(p) for g in learner.actor_optim.param_groups for p in g["params"]} == actor_ids

"""The learners' objectives against values written from the equations, on tiny hand-made batches.

Each test builds a batch of 2 agents and 2 episodes by hand (episode 0 runs 4 steps and is cut by the
time limit, so it is bootstrapped; episode 1 ends for real after 3 steps and has one padded step) and
compares what the learner computes with numbers derived from the papers' equations in the comments
(GAE: Schulman et al. 2016; PPO: Schulman et al. 2017 with the reference's value clipping; QMIX:
Rashid et al. 2018 with double Q). They guard against a wrong objective that still "trains": a flipped
sign, swapped γ and λ, a missing normalisation, the online network used as the target, an unmasked
action, a state off by one.
"""
import copy
import math
import statistics

import pytest
import torch

from alg_helpers import ToyBatchedEnv, build as build_on
from components.episode_batch import EpisodeBatch
from learners.ippo_learner import Rollout, agent_advantages, normalise_advantages

N_AGENTS, N_ACTIONS, OBS_DIM, T, B = 2, 3, 4, 4, 2


def _env() -> ToyBatchedEnv:
    return ToyBatchedEnv(n_envs=B, n_agents=N_AGENTS, n_actions=N_ACTIONS, obs_dim=OBS_DIM, episode_limit=T)


ENV_INFO = _env().get_env_info()


def build(alg: str, **overrides):
    """``(cfg, env, mac, learner, runner)`` for 2 agents with 3 actions and 4 observation features."""
    return build_on(alg, env=_env(), **overrides)


# ---- GAE on per-agent rewards (γ = 0.5, λ = 0.8, so γλ = 0.4) ----------------------------------------
GAMMA, LAM = 0.5, 0.8
MASK = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])        # [T, B]
TERMINATED = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # episode 1 ends at t = 2
REWARDS = torch.tensor([                                                      # [N, T, B]
    [[1.0, 2.0], [0.0, 1.0], [2.0, 3.0], [1.0, 9.0]],   # agent 0 (9.0: padding, must be ignored)
    [[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])  # agent 1
VALUES = torch.tensor([                                                       # [N, T+1, B]
    [[1.0, 2.0], [2.0, 4.0], [0.0, 2.0], [4.0, 6.0], [8.0, 5.0]],
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [10.0, 0.0]]])
# δ_t = r_t + γ (1 - term_t) V_{t+1} - V_t;  A_t = δ_t + γλ (1 - term_t) A_{t+1};  R_t = A_t + V_t.
# agent 0, episode 0 (bootstrapped from V_4 = 8): δ = 1+1-1, 0+0-2, 2+2-0, 1+4-4 = 1, -2, 4, 1
#   A_3 = 1, A_2 = 4 + .4 = 4.4, A_1 = -2 + .4·4.4 = -0.24, A_0 = 1 + .4·(-0.24) = 0.904
# agent 0, episode 1 (terminal at t = 2, V_3 unused): δ = 2+2-2, 1+1-4, 3-2 = 2, -2, 1
#   A_2 = 1, A_1 = -2 + .4 = -1.6, A_0 = 2 + .4·(-1.6) = 1.36
# agent 1, episode 0: δ = 0, 1, 0, 0 + .5·10 = 5 -> A = 0.72, 1.8, 2, 5
# agent 1, episode 1: δ = 1, 0, 2 -> A_2 = 2, A_1 = 0.8, A_0 = 1.32
EXPECTED_ADV = torch.tensor([
    [[0.904, 1.36], [-0.24, -1.6], [4.4, 1.0], [1.0, 0.0]],
    [[0.72, 1.32], [1.8, 0.8], [2.0, 2.0], [5.0, 0.0]]])
EXPECTED_RETURNS = torch.tensor([  # A + V on real transitions
    [[1.904, 3.36], [1.76, 2.4], [4.4, 3.0], [5.0, 0.0]],
    [[0.72, 1.32], [1.8, 0.8], [2.0, 2.0], [5.0, 0.0]]])


def _real(x: torch.Tensor) -> torch.Tensor:
    """``[N, T, B]`` -> ``[N, 7]``: the real transitions of each agent."""
    return x[:, MASK.bool()]


def test_gae_advantages_and_returns_per_agent():
    adv, returns = agent_advantages(REWARDS, VALUES, TERMINATED, MASK, GAMMA, LAM)
    torch.testing.assert_close(adv, EXPECTED_ADV, atol=1e-6, rtol=0)  # padding included: 0
    torch.testing.assert_close(_real(returns), _real(EXPECTED_RETURNS), atol=1e-6, rtol=0)


def _normalised(values: list[float]) -> list[float]:
    """(a - mean) / (population std + 1e-5), the reference's advantage normalisation."""
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    return [(a - mean) / (std + 1e-5) for a in values]


def test_advantage_normalisation_is_per_agent_over_real_transitions():
    norm, means = normalise_advantages(EXPECTED_ADV, MASK)
    for k in range(N_AGENTS):
        real = _real(EXPECTED_ADV)[k].tolist()
        torch.testing.assert_close(_real(norm)[k], torch.tensor(_normalised(real)), atol=1e-6, rtol=0)
        assert means[k].item() == pytest.approx(statistics.fmean(real), abs=1e-6)


def _rollout_with(values: torch.Tensor) -> Rollout:
    """A rollout with the hand-made team data above and the given critic values (nothing else is read
    by the advantage stage)."""
    unused = torch.zeros(0)
    return Rollout(inputs=unused, mask=MASK, terminated=TERMINATED, env_reward=REWARDS[0], actions=unused,
                   avail=unused, old_logp=unused, actor_hidden_in=unused, critic_out=values, values=values,
                   critic_hidden_in=unused)


def test_ippo_advantage_stage_gives_normalised_gae_and_returns_as_targets():
    _, _, _, learner, _ = build("ippo", gamma=GAMMA, gae_lambda=LAM)
    adv, targets, returns, _ = learner.advantage_stage(_rollout_with(VALUES), REWARDS)
    torch.testing.assert_close(_real(returns), _real(EXPECTED_RETURNS), atol=1e-6, rtol=0)
    torch.testing.assert_close(_real(targets), _real(EXPECTED_RETURNS), atol=1e-6, rtol=0)
    for k in range(N_AGENTS):
        expected = torch.tensor(_normalised(_real(EXPECTED_ADV)[k].tolist()))
        torch.testing.assert_close(_real(adv)[k], expected, atol=1e-6, rtol=0)


def test_ippo_reward_stage_gives_every_agent_the_team_reward():
    _, _, _, learner, _ = build("ippo")
    team = _rollout_with(VALUES)
    rewards, _ = learner.agent_rewards(None, team)
    assert rewards.shape == (N_AGENTS, T, B)
    for k in range(N_AGENTS):
        assert torch.equal(rewards[k], REWARDS[0])


# ---- one whole PPO update against the equations ------------------------------------------------------

def _hand_batch(seed: int = 0, logit_scale: float = 3.0) -> EpisodeBatch:
    """2 episodes x 2 agents with the layout above: random observations and stored GRU states, some
    actions unavailable, agent 1 dead (only no-op available) from t = 2 of episode 0, peaked behaviour
    logits, actions sampled from them."""
    g = torch.Generator().manual_seed(seed)
    batch = EpisodeBatch.zeros(B, T, ENV_INFO, agent_hidden_dim=64)
    batch.obs.copy_(torch.randn(B, T + 1, N_AGENTS, OBS_DIM, generator=g))
    batch.state.copy_(torch.randn(B, T + 1, ENV_INFO["state_shape"], generator=g))
    avail = torch.rand(B, T + 1, N_AGENTS, N_ACTIONS, generator=g) < 0.7
    avail[..., 0] = True
    avail[0, 2:, 1] = torch.tensor([True, False, False])  # agent 1 of episode 0 is dead from t = 2
    batch.avail_actions.copy_(avail)
    logits = torch.randn(B, T, N_AGENTS, N_ACTIONS, generator=g) * logit_scale
    batch.agent_outputs.copy_(logits)
    batch.agent_hidden_in.copy_(torch.tanh(torch.randn(B, T, N_AGENTS, 64, generator=g)))
    probs = torch.softmax(logits.masked_fill(~avail[:, :T], -1e10), -1)
    batch.actions.copy_(torch.multinomial(probs.reshape(-1, N_ACTIONS), 1, generator=g).view(B, T, N_AGENTS))
    batch.reward.copy_(torch.tensor([[1.0, 0.0, 2.0, 1.0], [2.0, 1.0, 3.0, 0.0]]))
    batch.terminated.copy_(TERMINATED.t())
    batch.filled.copy_(MASK.t())
    batch.actions[1, 3] = 0   # padding, as the runner stores it
    batch.reward[1, 3] = 0.0
    return batch


def _gae_by_loops(r: list[float], v: list[float], terminal: bool, gamma: float, lam: float) -> list[float]:
    """A_t for one episode of len(r) steps, ``v`` holding len(r) + 1 values, written from the definition
    A_t = sum_l (γλ)^l δ_{t+l} (no bootstrap after a real end)."""
    n = len(r)
    delta = [r[t] + gamma * (0.0 if (terminal and t == n - 1) else v[t + 1]) - v[t] for t in range(n)]
    return [sum((gamma * lam) ** (l - t) * delta[l] for l in range(t, n)) for t in range(n)]


def _reference_ppo_update(mac, critic, batch: EpisodeBatch, cfg) -> None:
    """One IPPO update of copies of the learner's networks, written from the equations with loops over
    agents and transitions: PPO's clipped surrogate, entropy bonus, clipped Huber value loss, per-agent
    gradient clipping, Adam."""
    inputs = mac.sequence_inputs(batch)  # [N, T+1, B, in] (the input layout has its own tests)
    actor_opt = torch.optim.Adam(mac.parameters(), lr=cfg.lr, eps=cfg.optim_eps)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr, eps=cfg.optim_eps)
    lengths = batch.filled.sum(1).long().tolist()
    real = [(t, b) for b in range(B) for t in range(lengths[b])]
    with torch.no_grad():
        old_v, h_after = critic(inputs, torch.zeros(N_AGENTS, B, 64))  # [N, T+1, B], [N, T+1, B, H]
    adv = {}
    for k in range(N_AGENTS):
        for b in range(B):
            a = _gae_by_loops(batch.reward[b, : lengths[b]].tolist(), old_v[k, : lengths[b] + 1, b].tolist(),
                              bool(batch.terminated[b, lengths[b] - 1]), cfg.gamma, cfg.gae_lambda)
            adv.update({(k, t, b): a[t] for t in range(lengths[b])})
    returns = {key: a + old_v[key].item() for key, a in adv.items()}
    for k in range(N_AGENTS):
        scaled = _normalised([adv[(k, t, b)] for t, b in real])
        adv.update({(k, t, b): a for (t, b), a in zip(real, scaled)})

    def logp_entropy(logits, avail, action):
        avail_logits = [logits[a] for a in range(N_ACTIONS) if avail[a]]
        log_z = torch.logsumexp(torch.stack(avail_logits), 0)
        probs = [torch.exp(l - log_z) for l in avail_logits]
        return logits[action] - log_z, -sum(p * torch.log(p) for p in probs)

    def huber(x, delta):
        return 0.5 * x ** 2 if abs(x.item()) <= delta else delta * (abs(x) - 0.5 * delta)

    for _ in range(cfg.ppo_epochs):
        actor_loss, critic_loss = 0.0, 0.0
        for k in range(N_AGENTS):
            for t, b in real:
                h_in = batch.agent_hidden_in[b, t, k].view(1, 1, -1)
                x = inputs[k, t, b].view(1, 1, 1, -1)
                logits = mac.agent(x, h_in, stacks=slice(k, k + 1))[0].view(-1)
                avail = batch.avail_actions[b, t, k].tolist()
                action = int(batch.actions[b, t, k])
                logp, entropy = logp_entropy(logits, avail, action)
                old_logp, _ = logp_entropy(batch.agent_outputs[b, t, k], avail, action)
                ratio = torch.exp(logp - old_logp)
                a = adv[(k, t, b)]
                surrogate = torch.min(ratio * a, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * a)
                actor_loss = actor_loss + (-surrogate - cfg.entropy_coef * entropy) / len(real)

                h_c = (torch.zeros(1, 1, 64) if t == 0 else h_after[k, t - 1, b].view(1, 1, -1))
                v = critic(x, h_c, stacks=slice(k, k + 1))[0].view(())
                v_clipped = old_v[k, t, b] + (v - old_v[k, t, b]).clamp(-cfg.ppo_clip, cfg.ppo_clip)
                target = returns[(k, t, b)]
                loss_v = torch.max(huber(target - v, cfg.huber_delta), huber(target - v_clipped, cfg.huber_delta))
                critic_loss = critic_loss + cfg.value_loss_coef * loss_v / len(real)
        actor_opt.zero_grad()
        critic_opt.zero_grad()
        (actor_loss + critic_loss).backward()
        for params in (list(mac.parameters()), list(critic.parameters())):
            for k in range(N_AGENTS):  # each agent's gradient norm clipped on its own
                norm = math.sqrt(sum(p.grad[k].pow(2).sum().item() for p in params))
                scale = min(1.0, cfg.grad_norm_clip / (norm + 1e-6))
                for p in params:
                    p.grad[k] *= scale
        actor_opt.step()
        critic_opt.step()


def test_ippo_update_equals_the_equations_step_by_step():
    """Three epochs with a tight ratio clip, a large entropy bonus and active gradient clipping: every
    actor and critic parameter after ``train`` equals the reference update's to 1e-6."""
    settings = dict(ppo_epochs=3, ppo_clip=0.05, entropy_coef=0.5, grad_norm_clip=0.05, gamma=0.9, gae_lambda=0.7,
                    lr=0.01)
    _, _, mac, learner, _ = build("ippo", torch_seed=4, **settings)
    cfg = learner.cfg
    ref_mac, ref_critic = copy.deepcopy(mac), copy.deepcopy(learner.critic)
    batch = _hand_batch()
    stats = learner.train(batch, t_env=0, episode=0)
    assert stats["clip_fraction"] > 0 and stats["actor_grad_norm"] > cfg.grad_norm_clip  # the clips are active
    _reference_ppo_update(ref_mac, ref_critic, batch, cfg)
    for name, value in mac.agent.named_parameters():
        torch.testing.assert_close(value, dict(ref_mac.agent.named_parameters())[name], atol=1e-6, rtol=0,
                                   msg=f"actor {name}")
    for name, value in learner.critic.named_parameters():
        torch.testing.assert_close(value, dict(ref_critic.named_parameters())[name], atol=1e-6, rtol=0,
                                   msg=f"critic {name}")


def test_one_update_raises_the_probability_of_actions_with_positive_advantage():
    """Two one-step episodes from the same observation, where only actions 1 and 2 are available: action
    1 earned +1, action 2 earned -1 (normalised advantages +1 and -1). After one update π(1) rises and
    π(2) falls, for every agent."""
    _, _, mac, learner, _ = build("ippo", ppo_epochs=1, entropy_coef=0.0)
    batch = EpisodeBatch.zeros(2, 1, ENV_INFO, agent_hidden_dim=64)
    batch.obs[:] = torch.linspace(-1, 1, OBS_DIM)
    batch.avail_actions[:, :, :, 1:] = True
    batch.actions[0], batch.actions[1] = 1, 2
    batch.reward[:, 0] = torch.tensor([1.0, -1.0])
    batch.terminated[:] = 1.0
    batch.filled[:] = 1.0
    inputs = mac.sequence_inputs(batch)[:, :1]
    h0 = mac.init_hidden(2)
    with torch.no_grad():
        batch.agent_outputs.copy_(mac.forward(inputs, h0)[0].permute(2, 1, 0, 3))
        before = torch.softmax(batch.agent_outputs[0, 0, :, 1:], -1)  # [N, 2]: π(1), π(2)
    learner.train(batch, 0, 0)
    with torch.no_grad():
        after = torch.softmax(mac.forward(inputs, h0)[0][:, 0, 0, 1:], -1)
    assert (after[:, 0] > before[:, 0]).all() and (after[:, 1] < before[:, 1]).all(), (before, after)


# ---- QMIX: double-Q targets from the target networks, masking, states, TD loss --------------------------

# Q-values [N, T+1, B, A] of the online and the target agent networks (episode 0: 4 steps, cut by the
# limit; episode 1: 3 steps, terminal at t = 2, padded at t = 3).
Q_ONLINE = torch.zeros(N_AGENTS, T + 1, B, N_ACTIONS)
Q_TARGET = torch.zeros(N_AGENTS, T + 1, B, N_ACTIONS)
for _k in range(N_AGENTS):
    for _t in range(T + 1):
        for _b in range(B):
            for _a in range(N_ACTIONS):
                # online: action 2 looks best everywhere, action 1 second; target: action 0 best
                Q_ONLINE[_k, _t, _b, _a] = (_a + 1) * 1.0 + 0.1 * _t + 0.01 * _k + 0.5 * _b
                Q_TARGET[_k, _t, _b, _a] = (3 - _a) * 10.0 + _t + 2.0 * _k + 4.0 * _b
STATE0 = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]])  # state[b, t, 0]


class _SumMixer(torch.nn.Module):
    """Q_tot = scale · Σ_i q_i + s[0]: simple enough to compute by hand, and it reads the state."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, qs, states):
        return self.scale * qs.sum(-1) + states[..., 0]


def _qmix_with_known_q(double_q: bool):
    _, _, _, learner, _ = build("qmix", gamma=0.5, double_q=double_q)
    q_online = torch.nn.Parameter(Q_ONLINE.clone())
    learner.agent_q_values = lambda batch: (q_online, Q_TARGET.clone())
    learner.mixer, learner.target_mixer = _SumMixer(1.0), _SumMixer(2.0)
    batch = EpisodeBatch.zeros(B, T, ENV_INFO)
    batch.state[:, :, 0] = STATE0
    batch.avail_actions[:] = True
    # at t = 1 of episode 0 actions 2 and 0 (the online and the target network's favourites) are unavailable
    batch.avail_actions[0, 1, :, 2] = False
    batch.avail_actions[0, 1, :, 0] = False
    batch.actions[0] = torch.tensor([[0, 1], [1, 0], [2, 2], [0, 0]])
    batch.actions[1] = torch.tensor([[1, 1], [0, 2], [2, 0], [0, 0]])
    batch.reward.copy_(torch.tensor([[1.0, 0.0, 2.0, 1.0], [2.0, 1.0, 3.0, 0.0]]))
    batch.terminated.copy_(TERMINATED.t())
    batch.filled.copy_(MASK.t())
    return learner, batch, q_online


def _chosen(q: torch.Tensor, b: int, t: int, actions) -> list[float]:
    return [q[k, t, b, actions[k]].item() for k in range(N_AGENTS)]


@pytest.mark.parametrize("double_q", [True, False])
def test_qmix_targets_and_td_loss_by_hand(double_q):
    learner, batch, q_online = _qmix_with_known_q(double_q)
    # Bootstrap action at t+1: double Q takes the online network's best *available* action (2, or 1 where
    # 2 is unavailable), valued by the target network; plain Q takes the target network's best available
    # action (0, or 1 where 0 is unavailable). Q_tot of the target mixer = 2 · Σ_i Q_target_i + state_{t+1}[0].
    targets, q_tot = {}, {}
    for b in range(B):
        length = int(MASK[:, b].sum())
        for t in range(length):
            chosen = _chosen(Q_ONLINE, b, t, batch.actions[b, t].tolist())
            q_tot[(t, b)] = sum(chosen) + STATE0[b, t].item()
            if (b, t + 1) == (0, 1):
                best = 1
            else:
                best = 2 if double_q else 0
            next_q = _chosen(Q_TARGET, b, t + 1, [best] * N_AGENTS)
            bootstrap = 2.0 * sum(next_q) + STATE0[b, t + 1].item()
            terminal = bool(TERMINATED[t, b])
            targets[(t, b)] = batch.reward[b, t].item() + (0.0 if terminal else 0.5 * bootstrap)
    # Spot checks of the hand derivation, episode 0. t = 0: at t = 1 only action 1 is left to either rule;
    # its target Q is 20 + 1 = 21 (agent 0) and 23 (agent 1); Q_tot' = 2 · 44 + state 2 = 90; y = 1 + 0.5 · 90.
    assert targets[(0, 0)] == pytest.approx(46.0)
    if double_q:  # t = 1: online picks action 2 at t = 2, target values it 10 + 2 and 12 + 2 -> 2 · 26 + 3
        assert targets[(1, 0)] == pytest.approx(0.0 + 0.5 * 55.0)
    else:         # t = 1: the target's own best, action 0: 30 + 2 and 32 + 2 -> 2 · 66 + 3
        assert targets[(1, 0)] == pytest.approx(0.0 + 0.5 * 135.0)
    assert targets[(2, 1)] == 3.0  # terminal: the reward only
    td = {key: q_tot[key] - y for key, y in targets.items()}
    stats = learner._update(batch)
    n = len(td)
    assert stats["loss"] == pytest.approx(sum(d * d for d in td.values()) / n, rel=1e-6)
    assert stats["td_error_abs"] == pytest.approx(sum(abs(d) for d in td.values()) / n, rel=1e-6)
    assert stats["target_mean"] == pytest.approx(sum(targets.values()) / n, rel=1e-6)
    # d loss / d Q_online(t, b, a_taken) = 2 · td(t, b) / n (the mixer's weight is 1); zero elsewhere,
    # in particular at t + 1 (the online network only picks the bootstrap action) and in the padding.
    expected_grad = torch.zeros_like(Q_ONLINE)
    for (t, b), d in td.items():
        for k, a in enumerate(batch.actions[b, t].tolist()):
            expected_grad[k, t, b, a] = 2.0 * d / n
    torch.testing.assert_close(q_online.grad, expected_grad, atol=1e-6, rtol=1e-6)

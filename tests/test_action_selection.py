"""Sampling and inputs: the categorical selector samples the masked softmax (statistically checked) and is
greedy in test mode; the controller's input vector is exactly [own obs, own last action one-hot, own id
one-hot], checked against literally built tensors."""
import math

import pytest
import torch

import controllers
from alg_helpers import ToyBatchedEnv, build, make_cfg
from components.action_selectors import CategoricalSelector
from components.episode_batch import EpisodeBatch

# Three rows of far-from-uniform logits (6 actions), each with some actions unavailable; the masked-out
# ones include the largest logit of rows 0 and 1, so a selector that ignored the mask would pick them.
LOGITS = torch.tensor([[2.0, -1.0, 0.5, 4.0, -2.5, 1.0],
                       [-3.0, 0.0, 3.0, 5.0, 1.5, -0.5],
                       [0.0, 0.0, -4.0, 2.5, 2.0, -1.0]])
AVAIL = torch.tensor([[1, 1, 1, 0, 1, 1],
                      [0, 1, 1, 0, 1, 1],
                      [1, 0, 1, 1, 1, 0]], dtype=torch.bool)


def _softmax_over_available(logits, avail):
    """Written out from the definition, without the selector's masking helper."""
    weights = [[math.exp(v) if ok else 0.0 for v, ok in zip(row, ok_row)]
               for row, ok_row in zip(logits.tolist(), avail.tolist())]
    return torch.tensor([[w / sum(row) for w in row] for row in weights], dtype=torch.float64)


def test_categorical_sampling_frequencies_match_the_masked_softmax():
    n = 200_000
    p = _softmax_over_available(LOGITS, AVAIL)
    # the distributions are far from uniform (the check below would not notice e.g. a flattened policy
    # otherwise): every row's most likely action has more than twice the uniform probability
    assert (p.max(-1).values > 2 / AVAIL.sum(-1)).all()
    torch.manual_seed(1234)
    actions = CategoricalSelector(make_cfg("ippo")).select(LOGITS.expand(n, 3, 6), AVAIL.expand(n, 3, 6), 0, False)
    assert actions.shape == (n, 3) and actions.dtype == torch.long
    freq = torch.stack([torch.bincount(actions[:, r], minlength=6) for r in range(3)]).double() / n
    assert freq[~AVAIL].eq(0).all()  # unavailable actions never sampled, not even once in 600,000 draws
    # Tolerance: each frequency is a mean of n Bernoulli(p) draws, standard deviation sqrt(p (1 - p) / n)
    # (at most 0.0011 for n = 200,000). Allow 5 standard deviations per entry: with 13 available entries
    # a correct sampler fails with probability < 13 * 5.7e-7 (and the seed is fixed, so never).
    # Negating the Gumbel noise (argmax of logits minus Gumbel noise: not a softmax sample) moves entries
    # by up to 0.063, 8 to 66 standard deviations for 10 of the 13 entries.
    bound = 5 * torch.sqrt(p * (1 - p) / n)
    deviation = (freq - p).abs()
    assert (deviation <= bound).all(), f"max |freq - p| = {deviation.max():.4f}\nfreq={freq}\np={p}"


def test_categorical_test_mode_is_the_argmax_of_the_masked_logits():
    sel = CategoricalSelector(make_cfg("ippo"))
    # row 0: 3 (logit 4) unavailable -> 0 (logit 2); row 1: 3 (5) unavailable -> 2 (3); row 2: 3 (2.5)
    greedy = sel.select(LOGITS, AVAIL, 0, True)
    assert greedy.tolist() == [0, 2, 3]
    # the same with a batch dimension, many times over: no randomness in test mode
    torch.manual_seed(0)
    assert torch.equal(sel.select(LOGITS.expand(50, 3, 6), AVAIL.expand(50, 3, 6), 0, True),
                       torch.tensor([0, 2, 3]).expand(50, 3))
    # all logits far below any available one, and the only available action has the smallest logit
    logits = torch.tensor([[-50.0, -1e4, 3.0, 9.0]])
    assert sel.select(logits, torch.tensor([[0, 1, 0, 0]], dtype=torch.bool), 0, True).tolist() == [1]


@pytest.mark.parametrize("test_mode", [False, True])
def test_a_single_available_action_is_always_chosen(test_mode):
    """A dead SMAC agent has only the no-op: whatever its logits, it must be picked every time."""
    torch.manual_seed(0)
    logits = torch.randn(5000, 4, 7) * 30
    avail = torch.zeros(5000, 4, 7, dtype=torch.bool)
    only = torch.randint(0, 7, (5000, 4))
    avail.scatter_(-1, only.unsqueeze(-1), True)
    assert torch.equal(CategoricalSelector(make_cfg("ippo")).select(logits, avail, 0, test_mode), only)


# --- the controller's inputs ----------------------------------------------------------------------------------

N_AGENTS, N_ACTIONS, OBS_DIM, B, T = 3, 4, 2, 2, 3
ENV_INFO = {"n_agents": N_AGENTS, "n_actions": N_ACTIONS, "obs_shape": OBS_DIM, "state_shape": 5,
            "episode_limit": T}


def _tiny_batch():
    batch = EpisodeBatch.zeros(B, T, ENV_INFO)
    for b in range(B):
        for t in range(T + 1):
            for i in range(N_AGENTS):
                batch.obs[b, t, i] = torch.tensor([100.0 * b + 10.0 * t + i, -(100.0 * b + 10.0 * t + i) - 0.5])
    # distinct actions per (episode, step, agent), so any shift or agent mix-up shows
    batch.actions[:] = torch.tensor([[[0, 1, 2], [3, 0, 1], [2, 3, 0]],
                                     [[1, 1, 3], [0, 2, 2], [3, 0, 1]]])
    batch.filled[:] = 1
    return batch


def _one_hot(k, n):
    return [1.0 if j == k else 0.0 for j in range(n)]


def _expected_inputs(batch, last_action: bool, agent_id: bool):
    """``[N, T+1, B, in]`` built element by element from the definition."""
    rows = []
    for i in range(N_AGENTS):
        per_t = []
        for t in range(T + 1):
            per_b = []
            for b in range(B):
                vec = batch.obs[b, t, i].tolist()
                if last_action:
                    vec += [0.0] * N_ACTIONS if t == 0 else _one_hot(int(batch.actions[b, t - 1, i]), N_ACTIONS)
                if agent_id:
                    vec += _one_hot(i, N_AGENTS)
                per_b.append(vec)
            per_t.append(per_b)
        rows.append(per_t)
    return torch.tensor(rows)


@pytest.mark.parametrize("last_action,agent_id", [(True, True), (False, True), (True, False), (False, False)])
def test_controller_inputs_are_obs_last_action_and_agent_id(last_action, agent_id):
    cfg = make_cfg("ippo", obs_last_action=last_action, obs_agent_id=agent_id)
    mac = controllers.REGISTRY[cfg.mac](ENV_INFO, cfg, torch.device("cpu"))
    assert mac.input_dim == OBS_DIM + N_ACTIONS * last_action + N_AGENTS * agent_id
    batch = _tiny_batch()
    expected = _expected_inputs(batch, last_action, agent_id)
    assert expected.shape == (N_AGENTS, T + 1, B, mac.input_dim)
    inputs = mac.sequence_inputs(batch)
    assert inputs.dtype == torch.float32
    assert torch.equal(inputs, expected)
    # one step (what select_actions builds while acting): obs at t and the actions taken at t - 1
    for t in range(T + 1):
        last = (torch.full((B, N_AGENTS), N_ACTIONS) if t == 0 else batch.actions[:, t - 1])
        step = mac.build_inputs(batch.obs[:, t].unsqueeze(1), last.unsqueeze(1))
        assert torch.equal(step, expected[:, t:t + 1])


def test_runner_feeds_each_agent_its_own_previous_action():
    """While acting, the runner gives the controller "no action yet" at t = 0 and the batch's actions of
    t - 1 afterwards, so acting and training (``sequence_inputs``) see the same inputs."""
    _, env, mac, _, runner = build("ippo", env=ToyBatchedEnv(n_envs=5, seed=6))
    seen = []
    build_inputs = mac.build_inputs

    def spy(obs, last_actions):
        seen.append((obs.clone(), last_actions.clone()))
        return build_inputs(obs, last_actions)

    mac.build_inputs = spy
    batch, _ = runner.run(test_mode=False, t_env=0)
    assert len(seen) == batch.max_t
    for t, (obs, last) in enumerate(seen):
        assert torch.equal(obs[:, 0], batch.obs[:, t])
        expected = torch.full_like(last[:, 0], env.n_actions) if t == 0 else batch.actions[:, t - 1]
        real = batch.filled[:, t].bool()  # after an episode's end its env is frozen; only real steps count
        assert torch.equal(last[:, 0][real], expected[real])

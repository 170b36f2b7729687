"""The episode runner: batch shapes, masks, termination flags, stats; on a toy env and the simulator."""
import numpy as np
import pytest
import torch

import runners
from alg_helpers import ToyBatchedEnv, build
from components.episode_batch import EpisodeBatch


def _check_batch(batch: EpisodeBatch, stats: dict, info: dict, n_envs: int):
    n, a = info["n_agents"], info["n_actions"]
    t = batch.max_t
    assert batch.obs.shape == (n_envs, t + 1, n, info["obs_shape"])
    assert batch.state.shape == (n_envs, t + 1, info["state_shape"])
    assert batch.avail_actions.shape == (n_envs, t + 1, n, a) and batch.avail_actions.dtype == torch.bool
    assert batch.actions.shape == (n_envs, t, n) and batch.actions.dtype == torch.long
    for name in ("reward", "terminated", "filled"):
        assert getattr(batch, name).shape == (n_envs, t)
    lengths = batch.episode_lengths().numpy()
    np.testing.assert_array_equal(lengths, stats["ep_length"])
    assert t == lengths.max() and stats["env_steps"] == lengths.sum()
    # filled is a prefix of ones; terminated only on the last real step; reward zero on padding
    for b, length in enumerate(lengths):
        assert batch.filled[b, :length].eq(1).all() and batch.filled[b, length:].eq(0).all()
        assert batch.terminated[b, : length - 1].eq(0).all() and batch.terminated[b, length:].eq(0).all()
        assert batch.reward[b, length:].eq(0).all()
    np.testing.assert_allclose(batch.reward.sum(1).numpy(), stats["return"], rtol=1e-5)
    # every recorded action was available when taken
    real = batch.filled.bool()
    taken = batch.avail_actions[:, :t].gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
    assert taken[real].all()
    for key in ("battle_won", "dead_allies", "dead_enemies"):
        assert stats[key].shape == (n_envs,)


@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_runner_batches_on_toy_env(alg):
    env = ToyBatchedEnv(n_envs=16, episode_limit=9, seed=1)
    _, env, mac, _, runner = build(alg, env=env)
    batch, stats = runner.run(test_mode=False, t_env=0)
    _check_batch(batch, stats, env.get_env_info(), 16)
    lengths = stats["ep_length"]
    timed_out = lengths == env.episode_limit
    # the toy env ends at random: with 16 envs, some end early (terminated) and usually some time out
    assert (~timed_out).any()
    for b in np.flatnonzero(~timed_out):
        assert batch.terminated[b, lengths[b] - 1] == 1
    for b in np.flatnonzero(timed_out):  # a timeout is not a termination: the learner bootstraps
        assert batch.terminated[b, lengths[b] - 1] == 0


@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_runner_records_the_acting_policy_when_the_learner_trains_on_it(alg):
    """IPPO's batches carry the outputs and recurrent states the acting policy computed; a forward pass of
    the controller over the whole episodes reproduces them. QMIX (replay) gets no records."""
    _, env, mac, learner, runner = build(alg, env=ToyBatchedEnv(n_envs=6, seed=4))
    batch, _ = runner.run(test_mode=False, t_env=0)
    if not learner.trains_on_agent_outputs:
        assert batch.agent_outputs is None and batch.agent_hidden_in is None
        return
    t, n = batch.max_t, mac.n_agents
    assert batch.agent_outputs.shape == (6, t, n, mac.n_actions)
    assert batch.agent_hidden_in.shape == (6, t, n, mac.hidden_dim)
    with torch.no_grad():
        outputs, hidden = mac.forward(mac.sequence_inputs(batch), mac.init_hidden(6))   # [N, T+1, B, ...]
    real = batch.filled.bool()
    torch.testing.assert_close(batch.agent_outputs[real], outputs[:, :t].permute(2, 1, 0, 3)[real],
                               rtol=1e-5, atol=1e-6)
    assert batch.agent_hidden_in[:, 0].eq(0).all()
    torch.testing.assert_close(batch.agent_hidden_in[:, 1:][real[:, 1:]],
                               hidden[:, : t - 1].permute(2, 1, 0, 3)[real[:, 1:]], rtol=1e-5, atol=1e-6)


def test_runner_final_observation_and_copy_semantics():
    env = ToyBatchedEnv(n_envs=5, seed=2)
    _, env, _, _, runner = build("ippo", env=env)
    batch, stats = runner.run(test_mode=False, t_env=0)
    # the observation after the last transition is stored at position ep_length (frozen env state)
    final_obs = torch.from_numpy(env.get_obs())
    for b, length in enumerate(stats["ep_length"]):
        torch.testing.assert_close(batch.obs[b, length], final_obs[b])
    kept = batch.obs.clone()
    runner.run(test_mode=False, t_env=0)
    assert torch.equal(batch.obs, kept)  # a returned batch is not overwritten by the next run


def test_runner_greedy_test_mode_is_deterministic_and_sampling_is_seeded():
    _, env, mac, _, runner = build("ippo", env=ToyBatchedEnv(n_envs=4, seed=3))
    runs = []
    for _ in range(2):
        env.rng = np.random.default_rng(7)
        runs.append(runner.run(test_mode=True, t_env=0)[0])
    assert torch.equal(runs[0].actions, runs[1].actions)
    sampled = []
    for _ in range(2):
        env.rng = np.random.default_rng(7)
        torch.manual_seed(11)
        sampled.append(runner.run(test_mode=False, t_env=0)[0])
    assert torch.equal(sampled[0].actions, sampled[1].actions)


def test_runner_rejects_env_that_never_terminates():
    class Endless(ToyBatchedEnv):
        def step(self, actions):
            reward, _, info = super().step(actions)
            return reward, np.zeros(self.n_envs, bool), info

    _, _, _, _, runner = build("qmix", env=Endless(n_envs=2))
    with pytest.raises(RuntimeError, match="did not terminate within episode_limit=9"):
        runner.run(test_mode=False, t_env=0)


@pytest.mark.parametrize("map_name", ["3m", "5m_vs_6m"])
def test_runner_on_embedded_simulator(map_name):
    import envs

    cfg, *_ = build("ippo", map_name=map_name)
    env = envs.REGISTRY["sc2"](n_envs=8, seed=5, **cfg.env_args)
    _, env, _, _, runner = build("ippo", env=env, map_name=map_name)
    assert runners.REGISTRY["episode"] is type(runner)
    batch, stats = runner.run(test_mode=False, t_env=0)
    _check_batch(batch, stats, env.get_env_info(), 8)
    test_batch, test_stats = runner.run(test_mode=True, t_env=0)
    _check_batch(test_batch, test_stats, env.get_env_info(), 8)
    env.close()


@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_same_seed_gives_identical_training(alg):
    """Rollouts (action sampling) and updates (incl. QMIX's replay sampling) are deterministic on CPU."""
    results = []
    for _ in range(2):
        _, env, mac, learner, runner = build(alg, env=ToyBatchedEnv(n_envs=8, seed=9), torch_seed=4,
                                             batch_size=8, ppo_epochs=2)
        stats = []
        t_env = 0
        for it in range(3):
            batch, run_stats = runner.run(test_mode=False, t_env=t_env)
            t_env += run_stats["env_steps"]
            stats.append(learner.train(batch, t_env, 8 * (it + 1)))
        results.append((stats, {k: v.clone() for k, v in mac.state_dict().items()}))
    assert results[0][0] == results[1][0]
    for k, v in results[0][1].items():
        assert torch.equal(v, results[1][1][k]), k


def test_runner_records_the_scripted_actions_under_heuristic_ai():
    """With SMAC's ``heuristic_ai`` the env's scripted agents act, not the policy: the batch holds the
    actions they took (SMAC's heuristic attacks, ``6 + enemy``, also when the enemy is beyond the shoot
    range and the attack order makes the unit walk there, so not every one is an available action)."""
    import envs

    cfg, *_ = build("ippo", map_name="3m")
    env = envs.REGISTRY["sc2"](n_envs=4, seed=5, **{**cfg.env_args, "heuristic_ai": True})
    _, env, _, _, runner = build("ippo", env=env, map_name="3m")
    batch, stats = runner.run(test_mode=False, t_env=0)
    assert batch.actions.shape == (4, batch.max_t, 3) and stats["ep_length"].sum() == stats["env_steps"]
    alive = batch.filled.bool().unsqueeze(-1) & batch.obs[:, :-1].ne(0).any(-1)   # alive agents' real steps
    assert batch.actions[alive].ge(6).all(), "the recorded actions are the policy's, not the scripted attacks"
    env.close()

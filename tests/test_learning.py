"""Learning checks.

Fast smoke tests (in the default run, seconds each): on the toy task of ``alg_helpers.ToyBatchedEnv``
(reward = the fraction of agents that pick the action their observation marks), IPPO and QMIX trained
for a few thousand steps clearly beat a uniformly random policy, so a reversed objective fails CI.

Slow checks (``pytest -m slow tests/test_learning.py -s``): IPPO and QMIX learn 3m. Each run trains on the embedded simulator with the algorithm's own config and evaluates greedily on a
separate test env every 50k env steps; it passes once a test win rate reaches 0.8 within 1M env steps.
The learning curve is printed (run with ``-s`` to see it).
"""
import time

import numpy as np
import pytest
import torch

import runners
from alg_helpers import ToyBatchedEnv, build, make_cfg
from run import build_components, build_envs

T_MAX, TEST_INTERVAL, TARGET = 1_000_000, 50_000, 0.8
SEEDS = [112358, 1285842, 78590]  # the first three of the DM² authors' seeds


def train_until(alg: str, seed: int, map_name: str = "3m", t_max: int = T_MAX) -> list[tuple[int, float]]:
    """Train with ``run.py``'s components until a greedy test win rate reaches ``TARGET``; returns the
    learning curve ``[(t_env, test win rate), ...]``."""
    cfg = make_cfg(alg, map_name=map_name, seed=seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_env, test_env = build_envs(cfg, replay_dir=None)
    parts = build_components(cfg, train_env, test_env, torch.device("cpu"))
    train_runner, test_runner, learner = parts.train_runner, parts.test_runner, parts.learner
    t_env, episode, next_test, curve, start = 0, 0, 0, [], time.time()
    while t_env <= t_max:
        if t_env >= next_test:
            _, stats = test_runner.run(test_mode=True, t_env=t_env)
            win = float(stats["battle_won"].mean())
            curve.append((t_env, win))
            print(f"{alg} seed {seed} t_env {t_env:>8d} test_battle_won_mean {win:.3f} "
                  f"({t_env / max(time.time() - start, 1e-9):.0f} steps/s)", flush=True)
            if win >= TARGET:
                break
            next_test += TEST_INTERVAL
        batch, stats = train_runner.run(test_mode=False, t_env=t_env)
        t_env += stats["env_steps"]
        episode += batch.batch_size
        learner.train(batch, t_env, episode)
    parts.close()
    return curve


def random_policy_return(n_episodes: int = 2000, seed: int = 0) -> float:
    """Mean return on the toy task of an agent that picks uniformly among its available actions."""
    env, rng = ToyBatchedEnv(n_envs=n_episodes, seed=seed), np.random.default_rng(seed)
    env.reset()
    returns, done = np.zeros(n_episodes), np.zeros(n_episodes, dtype=bool)
    while not done.all():
        reward, terminated, _ = env.step((rng.random((n_episodes, env.n_agents, env.n_actions))
                                          * env.get_avail_actions()).argmax(-1))
        returns += np.where(done, 0.0, reward)
        done |= terminated
    return float(returns.mean())


# (alg, overrides, training batches): about 20k env steps for IPPO, 6k for QMIX (one update per episode).
SMOKE = [("ippo", dict(batch_size_run=64), 60),
         ("qmix", dict(batch_size_run=8, batch_size=16, epsilon_anneal_time=2000), 150)]


@pytest.mark.parametrize("alg,overrides,n_batches", SMOKE, ids=[alg for alg, _, _ in SMOKE])
def test_short_training_beats_a_random_policy(alg, overrides, n_batches):
    """A random policy returns about 1.0 per episode here and the best possible is about 3.4; after the
    short training the greedy policy must return at least 1.8 over 500 test episodes (IPPO reached 2.39,
    QMIX 2.21 when this was written)."""
    _, _, mac, learner, runner = build(alg, env=ToyBatchedEnv(n_envs=overrides["batch_size_run"], seed=1),
                                       torch_seed=1, **overrides)
    tester = runners.REGISTRY["episode"](ToyBatchedEnv(n_envs=500, seed=2), mac, learner.cfg, torch.device("cpu"))
    t_env = 0
    for episode in range(n_batches):
        batch, stats = runner.run(test_mode=False, t_env=t_env)
        t_env += stats["env_steps"]
        learner.train(batch, t_env, episode)
    _, stats = tester.run(test_mode=True, t_env=t_env)
    random_return = random_policy_return()
    assert random_return == pytest.approx(1.0, abs=0.1)
    assert stats["return"].mean() >= 1.8, f"{alg}: greedy return {stats['return'].mean():.3f} after training"


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_learns_3m(alg, seed):
    curve = train_until(alg, seed)
    assert max(win for _, win in curve) >= TARGET, f"{alg} on 3m: test win rates {curve}"

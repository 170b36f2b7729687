"""Slow learning checks (``pytest -m slow tests/test_learning.py -s``): IPPO and QMIX learn 3m.

Each run trains on the embedded simulator with the algorithm's own config and evaluates greedily on a
separate test env every 50k env steps; it passes once a test win rate reaches 0.8 within 1M env steps.
The learning curve is printed (run with ``-s`` to see it).
"""
import time

import numpy as np
import pytest
import torch

from alg_helpers import make_cfg
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


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alg", ["ippo", "qmix"])
def test_learns_3m(alg, seed):
    curve = train_until(alg, seed)
    assert max(win for _, win in curve) >= TARGET, f"{alg} on 3m: test win rates {curve}"

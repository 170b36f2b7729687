"""End-to-end training throughput: env steps per second including rollouts, learner updates and the
greedy test episodes, with each algorithm's own configuration (IPPO: the paper's 5m_vs_6m settings,
256 episodes per update and 10 PPO epochs; QMIX: PyMARL's settings).

The loop is ``run.py``'s: collect ``batch_size_run`` episodes -> ``learner.train`` -> every
``test_interval`` env steps run ``test_nepisode`` greedy episodes. The first iteration (JIT compilation,
allocation) is excluded from the timing.

    python bench/bench_training.py [--algs ippo qmix] [--map 5m_vs_6m] [--steps 200000]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from config.loader import load_config  # noqa: E402
from utils.cpu_runtime import configure_cpu  # noqa: E402
from run import build_components, build_envs, seed_everything  # noqa: E402


def bench(alg: str, map_name: str, steps: int, extra: dict) -> dict:
    cfg = load_config(alg, "sc2", {"env_args.map_name": map_name, "env_args.backend": "sim", "seed": 1,
                                   **extra})
    seed_everything(cfg.seed)
    configure_cpu(cfg.torch_threads or os.cpu_count())
    train_env, test_env = build_envs(cfg, replay_dir=None)
    parts = build_components(cfg, train_env, test_env, torch.device("cpu"))
    t_env = episode = 0
    timings = {"rollout": 0.0, "train": 0.0, "test": 0.0}
    start = None
    last_test = 0
    while True:
        t0 = time.perf_counter()
        batch, stats = parts.train_runner.run(test_mode=False, t_env=t_env)
        t1 = time.perf_counter()
        t_env += int(stats["env_steps"])
        episode += len(stats["return"])
        parts.learner.train(batch, t_env, episode)
        t2 = time.perf_counter()
        if t_env - last_test >= cfg.test_interval:
            parts.test_runner.run(test_mode=True, t_env=t_env)
            last_test = t_env
        t3 = time.perf_counter()
        if start is None:  # warm-up iteration excluded
            start, start_t = time.perf_counter(), t_env
            continue
        for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2)):
            timings[key] += dt
        if t_env - start_t >= steps:
            break
    elapsed = time.perf_counter() - start
    parts.close()
    return {"alg": alg, "map": map_name, "env_steps": t_env - start_t, "seconds": elapsed,
            "rate": (t_env - start_t) / elapsed, **{k: v / elapsed for k, v in timings.items()},
            "batch_size_run": cfg.batch_size_run, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algs", nargs="+", default=["ippo", "qmix"])
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--steps", type=int, default=200_000, help="timed env steps per algorithm")
    args = parser.parse_args()
    print(f"end-to-end training throughput on {args.map}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{'alg':<6} {'threads':>7} {'envs/run':>8} {'env steps':>10} {'seconds':>8} {'env steps/s':>12}   "
          f"share of time: rollout / train / test")
    for alg in args.algs:
        r = bench(alg, args.map, args.steps, {})
        print(f"{r['alg']:<6} {r['threads']:>7} {r['batch_size_run']:>8} {r['env_steps']:>10,} {r['seconds']:>8.1f} "
              f"{r['rate']:>12,.0f}   {r['rollout']:.0%} / {r['train']:.0%} / {r['test']:.0%}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()

"""End-to-end training throughput: env steps per second including rollouts, learner updates and the
greedy test episodes, with each algorithm's own configuration (IPPO: the paper's 5m_vs_6m settings,
256 episodes per update and 10 PPO epochs; DM² (ippo_gail): the same plus 120 discriminator steps per
update on 64 + 64 episodes per agent; QMIX: PyMARL's settings). Each algorithm after the first is also
given as a ratio of the first one's throughput measured in the same run, which holds across machines.

DM² needs demonstrations: ``--demos <file.npz>`` (made with ``src/demos.py``), or, without it, the
bench records 1000 stochastic episodes of an untrained IPPO team first (the speed does not depend on
the demonstrators' skill, only on their episode lengths).

The loop is ``run.py``'s: collect ``batch_size_run`` episodes -> ``learner.train`` -> every
``test_interval`` env steps run ``test_nepisode`` greedy episodes. The first iteration (JIT compilation,
allocation) is excluded from the timing.

QMIX runs with its configuration's ``torch_threads`` (0: all cores); ``--qmix-threads N`` overrides it, to re-measure
whether its update (one 32-episode batch per collected episode) gains from more threads on a given machine.

    python bench/bench_training.py [--algs ippo ippo_gail qmix] [--map 5m_vs_6m] [--steps 200000] [--demos F]
                                   [--qmix-threads N]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from components.demonstrations import make_demonstrations, save_demonstrations  # noqa: E402
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


def untrained_demonstrations(map_name: str, n_episodes: int = 1000) -> str:
    """Record ``n_episodes`` stochastic episodes of an untrained IPPO team on ``map_name`` into a temporary
    demonstrations file; returns its path."""
    cfg = load_config("ippo", "sc2", {"env_args.map_name": map_name, "env_args.backend": "sim", "seed": 2,
                                      "batch_size_run": n_episodes, "test_nepisode": 1})
    seed_everything(cfg.seed)
    train_env, test_env = build_envs(cfg, replay_dir=None)
    parts = build_components(cfg, train_env, test_env, torch.device("cpu"))
    batch, stats = parts.train_runner.run(test_mode=False, t_env=0)
    parts.close()
    demos = make_demonstrations(batch.obs[:, : batch.max_t].numpy().transpose(2, 0, 1, 3),
                                batch.episode_lengths().numpy()[None].repeat(parts.env_info["n_agents"], 0),
                                map_name=map_name, n_actions=parts.env_info["n_actions"],
                                episode_limit=parts.env_info["episode_limit"],
                                actions=batch.actions.numpy().transpose(2, 0, 1), env_args=cfg.env_args,
                                won=stats["battle_won"][None].repeat(parts.env_info["n_agents"], 0))
    path = os.path.join(tempfile.mkdtemp(prefix="dm2-bench-"), "untrained_demos.npz")
    return save_demonstrations(path, demos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algs", nargs="+", default=["ippo", "ippo_gail", "qmix"])
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--steps", type=int, default=200_000, help="timed env steps per algorithm")
    parser.add_argument("--demos", default="", help="demonstrations for ippo_gail (default: recorded first)")
    parser.add_argument("--qmix-threads", type=int, default=None, help="torch threads for qmix (default: its config's)")
    args = parser.parse_args()
    extra = {alg: {} for alg in args.algs}
    if "qmix" in args.algs and args.qmix_threads is not None:
        extra["qmix"]["torch_threads"] = args.qmix_threads
    if "ippo_gail" in args.algs:
        extra["ippo_gail"]["gail_data_path"] = args.demos or untrained_demonstrations(args.map)
    print(f"end-to-end training throughput on {args.map}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{'alg':<9} {'threads':>7} {'envs/run':>8} {'env steps':>10} {'seconds':>8} {'env steps/s':>12} "
          f"{'ratio':>6}   share of time: rollout / train / test")
    first_rate = None
    for alg in args.algs:
        r = bench(alg, args.map, args.steps, extra[alg])
        first_rate = first_rate or r["rate"]
        print(f"{r['alg']:<9} {r['threads']:>7} {r['batch_size_run']:>8} {r['env_steps']:>10,} {r['seconds']:>8.1f} "
              f"{r['rate']:>12,.0f} {r['rate'] / first_rate:>5.2f}x   "
              f"{r['rollout']:.0%} / {r['train']:.0%} / {r['test']:.0%}", flush=True)
    print(f"ratio = env steps/s relative to {args.algs[0]} in this run")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()

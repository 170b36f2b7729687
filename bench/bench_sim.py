"""Throughput of the embedded simulator with uniformly random *available* actions.

Prints env steps per second (one env step = one agent step of one environment) for the batched engine
at B = 1, 64 and 1024 (terminated environments are reset every step, their steps not counted), for the
single-environment SMAC API (step + get_obs + get_state + get_avail_actions every step, as PyMARL's
runner does), and the process's peak memory.

    python bench/bench_sim.py [--maps 5m_vs_6m 3s_vs_4z] [--batch-sizes 1 64 1024] [--seconds 5]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from envs.sim import BatchedStarCraft2Sim, StarCraft2Env  # noqa: E402


def random_available(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random available action per agent: ``avail`` [..., A] -> int64 [...]."""
    return np.argmax(rng.random(avail.shape) * avail, axis=-1)


def bench_batched(map_name: str, n_envs: int, seconds: float) -> float:
    env = BatchedStarCraft2Sim(map_name, n_envs=n_envs, seed=0)
    rng = np.random.default_rng(0)
    env.step(random_available(env.get_avail_actions(), rng))  # compile / warm up
    env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        live = int((~env.terminated).sum())
        _, terminated, _ = env.step(random_available(env.avail, rng))
        env.get_obs()
        env.get_state()
        steps += live
        if terminated.any():
            env.reset(terminated)
    return steps / (time.perf_counter() - start)


def bench_single(map_name: str, seconds: float) -> float:
    env = StarCraft2Env(map_name=map_name, seed=0)
    rng = np.random.default_rng(0)
    env.reset()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.get_obs()
        env.get_state()
        avail = np.array(env.get_avail_actions())
        _, terminated, _ = env.step(random_available(avail, rng))
        steps += 1
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", nargs="+", default=["5m_vs_6m", "3s_vs_4z"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64, 1024])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"embedded simulator throughput, {os.cpu_count()} CPU cores, {args.seconds:.0f} s per figure")
    print(f"{'map':<12} {'API':<22} {'env steps/s':>12}")
    for map_name in args.maps:
        for n_envs in args.batch_sizes:
            rate = bench_batched(map_name, n_envs, args.seconds)
            print(f"{map_name:<12} {'batched B=' + str(n_envs):<22} {rate:>12,.0f}")
        rate = bench_single(map_name, args.seconds)
        print(f"{map_name:<12} {'single-env SMAC API':<22} {rate:>12,.0f}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()

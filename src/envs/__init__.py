"""Environment registry: ``REGISTRY[name](n_envs=..., seed=..., **env_args) -> BatchedMultiAgentEnv``.

``"sc2"`` plays SMAC's StarCraft micromanagement scenarios on one of two backends, chosen by
``env_args["backend"]``:

* ``"sim"`` — the embedded SMAC-compatible simulator (``envs.sim``), all ``n_envs`` in one batched engine;
* ``"starcraft2"`` — real StarCraft II through oxwhirl's SMAC, one game per worker process;
* ``"auto"`` (default) — ``"starcraft2"`` when SMAC, the game and the map are installed, else ``"sim"``.

The returned env's ``backend_name`` attribute says which one runs (``"sim"`` or ``"starcraft2"``).

Real StarCraft II runs one game process per environment, and a machine runs only so many at once:
``env_args.max_concurrent_games`` caps them (0, the default, derives the cap from this machine's cores and
memory: :mod:`envs.game_budget`). The real-game env then holds ``min(n_envs, cap)`` environments, fewer
than asked for when the cap is lower; runners play the episodes they need in waves on them.
"""
from __future__ import annotations

import logging
import numbers

from envs import game_budget
from envs.game_budget import GameBudget, check_max_concurrent_games
from envs.multiagentenv import BatchedMultiAgentEnv, MultiAgentEnv
from envs.starcraft2_backend import make_starcraft2_env, require_starcraft2, starcraft2_missing

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sim", "starcraft2")
#: ``env_args`` keys that :func:`make_sc2_env` takes for itself: they choose and size the backend and are not
#: passed to the environment class.
REGISTRY_ARGS = ("backend", "max_concurrent_games")


def _make_sim(n_envs: int, seed: int, **smac_kwargs) -> BatchedMultiAgentEnv:
    from envs.sim import BatchedStarCraft2Sim  # imported on first use: the registry must load without it

    return BatchedStarCraft2Sim(n_envs=n_envs, seed=seed, **smac_kwargs)


def resolve_backend(backend: str, map_name: str) -> str:
    """``"sim"`` or ``"starcraft2"`` for the requested ``backend``; raises if it cannot be honoured."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown env_args.backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    if backend == "sim":
        return "sim"
    if backend == "starcraft2":
        require_starcraft2(map_name)
        return "starcraft2"
    missing = starcraft2_missing(map_name)
    if missing:
        logger.info("env_args.backend=auto: using the embedded simulator, as real StarCraft II cannot run "
                    "here (%s)", "; ".join(missing))
        return "sim"
    return "starcraft2"


def make_sc2_env(n_envs: int, seed: int, backend: str = "auto", max_concurrent_games: int = 0,
                 **smac_kwargs) -> BatchedMultiAgentEnv:
    """SMAC scenarios on the chosen backend (see the module docstring): ``n_envs`` of them on the simulator,
    ``min(n_envs, cap)`` real StarCraft II games (the env's ``n_envs`` says how many it holds).

    Args:
        n_envs: number of environments wanted (B).
        seed: base seed; the environments' random streams are derived from it.
        backend: ``"auto"``, ``"sim"`` or ``"starcraft2"``.
        max_concurrent_games: real StarCraft II only: at most this many games; 0 derives the cap from
            this machine's cores and memory (:func:`envs.game_budget.budget`).
        smac_kwargs: SMAC ``StarCraft2Env`` constructor arguments (``map_name``, ``step_mul``, ...), plus
            the simulator's ``record_replay`` (ignored by real StarCraft II, which always records).
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    n_envs = int(n_envs)
    check_max_concurrent_games(max_concurrent_games)
    chosen = resolve_backend(backend, smac_kwargs.get("map_name", "8m"))
    if chosen == "sim":
        env = _make_sim(n_envs, seed, **smac_kwargs)
    else:
        budget = game_budget.budget(max_concurrent_games)
        if budget.oversubscribed():
            logger.warning("env_args.max_concurrent_games=%d is more games than this machine's %d cores and %s "
                           "are likely to carry; if runs slow down or games are killed, lower it (0 derives it)",
                           budget.cap, budget.cores, "unknown memory" if budget.memory_gib is None
                           else f"{budget.memory_gib:.1f} GiB of available memory")
        if n_envs > budget.cap:
            logger.info("%d environments asked for, more real StarCraft II games than may run at once here (%s): "
                        "%d games, on which the runner plays the episodes in waves; env_args.max_concurrent_games "
                        "sets the cap", n_envs, budget.describe(), budget.cap)
        env = make_starcraft2_env(min(n_envs, budget.cap), seed, **smac_kwargs)
        env.game_budget = budget
    env.backend_name = chosen
    return env


REGISTRY = {"sc2": make_sc2_env}

__all__ = ["REGISTRY", "BACKENDS", "REGISTRY_ARGS", "BatchedMultiAgentEnv", "GameBudget", "MultiAgentEnv",
           "check_max_concurrent_games", "make_sc2_env", "resolve_backend"]

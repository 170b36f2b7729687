"""Environment registry: ``REGISTRY[name](n_envs=..., seed=..., **env_args) -> BatchedMultiAgentEnv``.

``"sc2"`` plays SMAC's StarCraft micromanagement scenarios on one of two backends, chosen by
``env_args["backend"]``:

* ``"sim"`` — the embedded SMAC-compatible simulator (``envs.sim``), all ``n_envs`` in one batched engine;
* ``"starcraft2"`` — real StarCraft II through oxwhirl's SMAC, one game per worker process;
* ``"auto"`` (default) — ``"starcraft2"`` when SMAC, the game and the map are installed, else ``"sim"``.

The returned env's ``backend_name`` attribute says which one runs (``"sim"`` or ``"starcraft2"``).
"""
from __future__ import annotations

import logging
import numbers

from envs.multiagentenv import BatchedMultiAgentEnv, MultiAgentEnv
from envs.starcraft2_backend import make_starcraft2_env, require_starcraft2, starcraft2_missing

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sim", "starcraft2")


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


def make_sc2_env(n_envs: int, seed: int, backend: str = "auto", **smac_kwargs) -> BatchedMultiAgentEnv:
    """``n_envs`` SMAC scenarios on the chosen backend (see the module docstring).

    Args:
        n_envs: number of environments stepped together (B).
        seed: base seed; the environments' random streams are derived from it.
        backend: ``"auto"``, ``"sim"`` or ``"starcraft2"``.
        smac_kwargs: SMAC ``StarCraft2Env`` constructor arguments (``map_name``, ``step_mul``, ...), plus
            the simulator's ``record_replay`` (ignored by real StarCraft II, which always records).
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, numbers.Integral) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    n_envs = int(n_envs)
    chosen = resolve_backend(backend, smac_kwargs.get("map_name", "8m"))
    if chosen == "sim":
        env = _make_sim(n_envs, seed, **smac_kwargs)
    else:
        env = make_starcraft2_env(n_envs, seed, **smac_kwargs)
    env.backend_name = chosen
    return env


REGISTRY = {"sc2": make_sc2_env}

__all__ = ["REGISTRY", "BACKENDS", "BatchedMultiAgentEnv", "MultiAgentEnv", "make_sc2_env", "resolve_backend"]

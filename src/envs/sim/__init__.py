"""The embedded, vectorised, SMAC-compatible StarCraft micromanagement simulator.

* ``BatchedStarCraft2Sim`` — B environments per call on arrays (the engine).
* ``StarCraft2Env`` — SMAC's single-environment API, a view over the engine with B = 1.
* ``SCENARIOS`` — the maps; ``docs/simulator.md`` lists how the dynamics simplify SC2.
"""
from . import kernel_cache

kernel_cache.install()  # before the kernels are defined: any edit to this package recompiles them

from .batched_env import SMAC_DEFAULTS, BatchedStarCraft2Sim  # noqa: E402
from .maps import SCENARIOS, get_scenario  # noqa: E402
from .smac_env import StarCraft2Env  # noqa: E402

__all__ = ["BatchedStarCraft2Sim", "StarCraft2Env", "SCENARIOS", "SMAC_DEFAULTS", "get_scenario"]

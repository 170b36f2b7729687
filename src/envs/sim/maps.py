"""Scenario definitions: SMAC's map registry as data.

A scenario is the two armies, the episode limit, the races and SMAC's ``map_type`` / ``unit_type_bits``
(which decide the one-hot unit-type features), and the terrain. Adding a map is one ``_register`` call.

All scenarios here use SMAC's 32x32 arenas with the spawn points "Team 1" = (9, 16) for the agents and
"Team 2" = (23, 16) for the built-in enemy (read from the ``.SC2Map`` files, see spec §5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAP_SIZE = 32
ALLY_SPAWN = (9.0, 16.0)
ENEMY_SPAWN = (23.0, 16.0)

# One-hot unit-type index per SMAC ``map_type``. Allies use consecutive RL unit ids counted from the
# smallest; enemies use stock ids, which SMAC offsets so that in "stalkers_and_zealots" the zealot comes
# first: the enemy order is swapped relative to the allies (SMAC's own code comments say so). In "MMM"
# both sides read marauder 0, marine 1, medivac 2 (SMAC's ``_init_ally_unit_types`` and
# ``get_unit_type_id``: stock ids marauder 51 -> 0, marine 48 -> 1, anything else -> 2).
_ALLY_TYPE_INDEX = {"stalkers_and_zealots": {"stalker": 0, "zealot": 1},
                    "MMM": {"marauder": 0, "marine": 1, "medivac": 2}}
_ENEMY_TYPE_INDEX = {"stalkers_and_zealots": {"zealot": 0, "stalker": 1},
                     "MMM": {"marauder": 0, "marine": 1, "medivac": 2}}


def _strip_terrain() -> np.ndarray:
    """BraxisAlpha arenas: a pathable strip y in [8, 24) across the whole width (indexed [x, y])."""
    grid = np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.bool_)
    grid[:, 8:24] = True
    return grid


def _open_terrain() -> np.ndarray:
    """Agria arenas (3s_vs_Nz): flat, every cell pathable."""
    return np.ones((MAP_SIZE, MAP_SIZE), dtype=np.bool_)


TERRAINS = {"strip": _strip_terrain, "open": _open_terrain}


@dataclass(frozen=True)
class Scenario:
    name: str
    allies: tuple[tuple[str, int], ...]  # (unit type, count), in creation order
    enemies: tuple[tuple[str, int], ...]
    episode_limit: int
    a_race: str
    b_race: str
    unit_type_bits: int
    map_type: str
    terrain: str

    @property
    def n_agents(self) -> int:
        return sum(n for _, n in self.allies)

    @property
    def n_enemies(self) -> int:
        return sum(n for _, n in self.enemies)

    def ally_unit_names(self) -> list[str]:
        return [u for u, n in self.allies for _ in range(n)]

    def enemy_unit_names(self) -> list[str]:
        return [u for u, n in self.enemies for _ in range(n)]

    def ally_type_index(self, unit: str) -> int:
        """Column of ``unit`` in the allies' one-hot type features (-1 when the map has none)."""
        return _ALLY_TYPE_INDEX.get(self.map_type, {}).get(unit, 0) if self.unit_type_bits else -1

    def enemy_type_index(self, unit: str) -> int:
        return _ENEMY_TYPE_INDEX.get(self.map_type, {}).get(unit, 0) if self.unit_type_bits else -1

    def pathing_grid(self) -> np.ndarray:
        """``bool[32, 32]`` indexed ``[x, y]``: True where ground units may stand."""
        return TERRAINS[self.terrain]()


SCENARIOS: dict[str, Scenario] = {}


def _register(name, allies, enemies, limit, a_race, b_race, bits, map_type, terrain):
    SCENARIOS[name] = Scenario(name, tuple(allies), tuple(enemies), limit, a_race, b_race, bits,
                               map_type, terrain)


_register("3m", [("marine", 3)], [("marine", 3)], 60, "T", "T", 0, "marines", "strip")
_register("8m", [("marine", 8)], [("marine", 8)], 120, "T", "T", 0, "marines", "strip")
_register("25m", [("marine", 25)], [("marine", 25)], 150, "T", "T", 0, "marines", "strip")
_register("5m_vs_6m", [("marine", 5)], [("marine", 6)], 70, "T", "T", 0, "marines", "strip")
_register("8m_vs_9m", [("marine", 8)], [("marine", 9)], 120, "T", "T", 0, "marines", "strip")
_register("10m_vs_11m", [("marine", 10)], [("marine", 11)], 150, "T", "T", 0, "marines", "strip")
_register("27m_vs_30m", [("marine", 27)], [("marine", 30)], 180, "T", "T", 0, "marines", "strip")
_register("2m_vs_1z", [("marine", 2)], [("zealot", 1)], 150, "T", "P", 0, "marines", "strip")
_register("2s3z", [("stalker", 2), ("zealot", 3)], [("stalker", 2), ("zealot", 3)], 120, "P", "P", 2,
          "stalkers_and_zealots", "strip")
_register("3s5z", [("stalker", 3), ("zealot", 5)], [("stalker", 3), ("zealot", 5)], 150, "P", "P", 2,
          "stalkers_and_zealots", "strip")
_register("3s5z_vs_3s6z", [("stalker", 3), ("zealot", 5)], [("stalker", 3), ("zealot", 6)], 170, "P",
          "P", 2, "stalkers_and_zealots", "strip")
_register("3s_vs_3z", [("stalker", 3)], [("zealot", 3)], 150, "P", "P", 0, "stalkers", "open")
_register("3s_vs_4z", [("stalker", 3)], [("zealot", 4)], 200, "P", "P", 0, "stalkers", "open")
_register("3s_vs_5z", [("stalker", 3)], [("zealot", 5)], 250, "P", "P", 0, "stalkers", "open")
# MMM maps (``smac_maps.py``): agents are listed in SMAC's unit-type order (marauders, marines, medivac);
# the enemies in the same order (SMAC lists them in SC2's observation order, which the map does not fix).
# Terrain: SMAClite's MMM/MMM2 use its "SIMPLE" preset, the BraxisAlpha strip (spec §5 for 5m_vs_6m).
_register("MMM", [("marauder", 2), ("marine", 7), ("medivac", 1)],
          [("marauder", 2), ("marine", 7), ("medivac", 1)], 150, "T", "T", 3, "MMM", "strip")
_register("MMM2", [("marauder", 2), ("marine", 7), ("medivac", 1)],
          [("marauder", 3), ("marine", 8), ("medivac", 1)], 180, "T", "T", 3, "MMM", "strip")


def get_scenario(map_name: str) -> Scenario:
    """Look a scenario up by SMAC map name; an unknown name is an error listing the available maps."""
    if map_name not in SCENARIOS:
        raise ValueError(
            f"Unknown map {map_name!r}. The embedded simulator offers: {', '.join(sorted(SCENARIOS))}. "
            "Use backend=starcraft2 (the real game) for other SMAC maps.")
    return SCENARIOS[map_name]

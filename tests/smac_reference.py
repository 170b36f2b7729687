"""SMAC v1's observation, state and action-mask computations, restated in plain loop-based Python.

This module is a test oracle for the embedded simulator (``envs.sim``). It re-states, over simple unit
records, what oxwhirl/smac's ``smac/env/starcraft2/starcraft2.py`` (commit 8c4fff48, which
``requirements-sc2.txt`` pins) computes in ``get_obs_agent``, ``get_state`` (``get_state_dict``), ``get_avail_agent_actions`` (with ``can_move`` / ``check_bounds``),
``get_surrounding_pathing`` / ``get_surrounding_height``, ``get_obs_size`` (and the ``get_obs_*_size``
helpers), ``get_state_size``, ``get_env_info``, ``unit_max_shield``, ``unit_max_cooldown`` and
``get_unit_type_id``, with the map registry of ``smac/env/starcraft2/maps/smac_maps.py``. It also
re-states what happens to rewards and episode ends after SC2 has advanced: ``update_units`` (the
battle outcome), ``reward_battle`` (the dense reward and its death trackers), ``only_medivac_left``, the
reward / ``terminated`` / ``info`` part of ``step`` and the counters of ``get_stats``. It is written
independently of the simulator: one unit at a time, in SMAC's order, with SMAC's comparisons.

What it keeps from SMAC on purpose, because the simulator must reproduce it:

* Feature order: ``move | enemies | allies | own`` in the observation, ``allies | enemies | last
  actions | timestep`` in the state.
* Sight is strict (``dist < 9``), shooting inclusive (``dist <= 6``), centre to centre, with the
  float64 ``math.hypot`` distance SMAC uses.
* Movement and pathing probe cells with ``int()`` (truncation towards zero, so ``int(-0.5) == 0``), and
  pathing points outside the map read as 1.
* Unit types are SC2 unit-type ids: allies are SMAC's consecutive "RL" ids counted from the smallest
  one present; enemies keep the stock ids, so in ``stalkers_and_zealots`` maps the enemy one-hot is
  ``unit_type - 73`` (zealot 0, stalker 1), swapped relative to the allies (stalker 0, zealot 1). In the
  state the type bits go to column ``type_id - unit_type_bits``.
* ``obs_all_health=True`` forces ``obs_own_health=True``.
* MMM maps: a medivac's actions ``6 + j`` heal ally ``j`` (living non-medivac allies within 6, any
  health); its observation's enemy rows take their first feature from those heal actions; its state row
  shows ``energy / 200`` instead of the weapon cooldown; ``only_medivac_left`` decides the battle.
* ``obs_timestep_number`` reserves one (always zero) slot in the own features *and* appends
  ``episode_steps / episode_limit``, so the vector is one longer than ``get_obs_size()``. Like SMAC,
  this module then returns the observation as float64 (``np.append`` of a Python float); everywhere
  else observations are float32 and states are computed in float64 and cast to float32, exactly as in
  SMAC.
* Dead agents (health 0) observe all zeros (plus the appended timestep) and may only no-op.
* The state normalises positions around the map centre ``map_x / 2 = 16`` by the playable size
  ``max_distance = 32`` (every SMAC arena is 32 x 32).
* Rewards: a unit's "health" in the reward is health + shield; a death is rewarded once (the death
  trackers); with ``reward_only_positive`` the reward is the ``abs`` of damage dealt plus kill bonuses,
  so enemy shield regeneration *adds* reward; ``reward_sparse`` replaces the whole step reward by +1 /
  -1 on a win / defeat (0 otherwise) and is still divided by ``max_reward / reward_scale_rate`` when
  ``reward_scale`` is on; a draw (both armies gone in the same step) ends the episode with no bonus; a
  battle that ends on the last allowed step is a win / defeat / draw, not a timeout.

The pathing grid is the simulator's own data (SC2 hands SMAC the real one at launch): pass
``env.pathing_grid`` (``bool[map_x, map_y]``, indexed ``[x, y]`` like SMAC's ``self.pathing_grid``).

Typical use::

    ref = SmacReference("3m", pathing_grid=env.pathing_grid, obs_last_action=True)
    ref.set_units(allies=[make_unit("marine", 10.0, 16.0, 45.0), ...], enemies=[...],
                  last_action=np.eye(9)[[1, 1, 0]], episode_steps=3)
    ref.get_obs()            # list of n_agents arrays
    ref.get_state()          # float32 [state_size] (or the concatenated observations)
    ref.get_avail_actions()  # list of n_agents lists of n_actions ints

    # after the game has advanced one agent step, from the same situation:
    reward, terminated, info = ref.step_reward_and_termination(allies_after, enemies_after)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

#: ``smac_maps.py``'s ``map_param_registry`` (1c3s5z is from later SMAC versions, which add the
#: ``colossi_stalkers_zealots`` map type).
MAP_PARAMS: dict[str, dict] = {
    name: dict(n_agents=n, n_enemies=m, limit=limit, a_race=a, b_race=b, unit_type_bits=bits,
               map_type=map_type)
    for name, n, m, limit, a, b, bits, map_type in (
        ("3m", 3, 3, 60, "T", "T", 0, "marines"),
        ("8m", 8, 8, 120, "T", "T", 0, "marines"),
        ("25m", 25, 25, 150, "T", "T", 0, "marines"),
        ("5m_vs_6m", 5, 6, 70, "T", "T", 0, "marines"),
        ("8m_vs_9m", 8, 9, 120, "T", "T", 0, "marines"),
        ("10m_vs_11m", 10, 11, 150, "T", "T", 0, "marines"),
        ("27m_vs_30m", 27, 30, 180, "T", "T", 0, "marines"),
        ("MMM", 10, 10, 150, "T", "T", 3, "MMM"),
        ("MMM2", 10, 12, 180, "T", "T", 3, "MMM"),
        ("2s3z", 5, 5, 120, "P", "P", 2, "stalkers_and_zealots"),
        ("3s5z", 8, 8, 150, "P", "P", 2, "stalkers_and_zealots"),
        ("3s5z_vs_3s6z", 8, 9, 170, "P", "P", 2, "stalkers_and_zealots"),
        ("1c3s5z", 9, 9, 180, "P", "P", 3, "colossi_stalkers_zealots"),
        ("3s_vs_3z", 3, 3, 150, "P", "P", 0, "stalkers"),
        ("3s_vs_4z", 3, 4, 200, "P", "P", 0, "stalkers"),
        ("3s_vs_5z", 3, 5, 250, "P", "P", 0, "stalkers"),
        ("2m_vs_1z", 2, 1, 150, "T", "P", 0, "marines"),
        ("corridor", 6, 24, 400, "P", "Z", 0, "zealots"),
        ("6h_vs_8z", 6, 8, 150, "Z", "P", 0, "hydralisks"),
        ("2s_vs_1sc", 2, 1, 300, "P", "Z", 0, "stalkers"),
        ("so_many_baneling", 7, 32, 100, "P", "Z", 0, "zealots"),
        ("bane_vs_bane", 24, 24, 200, "Z", "Z", 2, "bane"),
        ("2c_vs_64zg", 2, 64, 400, "P", "Z", 0, "colossus"),
    )
}

#: SC2's stock unit-type ids (what SMAC sees for the built-in enemy's units).
STOCK_UNIT_TYPE_IDS = {"colossus": 4, "baneling": 9, "marine": 48, "marauder": 51, "medivac": 54,
                       "zealot": 73, "stalker": 74, "spine_crawler": 98, "zergling": 105,
                       "hydralisk": 107}

#: SMAC's ``_init_ally_unit_types``: the agents' "RL" unit types, in the order of their consecutive ids.
RL_UNIT_ORDER = {"marines": ("marine",), "stalkers_and_zealots": ("stalker", "zealot"),
                 "colossi_stalkers_zealots": ("colossus", "stalker", "zealot"),
                 "MMM": ("marauder", "marine", "medivac"), "zealots": ("zealot",),
                 "hydralisks": ("hydralisk",), "stalkers": ("stalker",), "colossus": ("colossus",),
                 "bane": ("baneling", "zergling")}

#: Any id above the stock ones: the map files' RL units are custom types with larger ids. Only the
#: differences between RL ids matter to SMAC, and that they never equal a stock id.
RL_UNIT_TYPE_BASE = 1970

#: Maximum health and shields (SMAC reads ``health_max`` / ``shield_max`` from SC2; spec §4).
HEALTH_MAX = {"marine": 45.0, "marauder": 125.0, "medivac": 150.0, "stalker": 80.0, "zealot": 100.0,
              "colossus": 200.0, "hydralisk": 80.0, "zergling": 35.0, "baneling": 30.0,
              "spine_crawler": 300.0}
SHIELD_MAX = {"stalker": 80.0, "zealot": 50.0, "colossus": 150.0}

N_ACTIONS_NO_ATTACK = 6
N_ACTIONS_MOVE = 4
N_OBS_PATHING = 8
N_OBS_HEIGHT = 9
SIGHT_RANGE = 9  # SMAC v1's unit_sight_range, an int
SHOOT_RANGE = 6  # SMAC v1's unit_shoot_range, an int
NORTH, SOUTH, EAST, WEST = range(4)


@dataclass
class Unit:
    """One unit as SMAC reads it from SC2's raw observation (``health == 0`` means dead)."""

    unit_type: str  # "marine", "stalker", "zealot", ...
    x: float
    y: float
    health: float
    health_max: float
    shield: float = 0.0
    shield_max: float = 0.0
    weapon_cooldown: float = 0.0  # game loops until the weapon is ready
    energy: float = 0.0  # medivacs only


def make_unit(unit_type: str, x: float, y: float, health: float, shield: float = 0.0,
              weapon_cooldown: float = 0.0, energy: float = 0.0) -> Unit:
    """A ``Unit`` with SC2's ``health_max`` / ``shield_max`` for its type."""
    return Unit(unit_type, x, y, health, HEALTH_MAX[unit_type], shield, SHIELD_MAX.get(unit_type, 0.0),
                weapon_cooldown, energy)


@dataclass
class _Sc2Unit:
    """A unit with SMAC's numeric view of its type (an SC2 unit-type id)."""

    unit_type: int
    x: float
    y: float
    health: float
    health_max: float
    shield: float
    shield_max: float
    weapon_cooldown: float
    energy: float


class SmacReference:
    """SMAC's feature builders for one map and flag set, over a unit situation set with ``set_units``.

    ``pathing_grid``: bool ``[map_x, map_y]`` indexed ``[x, y]``; ``terrain_height``: float
    ``[map_x, map_y]`` already divided by 255 (only needed with ``obs_terrain_height``). The keyword
    flags have SMAC's names and defaults.
    """

    def __init__(self, map_name: str, pathing_grid, terrain_height=None, *, move_amount: int = 2,
                 obs_all_health: bool = True, obs_own_health: bool = True, obs_last_action: bool = False,
                 obs_pathing_grid: bool = False, obs_terrain_height: bool = False,
                 obs_instead_of_state: bool = False, obs_timestep_number: bool = False,
                 state_last_action: bool = True, state_timestep_number: bool = False,
                 reward_sparse: bool = False, reward_only_positive: bool = True,
                 reward_death_value: float = 10, reward_win: float = 200, reward_defeat: float = 0,
                 reward_negative_scale: float = 0.5, reward_scale: bool = True,
                 reward_scale_rate: float = 20, continuing_episode: bool = False, map_x: int = 32,
                 map_y: int = 32, max_distance_x: float = 32, max_distance_y: float = 32):
        params = MAP_PARAMS[map_name]
        self.map_name = map_name
        self.n_agents = params["n_agents"]
        self.n_enemies = params["n_enemies"]
        self.episode_limit = params["limit"]
        self.map_type = params["map_type"]
        self.unit_type_bits = params["unit_type_bits"]
        self.shield_bits_ally = 1 if params["a_race"] == "P" else 0
        self.shield_bits_enemy = 1 if params["b_race"] == "P" else 0
        self.n_actions = N_ACTIONS_NO_ATTACK + self.n_enemies
        self.move_amount = move_amount

        self.obs_all_health = obs_all_health
        # SMAC: obs_own_health is ignored (forced on) when obs_all_health is set
        self.obs_own_health = True if obs_all_health else obs_own_health
        self.obs_last_action = obs_last_action
        self.obs_pathing_grid = obs_pathing_grid
        self.obs_terrain_height = obs_terrain_height
        self.obs_instead_of_state = obs_instead_of_state
        self.obs_timestep_number = obs_timestep_number
        self.state_last_action = state_last_action
        self.state_timestep_number = state_timestep_number

        self.map_x, self.map_y = map_x, map_y
        self.max_distance_x, self.max_distance_y = max_distance_x, max_distance_y
        self.pathing_grid = np.asarray(pathing_grid)
        self.terrain_height = None if terrain_height is None else np.asarray(terrain_height)
        if self.pathing_grid.shape != (map_x, map_y):
            raise ValueError(f"pathing_grid must have shape ({map_x}, {map_y}) indexed [x, y], "
                             f"got {self.pathing_grid.shape}.")

        self.ally_state_attr_names = ["health", "energy/cooldown", "rel_x", "rel_y"]
        self.enemy_state_attr_names = ["health", "rel_x", "rel_y"]
        if self.shield_bits_ally:
            self.ally_state_attr_names.append("shield")
        if self.shield_bits_enemy:
            self.enemy_state_attr_names.append("shield")
        type_names = [f"type_{bit}" for bit in range(self.unit_type_bits)]
        self.ally_state_attr_names += type_names
        self.enemy_state_attr_names += type_names

        self.reward_sparse = reward_sparse
        self.reward_only_positive = reward_only_positive
        self.reward_death_value = reward_death_value
        self.reward_win = reward_win
        self.reward_defeat = reward_defeat
        self.reward_negative_scale = reward_negative_scale
        self.reward_scale = reward_scale
        self.reward_scale_rate = reward_scale_rate
        self.continuing_episode = continuing_episode

        # SMAC starts max_reward at n_enemies * death value + win, then adds the enemies' full health
        # and shields when it first sees them (init_units, first episode only).
        self.max_reward = self.n_enemies * reward_death_value + reward_win
        # reward bookkeeping of the current episode (see set_units) and the counters of get_stats
        self.death_tracker_ally = [0] * self.n_agents
        self.death_tracker_enemy = [0] * self.n_enemies
        self.previous_ally_units: list[_Sc2Unit] | None = None
        self.previous_enemy_units: list[_Sc2Unit] | None = None
        self.win_counted = self.defeat_counted = False
        self.battles_won = self.battles_game = self.timeouts = 0
        self._first_situation = True
        self.agents: list[_Sc2Unit] = []
        self.enemies: list[_Sc2Unit] = []
        self.last_action = np.zeros((self.n_agents, self.n_actions))
        self.episode_steps = 0
        self._min_unit_type = 0
        self.marine_id = self.marauder_id = self.medivac_id = 0
        self.hydralisk_id = self.zergling_id = self.baneling_id = 0
        self.stalker_id = self.colossus_id = self.zealot_id = 0

    # ------------------------------------------------------------------ the unit situation
    def set_units(self, allies: list[Unit], enemies: list[Unit], last_action=None,
                  episode_steps: int = 0) -> None:
        """Set the units (allies in agent-id order, enemies in enemy-id order), the previous step's
        one-hot actions ``[n_agents, n_actions]`` (``None``: none yet, as after ``reset``) and the
        episode step counter."""
        if len(allies) != self.n_agents or len(enemies) != self.n_enemies:
            raise ValueError(f"{self.map_name} has {self.n_agents} agents and {self.n_enemies} enemies, "
                             f"got {len(allies)} and {len(enemies)} units.")
        rl_order = RL_UNIT_ORDER[self.map_type]
        self.agents = [self._sc2_unit(u, RL_UNIT_TYPE_BASE + rl_order.index(u.unit_type)) for u in allies]
        self.enemies = [self._sc2_unit(u, STOCK_UNIT_TYPE_IDS[u.unit_type]) for u in enemies]
        if self._first_situation:
            for e_unit in self.enemies:
                self.max_reward += e_unit.health_max + e_unit.shield_max
            self._init_ally_unit_types(min(a.unit_type for a in self.agents))
            self._first_situation = False
        if last_action is None:
            self.last_action = np.zeros((self.n_agents, self.n_actions))
        else:
            self.last_action = np.asarray(last_action, dtype=np.float64).reshape(self.n_agents,
                                                                                 self.n_actions)
        self.episode_steps = episode_steps
        # The situation starts the reward bookkeeping afresh, as SMAC's reset() does, with one
        # difference that keeps it consistent with an episode that reached it: units already dead
        # here died in an earlier step, which rewarded their death, so their trackers are set.
        self.death_tracker_ally = [1 if a.health == 0 else 0 for a in self.agents]
        self.death_tracker_enemy = [1 if e.health == 0 else 0 for e in self.enemies]
        self.previous_ally_units = self.previous_enemy_units = None
        self.win_counted = self.defeat_counted = False

    @staticmethod
    def _sc2_unit(u: Unit, type_id: int) -> _Sc2Unit:
        return _Sc2Unit(type_id, u.x, u.y, u.health, u.health_max, u.shield, u.shield_max,
                        u.weapon_cooldown, u.energy)

    def _init_ally_unit_types(self, min_unit_type: int) -> None:
        """The RL ids of each type present on this map type, consecutive from ``min_unit_type``."""
        self._min_unit_type = min_unit_type
        for offset, name in enumerate(RL_UNIT_ORDER[self.map_type]):
            setattr(self, f"{name}_id", min_unit_type + offset)

    # ------------------------------------------------------------------ per-unit constants
    def unit_max_cooldown(self, unit: _Sc2Unit) -> float:
        """SMAC's table keyed by the ally ids; anything else falls back to 15. Ids of types absent
        from the map are all 0, so later entries of the table overwrite earlier ones there."""
        table = {}
        for type_id, value in ((self.marine_id, 15), (self.marauder_id, 25), (self.medivac_id, 200),
                               (self.stalker_id, 35), (self.zealot_id, 22), (self.colossus_id, 24),
                               (self.hydralisk_id, 10), (self.zergling_id, 11), (self.baneling_id, 1)):
            table[type_id] = value
        return table.get(unit.unit_type, 15)

    def unit_max_shield(self, unit: _Sc2Unit):
        """80 for stalkers, 50 for zealots, 150 for colossi (stock id or this map's RL id); None else."""
        t = unit.unit_type
        if t == STOCK_UNIT_TYPE_IDS["stalker"] or t == self.stalker_id:
            return 80
        if t == STOCK_UNIT_TYPE_IDS["zealot"] or t == self.zealot_id:
            return 50
        if t == STOCK_UNIT_TYPE_IDS["colossus"] or t == self.colossus_id:
            return 150
        return None

    def get_unit_type_id(self, unit: _Sc2Unit, ally: bool) -> int:
        """Column of the unit's type in the one-hot features."""
        if ally:
            return unit.unit_type - self._min_unit_type
        t = unit.unit_type
        if self.map_type == "stalkers_and_zealots":
            return t - STOCK_UNIT_TYPE_IDS["zealot"]  # zealot 0, stalker 1: swapped w.r.t. allies
        if self.map_type == "colossi_stalkers_zealots":
            return {STOCK_UNIT_TYPE_IDS["colossus"]: 0, STOCK_UNIT_TYPE_IDS["stalker"]: 1}.get(t, 2)
        if self.map_type == "bane":
            return 0 if t == STOCK_UNIT_TYPE_IDS["baneling"] else 1
        if self.map_type == "MMM":
            return {STOCK_UNIT_TYPE_IDS["marauder"]: 0, STOCK_UNIT_TYPE_IDS["marine"]: 1}.get(t, 2)
        raise ValueError(f"map type {self.map_type!r} has no enemy unit-type bits")

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def distance(x1: float, y1: float, x2: float, y2: float) -> float:
        return math.hypot(x2 - x1, y2 - y1)

    def check_bounds(self, x: int, y: int) -> bool:
        return 0 <= x < self.map_x and 0 <= y < self.map_y

    def can_move(self, unit: _Sc2Unit, direction: int) -> bool:
        """The cell half a move away (int-truncated) must be inside the map and pathable."""
        m = self.move_amount / 2
        if direction == NORTH:
            cell = int(unit.x), int(unit.y + m)
        elif direction == SOUTH:
            cell = int(unit.x), int(unit.y - m)
        elif direction == EAST:
            cell = int(unit.x + m), int(unit.y)
        else:
            cell = int(unit.x - m), int(unit.y)
        return bool(self.check_bounds(*cell) and self.pathing_grid[cell])

    def surrounding_points(self, unit: _Sc2Unit, include_self: bool) -> list[tuple[int, int]]:
        """N, S, E, W at twice the move amount, then NE, SW, SE, NW at the move amount (and the
        unit's own cell last), around the int-truncated position."""
        x, y = int(unit.x), int(unit.y)
        ma = self.move_amount
        points = [(x, y + 2 * ma), (x, y - 2 * ma), (x + 2 * ma, y), (x - 2 * ma, y),
                  (x + ma, y + ma), (x - ma, y - ma), (x + ma, y - ma), (x - ma, y + ma)]
        if include_self:
            points.append((x, y))
        return points

    def surrounding_pathing(self, unit: _Sc2Unit) -> list:
        return [self.pathing_grid[p] if self.check_bounds(*p) else 1
                for p in self.surrounding_points(unit, include_self=False)]

    def surrounding_height(self, unit: _Sc2Unit) -> list:
        if self.terrain_height is None:
            raise ValueError("obs_terrain_height needs the terrain_height grid.")
        return [self.terrain_height[p] if self.check_bounds(*p) else 1
                for p in self.surrounding_points(unit, include_self=True)]

    # ------------------------------------------------------------------ actions
    def get_avail_agent_actions(self, agent_id: int) -> list[int]:
        unit = self.agents[agent_id]
        if not unit.health > 0:
            return [1] + [0] * (self.n_actions - 1)  # dead: no-op only
        avail = [0] * self.n_actions
        avail[1] = 1  # stop
        for direction in (NORTH, SOUTH, EAST, WEST):
            if self.can_move(unit, direction):
                avail[2 + direction] = 1
        if self.map_type == "MMM" and unit.unit_type == self.medivac_id:
            # medivacs heal alive allies that are not medivacs
            targets = [(t_id, t) for t_id, t in enumerate(self.agents) if t.unit_type != self.medivac_id]
        else:
            targets = list(enumerate(self.enemies))
        for t_id, target in targets:
            if target.health > 0 and self.distance(unit.x, unit.y, target.x, target.y) <= SHOOT_RANGE:
                avail[N_ACTIONS_NO_ATTACK + t_id] = 1
        return avail

    def get_avail_actions(self) -> list[list[int]]:
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    # ------------------------------------------------------------------ sizes
    def obs_move_feats_size(self) -> int:
        size = N_ACTIONS_MOVE
        if self.obs_pathing_grid:
            size += N_OBS_PATHING
        if self.obs_terrain_height:
            size += N_OBS_HEIGHT
        return size

    def obs_enemy_feats_size(self) -> tuple[int, int]:
        nf = 4 + self.unit_type_bits
        if self.obs_all_health:
            nf += 1 + self.shield_bits_enemy
        return self.n_enemies, nf

    def obs_ally_feats_size(self) -> tuple[int, int]:
        nf = 4 + self.unit_type_bits
        if self.obs_all_health:
            nf += 1 + self.shield_bits_ally
        if self.obs_last_action:
            nf += self.n_actions
        return self.n_agents - 1, nf

    def obs_own_feats_size(self) -> int:
        size = self.unit_type_bits
        if self.obs_own_health:
            size += 1 + self.shield_bits_ally
        if self.obs_timestep_number:
            size += 1  # reserved, never written: the timestep is appended after the vector instead
        return size

    def get_obs_size(self) -> int:
        n_en, nf_en = self.obs_enemy_feats_size()
        n_al, nf_al = self.obs_ally_feats_size()
        return self.obs_move_feats_size() + n_en * nf_en + n_al * nf_al + self.obs_own_feats_size()

    def get_state_size(self) -> int:
        if self.obs_instead_of_state:
            return self.get_obs_size() * self.n_agents
        size = (self.n_agents * (4 + self.shield_bits_ally + self.unit_type_bits)
                + self.n_enemies * (3 + self.shield_bits_enemy + self.unit_type_bits))
        if self.state_last_action:
            size += self.n_agents * self.n_actions
        if self.state_timestep_number:
            size += 1
        return size

    def get_env_info(self) -> dict:
        return {"state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
                "n_actions": self.n_actions, "n_agents": self.n_agents,
                "episode_limit": self.episode_limit,
                "agent_features": list(self.ally_state_attr_names),
                "enemy_features": list(self.enemy_state_attr_names)}

    # ------------------------------------------------------------------ observation
    def _health_and_type(self, row: np.ndarray, ind: int, unit: _Sc2Unit, ally: bool,
                         with_health: bool) -> int:
        """Write ``[health, shield (P), type one-hot]`` into ``row`` from ``ind``; returns the next index."""
        shield_bits = self.shield_bits_ally if ally else self.shield_bits_enemy
        if with_health:
            row[ind] = unit.health / unit.health_max
            ind += 1
            if shield_bits > 0:
                row[ind] = unit.shield / self.unit_max_shield(unit)
                ind += 1
        if self.unit_type_bits > 0:
            row[ind + self.get_unit_type_id(unit, ally)] = 1
            ind += self.unit_type_bits
        return ind

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        """``concat(move, enemies, allies, own)`` float32 (float64 with ``obs_timestep_number``)."""
        unit = self.agents[agent_id]
        move_feats = np.zeros(self.obs_move_feats_size(), dtype=np.float32)
        enemy_feats = np.zeros(self.obs_enemy_feats_size(), dtype=np.float32)
        ally_feats = np.zeros(self.obs_ally_feats_size(), dtype=np.float32)
        own_feats = np.zeros(self.obs_own_feats_size(), dtype=np.float32)

        if unit.health > 0:
            x, y = unit.x, unit.y
            avail = self.get_avail_agent_actions(agent_id)
            for m in range(N_ACTIONS_MOVE):
                move_feats[m] = avail[2 + m]
            ind = N_ACTIONS_MOVE
            if self.obs_pathing_grid:
                move_feats[ind:ind + N_OBS_PATHING] = self.surrounding_pathing(unit)
                ind += N_OBS_PATHING
            if self.obs_terrain_height:
                move_feats[ind:] = self.surrounding_height(unit)

            for e_id, e_unit in enumerate(self.enemies):
                dist = self.distance(x, y, e_unit.x, e_unit.y)
                if dist < SIGHT_RANGE and e_unit.health > 0:
                    row = enemy_feats[e_id]
                    row[0] = avail[N_ACTIONS_NO_ATTACK + e_id]
                    row[1] = dist / SIGHT_RANGE
                    row[2] = (e_unit.x - x) / SIGHT_RANGE
                    row[3] = (e_unit.y - y) / SIGHT_RANGE
                    self._health_and_type(row, 4, e_unit, ally=False, with_health=self.obs_all_health)

            others = [al_id for al_id in range(self.n_agents) if al_id != agent_id]
            for slot, al_id in enumerate(others):
                al_unit = self.agents[al_id]
                dist = self.distance(x, y, al_unit.x, al_unit.y)
                if dist < SIGHT_RANGE and al_unit.health > 0:
                    row = ally_feats[slot]
                    row[0] = 1
                    row[1] = dist / SIGHT_RANGE
                    row[2] = (al_unit.x - x) / SIGHT_RANGE
                    row[3] = (al_unit.y - y) / SIGHT_RANGE
                    ind = self._health_and_type(row, 4, al_unit, ally=True,
                                                with_health=self.obs_all_health)
                    if self.obs_last_action:
                        row[ind:] = self.last_action[al_id]

            self._health_and_type(own_feats, 0, unit, ally=True, with_health=self.obs_own_health)

        obs = np.concatenate([move_feats.ravel(), enemy_feats.ravel(), ally_feats.ravel(),
                              own_feats.ravel()])
        if self.obs_timestep_number:
            obs = np.append(obs, self.episode_steps / self.episode_limit)
        return obs

    def get_obs(self) -> list[np.ndarray]:
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    # ------------------------------------------------------------------ state
    def get_state(self) -> np.ndarray:
        """float32 ``[state vector]``: allies, enemies, last actions, timestep (SMAC's order)."""
        if self.obs_instead_of_state:
            return np.concatenate(self.get_obs(), axis=0).astype(np.float32)

        nf_al = len(self.ally_state_attr_names)
        nf_en = len(self.enemy_state_attr_names)
        ally_state = np.zeros((self.n_agents, nf_al))  # float64, cast once at the end
        enemy_state = np.zeros((self.n_enemies, nf_en))
        center_x = self.map_x / 2
        center_y = self.map_y / 2

        for al_id, al_unit in enumerate(self.agents):
            if al_unit.health > 0:
                row = ally_state[al_id]
                max_cd = self.unit_max_cooldown(al_unit)
                row[0] = al_unit.health / al_unit.health_max
                if self.map_type == "MMM" and al_unit.unit_type == self.medivac_id:
                    row[1] = al_unit.energy / max_cd
                else:
                    row[1] = al_unit.weapon_cooldown / max_cd
                row[2] = (al_unit.x - center_x) / self.max_distance_x
                row[3] = (al_unit.y - center_y) / self.max_distance_y
                if self.shield_bits_ally > 0:
                    row[4] = al_unit.shield / self.unit_max_shield(al_unit)
                if self.unit_type_bits > 0:
                    row[self.get_unit_type_id(al_unit, True) - self.unit_type_bits] = 1

        for e_id, e_unit in enumerate(self.enemies):
            if e_unit.health > 0:
                row = enemy_state[e_id]
                row[0] = e_unit.health / e_unit.health_max
                row[1] = (e_unit.x - center_x) / self.max_distance_x
                row[2] = (e_unit.y - center_y) / self.max_distance_y
                if self.shield_bits_enemy > 0:
                    row[3] = e_unit.shield / self.unit_max_shield(e_unit)
                if self.unit_type_bits > 0:
                    row[self.get_unit_type_id(e_unit, False) - self.unit_type_bits] = 1

        parts = [ally_state.ravel(), enemy_state.ravel()]
        if self.state_last_action:
            parts.append(self.last_action.ravel())
        if self.state_timestep_number:
            parts.append(np.array([self.episode_steps / self.episode_limit]))
        return np.concatenate(parts).astype(np.float32)

    # ------------------------------------------------------------------ rewards and episode end
    def only_medivac_left(self, ally: bool) -> bool:
        """SMAC's ``only_medivac_left`` (MMM maps only), quirks included.

        For the agents: no living agent other than a medivac. For the enemy, SMAC filters out units of
        the *agents'* medivac id, which enemy units never have (they carry the stock id 54), so it keeps
        every living enemy and asks that exactly one be left and that it be a medivac.
        """
        if self.map_type != "MMM":
            return False
        units = self.agents if ally else self.enemies
        alive = [u for u in units if u.health > 0 and u.unit_type != self.medivac_id]
        if ally:
            return len(alive) == 0
        return len(alive) == 1 and alive[0].unit_type == STOCK_UNIT_TYPE_IDS["medivac"]

    def update_units(self, allies: list[Unit], enemies: list[Unit]):
        """SMAC's ``update_units``: take in the units SC2 reports after a step; 1 won, -1 lost, 0 draw,
        ``None`` while the battle goes on.

        ``allies`` / ``enemies`` are the units after the step in id order, a dead one with health 0.
        SC2 leaves dead units out of its observation, so SMAC keeps a dead unit's last record and only
        zeroes its health; the values given for a dead unit (other than its health) are ignored here
        for the same reason. The previous records are kept for ``reward_battle``.
        """
        if len(allies) != self.n_agents or len(enemies) != self.n_enemies:
            raise ValueError(f"{self.map_name} has {self.n_agents} agents and {self.n_enemies} enemies, "
                             f"got {len(allies)} and {len(enemies)} units.")
        self.previous_ally_units = [copy.copy(u) for u in self.agents]
        self.previous_enemy_units = [copy.copy(u) for u in self.enemies]

        n_alive = []
        for records, new_units in ((self.agents, allies), (self.enemies, enemies)):
            count = 0
            for u_id, new in enumerate(new_units):
                old = records[u_id]
                if new.health < 0:
                    raise ValueError(f"unit {u_id} reports health {new.health}; SC2 never reports "
                                     f"negative health.")
                if new.health > 0:  # still in SC2's observation
                    if old.health == 0:
                        raise ValueError(f"unit {u_id} was dead and has health {new.health} again; "
                                         f"SC2 does not bring units back.")
                    records[u_id] = self._sc2_unit(new, old.unit_type)
                    count += 1
                else:  # gone from the observation: dead
                    old.health = 0
            n_alive.append(count)
        n_ally_alive, n_enemy_alive = n_alive

        # SMAC's order: defeat first, then win, then draw (on MMM maps a draw therefore reads as a
        # defeat, because no agent but medivacs is left)
        if (n_ally_alive == 0 and n_enemy_alive > 0) or self.only_medivac_left(ally=True):
            return -1
        if (n_ally_alive > 0 and n_enemy_alive == 0) or self.only_medivac_left(ally=False):
            return 1
        if n_ally_alive == 0 and n_enemy_alive == 0:
            return 0
        return None

    def reward_battle(self) -> float:
        """SMAC's ``reward_battle``: the dense reward of the step ``update_units`` just took in.

        Health here is health + shield. Enemies: damage dealt, plus ``reward_death_value`` and the
        unit's whole previous health for each enemy that died. Agents (only without
        ``reward_only_positive``): minus ``reward_negative_scale`` times the same. A unit's death is
        counted once: its death tracker is then set and the unit is skipped from there on. With
        ``reward_only_positive`` SMAC returns the ``abs`` of the enemy part, so a step in which the
        enemies' shields regenerate more than they are hurt gives a *positive* reward.
        With ``reward_sparse`` it returns 0 before touching the trackers (they are unused then).
        """
        if self.reward_sparse:
            return 0

        delta_deaths = 0
        delta_ally = 0
        delta_enemy = 0
        neg_scale = self.reward_negative_scale

        for al_id, al_unit in enumerate(self.agents):
            if self.death_tracker_ally[al_id]:
                continue  # death already rewarded
            prev = self.previous_ally_units[al_id]
            prev_health = prev.health + prev.shield
            if al_unit.health == 0:  # died in this step
                self.death_tracker_ally[al_id] = 1
                if not self.reward_only_positive:
                    delta_deaths -= self.reward_death_value * neg_scale
                delta_ally += prev_health * neg_scale
            else:
                delta_ally += neg_scale * (prev_health - al_unit.health - al_unit.shield)

        for e_id, e_unit in enumerate(self.enemies):
            if self.death_tracker_enemy[e_id]:
                continue
            prev = self.previous_enemy_units[e_id]
            prev_health = prev.health + prev.shield
            if e_unit.health == 0:
                self.death_tracker_enemy[e_id] = 1
                delta_deaths += self.reward_death_value
                delta_enemy += prev_health
            else:
                delta_enemy += prev_health - e_unit.health - e_unit.shield

        if self.reward_only_positive:
            return abs(delta_enemy + delta_deaths)  # SMAC's comment: "shield regeneration"
        return delta_enemy + delta_deaths - delta_ally

    def step_reward_and_termination(self, allies: list[Unit], enemies: list[Unit]):
        """The part of SMAC's ``step`` after SC2 has advanced: ``(reward, terminated, info)``.

        ``allies`` / ``enemies``: the units after the step (see ``update_units``). Counts the step,
        takes the units in, computes ``reward_battle``, counts dead units (health 0) for ``info``, then

        * battle over (``update_units`` not ``None``): terminated; a win adds ``reward_win`` (or makes
          the reward exactly 1 with ``reward_sparse``) and sets ``info["battle_won"]``; a defeat adds
          ``reward_defeat`` (or makes it -1); a draw adds nothing. Each counts once per episode.
        * otherwise, at ``episode_steps >= episode_limit``: terminated by timeout, with
          ``info["episode_limit"] = True`` only under ``continuing_episode``.

        Last, with ``reward_scale`` (sparse or not), the reward is divided by
        ``max_reward / reward_scale_rate``.
        """
        self.episode_steps += 1
        game_end_code = self.update_units(allies, enemies)

        terminated = False
        reward = self.reward_battle()
        info = {"battle_won": False}
        info["dead_allies"] = sum(1 for u in self.agents if u.health == 0)
        info["dead_enemies"] = sum(1 for u in self.enemies if u.health == 0)

        if game_end_code is not None:
            terminated = True
            self.battles_game += 1
            if game_end_code == 1 and not self.win_counted:
                self.battles_won += 1
                self.win_counted = True
                info["battle_won"] = True
                reward = 1 if self.reward_sparse else reward + self.reward_win
            elif game_end_code == -1 and not self.defeat_counted:
                self.defeat_counted = True
                reward = -1 if self.reward_sparse else reward + self.reward_defeat
        elif self.episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1

        if self.reward_scale:
            reward /= self.max_reward / self.reward_scale_rate
        return reward, terminated, info

    def get_stats(self) -> dict:
        """SMAC's ``get_stats`` (``win_rate`` divides by ``battles_game``, which must not be 0; this
        reference never restarts SC2, so ``restarts`` is 0)."""
        return {"battles_won": self.battles_won, "battles_game": self.battles_game,
                "battles_draw": self.timeouts, "win_rate": self.battles_won / self.battles_game,
                "timeouts": self.timeouts, "restarts": 0}

"""SMAC's observation, state, action-mask and reward builders as pure functions of unit arrays.

Every builder reads only arrays (no environment object), so it can be compared value by value with
SMAC's ``StarCraft2Env.get_obs_agent`` / ``get_state`` / ``get_avail_agent_actions`` / ``reward_battle``
for the same unit situation. Unit arrays are ``[B, U]`` with the ``N`` agents first (in agent-id order)
and the ``E`` enemies after them (``U = N + E``); a unit is dead when its health is 0.

Shapes: ``x``, ``y``, ``health``, ``shield``, ``cooldown``, ``energy``: float64 ``[B, U]``; static per-unit
arrays ``health_max``, ``shield_max`` (SMAC's ``unit_max_shield``), ``max_cooldown`` (``unit_max_cooldown``):
float64 ``[U]``; ``type_col``: int64 ``[U]``, the one-hot column of the unit's type (-1 without type bits);
``healer``: bool ``[U]``, SMAC's medivacs (their actions ``6 + j`` heal ally ``j``, and their state shows
energy instead of weapon cooldown); ``pathing``: bool ``[32, 32]`` indexed ``[x, y]``; ``last_action``:
int64 ``[B, N]`` (-1 = none yet).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: Options of every simulator kernel (these builders and ``engine``'s step). They allocate nothing, so they are
#: compiled without Numba's runtime (``_nrt=False``, a private option: requirements.txt pins Numba's minor
#: versions): it would reference-count every array handed to an inlined helper, with atomic operations (see
#: ``engine._jit_variant``).
KERNEL_OPTIONS = dict(cache=True, _nrt=False)

#: SMAC v1 uses one sight and one shoot range for every unit.
SIGHT_RANGE = 9.0
SHOOT_RANGE = 6.0
N_ACTIONS_NO_ATTACK = 6
N_OBS_PATHING = 8


@dataclass(frozen=True)
class FeatureLayout:
    """Sizes of SMAC's feature blocks for one map and flag set (``get_obs_size`` / ``get_state_size``)."""

    n_agents: int
    n_enemies: int
    n_actions: int
    unit_type_bits: int
    shield_bits_ally: int
    shield_bits_enemy: int
    obs_all_health: bool
    obs_own_health: bool
    obs_last_action: bool
    obs_pathing_grid: bool
    obs_instead_of_state: bool
    obs_timestep_number: bool
    state_last_action: bool
    state_timestep_number: bool

    @property
    def move_feats(self) -> int:
        return 4 + (N_OBS_PATHING if self.obs_pathing_grid else 0)

    @property
    def enemy_feats(self) -> int:
        return 4 + self.unit_type_bits + ((1 + self.shield_bits_enemy) if self.obs_all_health else 0)

    @property
    def ally_feats(self) -> int:
        n = 4 + self.unit_type_bits + ((1 + self.shield_bits_ally) if self.obs_all_health else 0)
        return n + (self.n_actions if self.obs_last_action else 0)

    @property
    def own_feats(self) -> int:
        n = self.unit_type_bits + ((1 + self.shield_bits_ally) if self.obs_own_health else 0)
        return n + (1 if self.obs_timestep_number else 0)

    @property
    def obs_size(self) -> int:
        """What SMAC's ``get_obs_size()`` reports."""
        return (self.move_feats + self.n_enemies * self.enemy_feats
                + (self.n_agents - 1) * self.ally_feats + self.own_feats)

    @property
    def obs_vector_len(self) -> int:
        """Length of the vectors SMAC actually returns: with ``obs_timestep_number`` SMAC reserves a slot
        in ``own_feats`` *and* appends ``episode_steps / episode_limit``, one more than it reports."""
        return self.obs_size + (1 if self.obs_timestep_number else 0)

    @property
    def state_size(self) -> int:
        if self.obs_instead_of_state:
            return self.obs_size * self.n_agents
        size = (self.n_agents * (4 + self.shield_bits_ally + self.unit_type_bits)
                + self.n_enemies * (3 + self.shield_bits_enemy + self.unit_type_bits))
        if self.state_last_action:
            size += self.n_agents * self.n_actions
        return size + (1 if self.state_timestep_number else 0)

    @property
    def state_vector_len(self) -> int:
        return self.n_agents * self.obs_vector_len if self.obs_instead_of_state else self.state_size


@numba.njit(cache=True)
def _pathable(pathing, cx, cy):
    return 0 <= cx < pathing.shape[0] and 0 <= cy < pathing.shape[1] and pathing[cx, cy]


@numba.njit(**KERNEL_OPTIONS)
def build_avail_actions(x, y, health, pathing, n_agents, move_amount, healer, out):
    """SMAC's ``get_avail_agent_actions`` for every agent: ``out`` int32 ``[B, N, 6 + E]``.

    Dead agents may only no-op. Alive agents may stop, move where the cell half a move away is in bounds
    and pathable, and attack alive enemies within ``SHOOT_RANGE`` (centre to centre, inclusive). A healer
    instead heals: action ``6 + j`` for each alive agent ``j`` that is not a healer (so never itself)
    within ``SHOOT_RANGE``; SMAC checks neither the ally's health nor whether an attacker's weapon can hit
    the enemy (a marauder may "attack" a medivac).
    """
    n_envs = x.shape[0]
    n_units = x.shape[1]
    half = move_amount / 2.0
    out[:] = 0
    for b in range(n_envs):
        for i in range(n_agents):
            if health[b, i] <= 0:
                out[b, i, 0] = 1
                continue
            px = x[b, i]
            py = y[b, i]
            out[b, i, 1] = 1
            out[b, i, 2] = _pathable(pathing, int(px), int(py + half))
            out[b, i, 3] = _pathable(pathing, int(px), int(py - half))
            out[b, i, 4] = _pathable(pathing, int(px + half), int(py))
            out[b, i, 5] = _pathable(pathing, int(px - half), int(py))
            if healer[i]:
                for j in range(n_agents):
                    if not healer[j] and health[b, j] > 0:
                        if np.hypot(x[b, j] - px, y[b, j] - py) <= SHOOT_RANGE:
                            out[b, i, N_ACTIONS_NO_ATTACK + j] = 1
                continue
            for e in range(n_agents, n_units):
                if health[b, e] > 0:
                    if np.hypot(x[b, e] - px, y[b, e] - py) <= SHOOT_RANGE:
                        out[b, i, N_ACTIONS_NO_ATTACK + e - n_agents] = 1


@numba.njit(**KERNEL_OPTIONS)
def find_invalid_actions(actions, avail, active):
    """The first (in row-major order) agent of an ``active`` (bool ``[B]``) environment whose action in
    ``actions`` (int64 ``[B, N]``) is out of range, and the first whose action is in range but not
    available in ``avail`` (int32 ``[B, N, A]``): two flat indices into ``[B, N]``, -1 where none."""
    n_actions = avail.shape[2]
    out_of_range = -1
    unavailable = -1
    for b in range(actions.shape[0]):
        if not active[b]:
            continue
        for i in range(actions.shape[1]):
            a = actions[b, i]
            if a < 0 or a >= n_actions:
                if out_of_range < 0:
                    out_of_range = b * actions.shape[1] + i
            elif avail[b, i, a] == 0 and unavailable < 0:
                unavailable = b * actions.shape[1] + i
    return out_of_range, unavailable


@numba.njit(cache=True, inline="always")
def _fill_unit_row(out, b, i, o, dist, dx, dy, health, shield, health_max, shield_max, type_col,
                   obs_all_health, shield_bits, type_bits):
    """Write one visible unit's ``[dist, dx, dy, (health, (shield)), (type one-hot)]`` features at
    ``out[b, i, o:]`` (distances over the sight range); returns the index after them."""
    out[b, i, o] = dist / SIGHT_RANGE
    out[b, i, o + 1] = dx / SIGHT_RANGE
    out[b, i, o + 2] = dy / SIGHT_RANGE
    k = o + 3
    if obs_all_health:
        out[b, i, k] = health / health_max
        k += 1
        if shield_bits > 0:
            out[b, i, k] = shield / shield_max
            k += 1
    if type_bits > 0:
        out[b, i, k + type_col] = 1.0
        k += type_bits
    return k


@numba.njit(**KERNEL_OPTIONS)
def build_obs(x, y, health, shield, health_max, shield_max, type_col, avail, pathing, last_action,
              episode_steps, episode_limit, n_agents, move_amount, type_bits, shield_bits_ally,
              shield_bits_enemy, obs_all_health, obs_own_health, obs_last_action, obs_pathing_grid,
              obs_timestep_number, out):
    """SMAC's ``get_obs_agent`` for every agent: ``out`` float32 ``[B, N, obs_vector_len]``.

    ``avail`` is ``build_avail_actions``' output for the same situation (SMAC derives the move and
    attack-availability features from the action mask; for a healer that makes enemy ``e``'s first feature
    whether it may heal *ally* ``e``, a quirk of SMAC's kept here).
    """
    n_envs = x.shape[0]
    n_units = x.shape[1]
    n_enemies = n_units - n_agents
    n_actions = avail.shape[2]
    ma = int(move_amount)
    nf_en = 4 + type_bits + ((1 + shield_bits_enemy) if obs_all_health else 0)
    nf_al = 4 + type_bits + ((1 + shield_bits_ally) if obs_all_health else 0)
    if obs_last_action:
        nf_al += n_actions
    move_dim = 4 + (N_OBS_PATHING if obs_pathing_grid else 0)
    out[:] = 0.0
    for b in range(n_envs):
        for i in range(n_agents):
            if obs_timestep_number:
                out[b, i, out.shape[2] - 1] = episode_steps[b] / episode_limit
            if health[b, i] <= 0:
                continue
            px = x[b, i]
            py = y[b, i]
            for m in range(4):
                out[b, i, m] = avail[b, i, m + 2]
            if obs_pathing_grid:
                cx = int(px)
                cy = int(py)
                offsets = ((0, 2 * ma), (0, -2 * ma), (2 * ma, 0), (-2 * ma, 0),
                           (ma, ma), (-ma, -ma), (ma, -ma), (-ma, ma))
                for k in range(N_OBS_PATHING):
                    qx = cx + offsets[k][0]
                    qy = cy + offsets[k][1]
                    inside = 0 <= qx < pathing.shape[0] and 0 <= qy < pathing.shape[1]
                    out[b, i, 4 + k] = pathing[qx, qy] if inside else 1.0
            base = move_dim
            for e in range(n_enemies):
                u = n_agents + e
                dist = np.hypot(x[b, u] - px, y[b, u] - py)
                if dist < SIGHT_RANGE and health[b, u] > 0:
                    o = base + e * nf_en
                    out[b, i, o] = avail[b, i, N_ACTIONS_NO_ATTACK + e]
                    _fill_unit_row(out, b, i, o + 1, dist, x[b, u] - px, y[b, u] - py, health[b, u],
                                   shield[b, u], health_max[u], shield_max[u], type_col[u], obs_all_health,
                                   shield_bits_enemy, type_bits)
            base += n_enemies * nf_en
            slot = 0
            for j in range(n_agents):
                if j == i:
                    continue
                dist = np.hypot(x[b, j] - px, y[b, j] - py)
                if dist < SIGHT_RANGE and health[b, j] > 0:
                    o = base + slot * nf_al
                    out[b, i, o] = 1.0
                    k = _fill_unit_row(out, b, i, o + 1, dist, x[b, j] - px, y[b, j] - py, health[b, j],
                                       shield[b, j], health_max[j], shield_max[j], type_col[j],
                                       obs_all_health, shield_bits_ally, type_bits)
                    if obs_last_action and last_action[b, j] >= 0:
                        out[b, i, k + last_action[b, j]] = 1.0
                slot += 1
            base += (n_agents - 1) * nf_al
            k = base
            if obs_own_health:
                out[b, i, k] = health[b, i] / health_max[i]
                k += 1
                if shield_bits_ally > 0:
                    out[b, i, k] = shield[b, i] / shield_max[i]
                    k += 1
            if type_bits > 0:
                out[b, i, k + type_col[i]] = 1.0


@numba.njit(**KERNEL_OPTIONS)
def build_state(x, y, health, shield, cooldown, energy, health_max, shield_max, max_cooldown, healer,
                type_col, last_action, episode_steps, episode_limit, n_agents, n_actions, type_bits,
                shield_bits_ally, shield_bits_enemy, state_last_action, state_timestep_number,
                map_x, map_y, max_distance_x, max_distance_y, out):
    """SMAC's ``get_state``: ``out`` float32 ``[B, state_size]`` (not for ``obs_instead_of_state``).

    An ally's second feature is ``cooldown / max_cooldown``, a healer's ``energy / max_cooldown`` (SMAC's
    ``unit_max_cooldown`` is 200 for medivacs, their ``EnergyMax``)."""
    n_envs = x.shape[0]
    n_units = x.shape[1]
    n_enemies = n_units - n_agents
    nf_al = 4 + shield_bits_ally + type_bits
    nf_en = 3 + shield_bits_enemy + type_bits
    cx = map_x / 2.0
    cy = map_y / 2.0
    out[:] = 0.0
    for b in range(n_envs):
        for i in range(n_agents):
            if health[b, i] <= 0:
                continue
            o = i * nf_al
            out[b, o] = health[b, i] / health_max[i]
            out[b, o + 1] = (energy[b, i] if healer[i] else cooldown[b, i]) / max_cooldown[i]
            out[b, o + 2] = (x[b, i] - cx) / max_distance_x
            out[b, o + 3] = (y[b, i] - cy) / max_distance_y
            if shield_bits_ally > 0:
                out[b, o + 4] = shield[b, i] / shield_max[i]
            if type_bits > 0:
                out[b, o + nf_al - type_bits + type_col[i]] = 1.0
        base = n_agents * nf_al
        for e in range(n_enemies):
            u = n_agents + e
            if health[b, u] <= 0:
                continue
            o = base + e * nf_en
            out[b, o] = health[b, u] / health_max[u]
            out[b, o + 1] = (x[b, u] - cx) / max_distance_x
            out[b, o + 2] = (y[b, u] - cy) / max_distance_y
            if shield_bits_enemy > 0:
                out[b, o + 3] = shield[b, u] / shield_max[u]
            if type_bits > 0:
                out[b, o + nf_en - type_bits + type_col[u]] = 1.0
        base += n_enemies * nf_en
        if state_last_action:
            for i in range(n_agents):
                if last_action[b, i] >= 0:
                    out[b, base + i * n_actions + last_action[b, i]] = 1.0
            base += n_agents * n_actions
        if state_timestep_number:
            out[b, base] = episode_steps[b] / episode_limit


@numba.njit(cache=True, inline="always")
def battle_reward(prev_health, prev_shield, health, shield, death_tracker, b, n_agents,
                  reward_only_positive, reward_death_value, reward_negative_scale):
    """SMAC's dense ``reward_battle`` for environment ``b`` (before win/defeat bonus and scaling).

    Updates ``death_tracker[b]`` (1 for units whose death has already been rewarded) like SMAC does.
    With ``reward_only_positive`` the result is ``abs(damage dealt + kill bonus)`` — SMAC's ``abs`` makes
    enemy shield regeneration count as positive reward, and this reproduces it.
    """
    n_units = health.shape[1]
    delta_deaths = 0.0
    delta_ally = 0.0
    delta_enemy = 0.0
    for u in range(n_units):
        if death_tracker[b, u]:
            continue
        prev = prev_health[b, u] + prev_shield[b, u]
        if u < n_agents:
            if health[b, u] <= 0:
                death_tracker[b, u] = 1
                if not reward_only_positive:
                    delta_deaths -= reward_death_value * reward_negative_scale
                delta_ally += prev * reward_negative_scale
            else:
                delta_ally += reward_negative_scale * (prev - health[b, u] - shield[b, u])
        else:
            if health[b, u] <= 0:
                death_tracker[b, u] = 1
                delta_deaths += reward_death_value
                delta_enemy += prev
            else:
                delta_enemy += prev - health[b, u] - shield[b, u]
    if reward_only_positive:
        return abs(delta_enemy + delta_deaths)
    return delta_enemy + delta_deaths - delta_ally

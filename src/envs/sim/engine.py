"""The batched battle engine: SC2-style dynamics for B independent environments, in Numba.

State lives in ``[B, U]`` arrays (agents first, then enemies; see ``features``). One call of
``step_envs`` advances every active environment by one agent step = ``step_mul`` game loops. Each game
loop, for every environment:

1. the built-in enemy picks targets (``_enemy_target``): SC2's automatic acquisition with threat
   priority, leash and call for help;
2. attacks: every unit whose attack target is within weapon range (edge to edge) and whose weapon is
   ready starts an attack; attacks under way deliver their hits when due (after the weapon's damage
   point, after the missile's flight, between the strikes of a multi-strike weapon). Hits due in one
   loop resolve together, so two units can kill each other in the same loop;
3. the other units move: along their move order, towards an attack target that is out of range, back
   to their leash point, or (enemies without a target) towards the agents' spawn point; then
   overlapping units are pushed apart until none overlap, every position kept on pathable ground;
4. clocks tick: weapon cooldowns, attack timers, call-for-help timers, shield and energy regeneration.

Maps with air units or healers (MMM, MMM2: the medivac) switch on their rules with ``air_heal``: heal
orders and the enemy medivac's heal autocast (``_enemy_heal_target``), healing after the hits of each
loop (``_heal``), flying units that neither collide with ground units nor need pathable ground, weapons
that cannot hit air, and SMAC's MMM game end. Without them none of this runs.

Game constants are in ``units.py``, each with its source. Randomness (spawn jitter and SC2's random
weapon delay) comes from a counter-based hash of the environment's own key, so every environment has its
own stream and a seed replays bit for bit whatever the batch size. What the engine still simplifies
relative to SC2 is listed in ``docs/simulator.md``.
"""
from __future__ import annotations

import types
from typing import NamedTuple

import numba
import numpy as np

from .features import KERNEL_OPTIONS, battle_reward
from .units import (
    ACQUIRE_LEASH_RADIUS, ACQUIRE_LEASH_RESET_RADIUS, CALL_FOR_HELP_PERIOD_LOOPS, CALL_FOR_HELP_RADIUS,
    ATTRIBUTE_BIOLOGICAL, HEAL_AUTOCAST_MIN_ENERGY, HEAL_ENERGY_PER_LIFE, MIN_DAMAGE,
    SHIELD_REGEN_DELAY_LOOPS, SHIELD_REGEN_PER_LOOP, WEAPON_DELAY_MAX_LOOPS, WEAPON_DELAY_MIN_LOOPS,
    AirHealArrays, UnitArrays,
)

# Numba's own work-queue threads: unlike the OpenMP layer they do not spin while waiting, which matters
# when the simulator shares the cores with PyTorch or other processes (measured: 6x faster at B=64
# under load). Set before any parallel kernel runs.
numba.config.THREADING_LAYER = "workqueue"

ORDER_IDLE = 0
ORDER_MOVE = 1
ORDER_ATTACK = 2

#: Phases of an attack under way (``CombatState.swing_phase``).
SWING_NONE = 0
SWING_WINDUP = 1  # between the attack's start and its damage point; the unit holds still
SWING_FLIGHT = 2  # the missile is on its way (it hits even if the shooter dies meanwhile)
SWING_STRIKES = 3  # further strikes of a multi-strike weapon (the zealot's second blade) are due

#: Spawn clumps: units on a square grid around the team point, jittered by up to this much per axis.
SPAWN_JITTER = 0.1
SPAWN_GAP = 0.2
ARRIVAL_EPS = 1e-6
#: Marks a unit that holds its ground: its target is in range while its weapon cools down, or it is
#: winding up or striking.
ENGAGED = -2
#: Steering angles tried, in order, when the straight step would bump into a unit: 0, ±45°, ±90°.
_STEER_COS = (1.0, 0.7071067811865476, 0.7071067811865476, 0.0, 0.0)
_STEER_SIN = (0.0, 0.7071067811865476, -0.7071067811865476, 1.0, -1.0)
#: Separation passes per loop at most; a pass that moves nobody ends them (usually one or two, but in a
#: 5m_vs_6m battle about a fifth of the loops need 10 or more, and a few reach this cap).
SEPARATION_PASSES = 32
#: Overlaps smaller than this are float rounding, not overlaps.
OVERLAP_EPS = 1e-9

_DIRECTIONS = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))  # north, south, east, west


class CombatState(NamedTuple):
    """Per-unit combat state beyond positions and vitals, ``[B, U]`` arrays.

    ``swing_*`` describe the attack under way: its target, phase (``SWING_*``), game loops until its
    next event (fractional; the event happens in the first loop where it is <= 0) and hits still to
    deal. ``leash_x``/``leash_y``: where an enemy acquired its current target; ``returning``: it broke
    its leash and walks back there. ``help_timer``: loops until the unit may call for help again.
    ``flags`` (int64) is scratch space: per enemy, whether an agent attacks it (while targets are
    picked, see ``_agent_box``); per unit, whether (1) or not (0) an attack event is due this loop; and
    later when the unit last moved this loop (see ``_separate``).
    """

    swing_target: np.ndarray
    swing_phase: np.ndarray
    swing_timer: np.ndarray
    swing_hits: np.ndarray
    leash_x: np.ndarray
    leash_y: np.ndarray
    returning: np.ndarray
    help_timer: np.ndarray
    flags: np.ndarray


def new_combat_state(n_envs: int, n_units: int) -> CombatState:
    """A cleared ``CombatState`` for ``n_envs`` environments of ``n_units`` units."""
    shape = (n_envs, n_units)
    state = CombatState(
        swing_target=np.empty(shape, dtype=np.int64), swing_phase=np.empty(shape, dtype=np.int64),
        swing_timer=np.empty(shape), swing_hits=np.empty(shape, dtype=np.int64),
        leash_x=np.empty(shape), leash_y=np.empty(shape), returning=np.empty(shape, dtype=np.bool_),
        help_timer=np.empty(shape), flags=np.zeros(shape, dtype=np.int64))
    reset_combat_state(state, np.ones(n_envs, dtype=np.bool_))
    return state


def reset_combat_state(state: CombatState, env_mask: np.ndarray) -> None:
    """Clear the combat state of the environments in ``env_mask`` (bool ``[B]``): no attack under way,
    no leash, free to call for help."""
    state.swing_target[env_mask] = -1
    state.swing_phase[env_mask] = SWING_NONE
    state.swing_timer[env_mask] = 0.0
    state.swing_hits[env_mask] = 0
    state.leash_x[env_mask] = 0.0
    state.leash_y[env_mask] = 0.0
    state.returning[env_mask] = False
    state.help_timer[env_mask] = 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def hash_uniform(key, counter):
    """A uniform draw in [0, 1) from a 64-bit key and counter (SplitMix64 finaliser)."""
    z = np.uint64(key) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, error_model="numpy")
def episode_key(env_seed, episode_index):
    """The random key of one episode of one environment."""
    return np.uint64(hash_uniform(env_seed, episode_index) * 9007199254740992.0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _passable(pathing, px, py, ground):
    """Whether (px, py) is on the map and, for a ``ground`` unit, on pathable ground."""
    if px < 0.0 or py < 0.0:
        return False
    cx = int(px)
    cy = int(py)
    return cx < pathing.shape[0] and cy < pathing.shape[1] and (not ground or pathing[cx, cy])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _settle(pathing, ox, oy, nx, ny, ground):
    """Where a unit at (ox, oy) ends up when it tries to go to (nx, ny): it slides along walls (a flying
    unit, ``ground`` False, only along the map's edges)."""
    if _passable(pathing, nx, ny, ground):
        return nx, ny
    if _passable(pathing, nx, oy, ground):
        return nx, oy
    if _passable(pathing, ox, ny, ground):
        return ox, ny
    return ox, oy


@numba.njit(cache=True, error_model="numpy", inline="always")
def _dist2(x, y, b, u, v):
    dx = x[b, v] - x[b, u]
    dy = y[b, v] - y[b, u]
    return dx * dx + dy * dy


@numba.njit(cache=True, error_model="numpy", inline="always")
def _within_reach(x, y, radius, b, u, v, reach):
    """Whether the edges of units u and v are at most ``reach`` apart."""
    lim = reach + radius[u] + radius[v]
    return _dist2(x, y, b, u, v) <= lim * lim


@numba.njit(cache=True, error_model="numpy", inline="always")
def _attacking(order, target, b, a, u):
    """Whether agent ``a``'s attack order is on unit ``u``."""
    return order[b, a] == ORDER_ATTACK and target[b, a] == u


@numba.njit(cache=True, error_model="numpy", inline="always")
def _better(threat, d2, best_threat, best_d2):
    """Whether a candidate (threat 0/1, squared centre distance) beats the best so far: pysc2
    ``docs/environment.md`` ("Determinism and Randomness"): threats first, then the nearest."""
    return threat > best_threat or (threat == best_threat and d2 < best_d2)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _pick_targets(x, y, health, order, target, radius, threat, weapon_range, scan_range, flying, hits_air,
                  air_heal, b, u, n_agents, need_scan, attacked, agent_box):
    """The agents enemy ``u`` would acquire: the best within its weapon range, and (if ``need_scan``,
    else -1) the best within its scan range or attacking it (at any distance); -1 where there is none.
    Flying agents are skipped when ``u``'s weapon cannot hit air.

    Threats are agents marked ``threat`` (armed, or ``AlwaysThreatens``) or attacking ``u``. SC2's
    ``AttackTargetPriority`` is 20 for every unit here (liberty ``UnitData.xml``), so it decides nothing.

    ``attacked``: whether a living agent's attack order is on ``u``; ``agent_box`` (lo_x, hi_x, lo_y,
    hi_y, max_radius) bounds the living agents (see ``_agent_box``). An enemy no agent attacks and whose
    reach does not touch the box finds nobody, so the scan is skipped (same answer, found faster).
    """
    if not attacked:
        lo_x, hi_x, lo_y, hi_y, max_r = agent_box
        bx = max(lo_x - x[b, u], x[b, u] - hi_x, 0.0)
        by = max(lo_y - y[b, u], y[b, u] - hi_y, 0.0)
        # margin: the box's bound is exact, the reach below is summed in another order than per agent
        reach = max(scan_range[u], weapon_range[u]) + radius[u] + max_r + 1e-6
        if bx * bx + by * by > reach * reach:
            return -1, -1
    in_range = -1
    in_range_threat = -1
    in_range_d2 = 1e300
    in_scan = -1
    in_scan_threat = -1
    in_scan_d2 = 1e300
    for a in range(n_agents):
        if health[b, a] <= 0:
            continue
        d2 = _dist2(x, y, b, u, a)
        edges = radius[u] + radius[a]
        reach = scan_range[u] + edges
        in_scan_range = d2 <= reach * reach
        attacking = _attacking(order, target, b, a, u)
        if not (in_scan_range or attacking):
            continue  # out of scan range, hence out of weapon range (weapon range <= scan range)
        if air_heal and flying[a] and not hits_air[u]:
            continue
        is_threat = 1 if (threat[a] or attacking) else 0
        if need_scan and _better(is_threat, d2, in_scan_threat, in_scan_d2):
            in_scan = a
            in_scan_threat = is_threat
            in_scan_d2 = d2
        reach = weapon_range[u] + edges
        if d2 <= reach * reach and _better(is_threat, d2, in_range_threat, in_range_d2):
            in_range = a
            in_range_threat = is_threat
            in_range_d2 = d2
    return in_range, in_scan


@numba.njit(cache=True, error_model="numpy", inline="always")
def _enemy_target(x, y, health, order, target, radius, threat, weapon_range, scan_range, flying, hits_air,
                  air_heal, leash_x, leash_y, returning, b, u, n_agents, attacked, agent_box):
    """The built-in AI's target for enemy ``u`` this loop (SC2 auto-acquisition on an attack-move).

    A unit walking back to its leash point acquires nothing until it is within
    ``ACQUIRE_LEASH_RESET_RADIUS`` of it. Otherwise it keeps its target while the target is alive and in
    weapon range; else takes the best agent in weapon range (``_pick_targets``); else keeps chasing its
    target until it is ``ACQUIRE_LEASH_RADIUS`` from where it acquired it (then it turns back); else
    takes the best agent within its scan range or attacking it; else none (-1: it walks on).
    ``attacked``, ``agent_box``: see ``_pick_targets``.
    """
    if returning[b, u]:
        dx = leash_x[b, u] - x[b, u]
        dy = leash_y[b, u] - y[b, u]
        if dx * dx + dy * dy > ACQUIRE_LEASH_RESET_RADIUS * ACQUIRE_LEASH_RESET_RADIUS:
            return -1
        returning[b, u] = False
    cur = target[b, u]
    valid = cur >= 0 and health[b, cur] > 0
    if valid and _within_reach(x, y, radius, b, u, cur, weapon_range[u]):
        return cur
    pick, in_scan = _pick_targets(x, y, health, order, target, radius, threat, weapon_range, scan_range,
                                  flying, hits_air, air_heal, b, u, n_agents, not valid, attacked, agent_box)
    if pick < 0 and valid:
        dx = leash_x[b, u] - x[b, u]
        dy = leash_y[b, u] - y[b, u]
        if dx * dx + dy * dy <= ACQUIRE_LEASH_RADIUS * ACQUIRE_LEASH_RADIUS:
            return cur
        returning[b, u] = True
        return -1
    if pick < 0:
        pick = in_scan
    if pick >= 0 and pick != cur:
        leash_x[b, u] = x[b, u]
        leash_y[b, u] = y[b, u]
    return pick


@numba.njit(cache=True, error_model="numpy", inline="always")
def _agent_box(b, n_agents, x, y, health, order, target, radius, attacked):
    """The box around the living agents of environment ``b``: (lo_x, hi_x, lo_y, hi_y, largest radius);
    empty (lo > hi) when none lives. Also marks in ``attacked`` int64 ``[B, U]`` each enemy a living
    agent's attack order is on (1; 0 otherwise)."""
    for w in range(n_agents, x.shape[1]):
        attacked[b, w] = 0
    lo_x = np.inf
    hi_x = -np.inf
    lo_y = np.inf
    hi_y = -np.inf
    max_r = 0.0
    for a in range(n_agents):
        if health[b, a] <= 0:
            continue
        lo_x = min(lo_x, x[b, a])
        hi_x = max(hi_x, x[b, a])
        lo_y = min(lo_y, y[b, a])
        hi_y = max(hi_y, y[b, a])
        max_r = max(max_r, radius[a])
        if order[b, a] == ORDER_ATTACK and target[b, a] >= n_agents:
            attacked[b, target[b, a]] = 1
    return lo_x, hi_x, lo_y, hi_y, max_r


@numba.njit(cache=True, error_model="numpy", inline="always")
def _enemy_heal_target(x, y, health, health_max, energy, attributes, radius, scan_range, target, b, u, n_agents):
    """The built-in AI's heal target for enemy healer ``u`` this loop (SC2's heal autocast).

    It keeps healing its target while the target lives and is damaged and ``u`` has energy. Otherwise,
    with at least ``HEAL_AUTOCAST_MIN_ENERGY``, it takes the damaged biological ally (not itself) within
    its autocast range (``scan_range``, edge to edge) with the lowest life fraction, then the nearest;
    else none (-1: it flies on with the attack-move).
    """
    cur = target[b, u]
    if cur >= 0 and 0.0 < health[b, cur] < health_max[cur] and energy[b, u] > 0.0:
        return cur
    if energy[b, u] < HEAL_AUTOCAST_MIN_ENERGY:
        return -1
    best = -1
    best_fraction = np.inf
    best_d2 = np.inf
    for w in range(n_agents, x.shape[1]):
        if w == u or health[b, w] <= 0 or health[b, w] >= health_max[w]:
            continue
        if not attributes[w] & ATTRIBUTE_BIOLOGICAL or not _within_reach(x, y, radius, b, u, w, scan_range[u]):
            continue
        fraction = health[b, w] / health_max[w]
        d2 = _dist2(x, y, b, u, w)
        if fraction < best_fraction or (fraction == best_fraction and d2 < best_d2):
            best = w
            best_fraction = fraction
            best_d2 = d2
    return best


@numba.njit(cache=True, error_model="numpy", inline="always")
def _heal(b, n_agents, x, y, health, health_max, energy, order, target, radius, weapon_range, healer,
          heal_per_loop):
    """One loop of healing: every living healer whose heal target (an agent's needs a heal order) is
    alive and within heal range (``weapon_range``, edge to edge) restores up to ``heal_per_loop`` life,
    never above the target's maximum, paying ``HEAL_ENERGY_PER_LIFE`` energy per life point with the
    energy it has."""
    for u in range(x.shape[1]):
        if not healer[u] or health[b, u] <= 0:
            continue
        t = target[b, u]
        if t < 0 or (u < n_agents and order[b, u] != ORDER_ATTACK) or health[b, t] <= 0:
            continue
        if not _within_reach(x, y, radius, b, u, t, weapon_range[u]):
            continue
        amount = min(heal_per_loop[u], health_max[t] - health[b, t], energy[b, u] / HEAL_ENERGY_PER_LIFE)
        if amount > 0.0:
            health[b, t] += amount
            energy[b, u] = max(energy[b, u] - amount * HEAL_ENERGY_PER_LIFE, 0.0)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _call_for_help(x, y, health, target, leash_x, leash_y, returning, help_timer, healer, flying, hits_air, b,
                   victim, attacker, n_agents):
    """Enemy ``victim`` was hit by ``attacker``: its idle allies within ``CALL_FOR_HELP_RADIUS`` (centre
    distance) acquire the attacker, at most once per ``CALL_FOR_HELP_PERIOD_LOOPS`` per victim; healers
    and units whose weapon cannot hit a flying attacker do not answer."""
    if help_timer[b, victim] > 0.0:
        return
    help_timer[b, victim] = CALL_FOR_HELP_PERIOD_LOOPS
    for w in range(n_agents, x.shape[1]):
        if w == victim or health[b, w] <= 0 or target[b, w] >= 0 or returning[b, w]:
            continue
        if healer[w] or (flying[attacker] and not hits_air[w]):
            continue
        if _dist2(x, y, b, victim, w) <= CALL_FOR_HELP_RADIUS * CALL_FOR_HELP_RADIUS:
            target[b, w] = attacker
            leash_x[b, w] = x[b, w]
            leash_y[b, w] = y[b, w]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _bumps(x, y, health, radius, flying, air_heal, b, u, nx, ny):
    """Whether moving unit ``u`` to (nx, ny) brings it closer to a unit it would overlap (flying and
    ground units do not collide)."""
    for v in range(x.shape[1]):
        if v == u or health[b, v] <= 0:
            continue
        touch = radius[u] + radius[v]
        dx = x[b, v] - nx
        dy = y[b, v] - ny
        new_d2 = dx * dx + dy * dy
        if new_d2 < touch * touch and new_d2 < _dist2(x, y, b, u, v):
            if not (air_heal and flying[u] != flying[v]):
                return True
    return False


@numba.njit(cache=True, error_model="numpy", inline="always")
def _apply_hit(health, shield, b, t, damage, armor):
    """One hit of ``damage``: shields absorb first (no shield armor); what gets through to health loses
    the target's armor, but never below ``MIN_DAMAGE``."""
    through = damage
    if shield[b, t] > 0.0:
        absorbed = min(shield[b, t], through)
        shield[b, t] -= absorbed
        through -= absorbed
    if through > 0.0:
        health[b, t] -= max(through - armor, MIN_DAMAGE)
    if health[b, t] <= 0.0:
        health[b, t] = 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _swing_event(b, u, n_agents, x, y, health, shield, target, since_damage, damage, bonus, bonus_attribute,
                 attributes, armor, missile_speed, strike_interval_loops, swing_target, swing_phase,
                 swing_timer, swing_hits, leash_x, leash_y, returning, help_timer, healer, flying, hits_air):
    """The due event of unit ``u``'s attack: launch its missile, or deliver a hit. The attack ends
    early when its target is dead."""
    t = swing_target[b, u]
    if health[b, t] <= 0:
        swing_phase[b, u] = SWING_NONE
        return
    if swing_phase[b, u] == SWING_WINDUP and missile_speed[u] > 0.0:
        swing_phase[b, u] = SWING_FLIGHT
        swing_timer[b, u] += np.sqrt(_dist2(x, y, b, u, t)) / missile_speed[u]
        return
    hit = damage[u] + (bonus[u] if attributes[t] & bonus_attribute[u] else 0.0)
    _apply_hit(health, shield, b, t, hit, armor[t])
    since_damage[b, t] = 0.0
    if t >= n_agents:
        _call_for_help(x, y, health, target, leash_x, leash_y, returning, help_timer, healer, flying, hits_air,
                       b, t, u, n_agents)
    swing_hits[b, u] -= 1
    if swing_hits[b, u] > 0:
        swing_phase[b, u] = SWING_STRIKES
        swing_timer[b, u] += strike_interval_loops[u]
    else:
        swing_phase[b, u] = SWING_NONE


@numba.njit(cache=True, error_model="numpy", inline="always")
def _cancel_swing(swing_phase, cooldown, b, u):
    """Agent ``u`` got a new order: an attack still winding up is abandoned and its weapon is ready
    again (the shot never happened); the remaining strikes of a multi-strike attack are abandoned; a
    missile in flight flies on."""
    phase = swing_phase[b, u]
    if phase == SWING_WINDUP:
        cooldown[b, u] = 0.0
        swing_phase[b, u] = SWING_NONE
    elif phase == SWING_STRIKES:
        swing_phase[b, u] = SWING_NONE


@numba.njit(cache=True, error_model="numpy", inline="always")
def _separate(b, x, y, health, radius, flying, air_heal, shooting_buf, moved, pathing, recent):
    """Push overlapping living units apart, pass after pass, until no two overlap (at most
    ``SEPARATION_PASSES``). Units that hold their ground (``shooting_buf`` != -1) are not pushed by units
    that move; otherwise both give way equally. Flying and ground units do not collide.

    ``moved`` int64 ``[B, U]`` (updated here): when each unit last moved this loop: -1 not at all, 0 in
    the movement phase, ``p`` in separation pass ``p``. Pass ``p`` looks only at pairs with a unit that
    moved since pass ``p - 1`` began: any other pair stands exactly where it stood when that pass looked
    at it, so looking again would change nothing (and the pairs of units that have not moved at all were
    apart at the end of the last loop). ``recent`` int64 ``[U]`` is scratch space: in ascending order, the
    living units that moved since the pass began."""
    n_units = x.shape[1]
    for sep_pass in range(1, SEPARATION_PASSES + 1):
        pushed = False
        since = sep_pass - 1
        n_recent = 0
        for w in range(n_units):
            if moved[b, w] >= since and health[b, w] > 0:
                recent[n_recent] = w
                n_recent += 1
        for u in range(n_units):
            if health[b, u] <= 0:
                continue
            v = u
            j = 0
            while True:
                # u's next partner, in increasing order: any later unit once u has moved, else the next
                # later unit that has (the same pairs as looking at every v and skipping the others)
                if moved[b, u] >= since:
                    v += 1
                    if v >= n_units:
                        break
                    if health[b, v] <= 0:
                        continue
                else:
                    while j < n_recent and recent[j] <= v:
                        j += 1
                    if j == n_recent:
                        break
                    v = recent[j]
                dx = x[b, v] - x[b, u]
                dy = y[b, v] - y[b, u]
                touch = radius[u] + radius[v]
                d2 = dx * dx + dy * dy
                if d2 >= (touch - OVERLAP_EPS) * (touch - OVERLAP_EPS):
                    continue
                if air_heal and flying[u] != flying[v]:
                    continue
                dist = np.sqrt(d2)
                overlap = touch - dist
                if dist > 0.0:
                    ux = dx / dist
                    uy = dy / dist
                else:
                    ux = 1.0
                    uy = 0.0
                share_u = 0.5
                if shooting_buf[b, u] != -1 and shooting_buf[b, v] == -1:
                    share_u = 0.0
                elif shooting_buf[b, u] == -1 and shooting_buf[b, v] != -1:
                    share_u = 1.0
                push_u = overlap * share_u
                push_v = overlap - push_u
                old_u = (x[b, u], y[b, u])
                old_v = (x[b, v], y[b, v])
                ground = not (air_heal and flying[u])  # both units are in the same plane
                x[b, u], y[b, u] = _settle(pathing, x[b, u], y[b, u], x[b, u] - ux * push_u,
                                           y[b, u] - uy * push_u, ground)
                x[b, v], y[b, v] = _settle(pathing, x[b, v], y[b, v], x[b, v] + ux * push_v,
                                           y[b, v] + uy * push_v, ground)
                if (x[b, u], y[b, u]) != old_u:
                    moved[b, u] = sep_pass
                    pushed = True
                if (x[b, v], y[b, v]) != old_v:
                    if moved[b, v] < since:  # v joins the units that moved since the pass began
                        k = n_recent
                        while k > 0 and recent[k - 1] > v:
                            recent[k] = recent[k - 1]
                            k -= 1
                        recent[k] = v
                        n_recent += 1
                    moved[b, v] = sep_pass
                    pushed = True
        if not pushed:
            return


@numba.njit(cache=True, error_model="numpy", inline="always")
def _game_loops(b, n_agents, x, y, health, shield, cooldown, energy, order, order_x, order_y, target,
                since_damage, fired_at, clock, st, ah, swing_target, swing_phase, swing_timer,
                swing_hits, leash_x, leash_y, returning, help_timer, flags, pathing, attack_point,
                shooting_buf, recent_buf):
    """Advance environment ``b`` by ``n_loops`` game loops, ``clock`` = (its random key, the game-loop
    counter of the first of them, ``n_loops``): one agent step. ``st``: the ``UnitArrays``; ``ah``: the
    ``AirHealArrays`` (``energy``: float64 ``[B, U]``); ``swing_*`` to ``flags``: the fields of the
    ``CombatState``; ``attack_point``: the enemy's attack-move goal (x, y); ``shooting_buf`` and
    ``recent_buf``, int64 ``[B, U]``, are scratch space. (Numba inlines functions of at most 30 arguments:
    the tuples keep it within.)"""
    # unpacked once per agent step: reading a tuple's array in an inner loop costs reference counting
    # every time
    (radius, speed, weapon_range, scan_range, damage, bonus, bonus_attribute, attributes, attacks, armor,
     cooldown_loops, shield_max, damage_point_loops, missile_speed, strike_interval_loops) = st
    air_heal, flying, hits_air, threat, healer, heal_per_loop, health_max, energy_max, energy_regen_per_loop = ah
    attack_x, attack_y = attack_point
    n_units = x.shape[1]
    key, first_counter, n_loops = clock
    recent = recent_buf[b]  # for _separate
    for loop in range(n_loops):
        counter = first_counter + loop
        # 1. targets: agents' attack orders lapse when the target dies, heal orders also when the target is at
        # full life or the healer out of energy; then the enemy AI re-evaluates (it sees the agents' orders
        # as they are now). flags[b, w] for enemy w: whether a living agent's attack order is on it.
        for u in range(n_agents):
            if health[b, u] > 0 and order[b, u] == ORDER_ATTACK:
                t = target[b, u]
                if health[b, t] <= 0 or (air_heal and healer[u] and (health[b, t] >= health_max[t]
                                                                     or energy[b, u] <= 0.0)):
                    order[b, u] = ORDER_IDLE
                    target[b, u] = -1
        agent_box = _agent_box(b, n_agents, x, y, health, order, target, radius, flags)
        for u in range(n_agents, n_units):
            if health[b, u] <= 0:
                continue
            if air_heal and healer[u]:
                target[b, u] = _enemy_heal_target(x, y, health, health_max, energy, attributes, radius,
                                                  scan_range, target, b, u, n_agents)
            else:
                target[b, u] = _enemy_target(x, y, health, order, target, radius, threat, weapon_range,
                                             scan_range, flying, hits_air, air_heal, leash_x, leash_y,
                                             returning, b, u, n_agents, flags[b, u] != 0, agent_box)
        # 2. attacks. shooting_buf[b, u]: the target u starts an attack on, ENGAGED if it holds its ground
        # (target in range while the weapon cools down, or an attack winding up or striking), -1 otherwise.
        for u in range(n_units):
            shooting_buf[b, u] = -1
            if health[b, u] <= 0:
                continue
            phase = swing_phase[b, u]
            if phase == SWING_WINDUP or phase == SWING_STRIKES:
                shooting_buf[b, u] = ENGAGED
                continue
            t = target[b, u]
            if t < 0 or (u < n_agents and order[b, u] != ORDER_ATTACK):
                continue
            if _within_reach(x, y, radius, b, u, t, weapon_range[u]):
                ready = cooldown[b, u] <= 0.0 and phase == SWING_NONE and damage[u] > 0.0
                shooting_buf[b, u] = t if ready else ENGAGED
        for u in range(n_units):
            t = shooting_buf[b, u]
            if t < 0:
                continue
            delay = WEAPON_DELAY_MIN_LOOPS + (WEAPON_DELAY_MAX_LOOPS - WEAPON_DELAY_MIN_LOOPS) * hash_uniform(
                key, counter * n_units + u)
            cooldown[b, u] = cooldown_loops[u] + delay
            swing_target[b, u] = t
            swing_phase[b, u] = SWING_WINDUP
            swing_timer[b, u] = damage_point_loops[u]
            swing_hits[b, u] = attacks[u]
            fired_at[b, u] = t
        # events due now, decided before any of them lands: hits of one loop resolve together
        for u in range(n_units):
            phase = swing_phase[b, u]
            if phase != SWING_NONE and health[b, u] <= 0 and phase != SWING_FLIGHT:
                swing_phase[b, u] = SWING_NONE  # a dead unit's attack dies with it; its missile flies on
            flags[b, u] = 1 if swing_phase[b, u] != SWING_NONE and swing_timer[b, u] <= 0.0 else 0
        for u in range(n_units):
            while flags[b, u] == 1 and swing_phase[b, u] != SWING_NONE and swing_timer[b, u] <= 0.0:
                _swing_event(b, u, n_agents, x, y, health, shield, target, since_damage, damage, bonus,
                             bonus_attribute, attributes, armor, missile_speed, strike_interval_loops,
                             swing_target, swing_phase, swing_timer, swing_hits, leash_x, leash_y, returning,
                             help_timer, healer, flying, hits_air)
        if air_heal:
            _heal(b, n_agents, x, y, health, health_max, energy, order, target, radius, weapon_range, healer,
                  heal_per_loop)
        # 3. movement towards each unit's goal; flags[b, u] records who moved (0; -1: not moved)
        for u in range(n_units):
            flags[b, u] = -1
            if health[b, u] <= 0 or shooting_buf[b, u] != -1:
                continue
            t = target[b, u]
            stop_at = 0.0
            if u < n_agents and order[b, u] == ORDER_MOVE:
                gx = order_x[b, u]
                gy = order_y[b, u]
            elif t >= 0 and (u >= n_agents or order[b, u] == ORDER_ATTACK):
                stop_at = weapon_range[u] + radius[u] + radius[t]
                gx = x[b, t]
                gy = y[b, t]
            elif u >= n_agents and returning[b, u]:
                gx = leash_x[b, u]
                gy = leash_y[b, u]
            elif u >= n_agents:
                gx = attack_x
                gy = attack_y
            else:
                continue
            dx = gx - x[b, u]
            dy = gy - y[b, u]
            dist = np.sqrt(dx * dx + dy * dy)
            step = min(speed[u], dist - stop_at)
            if step <= 0.0:
                continue
            ux = dx / dist
            uy = dy / dist
            # local avoidance: the straight step, else the first of the steering angles that bumps nobody
            for k in range(len(_STEER_COS)):
                rx = ux * _STEER_COS[k] - uy * _STEER_SIN[k]
                ry = ux * _STEER_SIN[k] + uy * _STEER_COS[k]
                nx = x[b, u] + rx * step
                ny = y[b, u] + ry * step
                if not _bumps(x, y, health, radius, flying, air_heal, b, u, nx, ny):
                    break
                if k == len(_STEER_COS) - 1:  # boxed in: push straight on, separation resolves it
                    nx = x[b, u] + ux * step
                    ny = y[b, u] + uy * step
            x[b, u], y[b, u] = _settle(pathing, x[b, u], y[b, u], nx, ny, not (air_heal and flying[u]))
            flags[b, u] = 0
            if u < n_agents and order[b, u] == ORDER_MOVE and dist - step <= ARRIVAL_EPS:
                order[b, u] = ORDER_IDLE
        _separate(b, x, y, health, radius, flying, air_heal, shooting_buf, flags, pathing, recent)
        # 4. clocks
        for u in range(n_units):
            if swing_phase[b, u] != SWING_NONE:
                swing_timer[b, u] -= 1.0
            if health[b, u] <= 0:
                continue
            if cooldown[b, u] > 0.0:
                cooldown[b, u] = max(cooldown[b, u] - 1.0, 0.0)
            if help_timer[b, u] > 0.0:
                help_timer[b, u] = max(help_timer[b, u] - 1.0, 0.0)
            since_damage[b, u] += 1.0
            if shield_max[u] > 0.0 and since_damage[b, u] > SHIELD_REGEN_DELAY_LOOPS:
                shield[b, u] = min(shield[b, u] + SHIELD_REGEN_PER_LOOP, shield_max[u])
            if air_heal and energy_max[u] > 0.0:
                energy[b, u] = min(energy[b, u] + energy_regen_per_loop[u], energy_max[u])


def _step_envs_py(actions, active, n_agents, x, y, health, shield, cooldown, order, order_x, order_y,
                  target, since_damage, fired_at, keys, episode_steps, death_tracker, last_action, radius,
                  speed, weapon_range, scan_range, damage, bonus, bonus_attribute, attributes, attacks,
                  armor, cooldown_loops, shield_max, damage_point_loops, missile_speed,
                  strike_interval_loops, air_heal, flying, hits_air, threat, healer, heal_per_loop,
                  health_max, energy_max, energy_regen_per_loop, energy, swing_target, swing_phase,
                  swing_timer, swing_hits, leash_x, leash_y, returning, help_timer, flags, pathing,
                  attack_x, attack_y, step_mul, move_amount, rp, out_reward, out_terminated, out_won,
                  out_timeout, out_dead, prev_health, prev_shield, scratch_int, scratch_order):
    """Advance every active environment by one agent step (``step_mul`` game loops).

    ``actions`` int64 ``[B, N]`` (already validated); ``active`` bool ``[B]``; ``radius`` to
    ``strike_interval_loops``: the fields of the ``UnitArrays``; ``air_heal`` to ``energy_regen_per_loop``:
    those of the ``AirHealArrays`` (``air_heal`` is its ``active``: whether any unit flies or heals);
    ``energy`` float64 ``[B, U]``; ``swing_target`` to ``flags``: the fields of the ``CombatState``
    (passed one by one: a tuple argument costs microseconds per call to unbox, and inside a parallel
    loop writes through a tuple of arrays are lost). For each active env writes the final (SMAC-scaled)
    reward into ``out_reward`` (float32 ``[B]``), ``out_terminated``/``out_won``/``out_timeout`` (bool
    ``[B]``, set to True when it happens) and ``out_dead`` int64 ``[B, 2]`` (dead allies, dead enemies). ``rp``: see
    ``_finish_step``. ``prev_health``, ``prev_shield`` (float64), ``scratch_int`` and ``scratch_order``
    (int64), all ``[B, U]``, are scratch space.
    """
    n_units = x.shape[1]
    st = UnitArrays(radius, speed, weapon_range, scan_range, damage, bonus, bonus_attribute, attributes,
                    attacks, armor, cooldown_loops, shield_max, damage_point_loops, missile_speed,
                    strike_interval_loops)
    ah = AirHealArrays(air_heal, flying, hits_air, threat, healer, heal_per_loop, health_max, energy_max,
                       energy_regen_per_loop)
    attack_point = (attack_x, attack_y)
    for b in numba.prange(x.shape[0]):
        if not active[b]:
            continue
        for i in range(n_agents):
            last_action[b, i] = actions[b, i]
            a = actions[b, i]
            if health[b, i] <= 0 or a == 0:
                continue
            if a >= 6:
                # a healer's actions 6 + j heal ally j; the game refuses an attack its weapon cannot make
                # (a marauder on a medivac): the unit keeps its current order
                t = a - 6 if healer[i] else n_agents + a - 6
                if flying[t] and not hits_air[i] and not healer[i]:
                    continue
                if not _attacking(order, target, b, i, t):
                    _cancel_swing(swing_phase, cooldown, b, i)
                order[b, i] = ORDER_ATTACK
                target[b, i] = t
                continue
            _cancel_swing(swing_phase, cooldown, b, i)
            if a == 1:
                order[b, i] = ORDER_IDLE
                target[b, i] = -1
            else:
                order[b, i] = ORDER_MOVE
                target[b, i] = -1
                order_x[b, i] = x[b, i] + _DIRECTIONS[a - 2][0] * move_amount
                order_y[b, i] = y[b, i] + _DIRECTIONS[a - 2][1] * move_amount
        for u in range(n_units):
            prev_health[b, u] = health[b, u]
            prev_shield[b, u] = shield[b, u]
            fired_at[b, u] = -1
        _game_loops(b, n_agents, x, y, health, shield, cooldown, energy, order, order_x, order_y, target,
                    since_damage, fired_at, (keys[b], episode_steps[b] * step_mul, step_mul), st, ah,
                    swing_target, swing_phase, swing_timer, swing_hits, leash_x, leash_y, returning,
                    help_timer, flags, pathing, attack_point, scratch_int, scratch_order)
        episode_steps[b] += 1
        reward = battle_reward(prev_health, prev_shield, health, shield, death_tracker, b, n_agents,
                               rp[0] > 0, rp[1], rp[2])
        _finish_step(b, n_agents, health, healer, air_heal, episode_steps, reward, rp, out_reward,
                     out_terminated, out_won, out_timeout, out_dead)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_step(b, n_agents, health, healer, air_heal, episode_steps, reward, rp, out_reward, out_terminated,
                 out_won, out_timeout, out_dead):
    """SMAC's end-of-step logic: battle outcome, win/defeat reward, timeout, reward scaling.

    With healers (``air_heal``: SMAC's MMM maps) SMAC's ``only_medivac_left`` joins in, checked before the
    win: the agents lose once no agent but healers lives (even if the enemies died too), and win once
    the enemy is down to a single unit that is a healer.

    ``rp`` float64 = (only_positive, death_value, negative_scale, sparse, reward_win, reward_defeat,
    scale (0/1), max_reward / reward_scale_rate, episode_limit).
    """
    n_units = health.shape[1]
    allies_alive = 0
    fighters_alive = 0  # agents that are not healers
    enemies_alive = 0
    enemy_healers_alive = 0
    for u in range(n_units):
        if health[b, u] > 0:
            if u < n_agents:
                allies_alive += 1
                fighters_alive += 0 if healer[u] else 1
            else:
                enemies_alive += 1
                enemy_healers_alive += 1 if healer[u] else 0
    out_dead[b, 0] = n_agents - allies_alive
    out_dead[b, 1] = n_units - n_agents - enemies_alive
    sparse = rp[3] > 0
    if sparse:
        reward = 0.0
    lost = (allies_alive == 0 and enemies_alive > 0) or (air_heal and fighters_alive == 0)
    won = (allies_alive > 0 and enemies_alive == 0) or (air_heal and enemies_alive == 1
                                                         and enemy_healers_alive == 1)
    if lost:
        out_terminated[b] = True
        reward = -1.0 if sparse else reward + rp[5]
    elif won:
        out_terminated[b] = True
        out_won[b] = True
        reward = 1.0 if sparse else reward + rp[4]
    elif allies_alive == 0 and enemies_alive == 0:
        out_terminated[b] = True
    elif episode_steps[b] >= rp[8]:
        out_terminated[b] = True
        out_timeout[b] = True
    if rp[6] > 0:
        reward /= rp[7]
    out_reward[b] = reward


def _jit_variant(fn, name: str, parallel: bool):
    """Compile ``fn`` under its own name, so the serial and parallel builds get separate cache files.

    The step allocates nothing (its scratch space comes in as arguments), so it is compiled without
    Numba's runtime (``features.KERNEL_OPTIONS``: ``_nrt=False``): with it, every array handed to an inlined helper is reference
    counted with atomic operations on every call, which cost more than the helpers' own work (an enemy's
    target scan 1,070 ns per game loop with them, 60 ns without; the serial step about 3x slower)."""
    clone = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = name
    return numba.njit(parallel=parallel, error_model="numpy", **KERNEL_OPTIONS)(clone)


#: The step kernel spread over all cores (large batches) and on one core (small batches).
step_envs_parallel = _jit_variant(_step_envs_py, "step_envs_parallel", parallel=True)
step_envs_serial = _jit_variant(_step_envs_py, "step_envs_serial", parallel=False)


@numba.njit(cache=True, error_model="numpy")
def spawn_envs(reset_mask, keys, env_seeds, episode_index, x, y, ally_spacing, enemy_spacing,
               ally_groups, n_agents, ally_spawn, enemy_spawn):
    """Place both armies of every environment in ``reset_mask`` in clumps around their spawn points.

    Units stand on a square grid (spacing a unit diameter plus a gap) centred on the team point, with a
    small random jitter. Within each ally unit type, agent ids follow SMAC's sort by (x, y).
    ``ally_groups`` int64 ``[G, 2]`` holds (first agent, count) of each ally type.
    """
    n_envs = x.shape[0]
    n_units = x.shape[1]
    for b in range(n_envs):
        if not reset_mask[b]:
            continue
        key = episode_key(env_seeds[b], episode_index[b])
        keys[b] = key
        for team in range(2):
            first = 0 if team == 0 else n_agents
            count = n_agents if team == 0 else n_units - n_agents
            spacing = ally_spacing if team == 0 else enemy_spacing
            cx, cy = ally_spawn if team == 0 else enemy_spawn
            cols = int(np.ceil(np.sqrt(count)))
            rows = (count + cols - 1) // cols
            for k in range(count):
                u = first + k
                jx = (2.0 * hash_uniform(key, 2 * u) - 1.0) * SPAWN_JITTER
                jy = (2.0 * hash_uniform(key, 2 * u + 1) - 1.0) * SPAWN_JITTER
                x[b, u] = cx + ((k % cols) - (cols - 1) / 2.0) * spacing + jx
                y[b, u] = cy + ((k // cols) - (rows - 1) / 2.0) * spacing + jy
        for g in range(ally_groups.shape[0]):
            lo = ally_groups[g, 0]
            hi = lo + ally_groups[g, 1]
            for k in range(lo + 1, hi):  # insertion sort on (x, y)
                kx = x[b, k]
                ky = y[b, k]
                j = k - 1
                while j >= lo and (x[b, j] > kx or (x[b, j] == kx and y[b, j] > ky)):
                    x[b, j + 1] = x[b, j]
                    y[b, j + 1] = y[b, j]
                    j -= 1
                x[b, j + 1] = kx
                y[b, j + 1] = ky

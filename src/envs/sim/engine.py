"""The batched battle engine: SC2-style dynamics for B independent environments, in Numba.

State lives in ``[B, U]`` arrays (agents first, then enemies; see ``features``). One call of
``step_envs`` advances every active environment by one agent step = ``step_mul`` game loops. Each game
loop, for every environment:

1. the built-in enemy picks targets (``_enemy_target``);
2. every unit whose attack target is within weapon range (edge to edge) and whose weapon is ready fires;
   all shots of a loop are resolved together, so two units can kill each other in the same loop;
3. the other units move: along their move order, towards an attack target that is out of range, or
   (enemies without a target) towards the agents' spawn point; then overlapping units are pushed apart
   and every position is kept on pathable ground;
4. weapon cooldowns tick down and shields regenerate after their delay.

Randomness (spawn jitter and SC2's random weapon delay) comes from a counter-based hash of the
environment's own key, so every environment has its own stream and a seed replays bit for bit whatever
the batch size. Every simplification relative to SC2 is listed in ``docs/simulator.md``.
"""
from __future__ import annotations

import types

import numba
import numpy as np

from .features import battle_reward
from .units import SHIELD_REGEN_DELAY_LOOPS, SHIELD_REGEN_PER_LOOP

# Numba's own work-queue threads: unlike the OpenMP layer they do not spin while waiting, which matters
# when the simulator shares the cores with PyTorch or other processes (measured: 6x faster at B=64
# under load). Set before any parallel kernel runs.
numba.config.THREADING_LAYER = "workqueue"

ORDER_IDLE = 0
ORDER_MOVE = 1
ORDER_ATTACK = 2

#: Enemies attack-moving scan this far (edge to edge, at least their weapon range) for targets.
ENEMY_SCAN_RANGE = 5.0
#: SC2's random weapon delay, in game loops (-0.0625 .. +0.125 faster-speed seconds).
WEAPON_DELAY_MIN = -1.4
WEAPON_DELAY_MAX = 2.8
#: Spawn clumps: units on a square grid around the team point, jittered by up to this much per axis.
SPAWN_JITTER = 0.1
SPAWN_GAP = 0.2
ARRIVAL_EPS = 1e-6
#: Marks a unit whose target is in weapon range while its weapon cools down.
ENGAGED = -2
#: Steering angles tried, in order, when the straight step would bump into a unit: 0, ±45°, ±90°.
_STEER_COS = (1.0, 0.7071067811865476, 0.7071067811865476, 0.0, 0.0)
_STEER_SIN = (0.0, 0.7071067811865476, -0.7071067811865476, 1.0, -1.0)

_DIRECTIONS = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))  # north, south, east, west


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
def _passable(pathing, px, py):
    if px < 0.0 or py < 0.0:
        return False
    cx = int(px)
    cy = int(py)
    return cx < pathing.shape[0] and cy < pathing.shape[1] and pathing[cx, cy]


@numba.njit(cache=True, error_model="numpy", inline="always")
def _settle(pathing, ox, oy, nx, ny):
    """Where a unit at (ox, oy) ends up when it tries to go to (nx, ny): it slides along walls."""
    if _passable(pathing, nx, ny):
        return nx, ny
    if _passable(pathing, nx, oy):
        return nx, oy
    if _passable(pathing, ox, ny):
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
def _enemy_target(x, y, health, radius, weapon_range, sight, target, last_attacker, b, u, n_agents):
    """The built-in AI's target choice for enemy ``u`` (SC2 auto-acquisition on an attack-move).

    Keep the current target while it is alive, in sight and in weapon range; otherwise take the closest
    ally in weapon range; otherwise keep chasing a target still in sight; otherwise take the closest
    ally within the scan range, or retaliate against the last unit that hit it; otherwise none (-1).
    "Closest" compares centre distances.
    """
    cur = target[b, u]
    valid = cur >= 0 and health[b, cur] > 0 and _dist2(x, y, b, u, cur) <= sight[u] * sight[u]
    if valid and _within_reach(x, y, radius, b, u, cur, weapon_range[u]):
        return cur
    scan = max(weapon_range[u], ENEMY_SCAN_RANGE)
    in_range = -1
    in_range_d2 = 1e30
    in_scan = -1
    in_scan_d2 = 1e30
    for a in range(n_agents):
        if health[b, a] <= 0:
            continue
        d2 = _dist2(x, y, b, u, a)
        reach = weapon_range[u] + radius[u] + radius[a]
        if d2 <= reach * reach and d2 < in_range_d2:
            in_range = a
            in_range_d2 = d2
        reach = scan + radius[u] + radius[a]
        if d2 <= reach * reach and d2 < in_scan_d2:
            in_scan = a
            in_scan_d2 = d2
    if in_range >= 0:
        return in_range
    if valid:
        return cur
    if in_scan < 0:
        att = last_attacker[b, u]
        if att >= 0 and health[b, att] > 0:
            in_scan = att
    return in_scan


@numba.njit(cache=True, error_model="numpy", inline="always")
def _bumps(x, y, health, radius, b, u, nx, ny):
    """Whether moving unit ``u`` to (nx, ny) brings it closer to a unit it would overlap."""
    for v in range(x.shape[1]):
        if v == u or health[b, v] <= 0:
            continue
        touch = radius[u] + radius[v]
        dx = x[b, v] - nx
        dy = y[b, v] - ny
        new_d2 = dx * dx + dy * dy
        if new_d2 < touch * touch and new_d2 < _dist2(x, y, b, u, v):
            return True
    return False


@numba.njit(cache=True, error_model="numpy", inline="always")
def _apply_hits(health, shield, b, t, damage, hits, armor):
    """``hits`` hits of ``damage`` each: shields absorb first (no shield armor), armor applies per hit
    to what gets through to health."""
    for _ in range(hits):
        through = damage
        if shield[b, t] > 0.0:
            absorbed = min(shield[b, t], through)
            shield[b, t] -= absorbed
            through -= absorbed
        if through > 0.0:
            health[b, t] -= max(through - armor, 0.0)
    if health[b, t] <= 0.0:
        health[b, t] = 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _game_loop(b, n_agents, x, y, health, shield, cooldown, order, order_x, order_y, target,
               last_attacker, since_damage, fired_at, key, counter, st, pathing, attack_x, attack_y, shooting_buf):
    """Advance environment ``b`` by one game loop (``shooting_buf`` int64 ``[B, U]`` is scratch space). ``st`` is the tuple of static per-unit arrays."""
    (radius, speed, weapon_range, sight, damage, bonus, bonus_attr, attributes, attacks, armor,
     cooldown_loops, shield_max) = st
    n_units = x.shape[1]
    # 1. targets: the enemy AI re-evaluates; agents' attack orders lapse when the target dies
    for u in range(n_units):
        if health[b, u] <= 0:
            continue
        if u >= n_agents:
            target[b, u] = _enemy_target(x, y, health, radius, weapon_range, sight, target,
                                         last_attacker, b, u, n_agents)
        elif order[b, u] == ORDER_ATTACK and health[b, target[b, u]] <= 0:
            order[b, u] = ORDER_IDLE
            target[b, u] = -1
    # 2. fire: decide every shot first, then resolve them together
    # shooting_buf[b, u]: the target u fires at, ENGAGED if its target is in range but the weapon is
    # cooling down, -1 otherwise. Engaged units hold their ground.
    for u in range(n_units):
        shooting_buf[b, u] = -1
    for u in range(n_units):
        t = target[b, u]
        if health[b, u] <= 0 or t < 0 or (u < n_agents and order[b, u] != ORDER_ATTACK):
            continue
        if _within_reach(x, y, radius, b, u, t, weapon_range[u]):
            shooting_buf[b, u] = t if cooldown[b, u] <= 0.0 else ENGAGED
    for u in range(n_units):
        t = shooting_buf[b, u]
        if t < 0:
            continue
        hit = damage[u] + (bonus[u] if attributes[t] & bonus_attr[u] else 0.0)
        _apply_hits(health, shield, b, t, hit, attacks[u], armor[t])
        delay = WEAPON_DELAY_MIN + (WEAPON_DELAY_MAX - WEAPON_DELAY_MIN) * hash_uniform(
            key, counter * n_units + u)
        cooldown[b, u] = cooldown_loops[u] + delay
        last_attacker[b, t] = u
        since_damage[b, t] = 0.0
        fired_at[b, u] = t
    # 3. movement towards each unit's goal
    for u in range(n_units):
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
            if not _bumps(x, y, health, radius, b, u, nx, ny):
                break
            if k == len(_STEER_COS) - 1:  # boxed in: push straight on, separation resolves it
                nx = x[b, u] + ux * step
                ny = y[b, u] + uy * step
        x[b, u], y[b, u] = _settle(pathing, x[b, u], y[b, u], nx, ny)
        if u < n_agents and order[b, u] == ORDER_MOVE and dist - step <= ARRIVAL_EPS:
            order[b, u] = ORDER_IDLE
    # ... and no two units overlap
    for u in range(n_units):
        if health[b, u] <= 0:
            continue
        for v in range(u + 1, n_units):
            if health[b, v] <= 0:
                continue
            dx = x[b, v] - x[b, u]
            dy = y[b, v] - y[b, u]
            touch = radius[u] + radius[v]
            d2 = dx * dx + dy * dy
            if d2 >= touch * touch:
                continue
            dist = np.sqrt(d2)
            overlap = touch - dist
            if dist > 0.0:
                ux = dx / dist
                uy = dy / dist
            else:
                ux = 1.0
                uy = 0.0
            # engaged units hold their ground; otherwise both give way equally
            share_u = 0.5
            if shooting_buf[b, u] != -1 and shooting_buf[b, v] == -1:
                share_u = 0.0
            elif shooting_buf[b, u] == -1 and shooting_buf[b, v] != -1:
                share_u = 1.0
            push_u = overlap * share_u
            push_v = overlap - push_u
            x[b, u], y[b, u] = _settle(pathing, x[b, u], y[b, u], x[b, u] - ux * push_u,
                                       y[b, u] - uy * push_u)
            x[b, v], y[b, v] = _settle(pathing, x[b, v], y[b, v], x[b, v] + ux * push_v,
                                       y[b, v] + uy * push_v)
    # 4. clocks
    for u in range(n_units):
        if health[b, u] <= 0:
            continue
        if cooldown[b, u] > 0.0:
            cooldown[b, u] = max(cooldown[b, u] - 1.0, 0.0)
        since_damage[b, u] += 1.0
        if shield_max[u] > 0.0 and since_damage[b, u] > SHIELD_REGEN_DELAY_LOOPS:
            shield[b, u] = min(shield[b, u] + SHIELD_REGEN_PER_LOOP, shield_max[u])


def _step_envs_py(actions, active, n_agents, x, y, health, shield, cooldown, order, order_x, order_y,
                  target, last_attacker, since_damage, fired_at, keys, episode_steps, death_tracker,
                  last_action, static, pathing, attack_x, attack_y, step_mul, move_amount, rp, out_reward,
                  out_terminated, out_won, out_timeout, out_dead, prev_health, prev_shield, scratch_int):
    """Advance every active environment by one agent step (``step_mul`` game loops).

    ``actions`` int64 ``[B, N]`` (already validated); ``active`` bool ``[B]``. For each active env writes
    the final (SMAC-scaled) reward, ``out_terminated``/``out_won``/``out_timeout`` (bool ``[B]``, set to
    True when it happens) and ``out_dead`` int64 ``[B, 2]`` (dead allies, dead enemies). ``rp``: see
    ``_finish_step``. ``prev_health``, ``prev_shield`` (float64) and ``scratch_int`` (int64), all
    ``[B, U]``, are scratch space.
    """
    n_envs = x.shape[0]
    n_units = x.shape[1]
    for b in numba.prange(n_envs):
        if not active[b]:
            continue
        for i in range(n_agents):
            last_action[b, i] = actions[b, i]
            a = actions[b, i]
            if health[b, i] <= 0 or a == 0:
                continue
            if a == 1:
                order[b, i] = ORDER_IDLE
                target[b, i] = -1
            elif a < 6:
                order[b, i] = ORDER_MOVE
                target[b, i] = -1
                order_x[b, i] = x[b, i] + _DIRECTIONS[a - 2][0] * move_amount
                order_y[b, i] = y[b, i] + _DIRECTIONS[a - 2][1] * move_amount
            else:
                order[b, i] = ORDER_ATTACK
                target[b, i] = n_agents + a - 6
        for u in range(n_units):
            prev_health[b, u] = health[b, u]
            prev_shield[b, u] = shield[b, u]
            fired_at[b, u] = -1
        for loop in range(step_mul):
            counter = episode_steps[b] * step_mul + loop
            _game_loop(b, n_agents, x, y, health, shield, cooldown, order, order_x, order_y, target,
                       last_attacker, since_damage, fired_at, keys[b], counter, static, pathing,
                       attack_x, attack_y, scratch_int)
        episode_steps[b] += 1
        reward = battle_reward(prev_health, prev_shield, health, shield, death_tracker, b, n_agents,
                               rp[0] > 0, rp[1], rp[2])
        _finish_step(b, n_agents, health, episode_steps, reward, rp, out_reward, out_terminated, out_won,
                     out_timeout, out_dead)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _finish_step(b, n_agents, health, episode_steps, reward, rp, out_reward, out_terminated, out_won,
                 out_timeout, out_dead):
    """SMAC's end-of-step logic: battle outcome, win/defeat reward, timeout, reward scaling.

    ``rp`` float64 = (only_positive, death_value, negative_scale, sparse, reward_win, reward_defeat,
    scale (0/1), max_reward / reward_scale_rate, episode_limit).
    """
    n_units = health.shape[1]
    allies_alive = 0
    enemies_alive = 0
    for u in range(n_units):
        if health[b, u] > 0:
            if u < n_agents:
                allies_alive += 1
            else:
                enemies_alive += 1
    out_dead[b, 0] = n_agents - allies_alive
    out_dead[b, 1] = n_units - n_agents - enemies_alive
    sparse = rp[3] > 0
    if sparse:
        reward = 0.0
    if allies_alive > 0 and enemies_alive == 0:
        out_terminated[b] = True
        out_won[b] = True
        reward = 1.0 if sparse else reward + rp[4]
    elif allies_alive == 0 and enemies_alive > 0:
        out_terminated[b] = True
        reward = -1.0 if sparse else reward + rp[5]
    elif allies_alive == 0 and enemies_alive == 0:
        out_terminated[b] = True
    elif episode_steps[b] >= rp[8]:
        out_terminated[b] = True
        out_timeout[b] = True
    if rp[6] > 0:
        reward /= rp[7]
    out_reward[b] = reward




def _jit_variant(fn, name: str, parallel: bool):
    """Compile ``fn`` under its own name, so the serial and parallel builds get separate cache files."""
    clone = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = name
    return numba.njit(parallel=parallel, cache=True, error_model="numpy")(clone)


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

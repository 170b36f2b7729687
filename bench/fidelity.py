"""Fidelity report of the embedded simulator: ``python bench/fidelity.py`` writes ``docs/fidelity.md``.

Three parts, each measured on this tree's simulator:

1. **Scripted policies**: win rates of stop, SMAC's heuristic (with and without ``heuristic_rest``), focus
   fire on the weakest enemy in range, and kiting, on every map, over ``--episodes`` battles each (one
   batch of that many environments per map and policy).
2. **Unit-level checks**: small set-up fights (``set_unit_situation``) whose outcome is worked out by hand
   from the StarCraft II game data in ``src/envs/sim/units.py``: how long k marines take to kill a marine,
   a stalker against a zealot, a marine chasing a fleeing marine. Each measured figure is printed beside
   the hand computation with whether it agrees.
3. **Learning results**: test win rates of the Sacred runs under ``--results`` (mean ± s.e. over seeds at
   given steps) beside the published real-StarCraft II figures.

Before/after: ``--label NAME --json FILE`` also stores this run's figures; every stored figure file in
``docs/fidelity/`` (or given with ``--compare``) appears as a column beside this run's, so a baseline
measured once on an older commit stays in the report when it is regenerated:

    python bench/fidelity.py                                   # the report, with the stored baselines
    python bench/fidelity.py --episodes 100 --maps 3m 2s3z --out /tmp/fidelity.md
    python bench/fidelity.py --label before --json docs/fidelity/before.json --no-markdown
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from envs.sim import SCENARIOS, BatchedStarCraft2Sim  # noqa: E402
from envs.sim import units  # noqa: E402
from envs.sim.units import UNIT_TYPES  # noqa: E402
from utils.plotting import PlotError, find_runs, select_seeds  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "docs", "fidelity.md")
STORED_DIR = os.path.join(ROOT, "docs", "fidelity")
METRIC = "test_battle_won_mean"
LEARNING_MAPS = ("5m_vs_6m", "3s_vs_4z")
LEARNING_STEPS = (1_000_000, 2_000_000, 5_000_000, 10_000_000)
#: Tests averaged per seed at a step (each test is only 32 greedy episodes).
LAST_TESTS = 5
#: Trials (environments, each with its own random weapon delays) per unit-level check.
TRIALS = 256

NORTH, SOUTH, EAST, WEST = 2, 3, 4, 5
_MOVES = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # actions 2..5

#: Where the reference win rates come from.
SOURCES = {
    "smac": "SMAC paper (Samvelyan et al. 2019) and PyMARL's published logs, real StarCraft II",
    "di": "DI-engine's SMAC benchmark, a well-tuned IPPO, real StarCraft II",
    "dm2": "DM² paper, Figure 2, its reference IPPO, real StarCraft II (read from the figure; 5M stands "
           "for 5–6M)",
    "readme": "this simulator at b25bc68 (before issue 10): the README's learning checks, 3 seeds",
    "demo": "this simulator at b25bc68: the README's DM² demonstrator, one IPPO seed at 1.13M steps, "
            "128 greedy episodes",
}
#: Reference test win rates: (map, alg, env steps, value as text, source key). Real StarCraft II first.
REFERENCES = (
    ("5m_vs_6m", "qmix", 2_000_000, "0.70–0.76", "smac"),
    ("5m_vs_6m", "ippo", 2_000_000, "≈ 0.75", "di"),
    ("5m_vs_6m", "ippo", 2_000_000, "0.01", "dm2"),
    ("5m_vs_6m", "ippo", 5_000_000, "0.13–0.22", "dm2"),
    ("5m_vs_6m", "ippo", 10_000_000, "0.58", "dm2"),
    ("3s_vs_4z", "ippo", 5_000_000, "0.34", "dm2"),
    ("3s_vs_4z", "ippo", 10_000_000, "0.90", "dm2"),
    ("5m_vs_6m", "ippo", 2_000_000, "0.811 ± 0.052", "readme"),
    ("5m_vs_6m", "qmix", 2_000_000, "0.583 ± 0.075", "readme"),
    ("5m_vs_6m", "ippo", 1_130_000, "0.49", "demo"),
)
_SIMULATOR_SOURCES = ("readme", "demo")


# ---------------------------------------------------------------------------------------------- policies
def _unit_table(env: BatchedStarCraft2Sim, field: str) -> np.ndarray:
    """A ``UnitType`` field of every unit of ``env`` (agents, then enemies), float64 ``[U]``."""
    return np.array([getattr(UNIT_TYPES[n], field) for n in env.ally_unit_names + env.enemy_unit_names],
                    dtype=np.float64)


def _nearest_enemy(env: BatchedStarCraft2Sim) -> tuple[np.ndarray, np.ndarray]:
    """Each agent's nearest living enemy (index ``[B, N]``, -1 if none) and its centre distance."""
    n = env.n_agents
    dist = np.hypot(env.x[:, None, n:] - env.x[:, :n, None], env.y[:, None, n:] - env.y[:, :n, None])
    dist = np.where(env.health[:, None, n:] > 0, dist, np.inf)
    nearest = dist.argmin(-1)
    d = np.take_along_axis(dist, nearest[..., None], -1)[..., 0]
    return np.where(np.isfinite(d), nearest, -1), d


def _best_move(env: BatchedStarCraft2Sim, vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The available move (action 2..5) most along ``(vx, vy)`` (``[B, N]``) and its alignment (-inf if none)."""
    align = vx[..., None] * _MOVES[:, 0] + vy[..., None] * _MOVES[:, 1]  # [B, N, 4]
    align = np.where(env.avail[:, :, NORTH:WEST + 1] > 0, align, -np.inf)
    best = align.argmax(-1)
    return NORTH + best, np.take_along_axis(align, best[..., None], -1)[..., 0]


def stop_policy(env: BatchedStarCraft2Sim) -> np.ndarray:
    """Agents that never act: stop (living agents may not no-op in SMAC), no-op when dead."""
    return np.where(env.health[:, :env.n_agents] > 0, 1, 0)


def ignored_actions(env: BatchedStarCraft2Sim) -> np.ndarray:
    """The actions handed to ``heuristic_ai`` environments: SMAC's scripted agents act instead, so they
    only need the right shape."""
    return np.zeros((env.n_envs, env.n_agents), dtype=np.int64)


def focus_fire_policy(env: BatchedStarCraft2Sim) -> np.ndarray:
    """Attack the enemy with the least health + shield among those in shoot range (lower id on a tie);
    with none in range, move towards the nearest living enemy."""
    n = env.n_agents
    can = env.avail[:, :, 6:] > 0  # [B, N, E]
    left = env.health[:, n:] + env.shield[:, n:]
    weakest = np.where(can, left[:, None, :], np.inf).argmin(-1)
    nearest, _ = _nearest_enemy(env)
    b = np.arange(env.n_envs)[:, None]
    e = n + np.maximum(nearest, 0)
    towards, align = _best_move(env, env.x[b, e] - env.x[:, :n], env.y[b, e] - env.y[:, :n])
    chase = np.where((nearest >= 0) & np.isfinite(align), towards, 1)
    acts = np.where(can.any(-1), 6 + weakest, chase)
    return np.where(env.health[:, :n] > 0, acts, 0)


def kite_policy(env: BatchedStarCraft2Sim) -> np.ndarray:
    """Ranged agents (weapon range > 1) step away from the nearest enemy while their weapon is cooling down
    and that enemy could reach them within two steps; otherwise (and melee agents always) focus fire."""
    n = env.n_agents
    acts = focus_fire_policy(env)
    nearest, dist = _nearest_enemy(env)
    rng, radius, speed = (_unit_table(env, f) for f in ("weapon_range", "radius", "speed_per_loop"))
    e = n + np.maximum(nearest, 0)
    threat = rng[e] + radius[:n] + radius[e] + 2 * env.step_mul * speed[e]  # [B, N]
    cooling = env.cooldown[:, :n] >= env.step_mul  # not ready again within this step
    b = np.arange(env.n_envs)[:, None]
    away, align = _best_move(env, env.x[:, :n] - env.x[b, e], env.y[:, :n] - env.y[b, e])
    retreat = (rng[:n] > 1.0) & cooling & (nearest >= 0) & (dist < threat) & (align > 0)
    return np.where(retreat & (env.health[:, :n] > 0), away, acts)


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    act: Callable[[BatchedStarCraft2Sim], np.ndarray]
    env_kwargs: tuple = ()


POLICIES = (
    Policy("stop", "every agent stops every step (it never attacks or moves)", stop_policy),
    Policy("heuristic", "SMAC's `heuristic_ai`: attack the nearest enemy until it dies", ignored_actions,
           (("heuristic_ai", True),)),
    Policy("heuristic_rest", "SMAC's `heuristic_ai` with `heuristic_rest`: as `heuristic`, but move towards "
           "the target while it is beyond the shoot range", ignored_actions,
           (("heuristic_ai", True), ("heuristic_rest", True))),
    Policy("focus_fire", "attack the in-range enemy with the least health + shield; else move towards the "
           "nearest enemy", focus_fire_policy),
    Policy("kite", "focus fire, but a ranged unit whose weapon is cooling down steps away from an enemy "
           "that could reach it within two steps", kite_policy),
)


def play(map_name: str, policy: Policy, episodes: int, seed: int) -> dict:
    """One episode in each of ``episodes`` environments; counts of wins, timeouts, kills and deaths."""
    env = BatchedStarCraft2Sim(map_name, n_envs=episodes, seed=seed, **dict(policy.env_kwargs))
    dead = np.zeros((2, episodes), dtype=np.int64)
    won = timeout = np.zeros(episodes, dtype=bool)
    length = np.zeros(episodes, dtype=np.int64)
    while not env.terminated.all():
        active = ~env.terminated
        _, terminated, info = env.step(policy.act(env))
        ended = terminated & active
        won = np.where(ended, info["battle_won"], won)
        # an episode that ends with both sides standing ran out of time
        timeout = np.where(ended, (info["dead_allies"] < env.n_agents) & (info["dead_enemies"] < env.n_enemies),
                           timeout)
        dead[:, ended] = info["dead_allies"][ended], info["dead_enemies"][ended]
        length += active
    return {"episodes": episodes, "won": int(won.sum()), "timeouts": int(timeout.sum()),
            "dead_allies_mean": float(dead[0].mean()), "dead_enemies_mean": float(dead[1].mean()),
            "length_mean": float(length.mean())}


# -------------------------------------------------------------------------------- unit-level measurements
def _situation(env: BatchedStarCraft2Sim, b: int, allies: dict, enemies: dict, enemy_cooldown=None) -> None:
    """Only the listed units alive in env ``b``: ``{unit index: (x, y)}`` per side, at full health."""
    n, m = env.n_agents, env.n_enemies
    sides = []
    for placed, count, first in ((allies, n, 0), (enemies, m, n)):
        x, y = np.full(count, 1.0), np.full(count, 9.0)
        health = np.zeros(count)
        for i, (px, py) in placed.items():
            x[i], y[i], health[i] = px, py, env.health_max[first + i]
        sides.append({"x": x, "y": y, "health": health, "shield": env.shield_max[first:first + count].copy()})
    if enemy_cooldown is not None:
        sides[1]["cooldown"] = np.full(m, float(enemy_cooldown))
    env.set_unit_situation(b, sides[0], sides[1])


def _fight(env: BatchedStarCraft2Sim, actions: Callable[[], np.ndarray], max_steps: int) -> np.ndarray:
    """Step until every environment terminated or ``max_steps``; health + shield per step ``[T + 1, B, U]``."""
    trace = [env.health + env.shield]
    for _ in range(max_steps):
        if env.terminated.all():
            break
        env.step(actions())
        trace.append(env.health + env.shield)
    return np.stack(trace)


def _first_drop(series: np.ndarray) -> np.ndarray:
    """Per column of ``series`` ``[T + 1, B]``: the step at which it first fell (-1 if never)."""
    fell = series[1:] < series[:-1]
    return np.where(fell.any(0), fell.argmax(0) + 1, -1)


def _death_step(series: np.ndarray) -> np.ndarray:
    dead = series <= 0
    return np.where(dead.any(0), dead.argmax(0), -1)


def _stats(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max()),
            "n": int(values.size)}


def measure_marines_kill_a_marine(k: int, seed: int) -> dict:
    """k marines (weapons ready) against one marine that does not fire back, 4 cells away (step_mul 1).

    Returns the loops from the first hit to the kill over ``TRIALS`` environments.
    """
    env = BatchedStarCraft2Sim("10m_vs_11m", n_envs=TRIALS, seed=seed, step_mul=1)
    angles = np.pi + (np.arange(k) - (k - 1) / 2) * 0.5  # on an arc west of the target, 2 cells apart
    allies = {j: (16.0 + 4.0 * np.cos(a), 16.0 + 4.0 * np.sin(a)) for j, a in enumerate(angles)}
    for b in range(TRIALS):
        _situation(env, b, allies, {0: (16.0, 16.0)}, enemy_cooldown=1e9)
    order = np.where(np.arange(env.n_agents) < k, 6, 0)
    trace = _fight(env, lambda: np.tile(order, (TRIALS, 1)), env.episode_limit)[:, :, env.n_agents]
    first, death = _first_drop(trace), _death_step(trace)
    killed = death >= 0
    return {"killed": int(killed.sum()), "trials": TRIALS,
            "kill_loops": _stats((death - first)[killed]) if killed.any() else None}


def measure_stalker_vs_zealot(seed: int) -> dict:
    """A stalker and a zealot side by side (centres 1.2 apart), both weapons ready, fight it out (step_mul 1).

    Returns how often the zealot won, the loops from the zealot's first hit to the stalker's death, the
    stalker's hits before it died and the zealot's health + shield left.
    """
    env = BatchedStarCraft2Sim("3s_vs_5z", n_envs=TRIALS, seed=seed, step_mul=1)
    for b in range(TRIALS):
        _situation(env, b, {0: (15.0, 16.0)}, {0: (16.2, 16.0)})
    order = np.where(np.arange(env.n_agents) == 0, 6, 0)

    def actions():
        return np.where(env.health[:, :1] > 0, order, 0)
    trace = _fight(env, actions, env.episode_limit)
    stalker, zealot = trace[:, :, 0], trace[:, :, env.n_agents]
    zealot_won = (_death_step(stalker) >= 0) & (_death_step(zealot) < 0)
    died = _death_step(stalker)[zealot_won]
    hits = (np.diff(zealot, axis=0) < 0).sum(0)[zealot_won]
    return {"zealot_won": int(zealot_won.sum()), "trials": TRIALS,
            "stalker_dies_loops": _stats(died - _first_drop(stalker)[zealot_won]) if zealot_won.any() else None,
            "stalker_hits": _stats(hits) if zealot_won.any() else None,
            "zealot_left": _stats(zealot[-1][zealot_won]) if zealot_won.any() else None}


CHASE_STEPS = 12
CHASE_GAP = 4.0


def measure_marine_chase(seed: int) -> dict:
    """Agent 0 (a marine) flees east from an enemy marine ``CHASE_GAP`` away (edge to edge, in its weapon
    range, weapon ready) for ``CHASE_STEPS`` steps. Returns the hits the chaser landed and the final gap."""
    env = BatchedStarCraft2Sim("3m", n_envs=TRIALS, seed=seed)
    r = UNIT_TYPES["marine"].radius
    for b in range(TRIALS):
        _situation(env, b, {0: (8.0, 16.0)}, {0: (8.0 - CHASE_GAP - 2 * r, 16.0)})
    flee = np.where(np.arange(env.n_agents) == 0, EAST, 0)
    trace = _fight(env, lambda: np.tile(flee, (TRIALS, 1)), CHASE_STEPS)
    lost = trace[0, :, 0] - trace[-1, :, 0]
    gap = np.hypot(env.x[:, 0] - env.x[:, env.n_agents], env.y[:, 0] - env.y[:, env.n_agents]) - 2 * r
    return {"trials": TRIALS, "hits": _stats(lost / UNIT_TYPES["marine"].damage), "gap": _stats(gap)}


MARINE_GROUPS = (1, 2, 3, 4, 8)


def measure_unit_checks(seed: int) -> dict:
    """Every unit-level measurement (keys as in :func:`expected_unit_checks`)."""
    out = {f"marines_{k}": measure_marines_kill_a_marine(k, seed) for k in MARINE_GROUPS}
    out["stalker_vs_zealot"] = measure_stalker_vs_zealot(seed)
    out["marine_chase"] = measure_marine_chase(seed)
    return out


# ---------------------------------------------------------------------- hand computations from game data
def _period_window(unit) -> tuple[int, int]:
    """Whole game loops from one attack to the next: the weapon's ``Period`` plus SC2's least random delay,
    rounded down, and plus its most, rounded up."""
    return (math.floor(unit.cooldown_loops + units.WEAPON_DELAY_MIN_LOOPS),
            math.ceil(unit.cooldown_loops + units.WEAPON_DELAY_MAX_LOOPS))


def _after_hits(attacker, target, hits: int) -> tuple[float, float]:
    """(shield, health) of a full ``target`` after ``hits`` hits of ``attacker``, by SC2's rules: shields
    take a hit first (no armor), what gets through loses the target's armor, at least ``MIN_DAMAGE``."""
    damage = attacker.damage + (attacker.bonus_damage if target.attributes & attacker.bonus_attribute else 0.0)
    shield, health = target.shield_max, target.health_max
    for _ in range(hits):
        absorbed = min(shield, damage)
        shield -= absorbed
        if damage > absorbed:
            health -= max(damage - absorbed - target.armor, units.MIN_DAMAGE)
    return shield, max(health, 0.0)


def _hits_to_kill(attacker, target) -> int:
    hits = 1
    while _after_hits(attacker, target, hits)[1] > 0:
        hits += 1
    return hits


def _hit_time_window(attacker, hit: int) -> tuple[float, float]:
    """Loops from an attacker's first hit to its ``hit``-th (1-based), attacks ``_period_window`` apart and
    the strikes of one attack ``strike_interval`` apart."""
    lo, hi = _period_window(attacker)
    attack, strike = divmod(hit - 1, attacker.attacks)
    extra = strike * attacker.strike_interval * units.LOOPS_PER_GAME_SECOND
    return attack * lo + extra, attack * hi + extra


def expected_unit_checks() -> dict:
    """The hand computation of every unit-level check: ``{key: {"text": ..., quantity: (lo, hi)}}``."""
    marine, stalker, zealot = UNIT_TYPES["marine"], UNIT_TYPES["stalker"], UNIT_TYPES["zealot"]
    out = {}
    hits = _hits_to_kill(marine, marine)
    p_lo, p_hi = _period_window(marine)
    for k in MARINE_GROUPS:
        volleys = math.ceil(hits / k)
        out[f"marines_{k}"] = {
            "text": f"{k} marine{'s' * (k > 1)} kill{'s' * (k == 1)} a marine: {hits} hits of {marine.damage:g} on "
                    f"{marine.health_max:g} HP, {volleys} volley{'s' * (volleys > 1)}, so {volleys - 1} weapon "
                    f"period{'s' * (volleys != 2)} of {p_lo}–{p_hi} loops after the first hit",
            "kill_loops": ((volleys - 1) * p_lo, (volleys - 1) * p_hi), "killed": (1.0, 1.0)}
    z_hits, s_hits = _hits_to_kill(zealot, stalker), _hits_to_kill(stalker, zealot)
    t_lo, t_hi = _hit_time_window(zealot, z_hits)
    s_lo, s_hi = _period_window(stalker)
    # the stalker launches later than the zealot strikes by the difference of their damage points, and
    # its missile lands after its flight; a missile launched before the stalker dies still lands
    per_s = units.LOOPS_PER_GAME_SECOND
    flight = (1.2 - stalker.radius - zealot.radius) / stalker.missile_speed if stalker.missile_speed else 0.0
    launch = (stalker.damage_point - zealot.damage_point) * per_s
    n_lo = 1 + math.floor(max(t_lo - launch - flight * per_s, 0.0) / s_hi)
    n_hi = 1 + math.floor(max(t_hi - launch, 0.0) / s_lo)
    left = [sum(_after_hits(stalker, zealot, n)) for n in (n_hi, n_lo)]
    out["stalker_vs_zealot"] = {
        "text": f"stalker against zealot: the zealot needs {z_hits} hits ({math.ceil(z_hits / zealot.attacks)} "
                f"attacks of {zealot.attacks} strikes), the stalker {s_hits}; the stalker dies {t_lo:g}–{t_hi:g} "
                f"loops after the zealot's first hit, having landed {n_lo}–{n_hi} hits",
        "zealot_won": (1.0, 1.0) if n_hi < s_hits else (0.0, 1.0), "stalker_dies_loops": (t_lo, t_hi),
        "stalker_hits": (n_lo, n_hi), "zealot_left": (left[0], left[1])}
    reach = marine.weapon_range
    v = marine.speed_per_loop
    open_loops = (reach - CHASE_GAP) / v
    out["marine_chase"] = {
        "text": f"a marine flees from a marine {CHASE_GAP:g} away at the same speed ({v:.4f} cells per loop): the "
                f"gap reaches the weapon range {reach:g} after {open_loops:.1f} loops, within one weapon period "
                f"({p_lo}–{p_hi} loops), so one hit; then the chaser never closes in",
        "hits": (1 + math.floor(open_loops / p_hi), 1 + math.floor(open_loops / p_lo)),
        "gap": (reach, reach + 2 * v)}
    return out


#: Measured figure tolerance on loop counts: a shot resolves on a whole game loop.
LOOP_TOLERANCE = 1.0
_QUANTITY_NAMES = {"kill_loops": "loops from first hit to kill", "killed": "share of trials with a kill",
                   "zealot_won": "share of trials the zealot won", "stalker_dies_loops":
                   "loops from the zealot's first hit to the stalker's death", "stalker_hits":
                   "stalker hits before it dies", "zealot_left": "zealot health + shield left",
                   "hits": "hits the chaser lands", "gap": "final gap, edge to edge (cells)"}
_LOOP_QUANTITIES = ("kill_loops", "stalker_dies_loops")


def _measured_range(check: dict, quantity: str):
    """``(lo, hi, text)`` of one measured quantity (a share for counts), or ``None`` if not measured."""
    if quantity in ("killed", "zealot_won"):
        share = check[quantity] / check["trials"]
        return share, share, f"{share:.2f}"
    value = check.get(quantity)
    if value is None:
        return None
    if value["min"] == value["max"]:
        return value["min"], value["max"], f"{value['min']:.4g}"
    return value["min"], value["max"], f"{value['min']:.4g}–{value['max']:.4g} (mean {value['mean']:.4g})"


def agrees(expected: tuple[float, float], measured: tuple[float, float], quantity: str) -> bool:
    tol = LOOP_TOLERANCE if quantity in _LOOP_QUANTITIES else 1e-9
    return expected[0] - tol <= measured[0] and measured[1] <= expected[1] + tol


# ------------------------------------------------------------------------------------------- learning
def learning_results(results_dir: str) -> dict:
    """``{"<map>/<alg>": {"<steps>": {"mean", "sem", "n"}}, "_note": why empty}`` from Sacred runs.

    A seed counts at a step when it logged tests up to at least 95% of it; its value there is the mean
    of its last ``LAST_TESTS`` test win rates at or before the step.
    """
    try:
        runs = find_runs(results_dir, METRIC, maps=list(LEARNING_MAPS))
    except PlotError as err:
        return {"_note": str(err)}
    seeds = select_seeds(runs, METRIC, include_unfinished=True).seeds
    out: dict = {}
    for seed in seeds:
        for t in LEARNING_STEPS:
            if seed.steps[-1] < 0.95 * t:
                continue
            upto = seed.values[seed.steps <= t][-LAST_TESTS:]
            out.setdefault(f"{seed.map_name}/{seed.alg}", {}).setdefault(str(t), []).append(float(upto.mean()))
    table = {}
    for group, per_step in out.items():
        table[group] = {}
        for t, values in per_step.items():
            v = np.array(values)
            sem = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
            table[group][t] = {"mean": float(v.mean()), "sem": sem, "n": len(v)}
    if not table:
        table["_note"] = f"no run under {results_dir} logged {METRIC} on {', '.join(LEARNING_MAPS)}"
    return table


# ------------------------------------------------------------------------------------------ figures
def _commit() -> str:
    """This tree's commit, with ``+changes`` when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def measure(label: str, maps: list[str], episodes: int, seed: int, results_dir: str, note: str = "",
            log=print) -> dict:
    """Every figure of the report for this tree's simulator, as a JSON-ready dict."""
    start = time.perf_counter()
    figures = {"label": label, "commit": _commit(), "note": note, "date": time.strftime("%Y-%m-%d %H:%M"),
               "episodes": episodes, "seed": seed, "results_dir": results_dir, "win_rates": {}, "seconds": {}}
    for map_name in maps:
        t0 = time.perf_counter()
        figures["win_rates"][map_name] = {p.name: play(map_name, p, episodes, seed) for p in POLICIES}
        figures["seconds"][map_name] = round(time.perf_counter() - t0, 1)
        wins = ", ".join(f"{p}: {r['won'] / r['episodes']:.3f}" for p, r in figures["win_rates"][map_name].items())
        log(f"{map_name:>14}  {wins}  ({figures['seconds'][map_name]} s)")
    t0 = time.perf_counter()
    figures["unit_checks"] = measure_unit_checks(seed)
    figures["seconds"]["unit_checks"] = round(time.perf_counter() - t0, 1)
    figures["learning"] = learning_results(results_dir)
    figures["seconds"]["total"] = round(time.perf_counter() - start, 1)
    return figures


def load_figures(path: str) -> dict:
    try:
        with open(path) as f:
            figures = json.load(f)
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read the stored figures {path!r} ({err}); write them with "
                         "`python bench/fidelity.py --label NAME --json FILE`")
    for key in ("label", "win_rates", "unit_checks"):
        if key not in figures:
            raise SystemExit(f"error: {path!r} is not a fidelity figure file (no {key!r}); write one with "
                             "`python bench/fidelity.py --label NAME --json FILE`")
    return figures


# ------------------------------------------------------------------------------------------ markdown
def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(cells) -> list[str]:
    return [_row(cells), _row(["---"] * len(cells))]


def _per_label(columns: list[dict], get: Callable[[dict], str | None]) -> str:
    """One cell holding every column's value, ``a → b`` (``—`` where a column lacks it)."""
    return " → ".join(get(c) or "—" for c in columns)


def _win_rate(c: dict, map_name: str, policy: str, key: str = "won") -> str | None:
    r = c["win_rates"].get(map_name, {}).get(policy)
    if r is None:
        return None
    if key == "won":
        return f"{r['won'] / r['episodes']:.2f}"
    return f"{r[key]:.1f}"


def _learning_cell(c: dict, group: str, t: int) -> str | None:
    v = c.get("learning", {}).get(group, {}).get(str(t))
    if v is None:
        return None
    sem = f" ± {v['sem']:.2f}" if v["sem"] is not None else ""
    return f"{v['mean']:.2f}{sem} (n={v['n']})"


def render_markdown(columns: list[dict]) -> str:
    """The report for figure sets ``columns`` (oldest first; the last one is this tree's)."""
    labels = " → ".join(f"**{c['label']}**" for c in columns)
    measured = {m for c in columns for m in c["win_rates"]}
    maps = [m for m in SCENARIOS if m in measured] + sorted(measured - set(SCENARIOS))
    lines = [
        "# Simulator fidelity",
        "",
        "<!-- Generated by bench/fidelity.py; edit that, not this file. -->",
        "",
        "How close the embedded simulator's battles are to StarCraft II: scripted policies on every map, "
        "small fights against hand computations from the game data, and learning results beside the "
        "published real-game numbers. Regenerate with `python bench/fidelity.py` (it measures this tree and "
        "puts every stored figure file of `docs/fidelity/` beside it).",
        "",
        f"Columns: {labels}, each cell `"
        + " → ".join(c["label"] for c in columns) + "` where there are several.",
        "",
    ]
    lines += _header(["label", "commit", "measured", "episodes per map and policy", "seconds to measure",
                      "learning runs"])
    for c in columns:
        commit = f"`{c['commit']}`" + (f" ({c['note']})" if c.get("note") else "")
        lines.append(_row([c["label"], commit, c["date"], str(c["episodes"]), f"{c['seconds']['total']:g}",
                           f"`{c['results_dir']}`"]))
    lines += ["", "## Scripted policies", ""]
    lines += [f"- **{p.name}**: {p.description}." for p in POLICIES]
    worst = max((0.5 / math.sqrt(c["episodes"]) for c in columns), default=0.0)
    lines += ["", f"Win rate (standard error at most {worst:.3f}; a timeout counts as a loss):", ""]
    lines += _header(["map"] + [p.name for p in POLICIES])
    for m in maps:
        lines.append(_row([m] + [_per_label(columns, lambda c: _win_rate(c, m, p.name)) for p in POLICIES]))
    lines += ["", "Enemies killed per episode (of the map's enemy count):", ""]
    lines += _header(["map", "enemies"] + [p.name for p in POLICIES])
    for m in maps:
        n_en = SCENARIOS[m].n_enemies if m in SCENARIOS else "?"
        lines.append(_row([m, str(n_en)] + [_per_label(columns, lambda c: _win_rate(c, m, p.name,
                                                                                  "dead_enemies_mean"))
                                             for p in POLICIES]))
    lines += _unit_check_section(columns)
    lines += _learning_section(columns)
    return "\n".join(lines) + "\n"


def _unit_check_section(columns: list[dict]) -> list[str]:
    expected = expected_unit_checks()
    lines = ["", "## Unit-level checks", "",
             f"Set-up fights (`set_unit_situation`, {TRIALS} trials each with their own random weapon delays) "
             "against hand computations from the game data in `src/envs/sim/units.py`, read when the report "
             "is generated. Times are in game loops (16 per game second) and are measured from the first hit, "
             "so the damage point and missile flight before it do not count; a window of whole loops allows "
             f"the random weapon delay and, for times, {LOOP_TOLERANCE:g} loop for the loop a shot resolves on.",
             ""]
    lines += _header(["check", "quantity", "hand computation"] + [f"{c['label']}" for c in columns])
    for key, exp in expected.items():
        first = True
        for quantity, window in exp.items():
            if quantity == "text":
                continue
            cells = [exp["text"] if first else "", _QUANTITY_NAMES[quantity],
                     f"{window[0]:.4g}" if window[0] == window[1] else f"{window[0]:.4g}–{window[1]:.4g}"]
            for c in columns:
                check = c["unit_checks"].get(key)
                got = _measured_range(check, quantity) if check else None
                if got is None:
                    cells.append("—")
                else:
                    mark = "agrees" if agrees(window, got[:2], quantity) else "**differs**"
                    cells.append(f"{got[2]}: {mark}")
            lines.append(_row(cells))
            first = False
    return lines


def _reference_cell(group: str, t: int, simulator: bool) -> str:
    """The reference win rates of ``group`` at ``t`` (real StarCraft II, or this simulator's earlier records)."""
    keys = list(SOURCES)
    return "; ".join(f"{value} [{keys.index(src) + 1}]" for m, alg, step, value, src in REFERENCES
                     if f"{m}/{alg}" == group and step == t and (src in _SIMULATOR_SOURCES) == simulator) or "—"


def _learning_section(columns: list[dict]) -> list[str]:
    lines = ["", "## Learning results", "",
             "Greedy test win rate of each column's learning runs (named in the table at the top): the mean of "
             f"each seed's last {LAST_TESTS} tests up to the step, then mean ± s.e. over seeds (n = seeds), "
             "beside the published real-StarCraft II figures and this simulator's earlier records.", ""]
    rows = {(m, alg, t) for m, alg, t, _, _ in REFERENCES}
    for c in columns:
        for group, per_step in c.get("learning", {}).items():
            if not group.startswith("_"):
                rows |= {(*group.split("/"), int(t)) for t in per_step}
    lines += _header(["map", "method", "env steps"] + [c["label"] for c in columns]
                     + ["StarCraft II (published)", "this simulator, earlier"])
    for m, alg, t in sorted(rows):
        group = f"{m}/{alg}"
        lines.append(_row([m, alg, f"{t / 1e6:g}M"] + [_learning_cell(c, group, t) or "—" for c in columns]
                          + [_reference_cell(group, t, False), _reference_cell(group, t, True)]))
    lines.append("")
    lines += [f"{i}. {text}" for i, text in enumerate(SOURCES.values(), 1)]
    notes = [f"{c['label']}: {c['learning']['_note']}." for c in columns if "_note" in c.get("learning", {})]
    if notes:
        lines += ["", "No learning runs for " + " ".join(notes)]
    lines += ["",
              "The learning runs this report wants: QMIX and IPPO on 5m_vs_6m and 3s_vs_4z, 3 seeds each, 2M "
              "steps (`python src/main.py --config=qmix --env-config=sc2 with env_args.map_name=5m_vs_6m "
              "seed=<seed> t_max=2000000`, likewise `--config=ippo` and `3s_vs_4z`); then regenerate the report "
              "(`--results` names another results directory).",
              "",
              "What a difference means: the published figures come from StarCraft II itself, so a simulator "
              "win rate well above them at the same step says the simulated battles are easier to win than "
              "the real ones (the enemy AI, damage timing or unit collisions favour the agents), and one well "
              "below says they are harder. Published IPPO figures differ among themselves by a factor of 50 at "
              "2M steps (0.01 against ≈ 0.75) because of tuning (epochs, clipping, batch size, value "
              "normalisation), so QMIX's figure and a like-for-like IPPO's are the ones that measure the "
              "simulator's fidelity; absolute win rates on the simulator are its own benchmark."]
    return lines


# ------------------------------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=500,
                        help="battles per map and scripted policy (default: %(default)s)")
    parser.add_argument("--maps", nargs="+", default=list(SCENARIOS),
                        help="maps for the scripted policies (default: every map)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default: %(default)s)")
    parser.add_argument("--label", default="after", help="this tree's column name (default: %(default)s)")
    parser.add_argument("--json", help="also store this run's figures in this JSON file")
    parser.add_argument("--note", default="", help="a note on what was measured, shown beside the commit")
    parser.add_argument("--compare", nargs="*",
                        help="stored figure files to show beside this run (default: docs/fidelity/*.json, "
                             "except one with this run's label)")
    parser.add_argument("--results", default=os.path.join("results", "sacred"),
                        help="Sacred results directory for the learning results (default: %(default)s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="the report's path (default: docs/fidelity.md)")
    parser.add_argument("--no-markdown", action="store_true", help="only measure (and store with --json)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.maps) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown map(s) {', '.join(unknown)}; the simulator offers: {', '.join(sorted(SCENARIOS))}")
    if args.episodes < 1:
        parser.error(f"--episodes must be a positive number of battles, got {args.episodes}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare is None:
        stored = sorted(glob.glob(os.path.join(STORED_DIR, "*.json")))
        compare = [f for f in (load_figures(p) for p in stored) if f["label"] != args.label]
    else:
        compare = [load_figures(p) for p in args.compare]
    figures = measure(args.label, args.maps, args.episodes, args.seed, args.results, args.note)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
        print(f"wrote {args.json}")
    if not args.no_markdown:
        with open(args.out, "w") as f:
            f.write(render_markdown(compare + [figures]))
        print(f"wrote {args.out} in {figures['seconds']['total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

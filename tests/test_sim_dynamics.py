"""Game mechanics of the embedded simulator: damage, armor, shields, cooldowns, movement, terrain, AI."""
import numpy as np
import pytest

from envs.sim import StarCraft2Env
from envs.sim.units import UNIT_TYPES

FAR = 30.0  # x of parked units, far from the action


def duel(map_name, attacker_xy, target_xy, step_mul=1, target_cooldown=1e9, **kwargs):
    """An env where ally 0 and enemy 0 face each other and every other unit is dead.

    The enemy's weapon is kept on cooldown so it never fires back.
    """
    env = StarCraft2Env(map_name=map_name, seed=0, step_mul=step_mul, **kwargs)
    env.reset()
    n, m = env.n_agents, env.n_enemies
    ally_h = np.zeros(n)
    ally_h[0] = UNIT_TYPES[env.ally_unit_names[0]].health_max
    enemy_h = np.zeros(m)
    enemy_h[0] = UNIT_TYPES[env.enemy_unit_names[0]].health_max
    ax, ay = np.full(n, FAR), np.full(n, 16.0)
    ex, ey = np.full(m, FAR), np.full(m, 10.0)
    ax[0], ay[0] = attacker_xy
    ex[0], ey[0] = target_xy
    env.set_unit_situation(
        allies={"x": ax, "y": ay, "health": ally_h},
        enemies={"x": ex, "y": ey, "health": enemy_h, "cooldown": np.full(m, target_cooldown)})
    return env


def attack_enemy_0(env):
    return [6] + [0] * (env.n_agents - 1)


def test_marine_kills_marine_in_eight_shots_at_the_marine_rate():
    # 10m_vs_11m: its 150-step limit leaves room for ~100 loops at step_mul=1
    env = duel("10m_vs_11m", (10.0, 16.0), (14.0, 16.0))  # 4 apart: in range (5 + 2 * 0.375)
    health, loops_at_shot = [45.0], []
    for loop in range(400):
        _, terminated, info = env.step(attack_enemy_0(env))
        h = env.batch.health[0, env.n_agents]
        if h < health[-1]:
            health.append(h)
            loops_at_shot.append(loop)
        if terminated:
            break
    assert info["battle_won"]
    assert health == [45.0 - 6.0 * k for k in range(8)] + [0.0]  # 6 damage, no armor: 8 shots
    # the ready weapon starts in loop 0; the hit lands after the damage point, 0.05 game s = 0.8 loops
    assert loops_at_shot[0] == 1
    gaps = np.diff(loops_at_shot)
    cooldown = UNIT_TYPES["marine"].cooldown_loops  # Period 0.8608 game s x 16 loops
    assert cooldown == pytest.approx(13.7728)
    # plus SC2's random weapon delay of -1..+2 loops: the next attack starts ceil(12.77..15.77) loops on
    assert set(gaps) <= {13, 14, 15, 16}
    assert 1 + 7 * 13 <= loops_at_shot[-1] <= 1 + 7 * 16


def test_stalker_against_zealot_shields_absorb_first_then_armor_per_hit():
    env = duel("3s_vs_4z", (10.0, 16.0), (14.0, 16.0))
    e = env.n_agents
    seen = [(env.batch.shield[0, e], env.batch.health[0, e])]
    for _ in range(300):
        env.step(attack_enemy_0(env))
        e = env.n_agents
        pair = (env.batch.shield[0, e], env.batch.health[0, e])
        if not seen or pair != seen[-1]:
            seen.append(pair)
        if len(seen) == 8:
            break
    # 13 damage (no bonus: zealots are light). Shields 50 -> 37 -> 24 -> 11; the 4th shot spends 11 on
    # the shield and 2 - 1 armor = 1 on health; then 13 - 1 = 12 per shot.
    assert seen[1:] == [(37.0, 100.0), (24.0, 100.0), (11.0, 100.0), (0.0, 99.0), (0.0, 87.0), (0.0, 75.0),
                    (0.0, 63.0)]


def test_zealot_double_strike_and_stalker_armored_bonus():
    env = duel("3s_vs_4z", (10.0, 16.0), (10.0, 17.2))
    # make the zealot the attacker instead: let it fire, keep the stalker passive (stop orders)
    env.batch.cooldown[0, env.n_agents] = 0.0
    for _ in range(6):  # the second blade strikes 0.28 game s = 4.48 loops after the first: loop 5
        env.step([1, 0, 0])
    assert env.batch.shield[0, 0] == 80.0 - 2 * 8.0  # two hits of 8, absorbed by the shield
    env2 = duel("2s3z", (10.0, 16.0), (14.0, 16.0))  # ally 0 and enemy 0 are stalkers
    for _ in range(10):  # damage point and missile flight: the hit lands in loop 7 (test_sim_rules)
        env2.step(attack_enemy_0(env2))
    assert env2.batch.shield[0, env2.n_agents] == 80.0 - (13.0 + 5.0)  # +5 vs armored


def test_shields_regenerate_two_per_second_after_ten_seconds_and_reward_counts_it():
    env = duel("3s_vs_4z", (5.0, 5.0), (25.0, 25.0), step_mul=16)
    e = env.n_agents
    env.batch.shield[0, e] = 10.0
    rewards = []
    for _ in range(12):
        r, _, _ = env.step([1, 0, 0])
        rewards.append(r)
    # 10 normal seconds = 160 loops = 10 steps of 16 loops with no regeneration, then 2 per second
    assert env.batch.shield[0, e] == pytest.approx(10.0 + 2 * (12 * 16 - 160) / 16.0)
    assert rewards[:9] == [0.0] * 9
    # SMAC's abs(): regeneration of an enemy shield is positive reward, scaled by max_reward / 20
    assert rewards[-1] == pytest.approx(2.0 / (env.max_reward / 20.0))


def test_move_orders_move_at_unit_speed_and_respect_the_strip():
    env = duel("3m", (10.0, 16.0), (25.0, 12.0), step_mul=8)
    env.step([2, 0, 0])  # north
    assert env.batch.y[0, 0] == pytest.approx(16.0 + 2.25 / 16 * 8)  # a marine: 1.125 per step
    assert env.batch.x[0, 0] == pytest.approx(10.0)
    for _ in range(20):
        if not env.get_avail_agent_actions(0)[2]:
            break
        env.step([2, 0, 0])
    # the 5m_vs_6m/3m arenas are a pathable strip y in [8, 24): north is masked near its edge
    assert env.batch.y[0, 0] < 24.0
    assert env.get_avail_agent_actions(0)[2] == 0
    assert int(env.batch.y[0, 0] + 1) >= 24


def test_attack_order_beyond_weapon_range_walks_in_then_fires():
    env = duel("3m", (10.0, 16.0), (15.9, 16.0), step_mul=1)  # 5.9 apart: available (<= 6), not in range
    assert env.get_avail_agent_actions(0)[6] == 1
    env.step(attack_enemy_0(env))
    assert env.batch.x[0, 0] > 10.0  # walked towards the target
    assert env.batch.health[0, env.n_agents] == 45.0
    env.step(attack_enemy_0(env))  # now within 5 + radii: the attack starts
    assert env.batch.health[0, env.n_agents] == 45.0
    env.step(attack_enemy_0(env))
    assert env.batch.health[0, env.n_agents] == 39.0  # and lands 0.8 loops later


@pytest.mark.parametrize("map_name", ["3m", "5m_vs_6m", "3s_vs_4z", "2s3z", "8m"])
def test_agents_that_never_act_lose_or_time_out(map_name):
    env = StarCraft2Env(map_name=map_name, seed=3)
    for _ in range(3):
        env.reset()
        terminated, steps = False, 0
        while not terminated:
            avail = np.array(env.get_avail_actions())
            actions = np.where(avail[:, 1] == 1, 1, 0)  # stop when alive, no-op when dead
            _, terminated, info = env.step(actions)
            steps += 1
        assert not info["battle_won"]
        assert info["dead_allies"] == env.n_agents or steps == env.episode_limit
        assert info["dead_enemies"] == 0  # RL units never fire without an order


def test_enemy_attack_moves_to_the_agents_spawn_and_engages():
    env = StarCraft2Env(map_name="3m", seed=0)
    env.reset()
    b = env.batch
    start = b.x[0, env.n_agents:].copy()
    env.step([1, 1, 1])
    assert np.all(b.x[0, env.n_agents:] < start)  # moving west, towards (9, 16)
    for _ in range(10):
        env.step([1, 1, 1])
    assert b.health[0, :env.n_agents].sum() < 3 * 45.0  # and shooting once in range


def _march_east_8m():
    """8m, every agent moving east for 15 steps; yields the env after each step."""
    env = StarCraft2Env(map_name="8m", seed=1)
    env.reset()
    for _ in range(15):
        avail = np.array(env.get_avail_actions())
        env.step(np.where(avail[:, 4] == 1, 4, np.where(avail[:, 1] == 1, 1, 0)))  # everyone east
        yield env


def _closest_living_pair(env):
    """``min(distance - (r_i + r_j))`` over the pairs of living units of env 0 (negative: they overlap)."""
    b = env.batch
    radius = b.static[0]
    alive = np.flatnonzero(b.health[0] > 0)
    gaps = [np.hypot(b.x[0, i] - b.x[0, j], b.y[0, i] - b.y[0, j]) - radius[i] - radius[j]
            for i in alive for j in alive[alive > i]]
    return min(gaps)


def test_living_units_never_overlap():
    # separation repeats its push-apart pass until no pair overlaps
    tolerance = 1e-6  # float rounding of the push itself
    worst = min(_closest_living_pair(env) for env in _march_east_8m())
    assert worst >= -tolerance, f"two living units overlap by {-worst:.4f}"

"""MMM and MMM2: SMAC's interface for medivacs and marauders, and the game rules they bring.

Interface values are checked against SMAC's code (``smac_reference.py`` restates oxwhirl/smac
``starcraft2.py``) and against hand-computed numbers; the rules (healing, energy, air units, which weapons
hit air, the built-in AI's heal autocast, MMM's game end) against hand-computed arithmetic from the game
data cited in ``src/envs/sim/units.py``.

MMM's line-up: agents 0, 1 marauders, 2..8 marines, 9 the medivac (SMAC's unit-type order); the enemies
in the same order (MMM2: 0..2 marauders, 3..10 marines, 11 the medivac). One loop heals
``9 / 16 = 0.5625`` life for ``0.33 * 0.5625 = 0.185625`` energy; energy regenerates
``0.5625 / 16 = 0.03515625`` per loop.
"""
import math

import numpy as np
import pytest

from envs.sim import BatchedStarCraft2Sim, StarCraft2Env
from envs.sim.units import UNIT_TYPES
from smac_reference import SmacReference, make_unit

MEDIVAC = 9  # the agents' medivac on MMM and MMM2
HEAL_PER_LOOP = 9.0 / 16.0
ENERGY_PER_LOOP_OF_HEALING = 0.33 * HEAL_PER_LOOP
REGEN_PER_LOOP = 0.5625 / 16.0
FAR = (30.0, 22.0)  # dead units are parked here


def situation(env, allies, enemies, energy=None):
    """Put ``env`` (reset first) into a situation: ``allies`` / ``enemies`` map unit ids to
    ``(x, y, health)``; every unit not listed is dead. ``energy`` maps unit indices (agents first) to
    energy. Enemy weapons are kept on cooldown so that nothing shoots unless a test wants it."""
    env.reset()
    fields = []
    for placed, n in ((allies, env.n_agents), (enemies, env.n_enemies)):
        x, y, health = np.full(n, FAR[0]), np.full(n, FAR[1]), np.zeros(n)
        for i, (px, py, h) in placed.items():
            x[i], y[i], health[i] = px, py, h
        fields.append({"x": x, "y": y, "health": health})
    fields[1]["cooldown"] = np.full(env.n_enemies, 1e9)
    energies = env.batch.energy[0].copy()
    for u, value in (energy or {}).items():
        energies[u] = value
    fields[0]["energy"], fields[1]["energy"] = energies[:env.n_agents], energies[env.n_agents:]
    env.set_unit_situation(allies=fields[0], enemies=fields[1])


def stop_all_but(env, **chosen):
    """Stop for every living agent, no-op for the dead, and ``chosen`` (``a<id>=action``) overrides."""
    acts = np.where(np.array(env.get_avail_actions())[:, 1] == 1, 1, 0)
    for key, action in chosen.items():
        acts[int(key[1:])] = action
    return acts


# ---------------------------------------------------------------- interface: sizes and values

@pytest.mark.parametrize("map_name, sizes", [
    # n_agents, n_enemies, limit, n_actions, obs, state, max_reward
    # MMM (spec §1): obs 4 + 10 * (4 + 1 + 3) + 9 * 8 + (1 + 3) = 160; state 10 * 7 + 10 * 6 + 10 * 16 = 290;
    # max_reward 10 * 10 + 200 + 2 * 125 + 7 * 45 + 150 = 1015
    ("MMM", (10, 10, 150, 16, 160, 290, 1015)),
    # MMM2: obs 4 + 12 * 8 + 9 * 8 + 4 = 176; state 70 + 12 * 6 + 10 * 18 = 322;
    # max_reward 12 * 10 + 200 + 3 * 125 + 8 * 45 + 150 = 1205
    ("MMM2", (10, 12, 180, 18, 176, 322, 1205)),
])
def test_env_info_equals_smac(map_name, sizes):
    n_agents, n_enemies, limit, n_actions, obs, state, max_reward = sizes
    env = StarCraft2Env(map_name=map_name)
    ref = SmacReference(map_name, pathing_grid=env.pathing_grid)
    info = env.get_env_info()
    assert info == {**ref.get_env_info(), "n_enemies": ref.n_enemies}
    assert (info["n_agents"], info["n_enemies"], info["episode_limit"]) == (n_agents, n_enemies, limit)
    assert (info["n_actions"], info["obs_shape"], info["state_shape"]) == (n_actions, obs, state)
    assert info["agent_features"] == ["health", "energy/cooldown", "rel_x", "rel_y", "type_0", "type_1",
                                      "type_2"]
    assert env.max_reward == max_reward
    assert env.ally_unit_names == ["marauder"] * 2 + ["marine"] * 7 + ["medivac"]


def test_literal_mmm_medivac_obs_state_and_heal_mask():
    """A marauder, a marine and the medivac against an enemy marine and the enemy medivac, by hand."""
    env = StarCraft2Env(map_name="MMM")
    ref = SmacReference("MMM", pathing_grid=env.pathing_grid)
    allies = [make_unit(n, *FAR, 0.0) for n in env.ally_unit_names]
    enemies = [make_unit(n, *FAR, 0.0) for n in env.enemy_unit_names]
    allies[0] = make_unit("marauder", 10.0, 16.0, 100.0, weapon_cooldown=5.0)
    allies[2] = make_unit("marine", 12.0, 16.0, 45.0)
    allies[9] = make_unit("medivac", 10.0, 19.0, 150.0, energy=100.0)
    enemies[2] = make_unit("marine", 16.0, 16.0, 45.0)
    enemies[9] = make_unit("medivac", 13.0, 16.0, 75.0)
    env.reset()
    cols = lambda units, f: [getattr(u, f) for u in units]  # noqa: E731
    env.set_unit_situation(
        {f: cols(allies, a) for f, a in (("x", "x"), ("y", "y"), ("health", "health"),
                                         ("cooldown", "weapon_cooldown"), ("energy", "energy"))},
        {f: cols(enemies, a) for f, a in (("x", "x"), ("y", "y"), ("health", "health"), ("energy", "energy"))})
    ref.set_units(allies, enemies)
    # marauder (10, 16): moves all pathable; enemy 2 exactly 6 away, enemy 9 (the medivac) 3 away: SMAC
    # offers both attacks although a marauder cannot hit air. Medivac (10, 19): heals allies 0 (3 away)
    # and 2 (sqrt 13 away), never itself.
    avail = [[1] + [0] * 15] * 10
    avail[0] = [0, 1, 1, 1, 1, 1] + [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    avail[2] = [0, 1, 1, 1, 1, 1] + [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]  # (12, 16): 4 and hypot(1, 0) away
    avail[9] = [0, 1, 1, 1, 1, 1] + [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert env.get_avail_actions() == avail == ref.get_avail_actions()
    s45, s18, s13 = math.sqrt(45.0), math.sqrt(18.0), math.sqrt(13.0)
    # medivac's obs: move | 10 enemy rows [avail(6+e), dist/9, dx/9, dy/9, health, type x3] | 9 ally rows
    # [visible, dist/9, dx/9, dy/9, health, type x3] | own [health, type x3]. SMAC fills an enemy row's
    # first feature from action 6 + e, which for a medivac heals *ally* e: enemy 2's row reads 1 (ally 2
    # is healable), enemy 9's reads 0 (ally 9 is the medivac itself).
    enemy_rows = np.zeros((10, 8))
    enemy_rows[2] = [1, s45 / 9, 6 / 9, -3 / 9, 1.0, 0, 1, 0]
    enemy_rows[9] = [0, s18 / 9, 3 / 9, -3 / 9, 0.5, 0, 0, 1]
    ally_rows = np.zeros((9, 8))
    ally_rows[0] = [1, 3 / 9, 0, -3 / 9, 100 / 125, 1, 0, 0]
    ally_rows[2] = [1, s13 / 9, 2 / 9, -3 / 9, 1.0, 0, 1, 0]
    expected = np.concatenate([[1, 1, 1, 1], enemy_rows.ravel(), ally_rows.ravel(), [1.0, 0, 0, 1]])
    np.testing.assert_array_equal(env.get_obs_agent(9), np.float32(expected))
    np.testing.assert_array_equal(ref.get_obs_agent(9), np.float32(expected))
    # state: allies [health, cooldown/max_cd (medivac: energy/200), (x-16)/32, (y-16)/32, type x3];
    # marauder's max cooldown is 25. Enemies [health, x, y, type x3]. Last actions all zero.
    ally_state = np.zeros((10, 7))
    ally_state[0] = [0.8, 5 / 25, -6 / 32, 0, 1, 0, 0]
    ally_state[2] = [1.0, 0, -4 / 32, 0, 0, 1, 0]
    ally_state[9] = [1.0, 100 / 200, -6 / 32, 3 / 32, 0, 0, 1]
    enemy_state = np.zeros((10, 6))
    enemy_state[2] = [1.0, 0, 0, 0, 1, 0]
    enemy_state[9] = [0.5, -3 / 32, 0, 0, 0, 1]
    expected_state = np.concatenate([ally_state.ravel(), enemy_state.ravel(), np.zeros(160)])
    np.testing.assert_array_equal(env.get_state(), np.float32(expected_state))
    np.testing.assert_array_equal(ref.get_state(), np.float32(expected_state))


def test_heal_actions_are_described_as_heals_in_errors():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {2: (10.0, 16.0, 20.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (25.0, 16.0, 45.0)})
    with pytest.raises(ValueError, match=r"action 6 \(heal ally 0\) is not available.*heal ally 2"):
        env.step(stop_all_but(env, a9=6))


# ---------------------------------------------------------------- healing and energy

def test_heal_in_range_restores_nine_life_per_game_second():
    env = StarCraft2Env(map_name="MMM", reward_only_positive=False)
    situation(env, {2: (10.0, 16.0, 20.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    reward, terminated, _ = env.step(stop_all_but(env, a9=6 + 2))
    # 8 loops in heal range (centre distance 2 <= 4 + 0.75 + 0.375): 8 * 0.5625 = 4.5 life
    assert env.batch.health[0, 2] == 24.5
    # energy: 50 - 8 * 0.185625 + 8 * 0.03515625 = 48.79625
    assert env.batch.energy[0, MEDIVAC] == pytest.approx(50 - 8 * ENERGY_PER_LOOP_OF_HEALING + 8 * REGEN_PER_LOOP)
    # the state shows it: energy / 200
    assert env.get_state()[MEDIVAC * 7 + 1] == np.float32(env.batch.energy[0, MEDIVAC] / 200)
    # SMAC's reward_battle counts healing as negative damage to the agents: -0.5 * (20 - 24.5) = 2.25,
    # divided by max_reward / 20 = 1015 / 20
    assert not terminated
    assert reward == pytest.approx(2.25 / (1015 / 20))


def test_healing_stops_at_full_life_and_the_order_lapses():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {2: (10.0, 16.0, 44.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    env.step(stop_all_but(env, a9=6 + 2))
    # 1 life missing: loop 0 heals 0.5625, loop 1 the remaining 0.4375; then nothing to heal
    assert env.batch.health[0, 2] == 45.0
    assert env.batch.energy[0, MEDIVAC] == pytest.approx(50 - 0.33 * 1.0 + 8 * REGEN_PER_LOOP)
    assert env.batch.order[0, MEDIVAC] == 0  # idle


def test_healing_is_paid_with_energy_and_stops_without_it():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {2: (10.0, 16.0, 10.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (28.0, 16.0, 45.0)},
              energy={MEDIVAC: 1.0})
    env.step(stop_all_but(env, a9=6 + 2))
    # loops 0..5 heal 0.5625 each, the energy going 1 -> 1 - 6 * (0.185625 - 0.03515625) = 0.0971875;
    # loop 6 heals what that pays for (0.0971875 / 0.33) and regenerates 0.03515625, which loop 7 spends
    healed = 6 * HEAL_PER_LOOP + (1 - 6 * (ENERGY_PER_LOOP_OF_HEALING - REGEN_PER_LOOP) + REGEN_PER_LOOP) / 0.33
    assert env.batch.health[0, 2] == pytest.approx(10.0 + healed)
    assert env.batch.energy[0, MEDIVAC] == pytest.approx(REGEN_PER_LOOP)
    situation(env, {2: (10.0, 16.0, 10.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (28.0, 16.0, 45.0)},
              energy={MEDIVAC: 0.0})
    env.step(stop_all_but(env, a9=6 + 2))
    assert env.batch.health[0, 2] == 10.0  # no energy: no healing, the order lapses
    assert env.batch.energy[0, MEDIVAC] == pytest.approx(8 * REGEN_PER_LOOP)


def test_medivac_flies_to_its_heal_target_first():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {2: (5.0, 16.0, 20.0), MEDIVAC: (11.0, 16.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    env.step(stop_all_but(env, a9=6 + 2))
    # 6 apart (SMAC's mask: <= 6), heal reach 4 + 0.75 + 0.375 = 5.125: at 2.75 / 16 = 0.171875 per loop
    # loops 0..4 cover 0.859375 and loop 5 the last 0.015625; loops 6 and 7 heal 2 * 0.5625
    assert env.batch.x[0, MEDIVAC] == 11.0 - 0.875
    assert env.batch.health[0, 2] == 20.0 + 2 * HEAL_PER_LOOP
    assert env.batch.energy[0, MEDIVAC] == pytest.approx(50 - 2 * ENERGY_PER_LOOP_OF_HEALING + 8 * REGEN_PER_LOOP)


def test_energy_regenerates_up_to_the_maximum():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {2: (5.0, 16.0, 45.0), MEDIVAC: (6.0, 16.0, 150.0)}, {2: (28.0, 16.0, 45.0)},
              energy={MEDIVAC: 199.9})
    env.step(stop_all_but(env))
    assert env.batch.energy[0, MEDIVAC] == 200.0


def test_episodes_start_with_fifty_energy():
    env = BatchedStarCraft2Sim("MMM2", n_envs=2, seed=1)
    medivacs = [MEDIVAC, env.n_agents + 11]
    assert env.energy[:, medivacs].tolist() == [[50.0, 50.0], [50.0, 50.0]]
    assert env.energy.sum() == 4 * 50.0  # only medivacs have energy


# ---------------------------------------------------------------- air units

def test_medivac_flies_over_unpathable_ground_and_over_ground_units():
    env = StarCraft2Env(map_name="MMM")
    # the pathable strip is y in [8, 24); SMAC's mask still lets the move south start at y = 9
    situation(env, {2: (5.0, 9.0, 45.0), MEDIVAC: (5.0, 9.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    env.step(stop_all_but(env, a9=3))
    # the medivac goes 8 * 0.171875 = 1.375 south, out over the unpathable edge, and nobody is pushed
    # although it started on top of the marine
    assert env.batch.y[0, MEDIVAC] == pytest.approx(9.0 - 1.375)
    assert (env.batch.x[0, 2], env.batch.y[0, 2]) == (5.0, 9.0)


def test_marauder_cannot_attack_the_medivac_but_marine_can():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {0: (10.0, 16.0, 125.0), 2: (10.0, 18.0, 45.0)},
              {MEDIVAC: (14.0, 16.0, 150.0), 2: (28.0, 16.0, 45.0)})  # (a lone medivac would lose)
    # SMAC's mask offers the attack (4 <= 6); the game refuses the order: the marauder keeps its stop
    assert env.get_avail_agent_actions(0)[6 + MEDIVAC] == 1
    env.step(stop_all_but(env, a0=6 + MEDIVAC))
    assert env.batch.health[0, env.n_agents + MEDIVAC] == 150.0
    assert env.batch.order[0, 0] == 0
    env.step(stop_all_but(env, a2=6 + MEDIVAC))  # the marine (5 + 0.375 + 0.75 reach) shoots it
    assert env.batch.health[0, env.n_agents + MEDIVAC] == 150.0 - (6.0 - 1.0)


def test_enemy_marauders_ignore_the_agents_medivac_enemy_marines_shoot_it():
    env = StarCraft2Env(map_name="MMM")
    situation(env, {MEDIVAC: (12.0, 16.0, 150.0), 2: (2.0, 10.0, 45.0)}, {0: (16.0, 16.0, 125.0)})
    env.batch.cooldown[0, env.n_agents:] = 0.0
    for _ in range(3):
        env.step(stop_all_but(env))
    assert env.batch.health[0, MEDIVAC] == 150.0
    assert env.batch.target[0, env.n_agents] == -1
    situation(env, {MEDIVAC: (12.0, 16.0, 150.0), 2: (2.0, 10.0, 45.0)}, {2: (16.0, 16.0, 45.0)})
    env.batch.cooldown[0, env.n_agents:] = 0.0
    env.step(stop_all_but(env))
    assert env.batch.health[0, MEDIVAC] < 150.0


# ---------------------------------------------------------------- the built-in AI's medivac

def test_enemy_medivac_autocasts_on_the_lowest_life_fraction_in_range():
    env = StarCraft2Env(map_name="MMM")
    e = env.n_agents
    # enemy 2 at 30/45 = 0.67 (3 away), enemy 3 at 40/45 = 0.89 (1 away), marauder 0 at 50/125 = 0.4
    # but 8 away (autocast reach 6 + 0.75 + 0.5625 = 7.3125)
    situation(env, {2: (3.0, 16.0, 45.0)},
              {MEDIVAC: (25.0, 16.0, 150.0), 2: (22.0, 16.0, 30.0), 3: (25.0, 17.0, 40.0),
               0: (25.0, 8.0 + 0.5, 50.0)})
    env.step(stop_all_but(env))
    assert env.batch.target[0, e + MEDIVAC] == e + 2
    # it holds still and heals all 8 loops while enemy 2 walks on (1.125 away from it, reach 5.125)
    assert env.batch.health[0, e + 2] == 30.0 + 4.5
    assert (env.batch.health[0, e + 3], env.batch.health[0, e + 0]) == (40.0, 50.0)


def test_enemy_medivac_needs_five_energy_to_start_a_heal():
    env = StarCraft2Env(map_name="MMM")
    e = env.n_agents
    situation(env, {2: (3.0, 16.0, 45.0)}, {MEDIVAC: (25.0, 16.0, 150.0), 2: (23.0, 16.0, 30.0)},
              energy={e + MEDIVAC: 4.9})
    env.step(stop_all_but(env))
    # energy before loop k: 4.9 + k * 0.03515625, first >= 5 in loop 3: loops 3..7 heal 5 * 0.5625
    assert env.batch.health[0, e + 2] == 30.0 + 5 * HEAL_PER_LOOP
    situation(env, {2: (3.0, 16.0, 45.0)}, {MEDIVAC: (25.0, 16.0, 150.0), 2: (23.0, 16.0, 30.0)},
              energy={e + MEDIVAC: 4.0})
    env.step(stop_all_but(env))
    assert env.batch.health[0, e + 2] == 30.0
    assert env.batch.target[0, e + MEDIVAC] == -1


# ---------------------------------------------------------------- MMM's game end (SMAC's only_medivac_left)

@pytest.mark.parametrize("map_name", ["MMM", "MMM2"])
def test_agents_left_with_only_their_medivac_lose(map_name):
    env = StarCraft2Env(map_name=map_name, reward_defeat=-7)
    situation(env, {MEDIVAC: (5.0, 16.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    reward, terminated, info = env.step(stop_all_but(env))
    assert terminated and not info["battle_won"]
    assert reward == pytest.approx(-7 / (env.max_reward / 20))


@pytest.mark.parametrize("map_name", ["MMM", "MMM2"])
def test_enemy_left_with_only_its_medivac_loses(map_name):
    env = StarCraft2Env(map_name=map_name)
    enemy_medivac = env.n_enemies - 1
    situation(env, {2: (5.0, 16.0, 45.0)}, {enemy_medivac: (28.0, 16.0, 150.0)})
    reward, terminated, info = env.step(stop_all_but(env))
    assert terminated and info["battle_won"]
    assert reward == pytest.approx(200 / (env.max_reward / 20))


def test_game_end_and_reward_match_smac_reference():
    """Same start, same end state: the simulator's step result equals SMAC's step bookkeeping."""
    env = StarCraft2Env(map_name="MMM", reward_only_positive=False)
    ref = SmacReference("MMM", pathing_grid=env.pathing_grid, reward_only_positive=False)
    situation(env, {2: (10.0, 16.0, 20.0), MEDIVAC: (10.0, 18.0, 150.0)}, {2: (28.0, 16.0, 45.0)})
    names = env.ally_unit_names, env.enemy_unit_names

    def units(offset, n, side):
        b = env.batch
        return [make_unit(names[side][k], b.x[0, offset + k], b.y[0, offset + k], b.health[0, offset + k],
                          energy=b.energy[0, offset + k]) for k in range(n)]

    ref.set_units(units(0, 10, 0), units(10, 10, 1))
    reward, terminated, info = env.step(stop_all_but(env, a9=6 + 2))
    ref_reward, ref_terminated, ref_info = ref.step_reward_and_termination(units(0, 10, 0), units(10, 10, 1))
    assert reward == pytest.approx(ref_reward, rel=1e-6)
    assert (terminated, info["battle_won"]) == (ref_terminated, ref_info["battle_won"])


# ---------------------------------------------------------------- SMAC's heuristic and whole episodes

def test_heuristic_medivac_heals_the_nearest_damaged_ally():
    env = BatchedStarCraft2Sim("MMM", n_envs=1, seed=0, heuristic_ai=True)
    x = np.full(10, 6.0)
    y = 10.0 + np.arange(10.0)
    health = np.array([125.0] * 2 + [45.0] * 7 + [150.0])
    health[[3, 7]] = 30.0  # damaged marines: 3 at y = 13 (6 from the medivac at y = 19), 7 at y = 17
    env.set_unit_situation(0, {"x": x, "y": y, "health": health}, {"x": np.full(10, 28.0)})
    _, _, info = env.step(np.zeros((1, 10), dtype=np.int64))
    assert info["actions"][0, MEDIVAC] == 6 + 7


@pytest.mark.parametrize("map_name", ["MMM", "MMM2"])
def test_random_episodes_keep_vitals_within_bounds(map_name):
    env = BatchedStarCraft2Sim(map_name, n_envs=8, seed=3)
    rng = np.random.default_rng(0)
    health_max = env.health_max
    ends = 0
    for _ in range(400):
        avail = env.get_avail_actions()
        acts = np.array([[rng.choice(np.flatnonzero(a)) for a in env_avail] for env_avail in avail])
        _, terminated, _ = env.step(acts)
        assert np.all((env.health >= 0) & (env.health <= health_max))
        assert np.all((env.energy >= 0) & (env.energy <= 200.0))
        ends += int(terminated.sum())
        if terminated.any():
            env.reset(terminated)
    assert ends > 0
    assert UNIT_TYPES["medivac"].flying

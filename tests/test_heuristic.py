"""SMAC's scripted agents (``heuristic_ai`` / ``heuristic_rest``): choices in set-up situations, target
persistence, heuristic_rest's moves, bookkeeping of the actions taken, and flag validation.

Expected choices are worked out by hand from SMAC's ``get_agent_action_heuristic``: the nearest living
enemy by centre distance (the lower id on a tie), kept until it dies; with ``heuristic_rest`` a move
towards it (east/west when |dx| > |dy|, else north/south) while the attack is unavailable.
"""
import numpy as np
import pytest

from envs.sim import BatchedStarCraft2Sim, StarCraft2Env
from envs.sim.heuristic import SmacHeuristic

NORTH, SOUTH, EAST, WEST = 2, 3, 4, 5
# 3m: agents 0..2 on a column at x = 10; enemies placed so that for agent 0 enemies 1 and 2 are equally
# near (sqrt 13), agent 1's nearest is enemy 1 (3) and agent 2's is enemy 2 (sqrt 5).
ALLIES = {"x": [10.0, 10.0, 10.0], "y": [16.0, 14.0, 18.0]}
ENEMIES = {"x": [14.0, 13.0, 12.0], "y": [16.0, 14.0, 19.0]}
ANY = np.zeros((1, 3), dtype=np.int64)  # the given actions: ignored under heuristic_ai (here unavailable)


def heuristic_env(rest=False, **kwargs):
    env = BatchedStarCraft2Sim("3m", n_envs=1, seed=0, heuristic_ai=True, heuristic_rest=rest, **kwargs)
    env.set_unit_situation(0, ALLIES, ENEMIES)
    return env


def test_each_agent_attacks_its_nearest_enemy_lower_id_on_a_tie():
    env = heuristic_env()
    _, _, info = env.step(ANY)
    assert info["actions"].tolist() == [[6 + 1, 6 + 1, 6 + 2]]
    assert env.heuristic.targets.tolist() == [[1, 1, 2]]


def test_dead_enemies_are_never_chosen_and_dead_agents_no_op():
    env = BatchedStarCraft2Sim("3m", n_envs=1, seed=0, heuristic_ai=True)
    env.set_unit_situation(0, {**ALLIES, "health": [45.0, 45.0, 0.0]}, {**ENEMIES, "health": [45.0, 0.0, 45.0]})
    _, _, info = env.step(ANY)
    # agent 0: enemy 2 (sqrt 13) before enemy 0 (4); agent 1: enemy 0 (sqrt 20) before enemy 2 (sqrt 29)
    assert info["actions"].tolist() == [[6 + 2, 6 + 0, 0]]
    assert env.heuristic.targets.tolist() == [[2, 0, -1]]


def test_targets_persist_until_they_die_and_reset_with_the_episode():
    env = heuristic_env()
    env.step(ANY)  # targets 1, 1, 2
    # enemy 0 now stands next to every agent: nobody switches to it while its target lives
    env.set_unit_situation(0, ALLIES, {"x": [10.8, 13.0, 12.0], "y": [16.0, 14.0, 19.0]})
    _, _, info = env.step(ANY)
    assert info["actions"].tolist() == [[7, 7, 8]]
    # enemy 1 dies: agents 0 and 1 pick again (enemy 0 is now nearest), agent 2 keeps enemy 2
    env.set_unit_situation(0, ALLIES, {"x": [10.8, 13.0, 12.0], "y": [16.0, 14.0, 19.0],
                                       "health": [45.0, 0.0, 45.0]})
    _, _, info = env.step(ANY)
    assert info["actions"].tolist() == [[6, 6, 8]]
    env.reset()
    assert env.heuristic.targets.tolist() == [[-1, -1, -1]]
    env.set_unit_situation(0, ALLIES, {"x": [10.8, 13.0, 12.0], "y": [16.0, 14.0, 19.0]})
    _, _, info = env.step(ANY)
    # a new episode chooses afresh: enemy 0 for agent 2 too (2.15 away, against enemy 2's 2.24)
    assert info["actions"].tolist() == [[6, 6, 6]]


def test_targets_are_per_environment():
    env = BatchedStarCraft2Sim("3m", n_envs=3, seed=0, heuristic_ai=True)
    for b, far in enumerate([0, 1, 2]):  # in env b every enemy but `far` is dead
        health = np.full(3, 45.0)
        health[[e for e in range(3) if e != far]] = 0.0
        env.set_unit_situation(b, ALLIES, {**ENEMIES, "health": health})
    _, _, info = env.step(np.zeros((3, 3), dtype=np.int64))
    assert info["actions"].tolist() == [[6] * 3, [7] * 3, [8] * 3]
    env.reset(np.array([False, True, False]))
    assert env.heuristic.targets.tolist() == [[0] * 3, [-1] * 3, [2] * 3]


def lone_duel(rest, enemy_xy, ally_xy=(10.0, 16.0)):
    """3m with only agent 0 and enemy 0 alive, at the given places; returns agent 0's heuristic action."""
    env = BatchedStarCraft2Sim("3m", n_envs=1, seed=0, heuristic_ai=True, heuristic_rest=rest)
    env.set_unit_situation(0, {"x": [ally_xy[0], 5.0, 5.0], "y": [ally_xy[1], 10.0, 12.0],
                               "health": [45.0, 0.0, 0.0]},
                           {"x": [enemy_xy[0], 30.0, 30.0], "y": [enemy_xy[1], 10.0, 12.0],
                            "health": [45.0, 0.0, 0.0]})
    _, _, info = env.step(ANY)
    return int(info["actions"][0, 0]), env


@pytest.mark.parametrize("enemy_xy, move", [
    ((20.0, 17.0), EAST),    # dx 10 > dy 1
    ((2.0, 15.0), WEST),     # dx -8
    ((10.5, 23.0), NORTH),   # dy 7 > dx 0.5
    ((11.0, 9.0), SOUTH),    # dy -7
    ((17.0, 23.0), NORTH),   # |dx| == |dy|: north/south
    ((3.0, 9.0), SOUTH),     # |dx| == |dy| = 7, dy < 0
])
def test_heuristic_rest_moves_towards_an_out_of_range_target(enemy_xy, move):
    action, _ = lone_duel(True, enemy_xy)
    assert action == move


def test_heuristic_rest_attacks_once_the_target_is_in_shoot_range():
    assert lone_duel(True, (16.0, 16.0))[0] == 6  # 6 apart: SMAC's shoot range, inclusive
    assert lone_duel(True, (16.01, 16.0))[0] == EAST


def test_without_heuristic_rest_the_attack_order_walks_in():
    action, env = lone_duel(False, (20.0, 17.0))
    assert action == 6  # attack, though the attack is not an available action
    assert env.x[0, 0] > 10.5  # and the order walks the marine towards its target


def test_last_action_observations_and_state_show_the_actions_taken():
    env = heuristic_env(obs_last_action=True)
    env.step(ANY)
    taken = np.array([7, 7, 8])
    assert env.last_action[0].tolist() == taken.tolist()
    onehot = np.eye(env.n_actions)[taken]
    state = env.get_state()[0]
    assert np.array_equal(state[-3 * env.n_actions:].reshape(3, env.n_actions), onehot)
    # agent 0 sees agents 1 and 2; their last actions close each ally row of its observation
    obs = env.get_obs()[0, 0]
    lay = env.layout
    allies = obs[lay.move_feats + 3 * lay.enemy_feats:][:2 * lay.ally_feats].reshape(2, lay.ally_feats)
    assert np.array_equal(allies[:, -env.n_actions:], onehot[1:])


def test_single_env_writes_the_actions_taken_back_into_the_callers_list_as_smac_does():
    env = StarCraft2Env(map_name="3m", seed=0, heuristic_ai=True)
    env.reset()
    env.set_unit_situation(ALLIES, ENEMIES)
    actions = [1, 1, 1]
    env.step(actions)
    assert actions == [7, 7, 8]
    array = np.array([1, 1, 1])
    env.step(array)
    assert array.tolist() == [7, 7, 8]


def test_given_actions_need_only_the_right_shape():
    env = heuristic_env()
    env.step(np.full((1, 3), 99))  # out of range, ignored
    with pytest.raises(ValueError, match=r"shape \(1, 3\)"):
        env.step(np.zeros((1, 2), dtype=np.int64))


@pytest.mark.parametrize("kwargs, message", [
    ({"heuristic_ai": "yes"}, "heuristic_ai must be True or False, got 'yes'"),
    ({"heuristic_ai": 1}, "heuristic_ai must be True or False, got 1"),
    ({"heuristic_ai": True, "heuristic_rest": None}, "heuristic_rest must be True or False, got None"),
    ({"heuristic_rest": True}, "set heuristic_ai=True as well"),
])
def test_heuristic_flags_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StarCraft2Env(map_name="3m", **kwargs)
    with pytest.raises(ValueError, match=message):
        BatchedStarCraft2Sim("3m", n_envs=2, **kwargs)


def controller_step(policy, x, y, health, health_max, avail=None):
    """One call of ``policy`` for a single environment given as plain lists (units: agents, then enemies)."""
    x, y, health = (np.array([v], dtype=np.float64) for v in (x, y, health))
    if avail is None:
        avail = np.ones((1, policy.n_agents, 6 + x.shape[1]), dtype=np.int32)
    return policy.actions(x, y, health, np.array(health_max, dtype=np.float64), avail, np.ones(1, np.bool_))[0]


def test_healers_heal_the_nearest_damaged_non_healer_ally_until_it_is_whole():
    # agents: marine, marine, medivac (a healer); one enemy marine far away
    policy = SmacHeuristic(["marine", "marine", "medivac"], ["marine"], 1, rest=False)
    x, y, hmax = [12.0, 11.0, 10.0, 30.0], [16.0] * 4, [45.0, 45.0, 150.0, 45.0]
    assert controller_step(policy, x, y, [30.0, 45.0, 100.0, 45.0], hmax)[2] == 6 + 0  # only 0 is damaged
    # agent 1, nearer, is now damaged too: the medivac stays on agent 0 while agent 0 is damaged
    assert controller_step(policy, x, y, [30.0, 40.0, 100.0, 45.0], hmax)[2] == 6 + 0
    # agent 0 is whole again: agent 1
    assert controller_step(policy, x, y, [45.0, 40.0, 100.0, 45.0], hmax)[2] == 6 + 1
    # nobody damaged (the damaged medivac itself does not count): no-op, target forgotten
    assert controller_step(policy, x, y, [45.0, 45.0, 100.0, 45.0], hmax)[2] == 0
    assert policy.targets[0, 2] == -1


def test_a_healer_with_heuristic_rest_moves_towards_an_ally_it_cannot_heal_yet():
    policy = SmacHeuristic(["marine", "medivac"], ["marine"], 1, rest=True)
    avail = np.ones((1, 2, 7), dtype=np.int32)
    avail[0, 1, 6] = 0  # healing agent 0 is not available (out of range)
    actions = controller_step(policy, [20.0, 10.0, 30.0], [17.0, 16.0, 16.0], [30.0, 150.0, 45.0],
                              [45.0, 150.0, 45.0], avail)
    assert actions[1] == EAST


def test_marauders_never_target_medivacs():
    policy = SmacHeuristic(["marauder", "marine"], ["medivac", "marine"], 1, rest=False)
    actions = controller_step(policy, [10.0, 10.0, 11.0, 14.0], [16.0, 17.0, 16.0, 16.0], [125.0, 45.0, 150.0, 45.0],
                              [125.0, 45.0, 150.0, 45.0])
    assert actions.tolist() == [6 + 1, 6 + 0]  # the marauder skips the nearer medivac; the marine does not

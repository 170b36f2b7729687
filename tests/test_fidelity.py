"""The fidelity report (``bench/fidelity.py``): its scripted policies in set-up situations, the hand
computations it checks the simulator against, the learning table from Sacred runs, and one small run of
the whole report."""
import json
import os
import sys

import numpy as np
import pytest

from envs.sim import BatchedStarCraft2Sim
from envs.sim.units import UNIT_TYPES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import fidelity  # noqa: E402

EAST, WEST = 4, 5


def situation(map_name, allies, enemies):
    """A one-environment batch with the given unit fields (lists over agents / enemies)."""
    env = BatchedStarCraft2Sim(map_name, n_envs=1, seed=0)
    env.set_unit_situation(0, allies, enemies)
    return env


def test_focus_fire_attacks_the_weakest_enemy_in_range_and_walks_towards_the_nearest_otherwise():
    # 5m_vs_6m: agents 0, 1 near the enemies, agent 2 far west, agents 3, 4 dead. Enemy 1 (20 HP) is the
    # weakest in shoot range (6) of agents 0 and 1; enemy 2 (5 HP) is weaker but 6.5 from agent 0 and
    # 6.8 from agent 1. Enemies 3..5 are dead.
    env = situation("5m_vs_6m",
                    {"x": [10.0, 10.0, 2.0, 5.0, 5.0], "y": [16.0, 14.0, 16.0, 10.0, 12.0],
                     "health": [45.0, 45.0, 45.0, 0.0, 0.0]},
                    {"x": [14.0, 15.0, 16.5, 30.0, 30.0, 30.0], "y": [16.0, 15.0, 16.0, 10.0, 12.0, 14.0],
                     "health": [45.0, 20.0, 5.0, 0.0, 0.0, 0.0]})
    assert fidelity.focus_fire_policy(env).tolist() == [[6 + 1, 6 + 1, EAST, 0, 0]]


def kite_situation(map_name, cooldown, enemy_x, agent=0):
    """Only ``agent`` and enemy 0 alive: the agent at (10, 16) with weapon ``cooldown``, the enemy at
    (enemy_x, 16)."""
    env = BatchedStarCraft2Sim(map_name, n_envs=1, seed=0)
    n, m = env.n_agents, env.n_enemies
    health = np.zeros(n)
    health[agent] = env.health_max[agent]
    enemy_health = np.zeros(m)
    enemy_health[0] = env.health_max[n]
    cooldowns = np.zeros(n)
    cooldowns[agent] = cooldown
    env.set_unit_situation(0, {"x": np.full(n, 10.0), "y": 16.0 + np.arange(n) * 2, "health": health,
                               "cooldown": cooldowns},
                           {"x": np.full(m, enemy_x), "y": np.full(m, 16.0), "health": enemy_health})
    return int(fidelity.kite_policy(env)[0, agent])


def test_kiting_stalkers_step_back_while_cooling_down_and_attack_when_ready():
    # a zealot 2 away threatens within two steps: 0.1 range + radii 1.125 + 2 steps x 1.125 = 3.475
    assert kite_situation("3s_vs_3z", cooldown=20.0, enemy_x=12.0) == WEST
    assert kite_situation("3s_vs_3z", cooldown=0.0, enemy_x=12.0) == 6  # weapon ready: attack
    # a zealot 4 away is no threat yet: the stalker attacks it (in shoot range) though cooling down
    assert kite_situation("3s_vs_3z", cooldown=20.0, enemy_x=14.0) == 6
    assert kite_situation("3s_vs_3z", cooldown=20.0, enemy_x=20.0) == EAST  # out of range: walk in


def test_melee_units_never_kite():
    # 2s3z: agent 2 is a zealot (agents: 2 stalkers, then 3 zealots)
    assert kite_situation("2s3z", cooldown=20.0, enemy_x=11.0, agent=2) == 6


def test_stop_policy_loses_every_battle_without_a_kill():
    result = fidelity.play("3m", fidelity.POLICIES[0], episodes=4, seed=0)
    assert fidelity.POLICIES[0].name == "stop"
    assert (result["won"], result["dead_allies_mean"], result["dead_enemies_mean"]) == (0, 3.0, 0.0)
    assert result["episodes"] == 4 and 0 < result["length_mean"] < 60


def test_heuristic_policy_runs_through_the_environment_flag():
    heuristic = next(p for p in fidelity.POLICIES if p.name == "heuristic_rest")
    assert dict(heuristic.env_kwargs) == {"heuristic_ai": True, "heuristic_rest": True}
    result = fidelity.play("3s_vs_3z", heuristic, episodes=8, seed=1)
    assert result["dead_enemies_mean"] > 0  # the scripted agents fight


def test_hand_computations_from_the_game_data():
    marine, stalker, zealot = UNIT_TYPES["marine"], UNIT_TYPES["stalker"], UNIT_TYPES["zealot"]
    assert fidelity._hits_to_kill(marine, marine) == 8  # ceil(45 / 6)
    # stalker on zealot: 13 per hit; shields 50 -> 37 -> 24 -> 11, the 4th hit puts 2 - 1 armor = 1 on
    # health, then 12 per hit: 99 / 12 -> 9 more
    assert fidelity._after_hits(stalker, zealot, 4) == (0.0, 99.0)
    assert fidelity._hits_to_kill(stalker, zealot) == 13
    # zealot on stalker: 8 per strike, 10 strikes for the 80 shield, then 7 per strike on 80 health -> 12
    assert fidelity._hits_to_kill(zealot, stalker) == 22
    expected = fidelity.expected_unit_checks()
    assert expected["marines_8"]["kill_loops"] == (0, 0)  # one volley
    lo, hi = expected["marines_1"]["kill_loops"]
    assert lo == 7 * fidelity._period_window(marine)[0] and hi == 7 * fidelity._period_window(marine)[1]
    assert expected["marine_chase"]["hits"] == (1, 1)


def test_agreement_allows_one_loop_on_times_only():
    assert fidelity.agrees((12, 16), (11, 17), "kill_loops")
    assert not fidelity.agrees((12, 16), (12, 17.5), "kill_loops")
    assert not fidelity.agrees((1, 1), (1, 2), "hits")


def write_run(root, run_id, seed, last_step, value):
    """A finished Sacred run of QMIX on 5m_vs_6m testing ``value`` every 20k steps up to ``last_step``."""
    path = os.path.join(root, "5m_vs_6m", "qmix", str(run_id))
    os.makedirs(path)
    steps = list(range(20_000, last_step + 1, 20_000))
    files = {"run.json": {"status": "COMPLETED", "start_time": f"2024-01-0{run_id}"},
             "config.json": {"seed": seed, "t_max": last_step, "evaluate": False},
             "metrics.json": {fidelity.METRIC: {"steps": steps, "values": [value] * len(steps),
                                                "timestamps": [0] * len(steps)}}}
    for name, content in files.items():
        with open(os.path.join(path, name), "w") as f:
            json.dump(content, f)


@pytest.fixture
def results(tmp_path):
    root = str(tmp_path / "sacred")
    write_run(root, 1, 11, 2_000_000, 0.5)
    write_run(root, 2, 12, 2_000_000, 0.7)
    write_run(root, 3, 13, 1_000_000, 0.2)  # counts at 1M only
    return root


def test_learning_results_are_means_and_standard_errors_over_seeds(results):
    table = fidelity.learning_results(results)["5m_vs_6m/qmix"]
    assert table["2000000"] == pytest.approx({"mean": 0.6, "sem": 0.1, "n": 2})
    values = np.array([0.5, 0.7, 0.2])
    assert table["1000000"] == pytest.approx({"mean": values.mean(), "sem": values.std(ddof=1) / np.sqrt(3),
                                              "n": 3})
    assert "5000000" not in table
    assert "does not exist" in fidelity.learning_results(results + "_missing")["_note"]


def test_the_report_puts_stored_figures_beside_this_run(tmp_path, results):
    stored, out = str(tmp_path / "old.json"), str(tmp_path / "fidelity.md")
    common = ["--episodes", "3", "--maps", "3m", "2m_vs_1z", "--results", results]
    assert fidelity.main(common + ["--label", "old", "--json", stored, "--no-markdown", "--note", "a note"]) == 0
    assert not os.path.exists(out)
    assert fidelity.main(common + ["--label", "new", "--compare", stored, "--out", out]) == 0
    with open(stored) as f:
        figures = json.load(f)
    assert figures["label"] == "old" and set(figures["win_rates"]) == {"3m", "2m_vs_1z"}
    assert set(figures["win_rates"]["3m"]) == {p.name for p in fidelity.POLICIES}
    assert set(figures["unit_checks"]) == set(fidelity.expected_unit_checks())
    with open(out) as f:
        report = f.read()
    for heading in ("# Simulator fidelity", "## Scripted policies", "## Unit-level checks", "## Learning results"):
        assert heading in report
    assert "**old** → **new**" in report and "(a note)" in report
    assert "| 3m | 0.00 → 0.00 |" in report and "| 2m_vs_1z |" in report and "| 8m |" not in report
    assert "| 5m_vs_6m | qmix | 2M | 0.60 ± 0.10 (n=2) | 0.60 ± 0.10 (n=2) | 0.70–0.76 [1] |" in report
    assert report.count(": agrees") + report.count(": **differs**") == 2 * 16  # 16 quantities, 2 columns


def test_bad_arguments_and_files_are_explained(tmp_path, capsys):
    with pytest.raises(SystemExit):
        fidelity.parse_args(["--maps", "4m"])
    assert "unknown map(s) 4m; the simulator offers: " in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"label": "x"}')
    with pytest.raises(SystemExit, match="is not a fidelity figure file"):
        fidelity.load_figures(str(bad))

"""The env registry and its backend choice (embedded simulator or real StarCraft II through SMAC).

StarCraft II cannot run here, so the real-game path is exercised with a stand-in (``tests/sc2_standin.py``):
a fake ``smac`` package whose ``StarCraft2Env`` plays the simulator's battles the way SMAC and pysc2 do,
plus a fake game directory (``SC2PATH``) holding the game's executable and the map file. Everything from
backend detection to the worker processes, per-env seeds and replay paths is then the code a real
installation runs.
"""
import logging
import os
import sys

import numpy as np
import pytest

import envs
from envs import REGISTRY, sim
from envs.subprocess_env import SubprocessBatchedEnv
from sc2_standin import game_dir, install_fake_game, install_fake_smac, no_smac_modules  # noqa: F401 (fixtures)


def test_sim_backend_builds_the_batched_simulator(game_dir):
    env = REGISTRY["sc2"](n_envs=3, seed=1, backend="sim", map_name="3m")
    assert isinstance(env, sim.BatchedStarCraft2Sim) and env.backend_name == "sim"
    assert env.n_envs == 3
    assert env.get_env_info() == sim.StarCraft2Env(map_name="3m").get_env_info()
    env.reset()
    assert env.get_obs().shape == (3, 3, env.get_env_info()["obs_shape"])


def test_auto_falls_back_to_the_simulator_and_says_why(game_dir, caplog, no_smac_modules):
    with caplog.at_level(logging.INFO, logger="envs"):
        env = REGISTRY["sc2"](n_envs=2, seed=1, map_name="3m")  # backend defaults to auto
    assert env.backend_name == "sim"
    assert "embedded simulator" in caplog.text and "not installed" in caplog.text


def test_starcraft2_backend_when_missing_says_what_and_how(game_dir, no_smac_modules):
    with pytest.raises(RuntimeError) as err:
        REGISTRY["sc2"](n_envs=1, seed=1, backend="starcraft2", map_name="3m")
    message = str(err.value)
    assert "`smac` package" in message and f"not installed at {game_dir}" in message
    assert "bash install_sc2.sh" in message and "requirements-sc2.txt" in message
    assert "backend=sim" in message


def test_the_optimiser_named_smac_is_recognised(tmp_path, game_dir, monkeypatch, no_smac_modules):
    install_fake_smac(tmp_path / "site", monkeypatch, with_env=False)
    install_fake_game(game_dir)
    with pytest.raises(RuntimeError, match="SMAC3 hyperparameter optimiser.*pip uninstall smac"):
        REGISTRY["sc2"](n_envs=1, seed=1, backend="starcraft2", map_name="3m")


def test_missing_map_is_named(tmp_path, game_dir, monkeypatch, no_smac_modules):
    install_fake_smac(tmp_path / "site", monkeypatch)
    install_fake_game(game_dir, maps=("8m",))
    assert envs.starcraft2_missing("8m") == []
    with pytest.raises(RuntimeError, match="SMAC map '3m' is not installed: no 3m.SC2Map"):
        REGISTRY["sc2"](n_envs=1, seed=1, backend="starcraft2", map_name="3m")
    assert REGISTRY["sc2"](n_envs=1, seed=1, map_name="3m").backend_name == "sim"  # auto


def test_auto_uses_starcraft2_through_smac_when_installed(tmp_path, game_dir, monkeypatch, no_smac_modules):
    install_fake_smac(tmp_path / "site", monkeypatch)
    install_fake_game(game_dir)
    replays = tmp_path / "replays"
    env = REGISTRY["sc2"](n_envs=2, seed=10, map_name="3m", record_replay=True, replay_dir=str(replays),
                          max_concurrent_games=2)
    try:
        assert isinstance(env, SubprocessBatchedEnv) and env.backend_name == "starcraft2"
        assert env.state_dict()["seeds"] == [10, 11]  # env b is seeded seed + b, as in PyMARL
        env.reset()
        for b, seed in enumerate((10, 11)):
            single = sim.StarCraft2Env(map_name="3m", seed=seed)
            obs, state = single.reset()
            np.testing.assert_array_equal(env.get_obs()[b], np.stack(obs))
            np.testing.assert_array_equal(env.get_state()[b], state)
        rng = np.random.default_rng(0)
        while True:
            avail = env.get_avail_actions()
            if env.step((rng.random(avail.shape) * avail).argmax(-1))[1].all():
                break
        paths = env.save_replay([1])  # found in replay_dir although SMAC's save_replay returns nothing
        assert len(paths) == 1 and os.path.dirname(paths[0]) == str(replays)
        assert os.path.basename(paths[0]).startswith("3m_env1_") and paths[0].endswith(".SC2Replay")
    finally:
        env.close()


def test_bad_backend_and_n_envs(game_dir):
    with pytest.raises(ValueError, match="unknown env_args.backend 'sc2'; valid choices: auto, sim, starcraft2"):
        REGISTRY["sc2"](n_envs=1, seed=1, backend="sc2", map_name="3m")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="n_envs must be a positive integer"):
            REGISTRY["sc2"](n_envs=bad, seed=1, backend="sim", map_name="3m")
    assert REGISTRY["sc2"](n_envs=np.int64(2), seed=1, backend="sim", map_name="3m").n_envs == 2


def test_sc2path_default_location(monkeypatch):
    from envs.starcraft2_backend import sc2_path

    monkeypatch.delenv("SC2PATH", raising=False)
    if sys.platform.startswith("linux"):
        assert sc2_path().endswith("StarCraftII")
    monkeypatch.setenv("SC2PATH", "~/games/sc2")
    assert sc2_path().endswith("games/sc2") and "~" not in sc2_path()

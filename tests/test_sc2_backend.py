"""Real StarCraft II on a lab box: detection, replays, the game cap and waves, crash episodes, timeouts,
resuming across backends, and whole training runs, on the stand-in of ``tests/sc2_standin.py`` (a fake
``smac`` whose games behave as SMAC's and pysc2's do; the game itself cannot run here)."""
import json
import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import controllers
import envs
import runners
from alg_helpers import make_cfg
from config import resume
from config.loader import ConfigError, load_config
from envs import REGISTRY, game_budget, sim
from envs.subprocess_env import SubprocessBatchedEnv
from run import prepare_run
from run import run as run_training
from sc2_standin import (game_dir, install_fake_game, install_fake_smac, launched_games,  # noqa: F401 (fixtures)
                         no_smac_modules, process_gone, set_plan)
from utils.checkpoint import CheckpointError
from test_subprocess_env import CountingEnv

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "main.py")
CONSOLE = logging.getLogger("dm2-test")


@pytest.fixture
def sc2(tmp_path, game_dir, monkeypatch, no_smac_modules):
    """Real StarCraft II as this code sees it: the fake ``smac`` package and a complete game directory;
    every game launched is recorded in ``games``."""
    site = tmp_path / "site"
    install_fake_smac(site, monkeypatch)
    install_fake_game(game_dir)
    games = tmp_path / "games"
    games.mkdir()
    set_plan(monkeypatch, game_pid_dir=str(games))
    return SimpleNamespace(root=game_dir, site=site, games=games, plan=lambda **plan: set_plan(
        monkeypatch, game_pid_dir=str(games), **plan))


def play_episode(env) -> None:
    """One episode on every environment: each agent takes its first available action."""
    env.reset()
    while not env.step(env.get_avail_actions().argmax(-1))[1].all():
        pass


def episode_runner(env, n_episodes, map_name="3m"):
    cfg = make_cfg("ippo", map_name=map_name)
    torch.manual_seed(0)
    info = env.get_env_info()
    mac = controllers.REGISTRY[cfg.mac](info, cfg, torch.device("cpu"))
    return runners.REGISTRY["episode"](env, mac, cfg, torch.device("cpu"), n_episodes=n_episodes)


# ------------------------------------------------------------------------------------------------ detection

def test_maps_are_read_from_capital_Maps_only(tmp_path, game_dir, monkeypatch, no_smac_modules):
    install_fake_smac(tmp_path / "site", monkeypatch)
    install_fake_game(game_dir, maps_dir="maps")  # pysc2 reads <game>/Maps only
    assert envs.starcraft2_missing("3m") == [
        f"the SMAC map '3m' is not installed: no 3m.SC2Map under {game_dir / 'Maps' / 'SMAC_Maps'}"]
    assert REGISTRY["sc2"](n_envs=1, seed=1, map_name="3m").backend_name == "sim"  # auto


def test_an_unfinished_install_is_not_taken_for_the_game(tmp_path, game_dir, monkeypatch, no_smac_modules):
    install_fake_smac(tmp_path / "site", monkeypatch)
    install_fake_game(game_dir, executable=False)
    (problem,) = envs.starcraft2_missing("3m")
    assert problem.startswith(f"the StarCraft II install at {game_dir} is incomplete: "
                              f"{game_dir / 'Versions' / 'Base75689'}")
    assert "is missing or not executable (an interrupted install? run `bash install_sc2.sh` again)" in problem
    os.rmdir(game_dir / "Versions" / "Base75689")
    (problem,) = envs.starcraft2_missing("3m")
    assert "incomplete: no `Versions/Base<build>` directory" in problem
    assert REGISTRY["sc2"](n_envs=1, seed=1, map_name="3m").backend_name == "sim"  # auto
    with pytest.raises(RuntimeError, match="needs real StarCraft II, which cannot run here"):
        REGISTRY["sc2"](n_envs=1, seed=1, backend="starcraft2", map_name="3m")


# ------------------------------------------------------------------------------------------------ replays

REPLAY_NAME = r"3m_env{}_\d{{4}}-\d\d-\d\d-\d\d-\d\d-\d\d\.SC2Replay"


def test_replays_are_found_and_a_relative_replay_dir_means_the_working_directory(sc2, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = REGISTRY["sc2"](n_envs=2, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=2,
                          replay_dir="results/replays/run1")
    try:
        play_episode(env)
        paths = env.save_replay()
        assert [os.path.dirname(p) for p in paths] == [str(work / "results" / "replays" / "run1")] * 2
        for b, path in enumerate(paths):
            assert re.fullmatch(REPLAY_NAME.format(b), os.path.basename(path)) and os.path.isfile(path)
        again = env.save_replay([1])  # within the same second, pysc2 writes the same file again
        assert len(again) == 1 and re.fullmatch(REPLAY_NAME.format(1), os.path.basename(again[0]))
        assert not (sc2.root / "Replays").exists()  # nothing went under the game's own Replays folder
    finally:
        env.close()


# ---------------------------------------------------------------------------------------- the game budget

def test_the_derived_cap_leaves_a_core_to_the_learner_and_fits_the_memory():
    assert game_budget.GAME_MEMORY_GIB == 2.0
    assert game_budget.derived_cap(cores=32, memory_gib=120.0) == 31
    assert game_budget.derived_cap(cores=32, memory_gib=20.5) == 10
    assert game_budget.derived_cap(cores=2, memory_gib=64.0) == 1
    assert game_budget.derived_cap(cores=1, memory_gib=1.0) == 1  # always at least one game
    assert game_budget.derived_cap(cores=8, memory_gib=None) == 7
    budget = game_budget.budget(40)
    assert budget.cap == 40 and budget.configured
    assert "env_args.max_concurrent_games=40" in budget.describe()
    derived = game_budget.budget(0)
    assert not derived.configured and derived.cap == game_budget.derived_cap(derived.cores, derived.memory_gib)
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ValueError, match=r"max_concurrent_games must be 0 \(derive the cap"):
            game_budget.check_max_concurrent_games(bad)


@pytest.mark.parametrize("cgroup", ["v1", "v2"])
def test_a_containers_cpu_quota_and_memory_limit_bound_the_cap(monkeypatch, cgroup):
    """In a container, the host's cores and free memory are not the container's: its cgroup limits are."""
    gib = 1024 ** 3
    files = {"/proc/meminfo": "MemTotal: 1 kB\nMemAvailable: 67108864 kB\n"}  # 64 GiB free on the host
    if cgroup == "v2":
        files.update({"/proc/self/cgroup": "0::/box/run", "/sys/fs/cgroup/box/cpu.max": "300000 100000",
                      "/sys/fs/cgroup/box/run/cpu.max": "max 100000", "/sys/fs/cgroup/box/memory.max": str(9 * gib),
                      "/sys/fs/cgroup/box/memory.current": str(2 * gib), "/sys/fs/cgroup/box/run/memory.max": "max"})
    else:
        files.update({"/proc/self/cgroup": "4:memory:/box\n3:cpu,cpuacct:/box\n0::/",
                      "/sys/fs/cgroup/cpu/box/cpu.cfs_quota_us": "300000",
                      "/sys/fs/cgroup/cpu/box/cpu.cfs_period_us": "100000",
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "no limit"
                      "/sys/fs/cgroup/memory/box/memory.limit_in_bytes": str(9 * gib),
                      "/sys/fs/cgroup/memory/box/memory.usage_in_bytes": str(2 * gib)})
    monkeypatch.setattr(game_budget, "_read", files.get)
    monkeypatch.setattr(game_budget.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert game_budget.usable_cores() == 3
    assert game_budget.available_memory_gib() == pytest.approx(7.0)
    assert game_budget.budget(0).cap == 2  # min(3 cores - 1, 7 GiB // 2 GiB)


def test_the_cap_bounds_the_games_and_the_runner_plays_the_rest_in_waves(sc2, caplog):
    with caplog.at_level(logging.INFO, logger="envs"):
        env = REGISTRY["sc2"](n_envs=5, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=2)
    assert ("5 environments asked for, more real StarCraft II games than may run at once here (at most 2 games "
            "at once (env_args.max_concurrent_games=2") in caplog.text
    assert "2 games, on which the runner plays the episodes in waves" in caplog.text
    try:
        assert isinstance(env, SubprocessBatchedEnv) and env.n_envs == 2
        assert env.game_budget.cap == 2 and env.game_budget.configured
        runner = episode_runner(env, n_episodes=5)
        assert runner.n_waves == 3
        batch, stats = runner.run(test_mode=False, t_env=0)
        assert batch.batch_size == 5 and all(len(stats[k]) == 5 for k in ("return", "battle_won", "ep_length"))
        np.testing.assert_array_equal(batch.episode_lengths().numpy(), stats["ep_length"])
        assert batch.max_t == stats["ep_length"].max() and stats["env_steps"] == stats["ep_length"].sum()
        last = torch.from_numpy(stats["ep_length"] - 1)
        assert batch.terminated[torch.arange(5), last].eq(1).all()  # SMAC's default: every end is terminal
        assert env.state_dict()["episodes"] == [3, 2]  # waves of 2, 2 and 1 on the same two games
        assert len(launched_games(sc2.games)) == 2
    finally:
        env.close()
    assert all(process_gone(pid) for pid in launched_games(sc2.games))


def test_waves_give_the_episodes_separate_runs_give():
    """Two waves of greedy episodes on two simulator environments equal two runs of two episodes."""
    def episodes(n_episodes, calls):
        env = sim.BatchedStarCraft2Sim(map_name="3m", n_envs=2, seed=5)
        runner = episode_runner(env, n_episodes)
        return [runner.run(test_mode=True, t_env=0) for _ in range(calls)]

    (waved, waved_stats), = episodes(4, 1)
    separate = episodes(2, 2)
    for key in ("return", "ep_length", "battle_won"):
        np.testing.assert_array_equal(waved_stats[key], np.concatenate([s[key] for _, s in separate]))
    lengths = waved_stats["ep_length"]
    for i, (batch, _) in enumerate(separate):
        for j in range(2):
            n = lengths[2 * i + j]
            for name, x in batch.tensors().items():
                whole = getattr(waved, name)[2 * i + j]
                keep = n + 1 if name in ("obs", "state", "avail_actions") else n
                torch.testing.assert_close(whole[:keep], x[j, :keep], msg=name)


# ---------------------------------------------------------------------------------------- crash episodes

def test_a_crash_episode_is_played_again_not_counted_as_a_loss(sc2, caplog):
    sc2.plan(crash={"3": [0, 2, 1]})  # env 0 (seed 3): its game crashes at the third step of its first episode
    env = REGISTRY["sc2"](n_envs=2, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=2)
    try:
        with caplog.at_level(logging.WARNING, logger="runners"):
            batch, stats = episode_runner(env, n_episodes=2).run(test_mode=False, t_env=0)
        assert "1 episode(s) were cut short by a game crash" in caplog.text
        assert batch.batch_size == 2 and (stats["ep_length"] > 3).all()  # the 3-step crash episode is not there
        assert env.state_dict()["episodes"] == [2, 1]  # env 0 played the crashed episode and its replacement
        assert env.get_stats()["restarts"] == 1
        games = launched_games(sc2.games)  # SMAC stopped env 0's game and launched another
        assert len(games) == 3 and [process_gone(pid) for pid in games].count(True) == 1
    finally:
        env.close()


def test_a_game_that_keeps_crashing_is_an_error(sc2):
    sc2.plan(crash={"3": [0, 0, 99], "4": [0, 0, 99]})
    env = REGISTRY["sc2"](n_envs=2, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=2)
    try:
        with pytest.raises(RuntimeError, match=r"the game crashed in 4 episodes while playing 2; check the "
                                               r"StarCraft II install and the machine's free memory"):
            episode_runner(env, n_episodes=2).run(test_mode=False, t_env=0)
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------ timeouts

@pytest.mark.parametrize("continuing_episode", [False, True])
def test_a_timeout_is_terminal_unless_continuing_episode(continuing_episode):
    """SMAC and PyMARL: an episode that reaches the step limit is terminal (no bootstrap), unless
    ``continuing_episode`` makes the env report ``info["episode_limit"]``; on both backends."""
    engine = sim.BatchedStarCraft2Sim(map_name="3m", n_envs=2, seed=0, continuing_episode=continuing_episode)
    engine.reset()
    engine.set_unit_situation(1, {}, {}, episode_steps=engine.episode_limit - 1)  # one step from the limit
    _, terminated, info = engine.step(np.ones((2, 3), dtype=np.int64))  # everybody stops
    assert terminated.tolist() == [False, True] and not info["battle_won"][1]
    assert info["episode_limit"].tolist() == [False, continuing_episode]

    seeds = [1, 4]  # CountingEnv: env 0 times out at its step limit (4), env 1 wins at step 2
    env = SubprocessBatchedEnv([lambda s=s: CountingEnv(seed=s, continuing_episode=continuing_episode)
                                for s in seeds], start_method="fork")
    try:
        batch, stats = episode_runner(env, n_episodes=2).run(test_mode=False, t_env=0)
    finally:
        env.close()
    assert stats["ep_length"].tolist() == [4, 2] and stats["battle_won"].tolist() == [0, 1]
    assert batch.terminated[0, 3] == (0 if continuing_episode else 1) and batch.terminated[1, 1] == 1


# ------------------------------------------------------------------------------------ resuming, budgets

def test_real_game_state_loads_into_another_number_of_games(sc2, caplog):
    """The real game's random state cannot be saved, so a run resumed with another cap (another machine)
    continues from its seeds."""
    three = REGISTRY["sc2"](n_envs=3, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=3)
    state = three.state_dict()
    three.close()
    two = REGISTRY["sc2"](n_envs=3, seed=3, backend="starcraft2", map_name="3m", max_concurrent_games=2)
    try:
        with caplog.at_level(logging.INFO, logger="envs"):
            two.load_state_dict(state)
        assert "cannot save their random state" in caplog.text
    finally:
        two.close()


def test_max_concurrent_games_is_checked_with_the_config(game_dir):
    with pytest.raises(ConfigError, match=r"max_concurrent_games must be 0 \(derive the cap .* got -2"):
        load_config("ippo", "sc2", {"env_args.max_concurrent_games": -2, "env_args.backend": "sim"})
    cfg = load_config("ippo", "sc2", {"env_args.max_concurrent_games": 4, "env_args.backend": "sim"})
    assert cfg.env_args["max_concurrent_games"] == 4  # accepted with the simulator too, where it changes nothing


def tiny(tmp_path, **overrides):
    """A tiny IPPO run on 3m, writing under ``tmp_path``; config checks off, so ``backend: auto`` stays
    unresolved in its config (as when a run is set up from code)."""
    layer = {"seed": 1, "t_max": 100, "batch_size_run": 2, "test_nepisode": 2, "test_interval": 100,
             "log_interval": 100, "save_model": True, "save_model_interval": 100, "use_tensorboard": False,
             "local_results_path": str(tmp_path / "results"), "env_args.map_name": "3m",
             "env_args.backend": "auto", **overrides}
    return load_config("ippo", "sc2", layer, check_components=False)


def test_resuming_a_simulator_checkpoint_after_the_game_was_installed(tmp_path, game_dir, monkeypatch,
                                                                      no_smac_modules):
    cfg = tiny(tmp_path)
    run_training(None, cfg, CONSOLE)  # no game here: auto plays on the simulator
    (token,) = os.listdir(tmp_path / "results" / "models")
    models = str(tmp_path / "results" / "models" / token)
    install_fake_smac(tmp_path / "site", monkeypatch)
    install_fake_game(game_dir)
    assert envs.resolve_backend("auto", "3m") == "starcraft2"
    # the command line's resume continues on the backend the run was trained on
    resumed = resume.resolve_config(None, None, {"checkpoint_path": models, "t_max": 200})
    assert resumed.cfg.env_args["backend"] == "sim"
    # set up from code with auto (which now picks the game): a clear error, not a KeyError
    with pytest.raises(CheckpointError, match=r"was trained on the embedded simulator \(env_args.backend=sim\), "
                                              r"but this run's environments are real StarCraft II through SMAC"):
        prepare_run(tiny(tmp_path, checkpoint_path=models, t_max=200, **{"env_args.max_concurrent_games": 2}),
                    CONSOLE)


# ------------------------------------------------------------------------------- whole runs (command line)

def run_main(cwd, *args, site=None, returncode=0):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site) if site else ""
    proc = subprocess.run([sys.executable, MAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_a_training_run_on_the_game_shares_its_games_and_logs_restarts(sc2, tmp_path, monkeypatch):
    """The command line on real StarCraft II: a capped pool of games plays training and test episodes in
    waves, a crash is replayed and logged as game_restarts, no game outlives the run, and the checkpoint
    resumes only where the game runs (or is evaluated on the simulator)."""
    sc2.plan(crash={"1": [1, 1, 1]})  # env 0 (seed 1): a crash in its second episode
    out = run_main(tmp_path, "--config=ippo", "with", "env_args.map_name=3m", "env_args.backend=starcraft2",
                   "env_args.max_concurrent_games=2", "batch_size_run=3", "test_nepisode=2", "seed=1", "t_max=150",
                   "test_interval=150", "log_interval=150", "save_model=True", "save_model_interval=150",
                   "use_tensorboard=False", site=sc2.site)
    assert ("Environment backend: starcraft2 (real StarCraft II through SMAC) | env sc2, map 3m | 2 environments: "
            "3 training episodes in 2 waves and 2 test episodes at once | at most 2 games at once "
            "(env_args.max_concurrent_games=2") in out
    assert "1 episode(s) were cut short by a game crash" in out
    (metrics,) = (tmp_path / "results" / "sacred" / "3m" / "ippo").glob("*/metrics.json")
    restarts = json.loads(metrics.read_text())["game_restarts"]["values"]
    assert restarts[-1] == 1
    games = launched_games(sc2.games)
    assert len(games) == 3 and all(process_gone(pid) for pid in games)  # 2 games + 1 relaunch, all stopped
    (token,) = os.listdir(tmp_path / "results" / "models")
    models = str(tmp_path / "results" / "models" / token)

    monkeypatch.setenv("SC2PATH", str(tmp_path / "no_game_here"))
    out = run_main(tmp_path, "with", f"checkpoint_path={models}", "t_max=300", returncode=2)
    assert "env_args.backend=starcraft2 needs real StarCraft II, which cannot run here" in out
    assert "set by the config saved in checkpoint" in out
    out = run_main(tmp_path, "with", f"checkpoint_path={models}", "evaluate=True", "env_args.backend=sim",
                   "test_nepisode=2")
    assert "Environment backend: sim (the embedded simulator)" in out

"""SubprocessBatchedEnv: the batched contract over MultiAgentEnvs running in worker processes.

Two kinds of environment run in the workers: a small counting env defined here (exact expectations for
timeouts, missing info keys, stats, replays, state round trips, failures, and the game processes of real
StarCraft II) and the embedded simulator's single-environment ``StarCraft2Env``, compared value for value
with the simulator's batched engine stepping the same seeds and actions.
"""
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from envs import sim, subprocess_env
from envs.multiagentenv import MultiAgentEnv
from envs.subprocess_env import EnvWorkerError, SubprocessBatchedEnv
from sc2_standin import process_gone

needs_process_groups = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                          reason="process groups and /proc: Linux")


class CountingEnv(MultiAgentEnv):
    """Two agents, three actions, one enemy; an episode's outcome is drawn from the env's own RNG.

    At reset a ``value`` in [0, 100) is drawn. Even values win at step 2, odd values time out at
    ``episode_limit``; as in SMAC, ``info["episode_limit"]`` says so only with ``continuing_episode``.
    Action 1 is unavailable to agent 1. Agent 0 choosing action 2 triggers ``on_action_2``:
    ``"raise"`` raises, ``"exit"`` kills the worker process, ``"crash"`` is a game crash as SMAC reports
    it (``(0, True, {})``), ``"hang"`` never answers. With ``game_dir`` the first reset launches a child
    "game" process, as pysc2 does (a file ``<pid>.game`` in ``game_dir``), and ``close()`` stops it after
    ``close_delay_s`` and writes ``<pid>.closed``.
    """

    N_AGENTS, N_ACTIONS, OBS, STATE = 2, 3, 3, 2

    def __init__(self, seed=0, episode_limit=4, on_action_2=None, omit_dead=False, replay_dir="",
                 continuing_episode=False, game_dir=None, close_delay_s=0.0):
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self.episode_limit = episode_limit
        self.on_action_2 = on_action_2
        self.omit_dead = omit_dead
        self.replay_dir = replay_dir
        self.continuing_episode = continuing_episode
        self.game_dir, self.close_delay_s, self.game = game_dir, close_delay_s, None
        self.t = 0
        self.value = 0
        self.won = self.games = 0

    def reset(self):
        if self.game_dir and self.game is None:
            self.game = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open(os.path.join(self.game_dir, f"{self.game.pid}.game"), "w").close()
        self.t = 0
        self.value = int(self.rng.integers(0, 100))
        return self.get_obs(), self.get_state()

    def step(self, actions):
        if actions[0] == 2 and self.on_action_2 == "raise":
            raise ValueError(f"boom in env seeded {self._seed}")
        if actions[0] == 2 and self.on_action_2 == "exit":
            os._exit(3)
        if actions[0] == 2 and self.on_action_2 == "crash":
            return 0, True, {}
        if actions[0] == 2 and self.on_action_2 == "hang":
            time.sleep(600)
        self.t += 1
        reward = float(self.value + sum(actions))
        win = self.value % 2 == 0 and self.t == 2
        terminated = win or self.t >= self.episode_limit
        info = {"battle_won": win}
        if not self.omit_dead:
            info.update(dead_allies=0, dead_enemies=int(win))
        if terminated and not win and self.continuing_episode:
            info["episode_limit"] = True
        if terminated:
            self.games += 1
            self.won += int(win)
        return reward, terminated, info

    def get_obs(self):
        return [np.array([self.value, self.t, i], dtype=np.float32) for i in range(self.N_AGENTS)]

    def get_state(self):
        return np.array([self.value, self.t], dtype=np.float32)

    def get_avail_actions(self):
        return [[1, 1, 1], [1, 0, 1]]

    def get_env_info(self):
        return {"state_shape": self.STATE, "obs_shape": self.OBS, "n_actions": self.N_ACTIONS,
                "n_agents": self.N_AGENTS, "episode_limit": self.episode_limit, "n_enemies": 1}

    def get_stats(self):
        return {"battles_won": self.won, "battles_game": self.games, "win_rate": self.won / self.games}

    def seed(self):
        return self._seed

    def save_replay(self):
        path = os.path.join(self.replay_dir, f"counting_{self._seed}_{self.games}.txt")
        with open(path, "w") as f:
            f.write(str(self.value))
        return path

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "won": self.won, "games": self.games}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state["rng"]
        self.won, self.games = state["won"], state["games"]

    def close(self):
        if self.game is not None:
            time.sleep(self.close_delay_s)
            self.game.terminate()
            self.game.wait()
            open(os.path.join(self.game_dir, f"{self.game.pid}.closed"), "w").close()


def counting_envs(seeds, start_method="fork", reply_timeout_s=None, **kwargs):
    return SubprocessBatchedEnv([functools.partial(CountingEnv, seed=s, **kwargs) for s in seeds],
                                start_method=start_method, reply_timeout_s=reply_timeout_s)


@pytest.fixture
def make():
    """Build SubprocessBatchedEnvs that are closed (and their workers checked dead) after the test."""
    built = []

    def _make(*args, **kwargs):
        env = counting_envs(*args, **kwargs)
        built.append(env)
        return env

    yield _make
    for env in built:
        env.close()
        assert not any(p.is_alive() for p in env._processes)


def test_matches_in_process_envs_with_frozen_semantics(make):
    seeds = [10, 11, 12, 13]
    env = make(seeds)
    local = [CountingEnv(seed=s) for s in seeds]
    info = env.get_env_info()
    assert (info["n_agents"], info["n_actions"], info["obs_shape"]) == (2, 3, 3)
    actions = np.zeros((4, 2), dtype=np.int64)
    for _ in range(3):  # three rounds of episodes, reset all
        env.reset()
        for e in local:
            e.reset()
        done = np.zeros(4, dtype=bool)
        for _ in range(6):  # past episode_limit: every env is frozen for a while
            reward, terminated, info = env.step(actions)
            for b, e in enumerate(local):
                if done[b]:
                    assert reward[b] == 0 and terminated[b]
                    assert not info["battle_won"][b] and not info["episode_limit"][b]
                    assert info["dead_enemies"][b] == 0
                    continue
                r, t, i = e.step([0, 0])
                assert reward[b] == r and terminated[b] == t
                assert info["battle_won"][b] == i["battle_won"]
                assert info["dead_enemies"][b] == i["dead_enemies"]
                assert not info["episode_limit"][b] and not info["crashed"][b]  # SMAC's default: terminal
                done[b] |= t
            np.testing.assert_array_equal(env.get_obs(), np.stack([np.stack(e.get_obs()) for e in local]))
            np.testing.assert_array_equal(env.get_state(), np.stack([e.get_state() for e in local]))
        assert terminated.all()
    avail = env.get_avail_actions()
    assert avail.dtype == np.int32 and avail.shape == (4, 2, 3)
    assert env.get_obs().dtype == np.float32 and env.get_obs() is not env.get_obs()
    assert reward.dtype == np.float32 and terminated.dtype == bool


def test_partial_reset_only_restarts_masked_envs(make):
    env = make([1, 2, 3])
    env.reset()
    while not env.step(np.zeros((3, 2), dtype=np.int64))[1].all():
        pass
    before = env.get_obs()
    env.reset(np.array([False, True, False]))
    reward, terminated, _ = env.step(np.zeros((3, 2), dtype=np.int64))
    assert terminated[0] and terminated[2] and reward[0] == 0 and reward[2] == 0
    obs = env.get_obs()
    np.testing.assert_array_equal(obs[[0, 2]], before[[0, 2]])
    assert obs[1, 0, 1] == 1  # env 1 took its first step of a new episode
    with pytest.raises(ValueError, match="env_mask must be a bool array of shape"):
        env.reset(np.array([1, 0, 1]))


@pytest.mark.parametrize("continuing_episode", [False, True])
def test_missing_dead_counts_carry_over_and_timeouts_are_the_envs_own(make, continuing_episode):
    """A timeout is reported as ``episode_limit`` exactly when the env says so (SMAC: only with
    ``continuing_episode``); it is not inferred from the step count."""
    env = make([1, 4], omit_dead=True, continuing_episode=continuing_episode)  # values 47, 72: both endings
    env.reset()
    won = env.get_state()[:, 0] % 2 == 0
    assert won.any() and not won.all()
    saw_end = np.zeros(2, dtype=bool)
    for _ in range(4):
        _, terminated, info = env.step(np.zeros((2, 2), dtype=np.int64))
        newly = terminated & ~saw_end
        np.testing.assert_array_equal(info["battle_won"][newly], won[newly])
        np.testing.assert_array_equal(info["episode_limit"][newly], ~won[newly] & continuing_episode)
        assert (info["dead_allies"] == 0).all() and (info["dead_enemies"] == 0).all()
        saw_end |= terminated
    assert saw_end.all()


def test_a_game_crash_is_reported_as_such_not_as_a_loss(make):
    env = make([5, 6], on_action_2="crash")
    env.reset()
    env.step(np.zeros((2, 2), dtype=np.int64))
    actions = np.zeros((2, 2), dtype=np.int64)
    actions[1, 0] = 2
    reward, terminated, info = env.step(actions)
    assert terminated[1] and reward[1] == 0 and info["crashed"].tolist() == [False, True]
    assert not info["battle_won"][1] and not info["episode_limit"][1]


def test_invalid_actions_are_rejected_before_any_env_steps(make):
    env = make([1, 2])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros((2, 2), dtype=np.int64))
    env.reset()
    state = env.get_state()
    bad = np.zeros((2, 2), dtype=np.int64)
    bad[1, 1] = 1  # unavailable to agent 1
    with pytest.raises(ValueError, match=r"env 1, agent 1: action 1 is not available; available actions: \[0, 2\]"):
        env.step(bad)
    with pytest.raises(ValueError, match="integer array of shape"):
        env.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integer array of shape"):
        env.step(np.zeros((2, 2), dtype=np.float32))
    bad[1, 1] = 7
    with pytest.raises(ValueError, match="action 7 is not available"):
        env.step(bad)
    np.testing.assert_array_equal(env.get_state(), state)
    env.step(np.zeros((2, 2), dtype=np.int64))
    assert (env.get_state()[:, 1] == 1).all()  # neither env had moved before


def test_worker_exception_is_reraised_with_its_traceback(make):
    env = make([5, 6], on_action_2="raise")
    env.reset()
    actions = np.zeros((2, 2), dtype=np.int64)
    actions[1, 0] = 2
    with pytest.raises(EnvWorkerError) as err:
        env.step(actions)
    message = str(err.value)
    assert "environment 1" in message and "ValueError: boom in env seeded 6" in message
    assert "Worker traceback" in message and "in step" in message
    assert env.get_state()[0, 1] == 1  # env 0 did step, and that was recorded
    env.reset()  # the workers survive an env's exception
    env.step(np.zeros((2, 2), dtype=np.int64))


def test_dead_worker_is_reported_not_waited_for(make):
    env = make([5, 6], on_action_2="exit")
    env.reset()
    actions = np.zeros((2, 2), dtype=np.int64)
    actions[0, 0] = 2
    with pytest.raises(EnvWorkerError, match=r"env 0 .*exit code 3"):
        env.step(actions)
    env.close()
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()


def test_env_construction_failure_is_reported_and_workers_reaped():
    with pytest.raises(EnvWorkerError, match="TypeError"):
        SubprocessBatchedEnv([functools.partial(CountingEnv, seed=1),
                              functools.partial(CountingEnv, seed=2, no_such_argument=1)], start_method="fork")


def test_different_tasks_are_rejected():
    with pytest.raises(ValueError, match="different tasks"):
        SubprocessBatchedEnv([functools.partial(CountingEnv, episode_limit=4),
                              functools.partial(CountingEnv, episode_limit=5)], start_method="fork")


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one env factory"):
        SubprocessBatchedEnv([])
    with pytest.raises(ValueError, match="unknown start_method 'threads'"):
        SubprocessBatchedEnv([CountingEnv], start_method="threads")


def test_stats_are_summed_and_replays_forwarded(make, tmp_path):
    env = make([1, 2, 3], replay_dir=str(tmp_path))
    assert env.get_stats() == {}  # like SMAC, no stats before the first battle
    for _ in range(4):
        env.reset()
        while not env.step(np.zeros((3, 2), dtype=np.int64))[1].all():
            pass
    local = [CountingEnv(seed=s) for s in (1, 2, 3)]
    won = 0
    for e in local:
        for _ in range(4):
            e.reset()
            won += e.value % 2 == 0
    stats = env.get_stats()
    assert stats["battles_game"] == 12 and stats["battles_won"] == won
    assert stats["win_rate"] == pytest.approx(won / 12)
    paths = env.save_replay([0, 2])
    assert [os.path.basename(p) for p in paths] == ["counting_1_4.txt", "counting_3_4.txt"]
    assert all(os.path.isfile(p) for p in paths)
    with pytest.raises(IndexError, match="out of range for 3 envs"):
        env.save_replay([3])


def test_state_dict_continues_the_random_streams_exactly(make):
    def run(env, episodes):
        values = []
        for _ in range(episodes):
            env.reset()
            values.append(env.get_state()[:, 0].copy())
            while not env.step(np.zeros((2, 2), dtype=np.int64))[1].all():
                pass
        return np.stack(values)

    unbroken = run(make([7, 8]), 4)
    first = make([7, 8])
    head = run(first, 2)
    state = first.state_dict()
    assert state["seeds"] == [7, 8] and state["episodes"] == [2, 2]
    resumed = make([7, 8])
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([head, run(resumed, 2)]), unbroken)
    assert resumed.get_stats()["battles_game"] == 8
    with pytest.raises(ValueError, match=r"built with seeds \[7, 8\], these with \[7, 9\]"):
        make([7, 9]).load_state_dict(state)
    with pytest.raises(ValueError, match="holds 2 envs, this one has 3"):
        make([7, 8, 9]).load_state_dict(state)


# ------------------------------------------------------------------ worker processes and their games

def games(game_dir, suffix=".game") -> list[int]:
    """The pids of the "games" launched (or, with suffix ".closed", closed by their env) in ``game_dir``."""
    return sorted(int(name.split(".")[0]) for name in os.listdir(game_dir) if name.endswith(suffix))


def all_gone(pids, within_s=5.0) -> bool:
    deadline = time.monotonic() + within_s
    while not all(process_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@needs_process_groups
def test_each_worker_leads_a_process_group_holding_its_game(make, tmp_path):
    """The terminal's Ctrl-C reaches only the parent (which decides when to stop), and a worker's game can be
    stopped with its worker."""
    env = make([1, 2], game_dir=str(tmp_path))
    env.reset()
    workers = [p.pid for p in env._processes]
    assert [os.getpgid(pid) for pid in workers] == workers != [os.getpgid(0)] * 2
    assert sorted(os.getpgid(pid) for pid in games(tmp_path)) == sorted(workers)


@needs_process_groups
def test_a_worker_killed_for_memory_takes_its_game_with_it(make, tmp_path):
    env = make([1, 2], game_dir=str(tmp_path))
    env.reset()
    victim = env._processes[0].pid
    game = next(pid for pid in games(tmp_path) if os.getpgid(pid) == victim)
    os.kill(victim, signal.SIGKILL)  # what the kernel's out-of-memory killer does
    with pytest.raises(EnvWorkerError, match=r"env 0 died \(killed by SIGKILL - the kernel's out-of-memory killer "
                                             r"does this .* lower env_args.max_concurrent_games\)"):
        env.step(np.zeros((2, 2), dtype=np.int64))
    assert all_gone([game])
    env.close()
    assert all_gone(games(tmp_path))


@needs_process_groups
def test_a_hung_worker_times_out_and_is_stopped_with_its_game(tmp_path):
    env = counting_envs([1, 2], game_dir=str(tmp_path), on_action_2="hang", reply_timeout_s=1.0)
    try:
        env.reset()
        hung = env._processes[1].pid
        actions = np.zeros((2, 2), dtype=np.int64)
        actions[1, 0] = 2
        start = time.monotonic()
        with pytest.raises(EnvWorkerError, match=r"env 1 did not answer within 1 s while answering 'step': its "
                                                 r"game is probably hung, so its worker process and game were stopped"):
            env.step(actions)
        assert time.monotonic() - start < 5
        assert all_gone([hung] + [pid for pid in games(tmp_path) if not process_gone(pid) and
                                  os.getpgid(pid) == hung])
        assert env.get_state()[0, 1] == 1  # env 0 did step, and that was recorded
    finally:
        env.close()
    assert all_gone(games(tmp_path))
    with pytest.raises(ValueError, match="reply_timeout_s must be a positive number of seconds or None"):
        counting_envs([1], reply_timeout_s=0)


@needs_process_groups
def test_close_lets_a_slow_game_quit_even_past_the_grace_period(tmp_path, monkeypatch):
    """A worker still closing its game when close() loses patience is sent SIGTERM; it finishes closing
    the game (it ignores SIGTERM while closing) before its process group is killed."""
    monkeypatch.setattr(subprocess_env, "_CLOSE_GRACE_S", 0.2)
    env = counting_envs([1, 2], game_dir=str(tmp_path), close_delay_s=1.5)
    env.reset()
    env.close()
    assert games(tmp_path, ".closed") == games(tmp_path)
    assert all_gone(games(tmp_path) + [p.pid for p in env._processes])


@needs_process_groups
def test_close_stops_a_game_that_never_quits(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess_env, "_CLOSE_GRACE_S", 0.2)
    monkeypatch.setattr(subprocess_env, "_TERMINATE_GRACE_S", 0.2)
    env = counting_envs([1, 2], game_dir=str(tmp_path), close_delay_s=600)
    env.reset()
    start = time.monotonic()
    env.close()
    assert time.monotonic() - start < 5
    assert games(tmp_path, ".closed") == []
    assert all_gone(games(tmp_path) + [p.pid for p in env._processes])


def test_spawned_workers_do_not_run_the_main_script_again(tmp_path):
    """multiprocessing's spawn runs the parent's ``__main__`` script again in every worker; for src/main.py
    that means torch and Sacred in every game's worker. The workers do without it."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    (tmp_path / "probe_env.py").write_text(textwrap.dedent('''
        import sys

        from envs.multiagentenv import MultiAgentEnv


        class ProbeEnv(MultiAgentEnv):
            """Reports, in its env_info, which heavy modules its worker process has imported."""

            def get_env_info(self):
                return {"n_agents": 1, "n_actions": 1, "obs_shape": 1, "state_shape": 1, "episode_limit": 1,
                        "imported": sorted(m for m in ("torch", "sacred") if m in sys.modules)}

            def close(self):
                pass
    '''))
    (tmp_path / "script.py").write_text(textwrap.dedent(f'''
        import sys
        sys.path[:0] = [{src!r}, {str(tmp_path)!r}]
        import sacred, torch  # as src/main.py does

        from envs.subprocess_env import SubprocessBatchedEnv
        from probe_env import ProbeEnv

        if __name__ == "__main__":
            env = SubprocessBatchedEnv([ProbeEnv, ProbeEnv], start_method="spawn")
            print("worker imported:", env.get_env_info()["imported"])
            env.close()
    '''))
    done = subprocess.run([sys.executable, str(tmp_path / "script.py")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "worker imported: []"


def test_factories_from_the_main_script_are_refused_for_spawn():
    def factory():
        return CountingEnv()

    factory.__module__ = "__main__"
    with pytest.raises(ValueError, match="defined in the __main__ script, which worker processes do not import"):
        SubprocessBatchedEnv([factory], start_method="spawn")


# --------------------------------------------------------------------------- the simulator in workers

def test_simulator_in_workers_matches_the_batched_engine(tmp_path):
    """SMAC's single-env API of the simulator, in spawned workers, equals the batched engine exactly."""
    seeds = [3, 4, 5]
    kwargs = dict(map_name="3m", replay_dir=str(tmp_path))
    env = SubprocessBatchedEnv([functools.partial(sim.StarCraft2Env, seed=s, **kwargs) for s in seeds])
    try:
        # the engine with each single env's seed in its slot: same spawns and dynamics, env by env
        engine = sim.BatchedStarCraft2Sim(n_envs=len(seeds), seed=0, **kwargs)
        singles = [sim.StarCraft2Env(seed=s, **kwargs).batch.state_dict() for s in seeds]
        engine.load_state_dict({"env_seeds": [s["env_seeds"][0] for s in singles],
                                "episodes_started": [s["episodes_started"][0] for s in singles],
                                "stats": engine.state_dict()["stats"]})
        assert env.get_env_info() == engine.get_env_info()
        rng = np.random.default_rng(0)
        for mask in (None, None, np.array([True, False, True])):
            env.reset(mask)
            engine.reset(mask)
            for _ in range(200):
                np.testing.assert_array_equal(env.get_obs(), engine.get_obs())
                np.testing.assert_array_equal(env.get_state(), engine.get_state())
                avail = engine.get_avail_actions()
                np.testing.assert_array_equal(env.get_avail_actions(), avail)
                actions = (rng.random(avail.shape) * avail).argmax(-1)  # a random available action
                got, want = env.step(actions), engine.step(actions)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])
                for key in ("battle_won", "dead_allies", "dead_enemies", "episode_limit"):
                    np.testing.assert_array_equal(got[2][key], want[2][key], err_msg=key)
                if got[1].all():
                    break
            assert got[1].all()
        assert env.get_stats() == engine.get_stats()
        paths = env.save_replay([1])
        assert len(paths) == 1 and paths[0].endswith(".gif") and os.path.getsize(paths[0]) > 0
    finally:
        env.close()
    assert not any(p.is_alive() for p in env._processes)

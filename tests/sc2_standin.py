"""A stand-in for real StarCraft II, for the tests of the ``starcraft2`` backend (the game cannot run here).

It is a fake ``smac`` package whose ``smac.env.StarCraft2Env`` plays the embedded simulator's battles and
otherwise behaves as SMAC (oxwhirl/smac ``smac/env/starcraft2/starcraft2.py``, at the pinned commit) and
pysc2 (``run_configs/lib.py``, ``lib/sc_process.py``) do around the game:

* the first ``reset()`` launches a *game process* (pysc2 starts the ``SC2_x64`` binary as a child of the
  Python process), which ``close()`` stops;
* a game crash during ``step()`` makes SMAC relaunch the game (``full_restart``: ``force_restarts += 1``)
  and return ``(0, True, {})``; ``get_stats()`` reports ``restarts`` and, like SMAC's, divides by the
  number of battles (raising before the first one);
* ``save_replay()`` returns nothing and writes ``<replay_prefix or map_name>_<UTC time>.SC2Replay`` into
  ``replay_dir`` taken relative to ``$SC2PATH/Replays`` (an absolute one is used as it is);
* it has no ``state_dict``: the real game's random state cannot be saved.

A test steers it through the ``SC2_STANDIN_PLAN`` environment variable (JSON, read when an env is built,
so it reaches spawned workers): ``game_pid_dir`` (a file per launched game, named by its pid), ``crash``
and ``hang`` (``{"<seed>": [episode, step, times]}``: the env with that seed crashes, or hangs, at that
step of that episode, ``times`` times), ``close_delay_s`` (a slow game shutdown).
"""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap

import pytest

FAKE_SMAC_ENV = textwrap.dedent('''
    """Stand-in for oxwhirl's smac.env (tests/sc2_standin.py)."""
    import datetime
    import json
    import os
    import subprocess
    import sys
    import time

    from envs.sim import StarCraft2Env as _Simulator


    class StarCraft2Env:
        def __init__(self, map_name="8m", seed=None, replay_dir="", replay_prefix="", **kwargs):
            self._sim = _Simulator(map_name=map_name, seed=seed, **kwargs)
            self.map_name, self._seed = map_name, seed
            self.replay_dir, self.replay_prefix = replay_dir, replay_prefix
            self._episode_count = self._episode_steps = self.force_restarts = 0
            self._game = None
            plan = json.loads(os.environ.get("SC2_STANDIN_PLAN", "{}"))
            self._faults = {kind: list(plan.get(kind, {}).get(str(seed), [-1, -1, 0])) for kind in ("crash", "hang")}
            self._close_delay_s = plan.get("close_delay_s", 0)
            self._pid_dir = plan.get("game_pid_dir")

        def __getattr__(self, name):
            if name.startswith("_") or name in ("state_dict", "load_state_dict"):
                raise AttributeError(name)  # SMAC cannot save the game's random state
            return getattr(self._sim, name)

        def _launch(self):
            self._game = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            if self._pid_dir:
                open(os.path.join(self._pid_dir, str(self._game.pid)), "w").close()

        def _stop_game(self):
            if self._game is not None:
                self._game.terminate()
                self._game.wait()
                self._game = None

        def full_restart(self):
            self._stop_game()
            self._launch()
            self.force_restarts += 1

        def _fault(self, kind):
            episode, step, times = self._faults[kind]
            if times > 0 and [episode, step] == [self._episode_count, self._episode_steps]:
                self._faults[kind][2] -= 1
                return True
            return False

        def reset(self):
            self._episode_steps = 0
            if self._game is None:
                self._launch()
            return self._sim.reset()

        def step(self, actions):
            if self._fault("hang"):
                time.sleep(3600)
            if self._fault("crash"):
                self.full_restart()
                return 0, True, {}
            reward, terminated, info = self._sim.step(actions)
            self._episode_steps += 1
            if terminated:
                self._episode_count += 1
            return reward, terminated, info

        def get_stats(self):
            stats = dict(self._sim.get_stats())
            stats["win_rate"] = stats["battles_won"] / stats["battles_game"]
            stats["restarts"] = self.force_restarts
            return stats

        def save_replay(self):
            prefix = self.replay_prefix or self.map_name
            directory = os.path.join(os.environ["SC2PATH"], "Replays", self.replay_dir or "")
            os.makedirs(directory, exist_ok=True)
            now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None)
            name = prefix + "_" + now.isoformat("-").replace(":", "-") + ".SC2Replay"
            with open(os.path.join(directory, name), "wb") as f:
                f.write(b"SC2Replay")

        def close(self):
            time.sleep(self._close_delay_s)
            self._stop_game()
''')


@pytest.fixture
def no_smac_modules():
    """Forget any (fake) ``smac`` module imported during the test."""
    yield
    for name in [m for m in sys.modules if m == "smac" or m.startswith("smac.")]:
        del sys.modules[name]


@pytest.fixture
def game_dir(tmp_path, monkeypatch):
    """An empty directory as SC2PATH: StarCraft II is not installed."""
    root = tmp_path / "StarCraftII"
    root.mkdir()
    monkeypatch.setenv("SC2PATH", str(root))
    return root


def install_fake_smac(site, monkeypatch, with_env=True) -> None:
    """Put the fake ``smac`` package (without ``smac.env`` when ``with_env`` is false: the unrelated SMAC3
    package of that name) first on ``sys.path``."""
    package = site / "smac"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if with_env:
        (package / "env").mkdir()
        (package / "env" / "__init__.py").write_text(FAKE_SMAC_ENV)
    monkeypatch.syspath_prepend(str(site))


def install_fake_game(root, maps=("3m",), maps_dir="Maps", executable=True) -> None:
    """A game directory as pysc2 expects it: ``Versions/Base75689/<executable>`` (left out with
    ``executable=False``: an unfinished install) and ``<maps_dir>/SMAC_Maps/<map>.SC2Map``."""
    build = root / "Versions" / "Base75689"
    build.mkdir(parents=True)
    if executable:
        game = build / {"win32": "SC2_x64.exe", "darwin": "SC2.app/Contents/MacOS/SC2"}.get(sys.platform, "SC2_x64")
        game.parent.mkdir(parents=True, exist_ok=True)
        game.write_bytes(b"")
        game.chmod(game.stat().st_mode | stat.S_IXUSR)
    (root / maps_dir / "SMAC_Maps").mkdir(parents=True)
    for name in maps:
        (root / maps_dir / "SMAC_Maps" / f"{name}.SC2Map").write_bytes(b"")


def set_plan(monkeypatch, **plan) -> None:
    """Steer the stand-in games built from now on (see the module docstring)."""
    monkeypatch.setenv("SC2_STANDIN_PLAN", json.dumps(plan))


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie waiting for its parent to reap it). Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, /proc was read
        return True


def launched_games(pid_dir) -> list[int]:
    return sorted(int(name) for name in os.listdir(pid_dir))

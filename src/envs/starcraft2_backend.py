"""Real StarCraft II through SMAC (oxwhirl/smac), one game per worker process.

Nothing here runs without the game: :func:`starcraft2_missing` says what is absent (the ``smac`` package,
the game, the SMAC maps) and :func:`make_starcraft2_env` builds a
:class:`~envs.subprocess_env.SubprocessBatchedEnv` of SMAC ``StarCraft2Env`` s, environment ``b`` seeded
with ``seed + b`` as PyMARL's parallel runner does. Install with ``bash install_sc2.sh``.

Where pysc2 looks (pysc2 ``run_configs/platforms.py`` and ``run_configs/lib.py``): the game directory is
``$SC2PATH`` (else a per-platform default); it launches the newest ``Versions/Base<build>/<executable>``,
reads maps only from ``Maps/`` (capital M) and resolves a relative replay directory under ``Replays/``.
"""
from __future__ import annotations

import functools
import os
import sys
import time

from envs.subprocess_env import SubprocessBatchedEnv

INSTALL_HINT = ("install it with `bash install_sc2.sh` (StarCraft II 4.10, the SMAC maps, and "
                "`pip install -r requirements-sc2.txt`), or use the embedded simulator: env_args.backend=sim")

# Keyword arguments the embedded simulator accepts that SMAC's StarCraft2Env does not: StarCraft II always
# records its own replays, so the simulator's opt-in recording flag has no meaning there.
SIM_ONLY_KWARGS = ("record_replay",)


def sc2_path() -> str:
    """Where StarCraft II is installed: ``$SC2PATH``, else pysc2's default location for this platform."""
    if os.environ.get("SC2PATH"):
        return os.path.expanduser(os.environ["SC2PATH"])
    if sys.platform == "darwin":
        return "/Applications/StarCraft II"
    if sys.platform == "win32":
        return "C:/Program Files (x86)/StarCraft II"
    return os.path.expanduser("~/StarCraftII")


def _smac_import_problem() -> str | None:
    """Why ``smac.env.StarCraft2Env`` cannot be imported, or ``None`` if it can."""
    try:
        from smac.env import StarCraft2Env  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name == "smac":
            return "the `smac` package (oxwhirl's StarCraft Multi-Agent Challenge) is not installed"
        if err.name == "smac.env":
            return ("the installed `smac` package is not oxwhirl's StarCraft Multi-Agent Challenge (the "
                    "package of that name on the Python package index is the SMAC3 hyperparameter "
                    "optimiser); remove it with `pip uninstall smac`")
        return f"the `smac` package cannot be imported ({type(err).__name__}: {err})"
    except Exception as err:  # e.g. pysc2 missing, or a protobuf runtime too new for s2clientprotocol
        return f"the `smac` package cannot be imported ({type(err).__name__}: {err})"
    return None


#: The game executable inside ``Versions/Base<build>/``, per platform (pysc2 ``run_configs/platforms.py``).
GAME_EXECUTABLES = {"linux": "SC2_x64", "win32": "SC2_x64.exe", "cygwin": "SC2_x64.exe",
                    "darwin": "SC2.app/Contents/MacOS/SC2"}
#: How long a game may take to answer one command before its worker is declared hung (s). pysc2 gives a
#: game 120 s per request (its ``sc2_timeout``) and SMAC relaunches a crashed game within the same call
#: (start, connect, create and join: up to 120 s each), so a healthy call never comes near this.
GAME_REPLY_TIMEOUT_S = 900.0


def _map_file(root: str, map_name: str) -> str | None:
    """The SMAC map file for ``map_name`` under the game directory ``root`` (pysc2 reads ``Maps/`` only,
    with a capital M), or ``None``."""
    path = os.path.join(root, "Maps", "SMAC_Maps", f"{map_name}.SC2Map")
    return path if os.path.isfile(path) else None


def _game_problem(root: str) -> str | None:
    """Why the game under ``root`` cannot be launched (no ``Versions``, or an unfinished install whose newest
    ``Versions/Base<build>`` has no executable game), or ``None`` if it can."""
    where = "$SC2PATH" if os.environ.get("SC2PATH") else "the default location (set SC2PATH to change it)"
    versions = os.path.join(root, "Versions")
    if not os.path.isdir(versions):
        return f"StarCraft II is not installed at {root} ({where}): no `Versions` directory there"
    builds = sorted((name for name in os.listdir(versions) if name.startswith("Base") and name[4:].isdigit()),
                    key=lambda name: int(name[4:]))
    if not builds:
        return (f"the StarCraft II install at {root} is incomplete: no `Versions/Base<build>` directory (an "
                "interrupted install? run `bash install_sc2.sh` again)")
    executable = os.path.join(versions, builds[-1], GAME_EXECUTABLES.get(sys.platform, "SC2_x64"))
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        return (f"the StarCraft II install at {root} is incomplete: {executable} is missing or not executable "
                "(an interrupted install? run `bash install_sc2.sh` again)")
    return None


def starcraft2_missing(map_name: str) -> list[str]:
    """What is missing to play ``map_name`` in real StarCraft II (an empty list when nothing is)."""
    missing = []
    problem = _smac_import_problem()
    if problem:
        missing.append(problem)
    root = sc2_path()
    game = _game_problem(root)
    if game:
        missing.append(game)
    elif _map_file(root, map_name) is None:
        missing.append(f"the SMAC map {map_name!r} is not installed: no {map_name}.SC2Map under "
                       f"{os.path.join(root, 'Maps', 'SMAC_Maps')}")
    return missing


def require_starcraft2(map_name: str) -> None:
    """Raise ``RuntimeError`` listing what is missing when ``map_name`` cannot be played in StarCraft II."""
    missing = starcraft2_missing(map_name)
    if missing:
        raise RuntimeError("env_args.backend=starcraft2 needs real StarCraft II, which cannot run here:\n  - "
                           + "\n  - ".join(missing) + f"\nTo fix: {INSTALL_HINT}.")


class SMACEnv:
    """SMAC's ``StarCraft2Env``, except that ``save_replay()`` also returns the path it wrote.

    Every other attribute is SMAC's own (delegated). Built inside the worker process; ``kwargs`` are
    ``StarCraft2Env``'s constructor arguments.
    """

    def __init__(self, **kwargs):
        from smac.env import StarCraft2Env

        self._env = StarCraft2Env(**kwargs)
        # SMAC hands replay_dir and replay_prefix (default: the map name) to pysc2, which writes
        # "<prefix>_<UTC time>.SC2Replay" into replay_dir taken relative to <game>/Replays
        # (pysc2 run_configs/lib.py save_replay, abs_replay_path).
        self._replay_dir = os.path.join(sc2_path(), "Replays", kwargs.get("replay_dir") or "")
        self._replay_stem = f"{kwargs.get('replay_prefix') or kwargs.get('map_name', '8m')}_"

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._env, name)

    def save_replay(self) -> str:
        """Save the current game's replay (SMAC's ``save_replay``); returns the file's path. A StarCraft II
        game plays many episodes, and its replay holds all of them."""
        started = time.time()
        self._env.save_replay()
        if not os.path.isdir(self._replay_dir):
            return ""
        # pysc2 names the file after the second it was written, so a second save within that second
        # overwrites the first: take the newest file of this env written since the call began
        # (allowing for file systems that store modification times in whole seconds).
        written = [path for path in (os.path.join(self._replay_dir, name) for name in os.listdir(self._replay_dir)
                                     if name.startswith(self._replay_stem) and name.endswith(".SC2Replay"))
                   if os.path.getmtime(path) >= int(started) - 1]
        return max(written, key=os.path.getmtime) if written else ""


def make_starcraft2_env(n_envs: int, seed: int, start_method: str = "spawn", **smac_kwargs):
    """``n_envs`` SMAC games in worker processes; env ``b`` uses seed ``seed + b`` (``None``: the game's own).

    ``smac_kwargs`` are ``StarCraft2Env``'s keyword arguments (``map_name``, ``step_mul``, ``obs_*``, ...).
    A relative ``replay_dir`` is taken relative to the working directory, like every other path of a run
    (pysc2 would put it under ``<game>/Replays``); empty keeps SMAC's default, ``<game>/Replays``. Env
    ``b``'s replays are named ``<replay_prefix or map_name>_env<b>_<time>.SC2Replay``, so that games saving
    at the same second do not overwrite each other. A game that does not answer within
    :data:`GAME_REPLY_TIMEOUT_S` is stopped with an error. Raises ``RuntimeError`` naming what is missing
    when the game cannot run here (:func:`require_starcraft2`).
    """
    map_name = smac_kwargs.get("map_name", "8m")
    require_starcraft2(map_name)
    kwargs = {key: value for key, value in smac_kwargs.items() if key not in SIM_ONLY_KWARGS}
    prefix = kwargs.pop("replay_prefix", "") or map_name
    if kwargs.get("replay_dir"):
        kwargs["replay_dir"] = os.path.abspath(kwargs["replay_dir"])
    env_fns = [functools.partial(SMACEnv, seed=None if seed is None else seed + b,
                                 replay_prefix=f"{prefix}_env{b}", **kwargs) for b in range(n_envs)]
    return SubprocessBatchedEnv(env_fns, start_method=start_method, reply_timeout_s=GAME_REPLY_TIMEOUT_S)

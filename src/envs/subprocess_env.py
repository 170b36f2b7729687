"""``n_envs`` single environments in worker processes, behind the batched interface.

This is how real StarCraft II runs: one SMAC ``StarCraft2Env`` (one game process) per worker, stepped in
parallel. It works with any :class:`~envs.multiagentenv.MultiAgentEnv`, which is how it is tested here.

Each worker is built by an *env factory*: a picklable zero-argument callable returning a
``MultiAgentEnv`` (a module-level function, a class, or ``functools.partial`` of either, defined in an
importable module). One message round trip per ``step``/``reset`` carries the actions out and the reward,
termination, info, observations, state and action masks back, so ``get_obs``/``get_state``/
``get_avail_actions`` cost no communication.

Semantics follow :class:`~envs.multiagentenv.BatchedMultiAgentEnv`:

* an environment whose episode has terminated is frozen until reset: it receives no step, its reward is 0,
  it stays terminated, keeps its last observation and reports a zero info (as the simulator does);
* ``info["episode_limit"]`` is the environment's own (SMAC reports it only with ``continuing_episode=True``:
  otherwise an episode that reaches the step limit is an ordinary terminal one, as in SMAC and PyMARL);
* ``info["crashed"]`` is true where the step ended the episode because the game crashed. SMAC then restarts
  the game and returns ``(0, True, {})``: a terminated step with an empty ``info`` is such a crash. It is
  neither a loss nor a timeout (``battle_won`` and ``episode_limit`` are false); runners discard it;
* SMAC omits ``dead_allies``/``dead_enemies`` from ``info`` in some versions: a missing dead count keeps the
  environment's last reported value (0 after a reset) and a missing ``battle_won`` reads as false.

Processes. Each worker leads its own process group (POSIX), so a game it starts belongs to that group and
the terminal's Ctrl-C reaches only the parent, which decides when to stop. ``close()`` asks every worker to
close its environment (SMAC quits its game), terminates workers that do not exit in time (a worker closes
its environment on SIGTERM too), and finally kills each worker's whole process group, so no game outlives
its worker, even one whose worker was killed (for instance by the kernel when memory ran out). An exception
in a worker is re-raised in the parent as :class:`EnvWorkerError` carrying the worker's traceback; a worker
that dies, or does not answer within ``reply_timeout_s``, is reported (its process group killed) instead
of hanging the parent.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
import weakref
from typing import Any, Callable, Sequence

import numpy as np

from envs.multiagentenv import BatchedMultiAgentEnv, MultiAgentEnv

logger = logging.getLogger(__name__)

EnvFactory = Callable[[], MultiAgentEnv]

#: How long close() gives the workers to close their environments (s): SMAC quits its game, then pysc2
#: waits up to 3 s for the game process before killing it (pysc2 lib/sc_process.py ``_shutdown_proc``).
_CLOSE_GRACE_S = 30.0
#: How long a worker that was sent SIGTERM gets to close its environment before its process group is killed (s).
_TERMINATE_GRACE_S = 10.0


class EnvWorkerError(RuntimeError):
    """An environment in a worker process raised, or the worker process died or stopped answering."""


# ----------------------------------------------------------------------------------------------- worker
def _observe(env: MultiAgentEnv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(obs [N, obs_size] float32, state [state_size] float32, avail [N, A] int32)`` of one env."""
    obs = np.asarray(env.get_obs(), dtype=np.float32)
    state = np.asarray(env.get_state(), dtype=np.float32)
    avail = np.asarray(env.get_avail_actions(), dtype=np.int32)
    return obs, state, avail


def _env_seed(env: MultiAgentEnv):
    """The env's seed as SMAC reports it (``env.seed()``), or ``None`` if it does not say."""
    try:
        return env.seed()
    except NotImplementedError:
        return None


def _env_stats(env: MultiAgentEnv) -> dict:
    """``env.get_stats()``; SMAC divides by the number of battles and raises before the first one."""
    try:
        return env.get_stats()
    except ZeroDivisionError:
        return {}


def _handle(env: MultiAgentEnv, cmd: str, data: Any) -> Any:
    if cmd == "step":
        reward, terminated, info = env.step(data)
        return float(reward), bool(terminated), dict(info), *_observe(env)
    if cmd == "reset":
        env.reset()
        return _observe(env)
    if cmd == "env_info":
        return env.get_env_info()
    if cmd == "stats":
        return _env_stats(env)
    if cmd == "save_replay":
        return env.save_replay()
    if cmd == "state_dict":
        return {"seed": _env_seed(env), "env": env.state_dict() if hasattr(env, "state_dict") else None}
    if cmd == "load_state_dict":
        env.load_state_dict(data)
        return None
    raise ValueError(f"unknown worker command {cmd!r}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}\n\nWorker traceback:\n{traceback.format_exc()}"


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds to the worker's `finally`, which closes the environment


def _worker(remote: mp.connection.Connection, parent_remote: mp.connection.Connection,
            env_fn: EnvFactory) -> None:
    """Worker loop: build the env, then answer ``(cmd, data)`` messages with ``("ok"|"error", payload)``."""
    parent_remote.close()
    if hasattr(os, "setsid"):
        os.setsid()  # lead a process group of our own: the game we start joins it (see _kill_process_group)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    env = None
    try:
        env = env_fn()
        remote.send(("ok", None))
        while True:
            cmd, data = remote.recv()
            if cmd == "close":
                break
            try:
                result = ("ok", _handle(env, cmd, data))
            except Exception as exc:  # forwarded to the parent, which raises it
                result = ("error", _describe(exc))
            remote.send(result)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the parent is going away; it reaps us
    except Exception as exc:  # building the env failed, or an answer could not be pickled
        remote.send(("error", _describe(exc)))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let a slow close finish; the parent kills what lingers
        if env is not None:
            try:
                env.close()
            except Exception:
                logger.exception("closing an environment in its worker process failed")
        remote.close()


# ------------------------------------------------------------------------------------ worker processes
def _exited(proc) -> bool:
    """Whether ``proc`` has exited, without reaping it (its pid, and so its process group id, stay ours)."""
    return bool(mp.connection.wait([proc.sentinel], timeout=0))


def _exit_status(proc) -> str:
    """How an exited (its sentinel is ready), not yet reaped worker ended: ``exit code 3``, ``killed by
    SIGKILL``, ... Leaves it unreaped."""
    if hasattr(os, "waitid"):
        try:  # blocks until the exit is waitable: the sentinel can be ready a moment before
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is not None:
            if info.si_code == os.CLD_EXITED:
                return f"exit code {info.si_status}"
            name = signal.Signals(info.si_status).name
            oom = (" - the kernel's out-of-memory killer does this when memory runs out; lower "
                   "env_args.max_concurrent_games" if info.si_status == signal.SIGKILL else "")
            return f"killed by {name}{oom}"
    proc.join()
    return f"exit code {proc.exitcode}"


def _kill_process_group(proc) -> None:
    """SIGKILL the worker's process group: the worker and everything it started (its game). Only while the
    worker is unreaped, so the group id cannot have passed to an unrelated process."""
    if not hasattr(os, "killpg"):
        proc.kill()
        return
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return  # already reaped (by multiprocessing): its group went with it when we noticed it died
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):  # proc.kill: before its setsid()
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            pass


def _wait_for_exit(processes: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = [p.sentinel for p in processes if not _exited(p)]
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return
        mp.connection.wait(pending, timeout=left)


def _shutdown(processes: list, remotes: list) -> None:
    """Ask every worker to close its environment and exit; SIGTERM those that do not in time (they close
    their environment on it), then kill every worker's process group, so that no game is left running."""
    for remote in remotes:
        try:
            remote.send(("close", None))
        except (BrokenPipeError, EOFError, OSError):
            pass
    _wait_for_exit(processes, _CLOSE_GRACE_S)
    late = [p for p in processes if not _exited(p)]
    for proc in late:
        logger.warning("the worker process %d did not close its environment within %g s; sending it SIGTERM",
                       proc.pid, _CLOSE_GRACE_S)
        proc.terminate()
    _wait_for_exit(late, _TERMINATE_GRACE_S)
    for proc in processes:
        _kill_process_group(proc)
        proc.join()
    for remote in remotes:
        remote.close()


def _factory_module(env_fn: EnvFactory) -> str | None:
    target = env_fn.func if isinstance(env_fn, functools.partial) else env_fn
    return getattr(target, "__module__", None)


@contextlib.contextmanager
def _main_script_hidden():
    """While workers start with ``spawn`` / ``forkserver``: hide the parent's ``__main__`` from
    multiprocessing, which would otherwise run that script again in every worker (for ``src/main.py``:
    import torch and Sacred in every game's worker). Workers need nothing from it: factories come from
    importable modules."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__file__ = main.__spec__ = None
    try:
        yield
    finally:
        for key in ("__file__", "__spec__"):
            if key in saved:
                main.__dict__[key] = saved[key]
            else:
                main.__dict__.pop(key, None)


# ----------------------------------------------------------------------------------------------- parent
class SubprocessBatchedEnv(BatchedMultiAgentEnv):
    """``len(env_fns)`` environments, one per worker process, stepped in parallel.

    Args:
        env_fns: one picklable zero-argument factory per environment, each returning a ``MultiAgentEnv``,
            defined in an importable module (not the ``__main__`` script). All must describe the same task
            (equal ``get_env_info()``).
        start_method: ``multiprocessing`` start method, one of ``"spawn"`` (default; safe with threads
            in the parent, e.g. torch or TensorBoard), ``"forkserver"`` or ``"fork"`` (fastest start).
        reply_timeout_s: how long to wait for a worker's answer to one command before declaring it hung
            (its process group is killed and :class:`EnvWorkerError` raised); ``None`` waits for ever.
    """

    def __init__(self, env_fns: Sequence[EnvFactory], start_method: str = "spawn",
                 reply_timeout_s: float | None = None):
        if len(env_fns) == 0:
            raise ValueError("SubprocessBatchedEnv needs at least one env factory (got an empty list)")
        methods = mp.get_all_start_methods()
        if start_method not in methods:
            raise ValueError(f"unknown start_method {start_method!r}; valid on this platform: {methods}")
        if reply_timeout_s is not None and not reply_timeout_s > 0:
            raise ValueError(f"reply_timeout_s must be a positive number of seconds or None, got {reply_timeout_s!r}")
        if start_method != "fork":
            in_main = [fn for fn in env_fns if _factory_module(fn) == "__main__"]
            if in_main:
                raise ValueError(f"the env factory {in_main[0]!r} is defined in the __main__ script, which worker "
                                 "processes do not import; define it in an importable module")
        ctx = mp.get_context(start_method)
        self.n_envs = len(env_fns)
        self._reply_timeout_s = reply_timeout_s
        self._remotes: list[mp.connection.Connection] = []
        self._processes: list = []
        # Reap the workers even if close() is never called (garbage collection or interpreter exit).
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._remotes)
        try:
            with _main_script_hidden() if start_method != "fork" else contextlib.nullcontext():
                for env_fn in env_fns:
                    remote, worker_remote = ctx.Pipe()
                    proc = ctx.Process(target=_worker, args=(worker_remote, remote, env_fn), daemon=True)
                    proc.start()
                    worker_remote.close()
                    self._remotes.append(remote)
                    self._processes.append(proc)
            self._gather(range(self.n_envs), "building its environment")
            infos = self._call_all("env_info")
        except BaseException:
            self.close()
            raise
        for b, info in enumerate(infos[1:], start=1):
            if info != infos[0]:
                self.close()
                raise ValueError(f"the env factories build different tasks: env 0 has env_info {infos[0]}, "
                                 f"env {b} has {info}; give every worker the same map and flags")
        self._env_info = infos[0]
        self._n_agents = int(self._env_info["n_agents"])
        self._n_actions = int(self._env_info["n_actions"])

        B, N = self.n_envs, self._n_agents
        self._obs = np.zeros((B, N, int(self._env_info["obs_shape"])), dtype=np.float32)
        self._state = np.zeros((B, int(self._env_info["state_shape"])), dtype=np.float32)
        self._avail = np.zeros((B, N, self._n_actions), dtype=np.int32)
        self._terminated = np.ones(B, dtype=bool)  # nothing can step before its first reset
        self._has_reset = np.zeros(B, dtype=bool)
        self._episodes = np.zeros(B, dtype=np.int64)  # completed episodes per env
        self._dead = {"dead_allies": np.zeros(B, dtype=np.int64), "dead_enemies": np.zeros(B, dtype=np.int64)}

    # ------------------------------------------------------------------------------------- messaging
    def _recv(self, b: int, what: str) -> Any:
        """Worker ``b``'s answer; ``what`` says what it was doing (for the error messages)."""
        remote, proc = self._remotes[b], self._processes[b]
        deadline = None if self._reply_timeout_s is None else time.monotonic() + self._reply_timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = mp.connection.wait([remote, proc.sentinel], timeout=left)
            if remote in ready:
                break
            if ready:  # the worker exited without answering
                raise self._stopped(b, what)
            if left == 0.0:
                _kill_process_group(proc)
                raise EnvWorkerError(
                    f"env {b} did not answer within {self._reply_timeout_s:g} s while {what}: its game is "
                    "probably hung, so its worker process and game were stopped. Resume the run from its "
                    "last checkpoint (checkpoint_path=...)")
        try:
            status, payload = remote.recv()
        except (EOFError, OSError):  # the worker is gone: its end of the pipe closed (or was reset)
            raise self._stopped(b, what) from None
        if status == "error":
            raise EnvWorkerError(f"environment {b} (in its worker process) raised {payload}")
        return payload

    def _gather(self, indices, what: str, raise_errors: bool = True) -> list:
        """One answer from each worker in ``indices``, all drained before the first error is raised.

        With ``raise_errors=False`` a failed worker's entry is its :class:`EnvWorkerError` instead.
        """
        results = []
        for b in indices:
            try:
                results.append(self._recv(b, what))
            except EnvWorkerError as err:
                results.append(err)
        errors = [r for r in results if isinstance(r, EnvWorkerError)]
        if errors and raise_errors:
            raise errors[0]
        return results

    def _stopped(self, b: int, what: str) -> EnvWorkerError:
        """Worker ``b`` stopped talking (it died, or closed its pipe): make sure it and its game are gone and
        say how it ended."""
        proc = self._processes[b]
        _wait_for_exit([proc], _TERMINATE_GRACE_S)
        status = _exit_status(proc) if _exited(proc) else "it stopped answering"
        _kill_process_group(proc)
        return EnvWorkerError(f"the worker process of env {b} died ({status}) while {what}; its game was "
                              "stopped. See its output above")

    def _send(self, b: int, cmd: str, data: Any = None) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("this SubprocessBatchedEnv is closed; build a new one")
        try:
            self._remotes[b].send((cmd, data))
        except (BrokenPipeError, EOFError, OSError):
            raise self._stopped(b, f"receiving {cmd!r}") from None

    def _call_all(self, cmd: str, indices=None) -> list:
        indices = range(self.n_envs) if indices is None else list(indices)
        for b in indices:
            self._send(b, cmd)
        return self._gather(indices, f"answering {cmd!r}")

    # ------------------------------------------------------------------------------------- interface
    def reset(self, env_mask: np.ndarray | None = None) -> None:
        """Reset the environments where ``env_mask`` (bool ``[B]``) is true, all of them if ``None``."""
        if env_mask is None:
            indices = list(range(self.n_envs))
        else:
            env_mask = np.asarray(env_mask)
            if env_mask.shape != (self.n_envs,) or env_mask.dtype != bool:
                raise ValueError(f"env_mask must be a bool array of shape ({self.n_envs},), "
                                 f"got dtype {env_mask.dtype} shape {env_mask.shape}")
            indices = np.flatnonzero(env_mask).tolist()
        for b, (obs, state, avail) in zip(indices, self._call_all("reset", indices)):
            self._obs[b], self._state[b], self._avail[b] = obs, state, avail
        self._terminated[indices] = False
        self._has_reset[indices] = True
        for arr in self._dead.values():
            arr[indices] = 0

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every running env with its row of ``actions`` (int ``[B, N]``).

        Returns ``(reward float32 [B], terminated bool [B], info)``, ``info`` mapping ``battle_won``,
        ``dead_allies``, ``dead_enemies``, ``episode_limit`` and ``crashed`` to arrays ``[B]``.
        """
        actions = self._check_actions(actions)
        active = np.flatnonzero(~self._terminated).tolist()
        for b in active:
            self._send(b, "step", actions[b].tolist())
        results = self._gather(active, "answering 'step'", raise_errors=False)
        B = self.n_envs
        reward = np.zeros(B, dtype=np.float32)
        out = {"battle_won": np.zeros(B, dtype=bool), "dead_allies": np.zeros(B, dtype=np.int64),
               "dead_enemies": np.zeros(B, dtype=np.int64), "episode_limit": np.zeros(B, dtype=bool),
               "crashed": np.zeros(B, dtype=bool)}
        for b, result in zip(active, results):
            if isinstance(result, EnvWorkerError):
                continue
            r, term, info, obs, state, avail = result
            reward[b] = r
            self._obs[b], self._state[b], self._avail[b] = obs, state, avail
            for key, arr in self._dead.items():
                if key in info:
                    arr[b] = int(info[key])
                out[key][b] = arr[b]
            out["battle_won"][b] = bool(info.get("battle_won", False))
            out["episode_limit"][b] = bool(info.get("episode_limit", False))
            out["crashed"][b] = term and not info
            if term:
                self._terminated[b] = True
                self._episodes[b] += 1
        for result in results:  # the envs that did step are recorded above; reset() before going on
            if isinstance(result, EnvWorkerError):
                raise result
        return reward, self._terminated.copy(), out

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        if not self._has_reset.any():
            raise RuntimeError("no environment has been reset yet; call reset() before step()")
        actions = np.asarray(actions)
        expected = (self.n_envs, self._n_agents)
        if actions.shape != expected or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be an integer array of shape {expected} (n_envs, n_agents), "
                             f"got dtype {actions.dtype} shape {actions.shape}")
        running = ~self._terminated
        in_range = (actions >= 0) & (actions < self._n_actions)
        chosen = np.take_along_axis(self._avail, np.clip(actions, 0, self._n_actions - 1)[..., None], -1)[..., 0]
        bad = running[:, None] & ~(in_range & (chosen == 1))
        if bad.any():
            b, i = map(int, np.argwhere(bad)[0])
            valid = np.flatnonzero(self._avail[b, i]).tolist()
            raise ValueError(f"env {b}, agent {i}: action {int(actions[b, i])} is not available; "
                             f"available actions: {valid} (of {self._n_actions}). No env was stepped.")
        return actions

    def get_obs(self) -> np.ndarray:
        """float32 ``[B, N, obs_size]``."""
        return self._obs.copy()

    def get_state(self) -> np.ndarray:
        """float32 ``[B, state_size]``."""
        return self._state.copy()

    def get_avail_actions(self) -> np.ndarray:
        """int32 ``[B, N, n_actions]``."""
        return self._avail.copy()

    def get_env_info(self) -> dict[str, Any]:
        return dict(self._env_info)

    def get_stats(self) -> dict:
        """The workers' ``get_stats()`` summed key by key (SMAC's ``restarts`` counts the games each worker
        had to relaunch); ``win_rate`` is recomputed from the sums."""
        totals: dict[str, float] = {}
        for stats in self._call_all("stats"):
            for key, value in stats.items():
                if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        if "win_rate" in totals:
            games = totals.get("battles_game", 0)
            totals["win_rate"] = totals.get("battles_won", 0) / games if games else 0.0
        return totals

    def save_replay(self, env_indices=None) -> list[str]:
        """Ask the envs in ``env_indices`` (all if ``None``) to save a replay; returns the paths they report."""
        indices = range(self.n_envs) if env_indices is None else [int(b) for b in env_indices]
        for b in indices:
            if not 0 <= b < self.n_envs:
                raise IndexError(f"env index {b} is out of range for {self.n_envs} envs")
        return [path for path in self._call_all("save_replay", indices) if isinstance(path, str) and path]

    def state_dict(self) -> dict:
        """Per env: its seed, completed-episode count and, when the env provides one, its own state_dict.

        Real StarCraft II has no state to save: its games draw from the seed they were started with.
        """
        per_env = self._call_all("state_dict")
        return {
            "n_envs": self.n_envs,
            "seeds": [s["seed"] for s in per_env],
            "episodes": self._episodes.tolist(),
            "env_states": [s["env"] for s in per_env],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output. Envs with a state of their own must have been built with the
        same seeds; envs without one (real StarCraft II) simply continue from their seeds, however many."""
        if all(s is None for s in state["env_states"]):
            logger.info("these environments cannot save their random state (real StarCraft II); "
                        "they continue from their seeds, so the resumed episodes differ from an unbroken run")
            return
        if state["n_envs"] != self.n_envs:
            raise ValueError(f"the saved environment state holds {state['n_envs']} envs, this one has "
                             f"{self.n_envs}; build it with the same number of envs")
        current = [s["seed"] for s in self._call_all("state_dict")]
        if current != state["seeds"]:
            raise ValueError(f"the saved environments were built with seeds {state['seeds']}, these with "
                             f"{current}; build them with the run's original seed to continue it")
        restorable = [b for b, s in enumerate(state["env_states"]) if s is not None]
        for b in restorable:
            self._send(b, "load_state_dict", state["env_states"][b])
        self._gather(restorable, "answering 'load_state_dict'")
        self._episodes[:] = state["episodes"]

    def close(self) -> None:
        """Stop every worker and its game (politely, then by force). Safe to call more than once."""
        self._finalizer()

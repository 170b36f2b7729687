"""One run, built from its config: environments, controller, learner and runners from the registries;
the training loop with greedy tests, logging and checkpoints; or evaluation only.

``run(_run, cfg, console)`` is called by ``main.py`` inside a Sacred run. Training loop (PyMARL's):
collect ``batch_size_run`` episodes (one per training environment) -> ``learner.train`` -> every
``test_interval`` env steps run ``test_nepisode`` greedy episodes (one per test environment) -> every
``log_interval`` env steps log the training means and print a report -> every ``save_model_interval``
env steps write a checkpoint. Resuming from a checkpoint restores every piece of that state (learner,
environments' random streams, global RNGs, counters, pending statistics, logged history), so on the
CPU the resumed run produces the same numbers as an uninterrupted one.

A run has two phases. :func:`prepare_run` is its *set-up*: load the checkpoint, compile the simulator's
kernels, build environments, controller and learner, restore the checkpoint's state. ``main.py`` runs it
before Sacred starts, so a set-up error (a checkpoint that does not fit, demonstrations of another map, ...)
is a plain ``dm2: error:`` that leaves no run record or folder behind (:meth:`PreparedRun.release` removes
the directories it reserved). :func:`start_run` is the run itself, inside Sacred: training (or evaluation),
whose errors Sacred records as FAILED with the traceback in cout.txt.

SIGINT (Ctrl-C) and SIGTERM during training finish the current iteration (collection, update, test, log),
write a checkpoint (with ``save_model=True``) and raise :class:`RunInterrupted`; Sacred marks the run
INTERRUPTED. Resuming from that checkpoint continues exactly. A second signal stops at once.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
from sacred.observers import FileStorageObserver

import controllers
import envs
import learners
import runners
from components.demonstrations import DemonstrationError, stored_checksum
from config.loader import Config, ConfigError
from envs.multiagentenv import BatchedMultiAgentEnv
from envs.subprocess_env import SubprocessBatchedEnv
from utils.checkpoint import (CheckpointError, capture_rng_state, find_checkpoint, load_checkpoint,
                              restore_rng_state, save_checkpoint)
from utils.cpu_runtime import configure_cpu
from utils.logging import Logger, StatAccumulator, episode_stat_means

BACKEND_DESCRIPTIONS = {"sim": "the embedded simulator", "starcraft2": "real StarCraft II through SMAC"}
ENV_INFO_KEYS = ("n_agents", "n_actions", "obs_shape", "state_shape")
#: Set-up errors whose message says everything (no traceback): ``main.py`` prints them as ``dm2: error:``.
SETUP_ERRORS = (ConfigError, CheckpointError, DemonstrationError)
#: Say that the simulator's kernels are being compiled when preparing them takes longer than this (s): a
#: compilation takes tens of seconds, loading them from the cache well under a second (a few on a busy machine).
COMPILE_NOTICE_AFTER_S = 3.0
#: One extra speed report this long (s) after the first iteration, when the next regular report is further
#: away than that: the first report (after the first update) cannot measure the speed yet.
EARLY_SPEED_REPORT_S = 10.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on a signal. ``checkpoint`` is the checkpoint holding the state it stopped at (None
    without ``save_model`` or when a second signal stopped it at once); ``exit_code`` is 128 + the signal
    number, the shell's convention. A ``KeyboardInterrupt``, so Sacred records the run as INTERRUPTED."""

    def __init__(self, signum: int, t_env: int | None, checkpoint: str | None, models_dir: str | None,
                 at_once: bool = False):
        super().__init__(signum, t_env, checkpoint)
        self.signum, self.t_env, self.checkpoint, self.models_dir, self.at_once = (
            signum, t_env, checkpoint, models_dir, at_once)
        self.exit_code = 128 + int(signum)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.at_once:
            latest = f" The latest checkpoint, if any, is in {self.models_dir}." if self.models_dir else ""
            return f"stopped at once by {name}, without a final checkpoint.{latest}"
        where = f"stopped by {name} at t_env={self.t_env}, after finishing that iteration"
        if self.checkpoint is None:
            return f"{where}; no checkpoint was written (save_model=False). The run is recorded as INTERRUPTED."
        return (f"{where}; checkpoint {self.checkpoint}. The run is recorded as INTERRUPTED. Continue it with: "
                f"python src/main.py with checkpoint_path={self.models_dir}")


@dataclass
class LoopState:
    """The training loop's counters (checkpointed). The ``last_*`` fields are the env steps at which
    the last test / log / checkpoint happened; they start so that the first batch triggers a test and
    a log."""

    t_env: int
    episode: int
    last_test_t: int
    last_log_t: int
    last_save_t: int

    @classmethod
    def start(cls, cfg: Config) -> "LoopState":
        return cls(t_env=0, episode=0, last_test_t=-cfg.test_interval, last_log_t=-cfg.log_interval, last_save_t=0)


@dataclass
class Components:
    """Everything a run is made of."""

    train_env: BatchedMultiAgentEnv | None  # None when only evaluating
    test_env: BatchedMultiAgentEnv
    env_info: dict[str, Any]
    mac: Any
    learner: Any
    train_runner: Any
    test_runner: Any

    def close(self) -> None:
        _close_envs(self.train_env, self.test_env)


def _close_envs(*envs_to_close: BatchedMultiAgentEnv | None) -> None:
    for env in envs_to_close:
        if env is not None:
            env.close()


def map_label(cfg: Config) -> str:
    """The scenario name used in result paths: ``env_args.map_name``, or the env name for map-less envs."""
    return cfg.env_args["map_name"] if "map_name" in cfg.env_args else cfg.env


def test_env_seed(seed: int) -> int:
    """The test environments' seed: derived from ``seed`` but a different random stream from training's."""
    return int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(use_cuda: bool, console: logging.Logger) -> torch.device:
    if use_cuda and not torch.cuda.is_available():
        console.warning("use_cuda=True but CUDA is not available to torch %s (built for CUDA %s); running on the "
                        "CPU. Set use_cuda=False to silence this.", torch.__version__, torch.version.cuda)
        return torch.device("cpu")
    return torch.device("cuda" if use_cuda else "cpu")


def reserve_run_dirs(cfg: Config) -> tuple[str, dict[str, str]]:
    """Pick this run's unique token and create its output directories (never reusing an existing one).

    Returns ``(token, dirs)`` where ``dirs`` maps ``models`` / ``tb_logs`` / ``replays`` (those this run
    writes) to freshly created directories ``<local_results_path>/<kind>/<token>``.
    """
    kinds = []
    if cfg.save_model and not cfg.evaluate:
        kinds.append("models")
    if cfg.use_tensorboard:
        kinds.append("tb_logs")
    if cfg.save_replay and not cfg.env_args["replay_dir"]:
        kinds.append("replays")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = f"{cfg.name}__{map_label(cfg)}__seed{cfg.seed}__{stamp}"
    for attempt in range(1000):
        token = base if attempt == 0 else f"{base}_{attempt}"
        dirs = {kind: os.path.join(cfg.local_results_path, kind, token) for kind in kinds}
        if any(os.path.exists(d) for d in dirs.values()):
            continue
        created = []
        try:
            for d in dirs.values():
                os.makedirs(d, exist_ok=False)
                created.append(d)
        except FileExistsError:  # another run took this token meanwhile
            for d in created:
                os.rmdir(d)
            continue
        return token, dirs
    raise RuntimeError(f"Could not find an unused run directory name starting with {base!r} under "
                       f"{cfg.local_results_path}.")


def _missing_dirs(cfg: Config) -> list[str]:
    """The result directories that :func:`reserve_run_dirs` may create and that do not exist yet
    (``<local_results_path>`` and its ``models`` / ``tb_logs`` / ``replays``), deepest first."""
    root = os.path.abspath(cfg.local_results_path)
    candidates = [os.path.join(root, kind) for kind in ("models", "tb_logs", "replays")]
    path = root
    while path and not os.path.exists(path):
        candidates.append(path)
        parent = os.path.dirname(path)
        path = parent if parent != path else ""
    return sorted((p for p in candidates if not os.path.exists(p)), key=len, reverse=True)


def release_run_dirs(dirs: dict[str, str], missing_before: Iterable[str]) -> None:
    """Remove a set-up's reserved (still empty) run directories and the parents it created."""
    for path in [*dirs.values(), *missing_before]:
        try:
            os.rmdir(path)  # only empty directories: nothing a run wrote is ever removed
        except OSError:
            pass


def warm_up_simulator(cfg: Config, console: logging.Logger) -> None:
    """Compile, or load from Numba's on-disk cache, the embedded simulator's kernels this run's environments
    will use, before they are built, and say so when it takes a while (the first run after installing or
    changing ``src/envs/sim``: tens of seconds; afterwards well under a second, and silent). Kernels are
    prepared by stepping throwaway environments, so the run's own environments and random streams are
    untouched. Other backends: nothing to do."""
    if cfg.env != "sc2" or cfg.env_args.get("backend") != "sim":
        return
    import numba.core.dispatcher

    from envs.sim import engine, features
    from envs.sim.batched_env import PARALLEL_FROM, BatchedStarCraft2Sim

    kernels = [obj for module in (engine, features) for obj in vars(module).values()
               if isinstance(obj, numba.core.dispatcher.Dispatcher)]

    def compiled() -> int:
        return sum(sum(kernel.stats.cache_misses.values()) for kernel in kernels)

    done, announced = threading.Event(), threading.Event()

    def announce() -> None:
        if not done.wait(COMPILE_NOTICE_AFTER_S):
            announced.set()
            console.info("Compiling the embedded simulator's Numba kernels: once after installing or changing "
                         "src/envs/sim, then cached in %s (about 30 s on 2 cores) ...",
                         engine.step_envs_serial.stats.cache_path)

    sizes = [cfg.test_nepisode] + ([] if cfg.evaluate else [cfg.batch_size_run])
    start, before = time.perf_counter(), compiled()
    notice = threading.Thread(target=announce, name="dm2-compile-notice", daemon=True)
    notice.start()
    try:
        for n_envs in sorted({1 if n < PARALLEL_FROM else PARALLEL_FROM for n in sizes}):
            env = BatchedStarCraft2Sim(map_name=cfg.env_args["map_name"], n_envs=n_envs, seed=0)
            env.step(env.get_avail_actions().argmax(-1))  # the first available action of every agent
            env.get_obs()
            env.get_state()
            env.close()
    finally:
        done.set()
        notice.join()
    elapsed = time.perf_counter() - start
    if compiled() > before:
        console.info("Compiled the simulator's kernels in %.1f s; later runs load them from the cache.", elapsed)
    elif announced.is_set():
        console.info("Loaded the simulator's kernels from the cache in %.1f s (nothing needed compiling).", elapsed)


def runs_in_processes(env: BatchedMultiAgentEnv) -> bool:
    """Whether ``env`` runs one process per environment (real StarCraft II): such environments are costly,
    so a run plays its test episodes on its training environments instead of keeping more of them."""
    return isinstance(env, SubprocessBatchedEnv)


def build_envs(cfg: Config, replay_dir: str | None) -> tuple[BatchedMultiAgentEnv | None, BatchedMultiAgentEnv]:
    """The training env (``batch_size_run`` environments, seed ``cfg.seed``; none with ``evaluate``) and the
    test env (``test_nepisode`` environments, a seed derived from ``cfg.seed``; with a ``replay_dir`` it
    records episodes for ``save_replay``). Returns ``(train_env or None, test_env)``.

    Environments that run in processes (real StarCraft II) may be fewer than asked for (the game cap,
    ``env_args.max_concurrent_games``), and a training run plays its test episodes on its training games,
    as PyMARL does (the same env is returned twice); the runners play the episodes in waves."""
    make_env = envs.REGISTRY[cfg.env]
    if cfg.evaluate:
        test_kwargs = dict(cfg.env_args)
        if replay_dir is not None:
            test_kwargs.update(record_replay=True, replay_dir=replay_dir)
        return None, make_env(n_envs=cfg.test_nepisode, seed=test_env_seed(cfg.seed), **test_kwargs)
    train_env = make_env(n_envs=cfg.batch_size_run, seed=cfg.seed, **cfg.env_args)
    if runs_in_processes(train_env):
        return train_env, train_env
    try:
        test_env = make_env(n_envs=cfg.test_nepisode, seed=test_env_seed(cfg.seed), **cfg.env_args)
    except BaseException:
        train_env.close()
        raise
    return train_env, test_env


def build_components(cfg: Config, train_env: BatchedMultiAgentEnv | None, test_env: BatchedMultiAgentEnv,
                     device: torch.device) -> Components:
    """Controller, learner and one runner per env from the registries (see the shared contract)."""
    env_info = test_env.get_env_info()
    mac = controllers.REGISTRY[cfg.mac](env_info, cfg, device)
    learner = learners.REGISTRY[cfg.learner](mac, env_info, cfg, device)
    runner_cls = runners.REGISTRY[cfg.runner]
    train_runner = None if train_env is None else runner_cls(
        train_env, mac, cfg, device, record_agent_outputs=learner.trains_on_agent_outputs,
        n_episodes=cfg.batch_size_run)
    return Components(train_env=train_env, test_env=test_env, env_info=env_info, mac=mac, learner=learner,
                      train_runner=train_runner,
                      test_runner=runner_cls(test_env, mac, cfg, device, n_episodes=cfg.test_nepisode))


def checkpoint_backend(ckpt: dict) -> str:
    """The environment backend a checkpoint's run played on: its saved ``env_args.backend`` (the config
    checks resolve ``auto``); for a config set up without those checks that kept ``auto``, the backend whose
    environment state it saved (only the simulator's engine saves ``env_seeds``)."""
    backend = ckpt["config"].get("env_args", {}).get("backend", "auto")
    if backend != "auto":
        return backend
    return "sim" if "env_seeds" in ckpt.get("test_env", {}) else "starcraft2"


def _check_compatible(ckpt: dict, path: str, cfg: Config, parts: Components, resume: bool) -> None:
    saved_cfg, saved_info = ckpt["config"], ckpt["env_info"]
    saved_backend, backend = checkpoint_backend(ckpt), parts.test_env.backend_name
    if resume and saved_backend != backend:
        raise CheckpointError(
            f"Checkpoint {path} was trained on {BACKEND_DESCRIPTIONS.get(saved_backend, saved_backend)} "
            f"(env_args.backend={saved_backend}), but this run's environments are "
            f"{BACKEND_DESCRIPTIONS.get(backend, backend)} (backend={backend}). A resumed run continues on the "
            f"backend it was trained on: resume it with env_args.backend={saved_backend}, or evaluate its agents "
            f"here with evaluate=True env_args.backend={backend}.")
    for key in ENV_INFO_KEYS:
        if saved_info[key] != parts.env_info[key]:
            raise CheckpointError(
                f"Checkpoint {path} was made on map {saved_cfg['env_args'].get('map_name')!r} with {key}="
                f"{saved_info[key]}, but this run's environment has {key}={parts.env_info[key]} (map "
                f"{map_label(cfg)!r}). Use the checkpoint's map and env_args.")
    if saved_cfg["learner"] != cfg.learner:
        raise CheckpointError(f"Checkpoint {path} holds a {saved_cfg['learner']!r} learner, but this run uses "
                              f"learner={cfg.learner!r}; pick the matching --config.")
    if resume:
        for key, value in (("batch_size_run", cfg.batch_size_run), ("test_nepisode", cfg.test_nepisode)):
            if saved_cfg[key] != value:
                raise CheckpointError(
                    f"Resuming from {path} continues its environments' random streams, so {key} must be "
                    f"{saved_cfg[key]} as in that run (this run has {value}).")


def _restore(ckpt: dict, path: str, cfg: Config, parts: Components, resume: bool) -> None:
    """Load the checkpoint's learner (and, when resuming, its environments' states) into ``parts``. The
    global random states are restored when the run starts (:func:`start_run`)."""
    _check_compatible(ckpt, path, cfg, parts, resume)
    try:
        parts.learner.load_state_dict(ckpt["learner"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"The learner state in {path} does not fit this run's learner ({exc}). The model "
                              "settings (agent, hidden_dim, ...) must match the checkpoint's config.") from None
    if resume:
        try:
            parts.train_env.load_state_dict(ckpt["train_env"])
            parts.test_env.load_state_dict(ckpt["test_env"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"The environment state in {path} does not fit this run's environments ({exc}); "
                                  "a resumed run needs the environments it was trained on (backend, "
                                  "batch_size_run, test_nepisode).") from None


def describe_envs(parts: Components) -> str:
    """How many environments the run holds and how its episodes are played on them, for the console."""
    def played(runner, what: str) -> str:
        how = "at once" if runner.n_waves == 1 else f"in {runner.n_waves} waves"
        return f"{runner.n_episodes} {what} episodes {how}"

    if parts.train_env is not None and parts.train_env is not parts.test_env:
        text = f"{parts.train_env.n_envs} training + {parts.test_env.n_envs} test environments"
    else:
        plays = [played(runner, what) for runner, what in ((parts.train_runner, "training"),
                                                            (parts.test_runner, "test")) if runner is not None]
        text = f"{parts.test_env.n_envs} environments: {' and '.join(plays)}"
    budget = getattr(parts.test_env, "game_budget", None)
    return text if budget is None else f"{text} | {budget.describe()}"


def _sacred_run_dir(_run) -> str | None:
    """The run's FileStorageObserver directory (``results/sacred/<map>/<name>/<id>``), if any."""
    for observer in (_run.observers if _run is not None else []):
        if isinstance(observer, FileStorageObserver):
            return observer.dir
    return None


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _log_game_restarts(env: BatchedMultiAgentEnv, logger: Logger, t_env: int) -> None:
    """Real StarCraft II: log ``game_restarts``, how many games SMAC had to relaunch after a crash so far
    (the sum of its ``restarts`` over the games; counted from this process's start)."""
    if runs_in_processes(env):
        logger.log_stat("game_restarts", env.get_stats().get("restarts", 0), t_env)


def _test(parts: Components, logger: Logger, t_env: int) -> dict[str, float]:
    """Run ``test_nepisode`` greedy episodes (one per test env) and log ``test_*`` means at ``t_env``."""
    _, stats = parts.test_runner.run(test_mode=True, t_env=t_env)
    means = episode_stat_means(stats, prefix="test_")
    for key, value in means.items():
        logger.log_stat(key, value, t_env)
    return means


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active (in the main thread), SIGTERM raises :class:`RunInterrupted` as Ctrl-C raises
    ``KeyboardInterrupt``: clean-up code runs and Sacred records the run as INTERRUPTED, where by default the
    process would die at once (leaving reserved directories, or a run record that says RUNNING for ever).
    The training loop's own handling (:class:`_StopSignals`) takes precedence while it runs."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def interrupt(signum, frame):
        raise RunInterrupted(signum, None, None, None, at_once=True)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _StopSignals:
    """While active (in the main thread), SIGINT and SIGTERM only record that the run should stop: the
    training loop stops after finishing its current iteration. A second signal raises
    :class:`RunInterrupted` at once. A signal that the process ignores (SIGINT of a background job) stays
    ignored; the previous handlers come back on exit."""

    def __init__(self, console: logging.Logger, models_dir: str | None):
        self.console, self.models_dir = console, models_dir
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN:
                    continue
                self._previous[sig] = signal.SIG_DFL if previous is None else previous
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise RunInterrupted(signum, None, None, self.models_dir, at_once=True)
        self.signum = signum
        if self.models_dir:
            what = "then saving a checkpoint and stopping (send it again to stop at once, without a checkpoint)"
        else:
            what = "then stopping (save_model=False: no checkpoint; send it again to stop at once)"
        self.console.warning("%s received: finishing the current iteration, %s.", signal.Signals(signum).name, what)


class _Trainer:
    """The training loop and its checkpointing (state: ``LoopState`` + pending statistics)."""

    def __init__(self, cfg: Config, parts: Components, logger: Logger, state: LoopState, models_dir: str | None,
                 sacred_dir: str | None, extra_payload: dict[str, Any] | None = None):
        self.cfg, self.parts, self.logger, self.state = cfg, parts, logger, state
        self.models_dir, self.sacred_dir = models_dir, sacred_dir
        self.extra_payload = dict(extra_payload or {})
        self.pending = StatAccumulator()
        self.last_test: dict[str, float] = {}
        self.last_saved: str | None = None

    def payload(self) -> dict[str, Any]:
        p = self.parts
        return {"config": self.cfg.to_dict(), "env_info": p.env_info, "loop": asdict(self.state),
                "learner": p.learner.state_dict(), "train_env": p.train_env.state_dict(),
                "test_env": p.test_env.state_dict(), "rng": capture_rng_state(),
                "pending_stats": self.pending.state_dict(), "log_history": list(self.logger.history),
                "last_test": dict(self.last_test), "sacred_run_dir": self.sacred_dir, **self.extra_payload}

    def load(self, ckpt: dict) -> None:
        self.state = LoopState(**ckpt["loop"])
        self.pending.load_state_dict(ckpt["pending_stats"])
        self.last_test = dict(ckpt["last_test"])
        self.logger.replay_history(ckpt["log_history"])

    def save(self, scheduled: bool = True) -> str:
        """Write a checkpoint of the current state. A scheduled one moves the save schedule on (before the
        payload, so a resumed run saves on the same schedule); an unscheduled one (on a stop signal) does
        not, so a run resumed from it writes its checkpoints at the steps the uninterrupted run would."""
        if scheduled:
            self.state.last_save_t = self.state.t_env
        path = save_checkpoint(os.path.join(self.models_dir, str(self.state.t_env)), self.payload())
        self.last_saved = path
        self.logger.console.info("Saved checkpoint %s", path)
        return path

    def log_pending(self) -> None:
        s = self.state
        for key, value in self.pending.reduce().items():
            self.logger.log_stat(key, value, s.t_env)
        self.logger.log_stat("episode", s.episode, s.t_env)
        _log_game_restarts(self.parts.train_env, self.logger, s.t_env)

    def stop(self, signum: int, run_info: dict) -> None:
        """Stop between iterations on a signal: checkpoint the state as it is (unless this iteration already
        did, or ``save_model`` is off), record it in the run's info and raise :class:`RunInterrupted`."""
        cfg, s = self.cfg, self.state
        checkpoint = None
        if cfg.save_model:
            already = self.last_saved is not None and os.path.basename(os.path.dirname(self.last_saved)) == str(s.t_env)
            checkpoint = self.last_saved if already else self.save(scheduled=False)
        run_info["interrupted"] = {"signal": signal.Signals(signum).name, "t_env": s.t_env, "episode": s.episode,
                                   "checkpoint": checkpoint}
        saved = f"; checkpoint {checkpoint}" if checkpoint else "; no checkpoint (save_model=False)"
        self.logger.console.warning("Stopped at t_env=%d (episode %d) on %s%s.", s.t_env, s.episode,
                                    signal.Signals(signum).name, saved)
        raise RunInterrupted(signum, s.t_env, checkpoint, self.models_dir)

    def train(self, run_info: dict | None = None) -> dict[str, Any]:
        cfg, p, s = self.cfg, self.parts, self.state
        run_info = {} if run_info is None else run_info
        console = self.logger.console
        if s.t_env == 0:
            reports = f"a report after the first update, then every {cfg.log_interval} env steps"
        else:
            next_report = s.last_log_t + cfg.log_interval
            reports = f"a report every {cfg.log_interval} env steps (the next at t_env {next_report})"
        console.info("Beginning training for %d env steps (from t_env=%d): %s", cfg.t_max, s.t_env, reports)
        start_time, start_t = time.time(), s.t_env
        # Speeds and time left are measured from the end of the first iteration: the first one also pays for
        # warm-up (allocations, torch's first calls), which would make every estimate of a long run wrong.
        measured_from: tuple[float, int] | None = None
        last_print: tuple[float, int] | None = None
        early_report_done = False
        with _StopSignals(console, self.models_dir if cfg.save_model else None) as stop_signals:
            while s.t_env < cfg.t_max:
                batch, stats = p.train_runner.run(test_mode=False, t_env=s.t_env)
                s.t_env += int(stats["env_steps"])
                s.episode += len(stats["return"])
                self.pending.add_episodes(stats)
                self.pending.add_scalars(p.learner.train(batch, s.t_env, s.episode))

                if s.t_env - s.last_test_t >= cfg.test_interval:
                    self.last_test = _test(p, self.logger, s.t_env)
                    s.last_test_t = s.t_env
                reported = False
                if s.t_env - s.last_log_t >= cfg.log_interval:
                    self.log_pending()
                    s.last_log_t = s.t_env
                    now = time.time()
                    progress = f"t_env: {s.t_env:>10} / {cfg.t_max} | episode: {s.episode:>8}"
                    if measured_from is None:
                        self.logger.print_recent_stats(
                            f"Recent stats | {progress} | first iteration took {_format_duration(now - start_time)} "
                            "(includes warm-up; env steps/s and time left are measured from its end)")
                    else:
                        since_t, since_time = (last_print or measured_from)[1], (last_print or measured_from)[0]
                        speed = (s.t_env - since_t) / max(now - since_time, 1e-9)
                        self.logger.print_recent_stats(
                            f"Recent stats | {progress} | {speed:,.0f} env steps/s | time passed: "
                            f"{_format_duration(now - start_time)} | estimated time left: "
                            f"{self._time_left(measured_from, now)}")
                        last_print = (now, s.t_env)
                    reported = True
                if cfg.save_model and s.t_env - s.last_save_t >= cfg.save_model_interval:
                    self.save()
                now = time.time()
                if measured_from is None:
                    measured_from = (now, s.t_env)
                elif not (reported or early_report_done) and now - measured_from[0] >= EARLY_SPEED_REPORT_S:
                    early_report_done = True
                    speed = (s.t_env - measured_from[1]) / max(now - measured_from[0], 1e-9)
                    to_next_report = (s.last_log_t + cfg.log_interval - s.t_env) / max(speed, 1e-9)
                    if to_next_report > EARLY_SPEED_REPORT_S and s.t_env < cfg.t_max:
                        console.info("Speed | t_env: %d / %d | %s env steps/s | time passed: %s | estimated time "
                                     "left: %s | next report at t_env %d", s.t_env, cfg.t_max, f"{speed:,.0f}",
                                     _format_duration(now - start_time), self._time_left(measured_from, now),
                                     s.last_log_t + cfg.log_interval)
                if stop_signals.signum is not None and s.t_env < cfg.t_max:
                    self.stop(stop_signals.signum, run_info)

            if s.last_test_t != s.t_env:
                self.last_test = _test(p, self.logger, s.t_env)
                s.last_test_t = s.t_env
            if not self.pending.empty():
                self.log_pending()
                s.last_log_t = s.t_env
            if cfg.save_model and s.last_save_t != s.t_env:
                self.save()
        elapsed = time.time() - start_time
        self.logger.print_recent_stats(
            f"Finished training | t_env: {s.t_env} | episode: {s.episode} | "
            f"{(s.t_env - start_t) / max(elapsed, 1e-9):,.0f} env steps/s | time: {_format_duration(elapsed)}")
        return {"t_env": s.t_env, "episode": s.episode, **self.last_test}

    def _time_left(self, measured_from: tuple[float, int], now: float) -> str:
        rate = (self.state.t_env - measured_from[1]) / max(now - measured_from[0], 1e-9)
        return _format_duration((self.cfg.t_max - self.state.t_env) / max(rate, 1e-9))


@dataclass
class PreparedRun:
    """A run after its set-up (:func:`prepare_run`), ready for :func:`start_run`."""

    cfg: Config
    parts: Components
    device: torch.device
    token: str
    dirs: dict[str, str]
    missing_dirs: list[str]
    rng_state: dict[str, Any]  # the global random state training (or evaluation) starts from
    checkpoint: dict | None = None
    checkpoint_path: str | None = None
    extra_payload: dict[str, Any] = field(default_factory=dict)
    started: bool = False

    def release(self) -> None:
        """Undo a set-up that will not run: close the environments, remove the reserved (empty) directories."""
        self.parts.close()
        release_run_dirs(self.dirs, self.missing_dirs)
        self.checkpoint = None


def prepare_run(cfg: Config, console: logging.Logger, *, checkpoint: dict | None = None,
                checkpoint_path: str | None = None, command: dict[str, Any] | None = None) -> PreparedRun:
    """A run's set-up: everything up to the first environment step. Loads ``cfg.checkpoint_path`` (unless
    ``checkpoint`` / ``checkpoint_path`` pass it in, already loaded), seeds, compiles the simulator's kernels,
    reserves the run directories, builds the environments and components and restores the checkpoint.

    ``command`` (``{"config": <--config>, "env_config": <--env-config>}``) is recorded in checkpoints, so a
    resume can take the algorithm from them. Any exception leaves nothing behind (environments closed,
    reserved directories removed)."""
    if checkpoint is None and cfg.checkpoint_path:
        checkpoint_path = find_checkpoint(cfg.checkpoint_path, cfg.load_step)
        checkpoint = load_checkpoint(checkpoint_path)
    resume = checkpoint is not None and not cfg.evaluate
    seed_everything(cfg.seed)
    configure_cpu(cfg.torch_threads)
    warm_up_simulator(cfg, console)
    missing = _missing_dirs(cfg)
    token, dirs = reserve_run_dirs(cfg)
    train_env = test_env = parts = None
    try:
        replay_dir = (cfg.env_args["replay_dir"] or dirs["replays"]) if cfg.save_replay else None
        train_env, test_env = build_envs(cfg, replay_dir)
        backend = test_env.backend_name
        device = select_device(cfg.use_cuda, console)
        parts = build_components(cfg, train_env, test_env, device)
        console.info("Environment backend: %s (%s) | env %s, map %s | %s", backend,
                     BACKEND_DESCRIPTIONS.get(backend, "custom backend"), cfg.env, map_label(cfg),
                     describe_envs(parts))
        if checkpoint is not None:
            _restore(checkpoint, checkpoint_path, cfg, parts, resume=resume)
        extra = {"command": dict(command or {}), "data_checksums": {}}
        if "gail_data_path" in cfg and cfg.gail_data_path:  # which demonstrations the run learns from
            extra["data_checksums"]["gail_data_path"] = stored_checksum(cfg.gail_data_path)
        console.info("Run token %s | device %s | torch threads %d", token, device, torch.get_num_threads())
        return PreparedRun(cfg=cfg, parts=parts, device=device, token=token, dirs=dirs, missing_dirs=missing,
                           rng_state=checkpoint["rng"] if resume else capture_rng_state(), checkpoint=checkpoint,
                           checkpoint_path=checkpoint_path, extra_payload=extra)
    except BaseException:
        if parts is not None:
            parts.close()
        else:
            _close_envs(train_env, test_env)
        release_run_dirs(dirs, missing)
        raise


def start_run(_run, prepared: PreparedRun, console: logging.Logger) -> dict[str, Any]:
    """Train (or, with ``evaluate``, only evaluate) a prepared run; inside Sacred, ``_run`` receives the
    metrics and ``info``. Returns the final test statistics with ``t_env`` and ``episode``."""
    prepared.started = True
    cfg, parts = prepared.cfg, prepared.parts
    ckpt, ckpt_path = prepared.checkpoint, prepared.checkpoint_path
    prepared.checkpoint = None
    logger = None
    try:
        # Sacred seeds the global generators when its run starts; continue from the set-up's (or checkpoint's)
        restore_rng_state(prepared.rng_state)
        run_info: dict = _run.info if _run is not None else {}
        run_info.update(env_backend=parts.test_env.backend_name, unique_token=prepared.token,
                        env_info=parts.env_info)
        logger = Logger(console, sacred_run=_run, tb_dir=prepared.dirs.get("tb_logs"))
        if cfg.evaluate:
            return _evaluate(cfg, parts, logger, ckpt, ckpt_path)
        sacred_dir = _sacred_run_dir(_run)
        trainer = _Trainer(cfg, parts, logger, LoopState.start(cfg), prepared.dirs.get("models"), sacred_dir,
                           prepared.extra_payload)
        if ckpt is not None:
            trainer.load(ckpt)
            console.info("Resumed from %s at t_env=%d (episode %d)", ckpt_path, trainer.state.t_env,
                         trainer.state.episode)
            run_info["resumed_from"] = {"checkpoint": ckpt_path, "t_env": trainer.state.t_env,
                                        "sacred_run_dir": ckpt["sacred_run_dir"]}
        del ckpt
        return trainer.train(run_info)
    finally:
        if logger is not None:
            logger.close()
        parts.close()


def run(_run, cfg: Config, console: logging.Logger) -> dict[str, Any]:
    """Set up and run ``cfg`` (:func:`prepare_run` then :func:`start_run`); the whole run in one call, for
    callers outside ``main.py``.

    Args:
        _run: the Sacred ``Run`` (metrics and ``info`` go to it), or None outside Sacred.
        cfg: the validated, read-only config (``cfg.seed`` set).
        console: logger for the console report.

    Returns:
        The final test statistics with ``t_env`` and ``episode`` (Sacred stores it as the run's result).
    """
    return start_run(_run, prepare_run(cfg, console), console)


def _evaluate(cfg: Config, parts: Components, logger: Logger, ckpt: dict | None,
              ckpt_path: str | None) -> dict[str, Any]:
    """``evaluate=True``: ``test_nepisode`` greedy episodes with the checkpoint's agents (or untrained ones
    without ``checkpoint_path``), logged at the checkpoint's t_env; ``save_replay`` writes replays."""
    t_env = 0
    if ckpt is not None:  # its learner was loaded by prepare_run
        t_env = ckpt["loop"]["t_env"]
        logger.console.info("Evaluating checkpoint %s (t_env=%d)", ckpt_path, t_env)
    else:
        logger.console.warning("evaluate=True without checkpoint_path: evaluating untrained agents.")
    means = _test(parts, logger, t_env)
    _log_game_restarts(parts.test_env, logger, t_env)
    logger.print_recent_stats(f"Evaluation | {cfg.test_nepisode} episodes | t_env: {t_env}")
    result: dict[str, Any] = {"t_env": t_env, **means}
    if cfg.save_replay:
        # one replay per environment: a real StarCraft II game's replay holds every episode it played
        paths = parts.test_env.save_replay(list(range(min(cfg.replay_nepisode, parts.test_env.n_envs))))
        logger.console.info("Saved %d replay(s): %s", len(paths), ", ".join(paths))
        result["replays"] = list(paths)
    return result

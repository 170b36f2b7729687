"""One run, built from its config: environments, controller, learner and runners from the registries;
the training loop with greedy tests, logging and checkpoints; or evaluation only.

``run(_run, cfg, console)`` is called by ``main.py`` inside a Sacred run. Training loop (PyMARL's):
collect ``batch_size_run`` episodes (one per training environment) -> ``learner.train`` -> every
``test_interval`` env steps run ``test_nepisode`` greedy episodes (one per test environment) -> every
``log_interval`` env steps log the training means and print a report -> every ``save_model_interval``
env steps write a checkpoint. Resuming from a checkpoint restores every piece of that state (learner,
environments' random streams, global RNGs, counters, pending statistics, logged history), so on the
CPU the resumed run produces the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import datetime
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sacred.observers import FileStorageObserver

import controllers
import envs
import learners
import runners
from config.loader import Config
from envs.multiagentenv import BatchedMultiAgentEnv
from utils.checkpoint import (CheckpointError, capture_rng_state, find_checkpoint, load_checkpoint,
                              restore_rng_state, save_checkpoint)
from utils.cpu_runtime import configure_cpu
from utils.logging import Logger, StatAccumulator, episode_stat_means

BACKEND_DESCRIPTIONS = {"sim": "the embedded simulator", "starcraft2": "real StarCraft II through SMAC"}
ENV_INFO_KEYS = ("n_agents", "n_actions", "obs_shape", "state_shape")


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


def build_envs(cfg: Config, replay_dir: str | None) -> tuple[BatchedMultiAgentEnv | None, BatchedMultiAgentEnv]:
    """The test env (``test_nepisode`` environments, a seed derived from ``cfg.seed``; with a
    ``replay_dir`` it records episodes for ``save_replay``) and, unless ``evaluate``, the training env
    (``batch_size_run`` environments, seed ``cfg.seed``). Returns ``(train_env or None, test_env)``."""
    make_env = envs.REGISTRY[cfg.env]
    test_kwargs = dict(cfg.env_args)
    if replay_dir is not None:
        test_kwargs.update(record_replay=True, replay_dir=replay_dir)
    test_env = make_env(n_envs=cfg.test_nepisode, seed=test_env_seed(cfg.seed), **test_kwargs)
    if cfg.evaluate:
        return None, test_env
    try:
        train_env = make_env(n_envs=cfg.batch_size_run, seed=cfg.seed, **cfg.env_args)
    except BaseException:
        test_env.close()
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
        train_env, mac, cfg, device, record_agent_outputs=learner.trains_on_agent_outputs)
    return Components(train_env=train_env, test_env=test_env, env_info=env_info, mac=mac, learner=learner,
                      train_runner=train_runner, test_runner=runner_cls(test_env, mac, cfg, device))


def _check_compatible(ckpt: dict, path: str, cfg: Config, parts: Components, resume: bool) -> None:
    saved_cfg, saved_info = ckpt["config"], ckpt["env_info"]
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
    _check_compatible(ckpt, path, cfg, parts, resume)
    try:
        parts.learner.load_state_dict(ckpt["learner"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"The learner state in {path} does not fit this run's learner ({exc}). The model "
                              "settings (agent, hidden_dim, ...) must match the checkpoint's config.") from None
    if resume:
        parts.train_env.load_state_dict(ckpt["train_env"])
        parts.test_env.load_state_dict(ckpt["test_env"])
        restore_rng_state(ckpt["rng"])


def _sacred_run_dir(_run) -> str | None:
    """The run's FileStorageObserver directory (``results/sacred/<map>/<name>/<id>``), if any."""
    for observer in (_run.observers if _run is not None else []):
        if isinstance(observer, FileStorageObserver):
            return observer.dir
    return None


def _format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _test(parts: Components, logger: Logger, t_env: int) -> dict[str, float]:
    """Run ``test_nepisode`` greedy episodes (one per test env) and log ``test_*`` means at ``t_env``."""
    _, stats = parts.test_runner.run(test_mode=True, t_env=t_env)
    means = episode_stat_means(stats, prefix="test_")
    for key, value in means.items():
        logger.log_stat(key, value, t_env)
    return means


class _Trainer:
    """The training loop and its checkpointing (state: ``LoopState`` + pending statistics)."""

    def __init__(self, cfg: Config, parts: Components, logger: Logger, state: LoopState, models_dir: str | None,
                 sacred_dir: str | None):
        self.cfg, self.parts, self.logger, self.state = cfg, parts, logger, state
        self.models_dir, self.sacred_dir = models_dir, sacred_dir
        self.pending = StatAccumulator()
        self.last_test: dict[str, float] = {}

    def payload(self) -> dict[str, Any]:
        p = self.parts
        return {"config": self.cfg.to_dict(), "env_info": p.env_info, "loop": asdict(self.state),
                "learner": p.learner.state_dict(), "train_env": p.train_env.state_dict(),
                "test_env": p.test_env.state_dict(), "rng": capture_rng_state(),
                "pending_stats": self.pending.state_dict(), "log_history": list(self.logger.history),
                "last_test": dict(self.last_test), "sacred_run_dir": self.sacred_dir}

    def load(self, ckpt: dict) -> None:
        self.state = LoopState(**ckpt["loop"])
        self.pending.load_state_dict(ckpt["pending_stats"])
        self.last_test = dict(ckpt["last_test"])
        self.logger.replay_history(ckpt["log_history"])

    def save(self) -> None:
        self.state.last_save_t = self.state.t_env  # before the payload: a resumed run saves on the same schedule
        path = save_checkpoint(os.path.join(self.models_dir, str(self.state.t_env)), self.payload())
        self.logger.console.info("Saved checkpoint %s", path)

    def log_pending(self) -> None:
        s = self.state
        for key, value in self.pending.reduce().items():
            self.logger.log_stat(key, value, s.t_env)
        self.logger.log_stat("episode", s.episode, s.t_env)

    def train(self) -> dict[str, Any]:
        cfg, p, s = self.cfg, self.parts, self.state
        console = self.logger.console
        console.info("Beginning training for %d env steps (from t_env=%d)", cfg.t_max, s.t_env)
        start_time, start_t = time.time(), s.t_env
        last_print_time, last_print_t = start_time, s.t_env
        while s.t_env < cfg.t_max:
            batch, stats = p.train_runner.run(test_mode=False, t_env=s.t_env)
            s.t_env += int(stats["env_steps"])
            s.episode += len(stats["return"])
            self.pending.add_episodes(stats)
            self.pending.add_scalars(p.learner.train(batch, s.t_env, s.episode))

            if s.t_env - s.last_test_t >= cfg.test_interval:
                self.last_test = _test(p, self.logger, s.t_env)
                s.last_test_t = s.t_env
            if s.t_env - s.last_log_t >= cfg.log_interval:
                self.log_pending()
                s.last_log_t = s.t_env
                now = time.time()
                speed = (s.t_env - last_print_t) / max(now - last_print_time, 1e-9)
                overall = (s.t_env - start_t) / max(now - start_time, 1e-9)
                self.logger.print_recent_stats(
                    f"Recent stats | t_env: {s.t_env:>10} / {cfg.t_max} | episode: {s.episode:>8} | "
                    f"{speed:,.0f} env steps/s | time passed: {_format_duration(now - start_time)} | "
                    f"estimated time left: {_format_duration((cfg.t_max - s.t_env) / max(overall, 1e-9))}")
                last_print_time, last_print_t = now, s.t_env
            if cfg.save_model and s.t_env - s.last_save_t >= cfg.save_model_interval:
                self.save()

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


def run(_run, cfg: Config, console: logging.Logger) -> dict[str, Any]:
    """Build the run described by ``cfg`` and train it (or only evaluate it with ``evaluate=True``).

    Args:
        _run: the Sacred ``Run`` (metrics and ``info`` go to it), or None outside Sacred.
        cfg: the validated, read-only config (``cfg.seed`` set).
        console: logger for the console report.

    Returns:
        The final test statistics with ``t_env`` and ``episode`` (Sacred stores it as the run's result).
    """
    ckpt_path = find_checkpoint(cfg.checkpoint_path, cfg.load_step) if cfg.checkpoint_path else None
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    seed_everything(cfg.seed)
    configure_cpu(cfg.torch_threads)
    token, dirs = reserve_run_dirs(cfg)
    replay_dir = (cfg.env_args["replay_dir"] or dirs["replays"]) if cfg.save_replay else None

    train_env, test_env = build_envs(cfg, replay_dir)
    backend = test_env.backend_name
    n_train = 0 if train_env is None else train_env.n_envs
    console.info("Environment backend: %s (%s) | env %s, map %s | %d training + %d test environments",
                 backend, BACKEND_DESCRIPTIONS.get(backend, "custom backend"), cfg.env, map_label(cfg), n_train,
                 test_env.n_envs)
    device = select_device(cfg.use_cuda, console)
    try:
        parts = build_components(cfg, train_env, test_env, device)
    except BaseException:
        _close_envs(train_env, test_env)
        raise
    console.info("Run token %s | device %s | torch threads %d", token, device, torch.get_num_threads())
    sacred_dir = _sacred_run_dir(_run)
    if _run is not None:
        _run.info.update(env_backend=backend, unique_token=token, env_info=parts.env_info)
    logger = Logger(console, sacred_run=_run, tb_dir=dirs.get("tb_logs"))
    try:
        if cfg.evaluate:
            return _evaluate(cfg, parts, logger, ckpt, ckpt_path)
        trainer = _Trainer(cfg, parts, logger, LoopState.start(cfg), dirs.get("models"), sacred_dir)
        if ckpt is not None:
            _restore(ckpt, ckpt_path, cfg, parts, resume=True)
            trainer.load(ckpt)
            console.info("Resumed from %s at t_env=%d (episode %d)", ckpt_path, trainer.state.t_env,
                         trainer.state.episode)
            if _run is not None:
                _run.info["resumed_from"] = {"checkpoint": ckpt_path, "t_env": trainer.state.t_env,
                                             "sacred_run_dir": ckpt["sacred_run_dir"]}
        del ckpt
        return trainer.train()
    finally:
        logger.close()
        parts.close()


def _evaluate(cfg: Config, parts: Components, logger: Logger, ckpt: dict | None,
              ckpt_path: str | None) -> dict[str, Any]:
    """``evaluate=True``: ``test_nepisode`` greedy episodes with the checkpoint's agents (or untrained ones
    without ``checkpoint_path``), logged at the checkpoint's t_env; ``save_replay`` writes replays."""
    t_env = 0
    if ckpt is not None:
        _restore(ckpt, ckpt_path, cfg, parts, resume=False)
        t_env = ckpt["loop"]["t_env"]
        logger.console.info("Evaluating checkpoint %s (t_env=%d)", ckpt_path, t_env)
    else:
        logger.console.warning("evaluate=True without checkpoint_path: evaluating untrained agents.")
    means = _test(parts, logger, t_env)
    logger.print_recent_stats(f"Evaluation | {cfg.test_nepisode} episodes | t_env: {t_env}")
    result: dict[str, Any] = {"t_env": t_env, **means}
    if cfg.save_replay:
        paths = parts.test_env.save_replay(list(range(cfg.replay_nepisode)))
        logger.console.info("Saved %d replay(s): %s", len(paths), ", ".join(paths))
        result["replays"] = list(paths)
    return result

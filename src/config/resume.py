"""Resolving a run's config: a new run's from the config files, a resumed or evaluated run's from its checkpoint.

:func:`resolve_config` is the entry point. A new run gets the layered config files plus the command line's
``with`` updates (:func:`config.loader.load_config`). With ``checkpoint_path`` the checkpoint's run is resumed
(or, with ``evaluate=True``, evaluated).

What that takes from the checkpoint: the run's saved config (seed, t_max, intervals, map, algorithm, every
learner key), laid under the command line as ``load_config``'s ``base`` layer, so the run continues with its
own values rather than today's defaults; and the ``--config`` / ``--env-config`` it was made with (recorded in
the checkpoint; for checkpoints written before they were recorded, the alg config with the checkpoint's
learner). Both flags may be left out; if given they must be the checkpoint's. Saved keys this code no longer
declares are ignored and declared keys the checkpoint predates take their current values, each with a warning.

Which keys may change: only those in :data:`RESUME_CHANGEABLE` (evaluation: :data:`EVALUATE_CHANGEABLE`) may
be given with another value than the run had; any other is a :class:`ConfigError` naming the key and both
values. The data files in :data:`DATA_KEYS` (``gail_data_path``) may point to a moved copy of the run's
demonstrations with the same content (an evaluation accepts other demonstrations, with a warning). A resumed
run must have something left to train: a ``t_max`` beyond the checkpoint's ``t_env``. The lists are documented
next to ``checkpoint_path`` in ``config/default.yaml``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from components.demonstrations import stored_checksum
from config.loader import Config, ConfigError, available_configs, dotted_leaves, load_config
from run import SETUP_ERRORS, checkpoint_backend, map_label
from utils.checkpoint import CheckpointError, find_checkpoint, load_checkpoint

DEFAULT_ENV_CONFIG = "sc2"
OVERRIDES_LABEL = "the command-line `with` updates"

#: Keys a resumed run may set to another value than the run had: they change how long it runs, what it
#: records and where, and on what hardware, not the experiment. (The greedy test episodes draw nothing from
#: the training's random streams, so test and log intervals only move the test and report points;
#: ``torch_threads`` and ``use_cuda`` can change the last bits, as threads and devices round differently;
#: ``env_args.max_concurrent_games`` only regroups real StarCraft II episodes into other waves.)
#: Documented next to ``checkpoint_path`` in config/default.yaml; a test keeps the two lists equal.
RESUME_CHANGEABLE = ("checkpoint_path", "load_step", "t_max", "test_interval", "log_interval", "save_model",
                     "save_model_interval", "local_results_path", "use_tensorboard", "torch_threads", "use_cuda",
                     "env_args.max_concurrent_games")
#: Keys an evaluation (``evaluate=True`` with ``checkpoint_path``) may change: the above, plus the evaluation's
#: own settings. Its greedy episodes come from the seed, so another ``seed`` evaluates on other episodes; it
#: needs no environment state, so it may also run on another backend (a real-game run on the simulator).
EVALUATE_CHANGEABLE = RESUME_CHANGEABLE + ("evaluate", "test_nepisode", "seed", "batch_size_run", "save_replay",
                                           "replay_nepisode", "env_args.replay_dir", "env_args.replay_prefix",
                                           "env_args.backend")
#: Data files that are part of the experiment: another path is accepted when the content is identical.
DATA_KEYS = ("gail_data_path",)


@dataclass
class ResolvedConfig:
    """The validated config of the run to start and where it came from."""

    cfg: Config
    config_name: str
    env_config_name: str
    checkpoint: dict | None = None      # the loaded checkpoint, when checkpoint_path is set
    checkpoint_path: str | None = None  # its file
    notes: list[tuple[int, str]] = field(default_factory=list)  # (logging level, message) to print


def _value(cfg: Config, dotted: str) -> Any:
    value: Any = cfg.to_dict()
    for part in dotted.split("."):
        value = value[part] if isinstance(value, Mapping) and part in value else None
    return value


def resolve_config(config_name: str | None, env_config_name: str | None,
                   overrides: Mapping[str, Any]) -> ResolvedConfig:
    """The run's config: the layered files plus ``overrides`` for a new run; with ``checkpoint_path`` in
    ``overrides``, the checkpoint's own config plus the changeable overrides (see the module docstring).
    Raises :class:`ConfigError` naming what is wrong and what to do."""
    if overrides.get("checkpoint_path"):
        return _resolve_from_checkpoint(config_name, env_config_name, overrides)
    if config_name is None:
        raise ConfigError("--config=<alg> is required (or checkpoint_path=<models dir> to resume a run). "
                          "Available: " + ", ".join(available_configs("algs")) + ".")
    env_config_name = env_config_name or DEFAULT_ENV_CONFIG
    cfg = load_config(config_name, env_config_name, overrides, overrides_label=OVERRIDES_LABEL)
    return ResolvedConfig(cfg, config_name, env_config_name)


def _checkpoint_alg(config_name: str | None, env_config_name: str, ckpt: dict, ckpt_file: str) -> str:
    """The ``--config`` a checkpoint's run was made with: recorded in the checkpoint (or, for checkpoints
    written before it was recorded, the alg config with the checkpoint's learner). A given ``--config``
    must be that one."""
    recorded = (ckpt.get("command") or {}).get("config")
    learner = ckpt["config"].get("learner")
    available = available_configs("algs")
    if recorded:
        if config_name is not None and config_name != recorded:
            raise ConfigError(f"--config={config_name} does not match checkpoint {ckpt_file}: that run was made "
                              f"with --config={recorded} (learner {learner!r}). A checkpoint resumes (or is "
                              f"evaluated) with its own algorithm: leave --config out, or give --config={recorded}.")
        if recorded not in available:
            raise ConfigError(f"Checkpoint {ckpt_file} was made with --config={recorded}, but there is no "
                              f"src/config/algs/{recorded}.yaml any more (available: {', '.join(available)}).")
        return recorded
    learners = {name: load_config(name, env_config_name, check_components=False).learner for name in available}
    if config_name is not None:
        if config_name in learners and learners[config_name] != learner:
            matching = [name for name, value in learners.items() if value == learner]
            hint = f"give --config={matching[0]}" if len(matching) == 1 else "give the matching --config"
            raise ConfigError(f"--config={config_name} (learner {learners[config_name]!r}) does not match checkpoint "
                              f"{ckpt_file}, which holds a {learner!r} learner. A checkpoint resumes (or is "
                              f"evaluated) with its own algorithm: leave --config out, or {hint}.")
        return config_name
    matching = [name for name, value in learners.items() if value == learner]
    if len(matching) == 1:
        return matching[0]
    saved_name = ckpt["config"].get("name")
    if saved_name in matching:
        return saved_name
    raise ConfigError(f"Checkpoint {ckpt_file} holds a {learner!r} learner; "
                      + (f"several alg configs use it ({', '.join(matching)}): give --config=<alg>." if matching
                         else f"no alg config uses it any more (available: {', '.join(available)})."))


def _check_demonstrations(run_cfg: Config, given: Mapping[str, Any], ckpt: dict, ckpt_file: str, evaluate: bool,
                          notes: list[tuple[int, str]]) -> set[str]:
    """The data files of the checkpoint's run (``gail_data_path``): the run's file must still be there with
    the content it had, or the command line must give a file with that content (a moved copy). Returns the
    keys checked here (left out of the changed-keys check)."""
    checked = set()
    for key in DATA_KEYS:
        original = _value(run_cfg, key)
        if not original:
            continue  # the run used no such file: another value is a change like any other
        checked.add(key)
        recorded = (ckpt.get("data_checksums") or {}).get(key)
        path = given.get(key, original)
        if path == original:
            if not os.path.isfile(original):
                raise ConfigError(
                    f"The run in {ckpt_file} was trained on {key}={original!r}, which does not exist any more "
                    f"(working directory {os.getcwd()}). If the file moved, give its new location: with "
                    f"{key}=<new path> (accepted when its content is identical"
                    + (", which the checkpoint's recorded checksum shows)." if recorded else ")."))
            current = _checksum(original, key) if recorded and not evaluate else None
            if current is not None and current != recorded:
                raise ConfigError(
                    f"{key}={original!r} has changed since the run in {ckpt_file} was trained on it (its checksum "
                    f"is {current[:16]}..., the checkpoint recorded {recorded[:16]}...). The "
                    f"demonstrations are part of the experiment: restore the original file and give its path "
                    f"with {key}=<path>, or start a new run.")
            continue
        if not isinstance(path, str) or not os.path.isfile(path):
            raise ConfigError(f"{key}={path!r} (the command-line `with` updates) is not a file (working directory "
                              f"{os.getcwd()}).")
        new = _checksum(path, key)
        reference, source = recorded, "recorded in the checkpoint"
        if reference is None and os.path.isfile(original):
            reference, source = _checksum(original, key), f"of {original}"
        if reference is None:
            notes.append((logging.WARNING, f"{key}: the run was trained on {original}, which is gone, and checkpoint "
                                           f"{ckpt_file} predates recorded checksums, so {path} cannot be checked to "
                                           "hold the same demonstrations; make sure it does."))
        elif reference == new:
            notes.append((logging.INFO, f"{key}: the run's demonstrations {original} are now {path} (same content, "
                                        f"checksum {new[:16]}...)."))
        elif evaluate:
            notes.append((logging.WARNING, f"{key}: evaluating with other demonstrations ({path}) than the run was "
                                           f"trained on ({original}); the greedy test episodes do not use them."))
        else:
            raise ConfigError(
                f"{key}={path!r} holds other demonstrations than the run in {ckpt_file} was trained on ({original!r}):"
                f" its checksum is {new[:16]}..., the run's is {reference[:16]}... ({source}). The demonstrations are "
                f"part of the experiment, so a resumed run keeps them: give the original file or an identical copy, "
                f"or start a new run (without checkpoint_path) to train on {path}.")
    return checked


def _checksum(path: str, key: str) -> str:
    try:
        return stored_checksum(path)
    except SETUP_ERRORS as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _resolve_from_checkpoint(config_name: str | None, env_config_name: str | None,
                             overrides: Mapping[str, Any]) -> ResolvedConfig:
    checkpoint_path = overrides["checkpoint_path"]
    load_step = overrides.get("load_step", 0)
    if not isinstance(checkpoint_path, str):
        raise ConfigError(f"checkpoint_path must be a path (a string); got {checkpoint_path!r}.")
    if isinstance(load_step, float) and load_step.is_integer():
        load_step = int(load_step)
    if isinstance(load_step, bool) or not isinstance(load_step, int) or load_step < 0:
        raise ConfigError(f"load_step must be 0 (the latest checkpoint) or a positive integer; got {load_step!r}.")
    try:
        ckpt_file = find_checkpoint(checkpoint_path, load_step)
        ckpt = load_checkpoint(ckpt_file)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(ckpt.get("config"), dict):
        raise ConfigError(f"Checkpoint {ckpt_file} holds no run config; it was not written by a training run.")
    recorded_env = (ckpt.get("command") or {}).get("env_config")
    if env_config_name is not None and recorded_env and env_config_name != recorded_env:
        raise ConfigError(f"--env-config={env_config_name} does not match checkpoint {ckpt_file}, made with "
                          f"--env-config={recorded_env}: leave --env-config out, or give --env-config={recorded_env}.")
    env_config_name = env_config_name or recorded_env or DEFAULT_ENV_CONFIG
    alg = _checkpoint_alg(config_name, env_config_name, ckpt, ckpt_file)
    evaluate = overrides.get("evaluate") is True
    notes: list[tuple[int, str]] = []

    # The run's config as this code reads it: the checkpoint's values over the declared keys.
    declared = dotted_leaves(load_config(alg, env_config_name, check_components=False).to_dict())
    saved = dotted_leaves(ckpt["config"])
    unknown = sorted(set(saved) - set(declared))
    if unknown:
        notes.append((logging.WARNING, f"Checkpoint {ckpt_file} has config keys this code no longer declares, "
                                       f"ignored: {', '.join(unknown)}."))
    added = sorted(set(declared) - set(saved))
    if added:
        notes.append((logging.WARNING, f"Checkpoint {ckpt_file} predates the config keys "
                                       f"{', '.join(added)}: they take their current values."))
    base = {key: value for key, value in saved.items() if key in declared}
    base.update(checkpoint_path=checkpoint_path, load_step=load_step)
    if base.get("env_args.backend") == "auto":  # kept by a config set up without the checks: the one that ran
        base["env_args.backend"] = checkpoint_backend(ckpt)
    base_label = f"the config saved in checkpoint {ckpt_file}"
    run_cfg = load_config(alg, env_config_name, base=base, base_label=base_label, check_components=False)

    given = dotted_leaves(overrides)
    checked = _check_demonstrations(run_cfg, given, ckpt, ckpt_file, evaluate, notes)
    cfg = load_config(alg, env_config_name, overrides, overrides_label=OVERRIDES_LABEL, base=base,
                      base_label=base_label)
    allowed = EVALUATE_CHANGEABLE if evaluate else RESUME_CHANGEABLE
    changed = [(key, _value(cfg, key), _value(run_cfg, key)) for key in given
               if key not in checked and _value(cfg, key) != _value(run_cfg, key)]
    refused = [(key, new, old) for key, new, old in changed if key not in allowed]
    if refused:
        what = ("evaluates the agents saved in" if evaluate else "resumes the run saved in")
        which = "An evaluation" if evaluate else "A resumed run"
        listed = ", ".join(f"{key}={new!r} (the run has {old!r})" for key, new, old in refused)
        may = ", ".join(key for key in allowed if key not in ("checkpoint_path", "load_step"))
        raise ConfigError(
            f"checkpoint_path {what} {ckpt_file} with that run's own config, but the command line changes "
            f"{listed}. {which} may change only {may}"
            f"{' and ' + ', '.join(sorted(checked)) + ' (a moved file with the same content)' if checked else ''}. "
            + ("Leave the other keys out to evaluate the agents as they were trained." if evaluate else
               "Leave the other keys out to continue the run as it was, or start a new run (without "
               "checkpoint_path) to train with other settings."))
    t_env = int(ckpt["loop"]["t_env"])
    if not evaluate and cfg.t_max <= t_env:
        raise ConfigError(f"The run in {ckpt_file} is at t_env={t_env}, which already reaches t_max={cfg.t_max}: "
                          f"nothing to train. Give a larger t_max to extend it (e.g. t_max={2 * cfg.t_max}), or "
                          f"evaluate=True to test it.")
    changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, new, old in changed
                        if key not in ("checkpoint_path", "load_step"))
    notes.insert(0, (logging.INFO, f"{'Evaluating' if evaluate else 'Resuming'} {ckpt_file} (t_env {t_env}) with the "
                                   f"run's own config: --config={alg}, map {map_label(cfg)}, seed {cfg.seed}, "
                                   f"t_max {cfg.t_max}" + (f"; changed: {changes}" if changes else "") + "."))
    return ResolvedConfig(cfg, alg, env_config_name, checkpoint=ckpt, checkpoint_path=ckpt_file, notes=notes)


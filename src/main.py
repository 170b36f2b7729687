"""Command-line entry point, PyMARL's::

    python src/main.py --config=ippo --env-config=sc2 with env_args.map_name=5m_vs_6m seed=1
    python src/main.py with checkpoint_path=results/models/<token>              # resume that run
    python src/main.py with checkpoint_path=results/models/<token> evaluate=True  # evaluate it

``--config=<alg>`` picks ``src/config/algs/<alg>.yaml`` and ``--env-config=<env>`` (default ``sc2``)
``src/config/envs/<env>.yaml``. Everything else is Sacred's command line: ``with`` updates (dotted keys, or a
``.yaml``/``.json`` file of updates), ``-m HOST:PORT:DB`` for a MongoObserver, ``print_config``, ``-u``
(unobserved), ``--help`` ...

Before Sacred starts, the whole configuration is resolved and validated (``config/loader.py``) and the run is
set up (``run.prepare_run``: checkpoint, kernels, environments, learner), so every set-up error (an unknown
key, a bad value or map, a checkpoint that does not fit, an unreachable MongoDB, demonstrations of another
map) is one ``dm2: error: ...`` line with exit status 2 and leaves no run folder behind. Errors during
training are Sacred's: a FAILED run record with the traceback in cout.txt. Ctrl-C / SIGTERM during training
write a final checkpoint and exit with 130 / 143 (the run is recorded as INTERRUPTED).

Resuming and evaluating (``checkpoint_path``): the run continues with the config saved in its checkpoint
(seed, t_max, intervals, map, algorithm, every learner key), not today's defaults. ``--config`` may be left
out (it is taken from the checkpoint); if given it must be the checkpoint's algorithm. Only the keys in
:data:`RESUME_CHANGEABLE` (evaluation: :data:`EVALUATE_CHANGEABLE`) may be given with another value;
``gail_data_path`` may point to a moved copy of the run's demonstrations with the same content. The list is
documented next to ``checkpoint_path`` in ``config/default.yaml``.

Runs are recorded by a FileStorageObserver under ``<local_results_path>/sacred/<map>/<name>/<id>/``
(config.json, run.json, cout.txt, metrics.json, info.json).
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# Sacred 0.8.7 imports pkg_resources, which setuptools deprecates loudly; the warning is not ours to fix.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from docopt import docopt  # noqa: E402
from sacred import Experiment  # noqa: E402
from sacred.arg_parser import get_config_updates  # noqa: E402
from sacred.config.config_files import HANDLER_BY_EXT, load_config_file  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.randomness import get_seed  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds, recursive_update  # noqa: E402

from config.loader import Config, ConfigError, available_configs, load_config  # noqa: E402
from run import (SETUP_ERRORS, PreparedRun, RunInterrupted, demonstrations_checksum, map_label,  # noqa: E402
                 prepare_run, sigterm_as_interrupt, start_run)
from utils.checkpoint import CheckpointError, find_checkpoint, load_checkpoint  # noqa: E402
from utils.logging import get_console_logger  # noqa: E402

DEFAULT_ENV_CONFIG = "sc2"
RUN_COMMAND = "dm2_run"  # the Sacred command that trains or evaluates (the default one)
OVERRIDES_LABEL = "the command-line `with` updates"
USAGE = ("python src/main.py --config=<alg> [--env-config=<env>] [Sacred options] [with key=value ...]\n"
         "python src/main.py [Sacred options] with checkpoint_path=<models dir> [evaluate=True] [key=value ...]\n"
         "  algs: {algs}\n  envs: {envs}")

#: Keys a resumed run may set to another value than the run had: they change how long it runs, what it
#: records and where, and on what hardware, not the experiment. (The greedy test episodes draw nothing from
#: the training's random streams, so test and log intervals only move the test and report points;
#: ``torch_threads`` and ``use_cuda`` can change the last bits, as threads and devices round differently.)
#: Documented next to ``checkpoint_path`` in config/default.yaml; a test keeps the two lists equal.
RESUME_CHANGEABLE = ("checkpoint_path", "load_step", "t_max", "test_interval", "log_interval", "save_model",
                     "save_model_interval", "local_results_path", "use_tensorboard", "torch_threads", "use_cuda")
#: Keys an evaluation (``evaluate=True`` with ``checkpoint_path``) may change: the above, plus the evaluation's
#: own settings. Its greedy episodes come from the seed, so another ``seed`` evaluates on other episodes.
EVALUATE_CHANGEABLE = RESUME_CHANGEABLE + ("evaluate", "test_nepisode", "seed", "batch_size_run", "save_replay",
                                           "replay_nepisode", "env_args.replay_dir", "env_args.replay_prefix")
#: Data files that are part of the experiment: another path is accepted when the content is identical.
DATA_KEYS = ("gail_data_path",)
MONGO_TIMEOUT_S = 3.0


class SetupFailed(Exception):
    """An unexpected error (a bug, not a bad setting) while setting a run up; ``__cause__`` is the original."""


class SetupInterrupted(Exception):
    """Ctrl-C or SIGTERM during the set-up (e.g. while the simulator's kernels compile): nothing was written."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def split_config_flags(args: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """Take ``--config`` / ``--env-config`` (``--flag=value`` or ``--flag value``) out of ``args``.

    Returns ``(config_name or None, env_config_name or None, the remaining arguments for Sacred)``.
    """
    values: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag = next((f for f in ("--config", "--env-config") if arg == f or arg.startswith(f + "=")), None)
        if flag is None:
            rest.append(arg)
            i += 1
            continue
        if arg == flag:
            if i + 1 >= len(args):
                raise ConfigError(f"{flag} needs a value, e.g. {flag}=<name>.")
            value, i = args[i + 1], i + 2
        else:
            value, i = arg.split("=", 1)[1], i + 1
        if flag in values:
            raise ConfigError(f"{flag} given twice ({values[flag]!r} and {value!r}); give it once.")
        values[flag] = value
    return values.get("--config"), values.get("--env-config"), rest


def collect_updates(update_args: Sequence[str]) -> dict[str, Any]:
    """Sacred's ``with`` arguments as one nested dict: config files first, then ``key=value`` updates
    (Sacred's own order and parsing)."""
    config_updates, named_configs = get_config_updates(list(update_args))
    merged: dict[str, Any] = {}
    for name in named_configs:
        if os.path.isfile(name) and os.path.splitext(name)[1] in HANDLER_BY_EXT:
            recursive_update(merged, load_config_file(name))
        else:
            raise ConfigError(f"`with {name}`: not a key=value update and not a config file. This experiment has "
                              f"no named configs; give key=value updates or the path of a file of updates "
                              f"({', '.join(sorted(HANDLER_BY_EXT))}).")
    recursive_update(merged, config_updates)
    return merged


def canonical_sacred_args(sacred_args: Sequence[str], update_args: Sequence[str], cfg: Config) -> list[str]:
    """``sacred_args`` with each ``with key=value`` update rewritten to the validated value, so that Sacred
    (which re-applies the updates) records exactly the resolved config: ``t_max=2e6`` becomes
    ``t_max=2000000`` and ``env_args.backend=auto`` the backend that runs."""
    resolved = cfg.to_dict()
    canonical = {}
    for arg in update_args:
        key, sep, _ = arg.partition("=")
        if sep:
            value = resolved
            for part in key.strip().split("."):
                value = value[part]
            canonical[arg] = f"{key.strip()}={value!r}"
    out, after_with = [], False
    for arg in sacred_args:
        after_with = after_with or arg == "with"
        out.append(canonical[arg] if after_with and arg in canonical else arg)
    return out


# --- resolving the configuration (a new run, or a checkpoint's run) --------------------------------------

@dataclass
class ResolvedConfig:
    """The validated config of the run to start and where it came from."""

    cfg: Config
    config_name: str
    env_config_name: str
    checkpoint: dict | None = None      # the loaded checkpoint, when checkpoint_path is set
    checkpoint_path: str | None = None  # its file
    notes: list[tuple[int, str]] = field(default_factory=list)  # (logging level, message) to print


def _leaves(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
            if recorded and not evaluate and _checksum(original, key) != recorded:
                raise ConfigError(
                    f"{key}={original!r} has changed since the run in {ckpt_file} was trained on it (its checksum "
                    f"is {_checksum(original, key)[:16]}..., the checkpoint recorded {recorded[:16]}...). The "
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
        return demonstrations_checksum(path)
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
    declared = _leaves(load_config(alg, env_config_name, check_components=False).to_dict())
    saved = _leaves(ckpt["config"])
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
    base_label = f"the config saved in checkpoint {ckpt_file}"
    run_cfg = load_config(alg, env_config_name, base=base, base_label=base_label, check_components=False)

    given = _leaves(overrides)
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


# --- MongoDB ----------------------------------------------------------------------------------------------

def parse_mongo_spec(spec: str) -> dict[str, Any]:
    """Sacred's ``-m`` value (``db_name``, ``host:port`` or ``host:port:db_name``, optionally
    ``.collection`` and ``!priority``) as MongoObserver arguments; a clear error for anything else."""
    from sacred.observers.mongo import get_pattern, parse_mongo_db_arg

    if not isinstance(spec, str) or re.match(get_pattern(), spec) is None:
        raise ConfigError(f"-m {spec!r} is not a MongoDB observer spec: expected db_name, host:port or "
                          "host:port:db_name (optionally followed by .collection and !priority), e.g. "
                          "-m localhost:27017:dm2.")
    return parse_mongo_db_arg(spec)


def check_mongo(spec: str, timeout_s: float = MONGO_TIMEOUT_S) -> dict[str, Any]:
    """Raise :class:`ConfigError` unless pymongo is installed and a MongoDB server answers at ``spec``'s
    address within ``timeout_s`` seconds (Sacred's own observer would otherwise hang for about a minute at
    the run's start and then fail with tracebacks). Returns the parsed spec."""
    kwargs = parse_mongo_spec(spec)
    url = kwargs.get("url", "localhost:27017")
    try:
        import pymongo
        import pymongo.errors
    except ImportError:
        raise ConfigError(f"-m {spec} records the run in MongoDB, which needs pymongo: pip install -r "
                          "requirements.txt (or pip install pymongo).") from None
    timeout_ms = int(timeout_s * 1000)
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        reason = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
        raise ConfigError(f"-m {spec}: no MongoDB server answered at {url} within {timeout_s:g} s ({reason}). Check "
                          f"the host and port, that mongod is running there and accepts connections from this "
                          f"machine (e.g. `mongosh --host {url}`), or leave -m out to record the run in files "
                          "only.") from None
    finally:
        client.close()
    return kwargs


# --- the run ----------------------------------------------------------------------------------------------

class _SetupRecorder(logging.Handler):
    """Keeps the console lines printed before Sacred starts (configuration notes, kernel compilation,
    environments), so they can open the run's cout.txt too."""

    def __init__(self, console: logging.Logger):
        super().__init__(logging.INFO)
        self.console, self.lines = console, []
        formatter = next((h.formatter for h in console.handlers if h.formatter is not None), None)
        self.setFormatter(formatter or logging.Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + "\n")

    def __enter__(self) -> "_SetupRecorder":
        self.console.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.console.removeHandler(self)

    @property
    def text(self) -> str:
        return "".join(self.lines)


def build_experiment(cfg: Config, prepared: PreparedRun | None = None, setup_output: str = "") -> Experiment:
    """The Sacred experiment for a validated config: its config, the FileStorageObserver, the main function
    (which starts ``prepared``, or sets the run up itself when there is none)."""
    ex = Experiment("dm2")
    ex.logger = get_console_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    resolved = cfg.to_dict()
    ex.add_config(resolved)
    ex.observers.append(FileStorageObserver(
        os.path.join(cfg.local_results_path, "sacred", map_label(cfg), cfg.name)))

    @ex.main
    def dm2_run(_run, _config, _log):
        if setup_output:  # the set-up's console lines open cout.txt
            _run.captured_out = setup_output + (_run.captured_out or "")
        run_prepared = prepared
        if run_prepared is None or run_prepared.started:
            run_prepared = prepare_run(Config({**resolved, "seed": _config["seed"]}), _log)
        return start_run(_run, run_prepared, _log)

    return ex


def complete_run_record(run) -> None:
    """Sacred stops capturing the output before it records a failed or interrupted run, so cout.txt lacks what
    was printed after the last heartbeat (up to 10 s: a failure's last lines, the stop message and checkpoint
    of an interrupted run), and a failure's traceback is only in run.json. Add both, and have the observers
    write the record once more (its status stays FAILED / INTERRUPTED)."""
    if run is None or run.status not in ("FAILED", "INTERRUPTED") or not run.observers:
        return
    remaining = getattr(getattr(run, "_output_file", None), "final", None) or ""  # Sacred 0.8's last read
    if isinstance(remaining, bytes):
        remaining = remaining.decode("utf-8", "replace")
    text = (run.captured_out or "") + remaining
    if run.captured_out_filter is not None:
        text = run.captured_out_filter(text)
    if run.status == "FAILED" and run.fail_trace:
        text += "".join(run.fail_trace)
    run.captured_out = text
    for observer in run.observers:
        try:
            observer.heartbeat_event(info=run.info, captured_out=text, beat_time=datetime.datetime.utcnow(),
                                     result=run.result)
        except Exception as exc:  # noqa: BLE001 - the run is over; a failing observer must not hide its error
            print(f"dm2: warning: could not complete the run record of {observer}: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None):
    """Parse, resolve and validate the config, set the run up, then hand over to Sacred; returns Sacred's
    ``Run`` (None for help). Set-up errors raise (:class:`ConfigError` and the other ``SETUP_ERRORS``,
    :class:`SetupFailed` for unexpected ones) before anything is written."""
    argv = list(sys.argv if argv is None else argv)
    config_name, env_config_name, sacred_args = split_config_flags(argv[1:])
    _, sacred_usage, internal_usage = Experiment("dm2").get_usage()
    args = docopt(internal_usage, sacred_args, default_help=False)
    if args["help"] or args["--help"]:
        print(USAGE.format(algs=", ".join(available_configs("algs")), envs=", ".join(available_configs("envs"))))
        print(sacred_usage)
        return None
    starts_run = args["COMMAND"] in (None, RUN_COMMAND) and not args["--queue"]
    console = get_console_logger()
    with sigterm_as_interrupt():
        try:
            with _SetupRecorder(console) as recorder:
                cfg, prepared = _set_up(console, config_name, env_config_name, args, starts_run)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM while setting up: nothing was written
            raise SetupInterrupted(exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT) from None
        sacred_args = canonical_sacred_args(sacred_args, args["UPDATE"], cfg)
        ex = build_experiment(cfg, prepared, recorder.text)
        try:
            return ex.run_commandline([argv[0], *sacred_args])
        except SystemExit:  # Sacred's exit after an error during the run (it printed the traceback)
            complete_run_record(ex.current_run)
            raise
        except KeyboardInterrupt as exc:
            complete_run_record(ex.current_run)
            if isinstance(exc, RunInterrupted) and not exc.at_once:
                raise
            # outside the training loop's own handling (e.g. while evaluating), or a second signal
            models = prepared.dirs.get("models") if prepared is not None else None
            signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
            raise RunInterrupted(signum, None, None, models, at_once=True) from None
        finally:
            if prepared is not None and not prepared.started:
                prepared.release()  # Sacred never started the run (e.g. an observer failed): leave nothing behind


def _set_up(console: logging.Logger, config_name: str | None, env_config_name: str | None, args: dict,
            starts_run: bool) -> tuple[Config, PreparedRun | None]:
    """Resolve the config and, for a run, check the MongoDB observer and prepare the run."""
    resolved = resolve_config(config_name, env_config_name, collect_updates(args["UPDATE"]))
    cfg = resolved.cfg
    if cfg.seed is None:  # drawn here (as Sacred would) so that the set-up uses it
        cfg = Config({**cfg.to_dict(), "seed": get_seed()})
    if not starts_run:
        return cfg, None
    if args["--mongo_db"] and not args["--unobserved"]:
        check_mongo(args["--mongo_db"])
    for level, message in resolved.notes:
        console.log(level, message)
    try:
        return cfg, prepare_run(cfg, console, checkpoint=resolved.checkpoint, checkpoint_path=resolved.checkpoint_path,
                                command={"config": resolved.config_name, "env_config": resolved.env_config_name})
    except SETUP_ERRORS:
        raise
    except Exception as exc:
        raise SetupFailed(f"the run's set-up failed unexpectedly ({type(exc).__name__}: {exc}); the traceback is "
                          "above. Nothing was written.") from exc


def cli(argv: Sequence[str] | None = None) -> int:
    """``main`` with the command line's error handling; returns the exit status: 0, 2 for a set-up error
    (one ``dm2: error:`` line on stderr), 128 + the signal number when a signal stopped the run, Sacred's
    1 for an error during training (its traceback printed and recorded)."""
    try:
        main(argv)
        return 0
    except (ConfigError, *SETUP_ERRORS) as exc:
        print(f"dm2: error: {exc}", file=sys.stderr)
        return 2
    except SetupFailed as exc:
        traceback.print_exception(exc.__cause__)
        print(f"dm2: error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"dm2: {exc}", file=sys.stderr)
        return exc.exit_code
    except (SetupInterrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, SetupInterrupted) else signal.SIGINT
        print(f"dm2: interrupted by {signal.Signals(signum).name} during the set-up; no run was started and nothing "
              "was written.", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(cli())

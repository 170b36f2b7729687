"""Command-line entry point, PyMARL's::

    python src/main.py --config=ippo --env-config=sc2 with env_args.map_name=5m_vs_6m seed=1
    python src/main.py with checkpoint_path=results/models/<token>              # resume that run
    python src/main.py with checkpoint_path=results/models/<token> evaluate=True  # evaluate it

``--config=<alg>`` picks ``src/config/algs/<alg>.yaml`` and ``--env-config=<env>`` (default ``sc2``)
``src/config/envs/<env>.yaml``. Everything else is Sacred's command line: ``with`` updates (dotted keys, or a
``.yaml``/``.json`` file of updates), ``-m HOST:PORT:DB`` for a MongoObserver, ``print_config``, ``-u``
(unobserved), ``--help`` ...

Before Sacred starts, the whole configuration is resolved and validated (``config/resume.py``,
``config/loader.py``), a ``-m`` MongoDB server is checked (``utils/mongo.py``) and the run is set up
(``run.prepare_run``: checkpoint, kernels, environments, learner), so every set-up error (an unknown key, a
bad value or map, a checkpoint that does not fit, an unreachable MongoDB, demonstrations of another map) is one
``dm2: error: ...`` line with exit status 2 and leaves no run folder behind. Errors during training are
Sacred's: a FAILED run record with the traceback in cout.txt. Ctrl-C / SIGTERM during training write a final
checkpoint and exit with 130 / 143 (the run is recorded as INTERRUPTED).

Resuming and evaluating (``checkpoint_path``): the run continues with the config saved in its checkpoint
(seed, t_max, intervals, map, algorithm, every learner key), not today's defaults. ``--config`` may be left
out (it is taken from the checkpoint); if given it must be the checkpoint's algorithm. Only the keys in
:data:`config.resume.RESUME_CHANGEABLE` (evaluation: :data:`config.resume.EVALUATE_CHANGEABLE`) may be given
with another value; ``gail_data_path`` may point to a moved copy of the run's demonstrations with the same
content. See :mod:`config.resume`; the list is documented next to ``checkpoint_path`` in ``config/default.yaml``.

Runs are recorded by a FileStorageObserver under ``<local_results_path>/sacred/<map>/<name>/<id>/``
(config.json, run.json, cout.txt, metrics.json, info.json).
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import traceback
import warnings
from typing import Any, Sequence

# Sacred 0.8.7 imports pkg_resources, which setuptools deprecates loudly; the warning is not ours to fix.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from docopt import docopt  # noqa: E402
from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.arg_parser import get_config_updates  # noqa: E402
from sacred.config.config_files import HANDLER_BY_EXT, load_config_file  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.randomness import get_seed  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds, recursive_update  # noqa: E402

from config.loader import Config, ConfigError, available_configs  # noqa: E402
from config.resume import resolve_config  # noqa: E402
from run import (SETUP_ERRORS, PreparedRun, RunInterrupted, map_label, prepare_run, sigterm_as_interrupt,  # noqa: E402
                 start_run)
from utils.logging import get_console_logger  # noqa: E402
from utils.mongo import check_mongo  # noqa: E402

RUN_COMMAND = "dm2_run"  # the Sacred command that trains or evaluates (the default one)
USAGE = ("python src/main.py --config=<alg> [--env-config=<env>] [Sacred options] [with key=value ...]\n"
         "python src/main.py [Sacred options] with checkpoint_path=<models dir> [evaluate=True] [key=value ...]\n"
         "  algs: {algs}\n  envs: {envs}")


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


#: Sacred captures the run's console output at the Python level. Its default ("fd") pipes it through two ``tee``
#: processes and gives them 1 s to finish when the run ends: on a loaded machine they can be cut off, and the run's
#: last lines ("Finished training ...") were missing from cout.txt. Everything a run prints goes through
#: ``sys.stdout`` / ``sys.stderr`` (the console logger writes to the current ``sys.stdout``).
SETTINGS.CAPTURE_MODE = "sys"


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

"""Command-line entry point, PyMARL's::

    python src/main.py --config=ippo --env-config=sc2 with env_args.map_name=5m_vs_6m seed=1

``--config=<alg>`` picks ``src/config/algs/<alg>.yaml`` and ``--env-config=<env>`` (default ``sc2``)
``src/config/envs/<env>.yaml``. Everything else is Sacred's command line, untouched: ``with key=value``
updates (dotted keys, or a ``.yaml``/``.json`` file of updates), ``-m HOST:PORT:DB`` for a MongoObserver,
``print_config``, ``-u`` (unobserved), ``--help`` ... The whole configuration is resolved and validated
(see ``config/loader.py``) before Sacred starts, so an unknown key, a bad value or map, or a missing
checkpoint fails before any run directory exists. Runs are recorded by a FileStorageObserver under
``<local_results_path>/sacred/<map>/<name>/<id>/`` (config.json, run.json, cout.txt, metrics.json).
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Sequence

# Sacred 0.8.7 imports pkg_resources, which setuptools deprecates loudly; the warning is not ours to fix.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from docopt import docopt  # noqa: E402
from sacred import Experiment  # noqa: E402
from sacred.arg_parser import get_config_updates  # noqa: E402
from sacred.config.config_files import HANDLER_BY_EXT, load_config_file  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402
from sacred.utils import apply_backspaces_and_linefeeds, recursive_update  # noqa: E402

from config.loader import Config, ConfigError, available_configs, load_config  # noqa: E402
from run import map_label, run  # noqa: E402
from utils.checkpoint import CheckpointError  # noqa: E402
from utils.logging import get_console_logger  # noqa: E402

DEFAULT_ENV_CONFIG = "sc2"
USAGE = ("python src/main.py --config=<alg> [--env-config=<env>] [Sacred options] [with key=value ...]\n"
         "  algs: {algs}\n  envs: {envs}")


def split_config_flags(args: Sequence[str]) -> tuple[str | None, str, list[str]]:
    """Take ``--config`` / ``--env-config`` (``--flag=value`` or ``--flag value``) out of ``args``.

    Returns ``(config_name or None, env_config_name, the remaining arguments for Sacred)``.
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
    return values.get("--config"), values.get("--env-config", DEFAULT_ENV_CONFIG), rest


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


def build_experiment(cfg: Config) -> Experiment:
    """The Sacred experiment for a validated config: its config, the FileStorageObserver, the main function."""
    ex = Experiment("dm2")
    ex.logger = get_console_logger()
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    resolved = cfg.to_dict()
    ex.add_config(resolved)
    ex.observers.append(FileStorageObserver(
        os.path.join(cfg.local_results_path, "sacred", map_label(cfg), cfg.name)))

    @ex.main
    def dm2_run(_run, _config, _log):
        # Sacred draws the seed when the config leaves it null; everything else is the validated config.
        return run(_run, Config({**resolved, "seed": _config["seed"]}), _log)

    return ex


def main(argv: Sequence[str] | None = None):
    """Parse, validate, then hand over to Sacred; returns Sacred's ``Run`` (None for help)."""
    argv = list(sys.argv if argv is None else argv)
    config_name, env_config_name, sacred_args = split_config_flags(argv[1:])
    _, sacred_usage, internal_usage = Experiment("dm2").get_usage()
    args = docopt(internal_usage, sacred_args, default_help=False)
    if args["help"] or args["--help"]:
        print(USAGE.format(algs=", ".join(available_configs("algs")), envs=", ".join(available_configs("envs"))))
        print(sacred_usage)
        return None
    if config_name is None:
        raise ConfigError("--config=<alg> is required. Available: " + ", ".join(available_configs("algs")) + ".")
    overrides = collect_updates(args["UPDATE"])
    cfg = load_config(config_name, env_config_name, overrides, overrides_label="the command-line `with` updates")
    sacred_args = canonical_sacred_args(sacred_args, args["UPDATE"], cfg)
    return build_experiment(cfg).run_commandline([argv[0], *sacred_args])


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, CheckpointError) as exc:
        print(f"dm2: error: {exc}", file=sys.stderr)
        sys.exit(2)

"""Layered, validated run configuration (PyMARL's layering, with every key declared exactly once).

Layers, later ones win:

1. ``default.yaml`` (framework and run keys) and ``learner_defaults.yaml`` (algorithm, model and
   learner keys) *declare* every key with its default and a comment giving its meaning. The two files
   share no key.
2. ``envs/<env-config>.yaml`` may only set declared keys. Its ``env_args`` mapping declares the
   environment's constructor arguments: the keys accepted under ``env_args`` and their defaults.
3. ``algs/<config>.yaml``: declared keys, plus ``map_overrides: {<map_name>: {key: value, ...}}``.
4. ``map_overrides[<map_name>]`` of the alg file, for the map the run will use (the final
   ``env_args.map_name``, i.e. after the layers 5 and 6).
5. Optionally a ``base`` layer: when resuming or evaluating a checkpoint, the run's saved config
   (``config/resume.py``), so the run continues with its own values rather than today's defaults.
6. The overrides passed in, e.g. Sacred's ``with`` updates, as nested mappings or dotted keys
   (``{"env_args.map_name": "3m"}``).

Every layer is checked against the declaration: an unknown key is an error with a "did you mean"; a
value must have its default's type (an int is accepted where the default is a float, an integral
float such as ``2e6`` where it is an int; a ``null`` default accepts any value). The final values are
then checked (positive integers, the backend enumeration, component names against the registries,
the map name, the checkpoint path), so a bad run fails before anything is created on disk.

YAML note: PyYAML follows YAML 1.1, where ``5e-4`` is a *string*. The loader reads such scientific
notation as a float, as every ML config author expects.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import yaml

CONFIG_DIR = Path(__file__).resolve().parent
DECLARATION_FILES = ("default.yaml", "learner_defaults.yaml")
ENV_ARGS_KEY = "env_args"
MAP_OVERRIDES_KEY = "map_overrides"
BASE_KEY = "base"

BACKENDS = ("auto", "sim", "starcraft2")
POSITIVE_INT_KEYS = ("batch_size_run", "test_nepisode", "test_interval", "log_interval", "t_max",
                     "save_model_interval", "replay_nepisode")
NON_NEGATIVE_INT_KEYS = ("load_step", "torch_threads")
# config key -> package whose REGISTRY must contain the key's value
REGISTRY_PACKAGES = {"env": "envs", "runner": "runners", "mac": "controllers", "learner": "learners",
                     "agent": "modules.agents", "critic": "modules.critics", "mixer": "modules.mixers",
                     "action_selector": "components.action_selectors",
                     "discriminator": "modules.discriminators"}
MAX_SEED = 2**32 - 1  # numpy's seeding limit


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the bad key or file and the valid choices."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-4`` / ``1e6`` (no dot) as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class Config:
    """Read-only attribute access to a resolved configuration.

    ``cfg.lr``, ``cfg.env_args["map_name"]``; nested mappings are read-only mappings and lists are
    tuples, so nothing downstream can change the run's settings. ``to_dict()`` returns a plain,
    mutable deep copy (for Sacred, checkpoints and JSON).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", _freeze(dict(data)))

    def __getattr__(self, key: str) -> Any:
        data = object.__getattribute__(self, "_data")
        try:
            return data[key]
        except KeyError:
            raise AttributeError(f"The config has no key {key!r}.{_suggestion(key, list(data))} Keys are "
                                 "declared in src/config/default.yaml and src/config/learner_defaults.yaml."
                                 ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"The config is read-only (tried to set {key!r}); change it in the YAML files "
                             "or with Sacred's `with key=value` on the command line.")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"The config is read-only (tried to delete {key!r}).")

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Config({self.to_dict()!r})"

    def __reduce__(self):
        return Config, (self.to_dict(),)

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy (dicts and lists)."""
        return _thaw(self._data)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return copy.deepcopy(value)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return copy.deepcopy(value)


def _display(path: Path) -> str:
    """A path as the user knows it: relative to the repository when inside it."""
    repo = CONFIG_DIR.parent.parent
    try:
        return str(path.resolve().relative_to(repo))
    except ValueError:
        return str(path)


def _suggestion(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise ConfigError(f"Config file {_display(path)} does not exist.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {_display(path)} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {_display(path)} must hold a mapping of keys to values, "
                          f"not a {type(data).__name__}.")
    return data


def available_configs(kind: str, config_dir: str | os.PathLike | None = None) -> list[str]:
    """Names usable with ``--config`` (``kind="algs"``) or ``--env-config`` (``kind="envs"``)."""
    if kind not in ("algs", "envs"):
        raise ValueError(f"kind must be 'algs' or 'envs', not {kind!r}")
    folder = Path(config_dir or CONFIG_DIR) / kind
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _named_config_path(kind: str, name: str, config_dir: Path) -> Path:
    flag = "--config" if kind == "algs" else "--env-config"
    choices = available_configs(kind, config_dir)
    if not isinstance(name, str) or name not in choices:
        raise ConfigError(f"Unknown {flag} {name!r}.{_suggestion(str(name), choices)} Available: "
                          f"{', '.join(choices) or '(none)'} (the YAML files in {_display(config_dir / kind)}).")
    return config_dir / kind / f"{name}.yaml"


def _nest(updates: Mapping[str, Any], label: str) -> dict[str, Any]:
    """Expand dotted keys (``env_args.map_name``) into nested dicts, merging with nested ones."""
    nested: dict[str, Any] = {}
    for key, value in updates.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"Config keys must be non-empty strings; got {key!r} in {label}.")
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{label} set {part!r} both to a value and to a mapping of sub-keys.")
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping):
            value = _nest(value, label)
            if isinstance(node.get(leaf), dict):
                node[leaf].update(value)
                continue
        node[leaf] = value
    return nested


def _dotted_paths(declared: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in declared.items():
        path = prefix + key
        paths.append(path)
        if isinstance(value, Mapping) and value:
            paths.extend(_dotted_paths(value, path + "."))
    return paths


def dotted_leaves(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty mapping is a leaf): how configs are compared key by key
    (a resumed run's against its checkpoint's, a study's `with` overrides against the declared keys)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            out.update(dotted_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unknown_key_error(path: str, declared_root: Mapping[str, Any], label: str) -> ConfigError:
    if path == f"{ENV_ARGS_KEY}.seed":
        return ConfigError(f"{label} set {path!r}: the environments are seeded from the top-level `seed` "
                           "(the test environment from a seed derived from it); set `seed` instead.")
    candidates = _dotted_paths(declared_root)
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf and c != path]
    hint = (" Did you mean " + " or ".join(repr(c) for c in same_leaf) + "?") if same_leaf \
        else _suggestion(path, candidates)
    parent = path.rsplit(".", 1)[0] if "." in path else None
    if parent is not None:
        node = declared_root
        for part in parent.split("."):
            node = node[part]
        where = f"Valid keys under {parent!r}: {', '.join(sorted(node))}."
    else:
        where = ("Every key is declared once, with its default and meaning, in src/config/default.yaml or "
                 "src/config/learner_defaults.yaml (env_args keys in the env config).")
    return ConfigError(f"Unknown config key {path!r} in {label}.{hint} {where}")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(value: Any, default: Any, path: str, label: str) -> Any:
    """Check ``value`` against the declared ``default``'s type; returns the value (ints widened to float,
    integral floats narrowed to int)."""
    if default is None:
        return copy.deepcopy(value)

    def fail(expected: str, hint: str = "") -> ConfigError:
        return ConfigError(f"Config key {path!r} ({label}) must be {expected}, like its default {default!r}; "
                           f"got {_type_name(value)} {value!r}.{hint}")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise fail("True or False", " Write True or False (capitalised) on the command line.")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise fail("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail("an integer")
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise fail("a string", f" Quote it on the command line: {path}='\"{value}\"'.")
    if isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(copy.deepcopy(value))
        raise fail("a list")
    if isinstance(default, Mapping):
        if isinstance(value, Mapping):
            return copy.deepcopy(dict(value))
        raise fail("a mapping")
    return copy.deepcopy(value)


def _apply(cfg: dict[str, Any], declared: Mapping[str, Any], updates: Mapping[str, Any], label: str,
           sources: dict[str, str], declared_root: Mapping[str, Any], prefix: str = "") -> None:
    """Write ``updates`` into ``cfg`` after checking each key and type against ``declared``."""
    for key, value in updates.items():
        path = prefix + key
        if key not in declared:
            raise _unknown_key_error(path, declared_root, label)
        default = declared[key]
        if isinstance(default, Mapping) and default:
            if not isinstance(value, Mapping):
                raise ConfigError(f"Config key {path!r} ({label}) must be a mapping of its sub-keys "
                                  f"({', '.join(sorted(default))}); got {_type_name(value)} {value!r}. "
                                  f"Set one sub-key with {path}.<key>=<value>.")
            _apply(cfg[key], default, value, label, sources, declared_root, path + ".")
        else:
            cfg[key] = _coerce(value, default, path, label)
            sources[path] = label


def _source(sources: Mapping[str, str], path: str) -> str:
    return sources.get(path, "the declared default")


def _check_registry(key: str, value: Any, sources: Mapping[str, str]) -> None:
    package = REGISTRY_PACKAGES[key]
    try:
        registry = importlib.import_module(package).REGISTRY
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot check {key}={value!r}: the package {package!r} has no REGISTRY "
                          f"({exc}).") from None
    choices = sorted(registry)
    if value == "":
        raise ConfigError(f"No {key} chosen: the alg config (algs/<name>.yaml) must set `{key}`; registered: "
                          f"{', '.join(choices)}.")
    if value not in registry:
        raise ConfigError(f"Unknown {key} {value!r} (set by {_source(sources, key)})."
                          f"{_suggestion(str(value), choices)} Registered in {package}.REGISTRY: {', '.join(choices)}.")


def _check_env_args(env_args: dict[str, Any], sources: Mapping[str, str]) -> None:
    """Resolve ``env_args.backend`` (``auto`` becomes the backend that will run, so the saved config
    records it) and check the map and arguments with that backend's own errors (they list the valid
    choices)."""
    import envs

    map_name = env_args["map_name"]
    try:
        backend = envs.resolve_backend(env_args["backend"], map_name)
        envs.check_max_concurrent_games(env_args.get("max_concurrent_games", 0))
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"env_args (backend set by {_source(sources, 'env_args.backend')}): {exc}") from None
    env_args["backend"] = backend
    if backend == "sim":
        from envs.sim.batched_env import check_smac_kwargs
        from envs.sim.maps import get_scenario

        try:
            get_scenario(map_name)
            check_smac_kwargs({k: v for k, v in env_args.items() if k not in envs.REGISTRY_ARGS})
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Invalid env_args for the embedded simulator (backend=sim): {exc}") from None


def _check_values(cfg: Mapping[str, Any], sources: Mapping[str, str], check_components: bool) -> None:
    for key in POSITIVE_INT_KEYS:
        if cfg[key] <= 0:
            raise ConfigError(f"{key} must be a positive integer; got {cfg[key]!r} "
                              f"(set by {_source(sources, key)}).")
    for key in NON_NEGATIVE_INT_KEYS:
        if cfg[key] < 0:
            raise ConfigError(f"{key} must be 0 or a positive integer; got {cfg[key]!r} "
                              f"(set by {_source(sources, key)}).")
    seed = cfg["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ConfigError(f"seed must be an integer in [0, {MAX_SEED}] or null (Sacred then draws one); "
                          f"got {seed!r} (set by {_source(sources, 'seed')}).")
    env_args = cfg[ENV_ARGS_KEY]
    backend = env_args.get("backend")
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"Unknown env_args.backend {backend!r} (set by {_source(sources, 'env_args.backend')})."
                          f"{_suggestion(str(backend), list(BACKENDS))} Valid backends: {', '.join(BACKENDS)} "
                          "(auto = real StarCraft II when SMAC and the game are installed, else the embedded "
                          "simulator).")
    if cfg["save_replay"] and not cfg["evaluate"]:
        raise ConfigError("save_replay=True writes replays of evaluation episodes; it needs evaluate=True "
                          "(usually with checkpoint_path=<models dir>).")
    if cfg["replay_nepisode"] > cfg["test_nepisode"]:
        raise ConfigError(f"replay_nepisode ({cfg['replay_nepisode']}) cannot exceed test_nepisode "
                          f"({cfg['test_nepisode']}): replays are taken from the evaluation episodes.")
    if cfg["checkpoint_path"]:
        from utils.checkpoint import CheckpointError, find_checkpoint

        try:
            find_checkpoint(cfg["checkpoint_path"], cfg["load_step"])
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from None
    if check_components:
        for key in REGISTRY_PACKAGES:
            if key in cfg:
                _check_registry(key, cfg[key], sources)
        if "backend" in env_args:
            _check_env_args(env_args, sources)
        _check_learner_settings(cfg)


def _check_learner_settings(cfg: dict[str, Any]) -> None:
    """The chosen learner's own check of the settings it needs (``check_config(cfg)``, if it has one)."""
    learner_cls = importlib.import_module(REGISTRY_PACKAGES["learner"]).REGISTRY[cfg["learner"]]
    check = getattr(learner_cls, "check_config", None)
    if check is not None:
        try:
            check(Config(cfg))
        except ValueError as exc:
            raise ConfigError(f"learner={cfg['learner']!r}: {exc}") from None


def _declarations(config_dir: Path) -> dict[str, Any]:
    declared: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for filename in DECLARATION_FILES:
        path = config_dir / filename
        for key, value in _read_yaml(path).items():
            if key in owner:
                raise ConfigError(f"Config key {key!r} is declared twice, in {owner[key]} and {_display(path)}; "
                                  "each key must be declared in exactly one of them.")
            owner[key] = _display(path)
            declared[key] = value
    if not isinstance(declared.get(ENV_ARGS_KEY), dict):
        raise ConfigError(f"{_display(config_dir / DECLARATION_FILES[0])} must declare `{ENV_ARGS_KEY}: {{}}` "
                          "(the env config declares its keys).")
    return declared


def _alg_files(config_name: str, config_dir: Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """``algs/<config_name>.yaml`` and the files it builds on, base first: ``(path, keys, map_overrides)``
    each. A file may name another with ``base: <alg>``; it then starts from that file's keys and per-map
    overrides and changes only what it sets (``ippo_gail`` builds on ``ippo``)."""
    chain: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
    name: Any = config_name
    while name is not None:
        path = _named_config_path("algs", name, config_dir)
        if any(path == seen for seen, _, _ in chain):
            raise ConfigError(f"{_display(path)}: `{BASE_KEY}` chain loops back to itself "
                              f"({' -> '.join(p.stem for p, _, _ in reversed(chain))} -> {path.stem}).")
        layer = _read_yaml(path)
        name = layer.pop(BASE_KEY, None)
        map_overrides = layer.pop(MAP_OVERRIDES_KEY, {}) or {}
        if not isinstance(map_overrides, dict):
            raise ConfigError(f"{MAP_OVERRIDES_KEY} in {_display(path)} must map map names to mappings of keys.")
        chain.append((path, layer, map_overrides))
    return chain[::-1]


def load_config(config_name: str, env_config_name: str = "sc2", overrides: Mapping[str, Any] | None = None,
                *, overrides_label: str = "the overrides", config_dir: str | os.PathLike | None = None,
                check_components: bool = True, base: Mapping[str, Any] | None = None,
                base_label: str = "the base config") -> Config:
    """Resolve and validate a run configuration.

    Args:
        config_name: the ``--config`` name, a file ``algs/<config_name>.yaml``.
        env_config_name: the ``--env-config`` name, a file ``envs/<env_config_name>.yaml``.
        overrides: last layer (Sacred ``with`` updates), nested mappings or dotted keys.
        overrides_label: how error messages name the overrides (e.g. "command-line `with` updates").
        config_dir: folder holding the YAML files (default: this package's folder).
        check_components: also check ``env``/``runner``/``mac``/``learner`` against their registries and
            the map name against the environment (imports those packages).
        base: a layer applied after the alg file and its ``map_overrides`` and before ``overrides`` (a
            resumed run's saved config: it replaces every value the files set); checked like the others.
        base_label: how error messages name ``base``.

    Returns:
        The read-only :class:`Config`. ``name`` defaults to ``config_name``; ``map_overrides`` is consumed.

    Raises:
        ConfigError: unknown config names or keys, wrong types, invalid values.
    """
    config_dir = Path(config_dir or CONFIG_DIR)
    _named_config_path("algs", config_name, config_dir)  # an unknown --config is the first error
    env_path = _named_config_path("envs", env_config_name, config_dir)

    declared = _declarations(config_dir)
    cfg = copy.deepcopy(declared)
    sources: dict[str, str] = {}

    env_layer = _nest(_read_yaml(env_path), _display(env_path))
    env_args_declared = env_layer.pop(ENV_ARGS_KEY, {})
    if not isinstance(env_args_declared, dict):
        raise ConfigError(f"{ENV_ARGS_KEY} in {_display(env_path)} must be a mapping of the environment's "
                          f"constructor arguments to their defaults.")
    declared[ENV_ARGS_KEY] = env_args_declared
    cfg[ENV_ARGS_KEY] = copy.deepcopy(env_args_declared)
    _apply(cfg, declared, env_layer, _display(env_path), sources, declared)

    alg_files = _alg_files(config_name, config_dir)
    for alg_path, alg_layer, _ in alg_files:
        _apply(cfg, declared, _nest(alg_layer, _display(alg_path)), _display(alg_path), sources, declared)
    base_layer = _nest(base or {}, base_label)
    user_layer = _nest(overrides or {}, overrides_label)
    final_map = cfg[ENV_ARGS_KEY].get("map_name")
    for layer in (base_layer, user_layer):
        layer_env_args = layer.get(ENV_ARGS_KEY)
        if isinstance(layer_env_args, dict) and "map_name" in layer_env_args:
            final_map = layer_env_args["map_name"]
    for alg_path, _, map_overrides in alg_files:
        alg_label = _display(alg_path)
        for map_name, layer in map_overrides.items():
            label = f"{MAP_OVERRIDES_KEY}[{map_name!r}] in {alg_label}"
            if not isinstance(layer, Mapping):
                raise ConfigError(f"{label} must be a mapping of config keys to values, got {layer!r}.")
            layer = _nest(layer, label)
            if "map_name" in layer.get(ENV_ARGS_KEY, {}):
                raise ConfigError(f"{label} cannot set env_args.map_name.")
            # Validate every map's overrides (typos surface whichever map is run) on a scratch copy.
            _apply(copy.deepcopy(cfg), declared, layer, label, {}, declared)
            if map_name == final_map:
                _apply(cfg, declared, layer, label, sources, declared)
    _apply(cfg, declared, base_layer, base_label, sources, declared)
    _apply(cfg, declared, user_layer, overrides_label, sources, declared)

    if not cfg["name"]:
        cfg["name"] = config_name
    _check_values(cfg, sources, check_components)
    return Config(cfg)

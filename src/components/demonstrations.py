"""Demonstration datasets for DM²: the expert observations each agent's discriminator imitates.

A dataset holds, for every *slot* ``i`` (expert agent ``i``, imitated by agent ``i`` of the learning
team), ``E`` episodes of that expert's observations, padded to ``T`` steps. Shapes (N = n_agents,
E = episodes per slot, T = the longest recorded episode, D = obs_dim):

* ``obs`` float32 ``[N, E, T, D]``: slot ``i``'s observation at step ``t`` of its ``e``-th episode, i.e.
  the observation the expert *acted on* at transition ``t`` (positions ``0 .. lengths[i, e] - 1``; the
  observation after the last transition is not stored); zeros after the episode's end. A dead unit's
  observation is all zeros, exactly as the environment reports it (see :meth:`Demonstrations.step_mask`).
* ``actions`` int64 ``[N, E, T]``: the action the expert took at that step (0 after the end). Kept for
  state-action discriminators and behaviour cloning; DM²'s default discriminator ignores it.
* ``lengths`` int64 ``[N, E]``: the number of steps (transitions) of each episode, ``1 <= length <= T``.
* ``won`` bool ``[N, E]``: whether the episode was a won battle.
* ``rollout`` int64 ``[N, E]`` and ``episode`` int64 ``[N, E]``: where slot ``i``'s ``e``-th episode came
  from: episode number ``episode[i, e]`` (0-based, in recording order) of rollout ``rollout[i, e]``,
  described by ``meta["rollouts"][rollout[i, e]]`` (which team played it, seed, sampling). These make the
  four ablation styles' episode-to-agent mappings checkable (docs/demonstrations.md).
* ``meta``: a JSON-serialisable dict, see :data:`META_KEYS` and docs/demonstrations.md.

File format: a NumPy ``.npz`` archive (``np.savez_compressed``) with one member per array above, plus
``meta`` (a 0-d unicode array holding the metadata as a JSON string) and ``checksum`` (0-d unicode, the
SHA-256 of every array's dtype, shape and bytes and of the metadata JSON). No pickles: it loads with
``np.load(path, allow_pickle=False)`` anywhere, without torch or a GPU. Zip CRCs catch most corruption on
read; the stored checksum catches the rest. Files are written atomically and never overwritten.

This module depends on NumPy only.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

FORMAT = "dm2-demonstrations"
VERSION = 1

#: The ``env_args`` flags that change what an observation contains (SMAC's ``StarCraft2Env`` arguments),
#: with SMAC's defaults (used when an ``env_args`` mapping does not set one).
OBS_FLAGS: dict[str, bool] = {
    "obs_all_health": True, "obs_own_health": True, "obs_last_action": False, "obs_pathing_grid": False,
    "obs_terrain_height": False, "obs_timestep_number": False,
}

STYLES = ("dm2", "non_concurrent", "concurrent_not_cotrained", "neither")
SAMPLING_MODES = ("stochastic", "greedy", "epsilon")

#: Metadata keys every dataset has (see docs/demonstrations.md for each one's meaning).
META_KEYS = ("format", "version", "map_name", "n_agents", "n_actions", "obs_dim", "episode_limit", "obs_flags",
             "backend", "style", "n_episodes", "sampling", "seed", "slots", "rollouts", "win_rate",
             "target_win_rate", "created", "dm2_commit")

ARRAYS = ("obs", "actions", "lengths", "won", "rollout", "episode")
_DTYPES = {"obs": np.float32, "actions": np.int64, "lengths": np.int64, "won": np.bool_, "rollout": np.int64,
           "episode": np.int64}
_NPZ_MAGIC = b"PK\x03\x04"


class DemonstrationError(ValueError):
    """Any problem with a demonstrations file or dataset; the message names the file, the bad value and
    what to do about it."""


def effective_obs_flags(env_args: Mapping[str, Any]) -> dict[str, bool]:
    """The observation flags ``env_args`` gives, with SMAC's defaults for unset ones and SMAC's rule that
    ``obs_all_health`` forces ``obs_own_health``."""
    flags = {k: bool(env_args.get(k, default)) for k, default in OBS_FLAGS.items()}
    if flags["obs_all_health"]:
        flags["obs_own_health"] = True
    return flags


def _where(path: str | None) -> str:
    return f"demonstrations file {path}" if path else "demonstrations dataset"


@dataclass
class Demonstrations:
    """Expert observations per slot (see the module docstring for every field's shape and meaning).

    ``path`` is the file it was loaded from or saved to (for messages; not stored in the file).
    """

    obs: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    won: np.ndarray
    meta: dict
    rollout: np.ndarray | None = None
    episode: np.ndarray | None = None
    path: str | None = field(default=None, compare=False)

    def __post_init__(self):
        n_e = tuple(np.shape(self.lengths))
        if self.rollout is None:
            self.rollout = np.zeros(n_e, dtype=np.int64)
        if self.episode is None:
            self.episode = np.broadcast_to(np.arange(n_e[-1] if n_e else 0, dtype=np.int64), n_e).copy()

    # ---- sizes ------------------------------------------------------------------------------------------
    @property
    def n_agents(self) -> int:
        """N, the number of slots (expert agents)."""
        return int(self.obs.shape[0])

    @property
    def n_episodes(self) -> int:
        """E, the number of episodes per slot."""
        return int(self.obs.shape[1])

    @property
    def max_t(self) -> int:
        """T, the padded episode length."""
        return int(self.obs.shape[2])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[3])

    @property
    def map_name(self) -> str:
        return self.meta["map_name"]

    # ---- views the learner needs ---------------------------------------------------------------------------
    def step_mask(self, exclude_dead: bool = False) -> np.ndarray:
        """bool ``[N, E, T]``: true at the recorded steps (``t < lengths``); with ``exclude_dead`` also false
        where the observation is all zeros (the expert's unit was dead)."""
        mask = np.arange(self.max_t)[None, None, :] < self.lengths[:, :, None]
        if exclude_dead:
            mask &= np.any(self.obs != 0, axis=-1)
        return mask

    def slot_observations(self, slot: int, exclude_dead: bool = False) -> np.ndarray:
        """float32 ``[M, D]``: every recorded observation of ``slot`` (episode-major, step order)."""
        return self.obs[slot][self.step_mask(exclude_dead)[slot]]

    def win_rate(self) -> float:
        """Fraction of the stored episodes (over all slots) that were won."""
        return float(self.won.mean()) if self.won.size else float("nan")

    # ---- checks -------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`DemonstrationError` unless every array has its dtype and a consistent shape and the
        metadata is complete and agrees with the arrays."""
        where = _where(self.path)
        for name in ARRAYS:
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != _DTYPES[name]:
                got = f"dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
                raise DemonstrationError(f"{where}: array {name!r} must be a {np.dtype(_DTYPES[name]).name} numpy "
                                         f"array, got {got}. Build datasets with the recording tools "
                                         "(python src/demos.py record / build).")
        if self.obs.ndim != 4:
            raise DemonstrationError(f"{where}: 'obs' must be [n_agents, n_episodes, T, obs_dim], got shape "
                                     f"{self.obs.shape}. The file is damaged or not a dm2 dataset; record it again.")
        n, e, t, d = self.obs.shape
        expected = {"actions": (n, e, t), "lengths": (n, e), "won": (n, e), "rollout": (n, e), "episode": (n, e)}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise DemonstrationError(f"{where}: array {name!r} has shape {getattr(self, name).shape} but 'obs' "
                                         f"{self.obs.shape} implies {shape}. The file is inconsistent (damaged or "
                                         "edited); record it again.")
        if not isinstance(self.meta, dict):
            raise DemonstrationError(f"{where}: metadata must be a dict, got {type(self.meta).__name__}.")
        missing = [k for k in META_KEYS if k not in self.meta]
        if missing:
            raise DemonstrationError(f"{where}: metadata lacks {', '.join(missing)}. Record the dataset with "
                                     "python src/demos.py (or components.demo_recording).")
        if self.meta["format"] != FORMAT:
            raise DemonstrationError(f"{where}: metadata format is {self.meta['format']!r}, not {FORMAT!r}.")
        for key, value in (("n_agents", n), ("obs_dim", d), ("n_episodes", e)):
            if self.meta[key] != value:
                raise DemonstrationError(f"{where}: metadata says {key}={self.meta[key]} but the arrays have "
                                         f"{key}={value}. The file is inconsistent; record it again.")
        if e and t and (self.lengths.min() < 1 or self.lengths.max() > t):
            raise DemonstrationError(f"{where}: episode lengths must be in [1, {t}] (the padded length), got "
                                     f"[{self.lengths.min()}, {self.lengths.max()}]. Record the dataset again.")
        if self.lengths.size and self.lengths.max() > self.meta["episode_limit"]:
            raise DemonstrationError(f"{where}: an episode has {self.lengths.max()} steps, more than the map's "
                                     f"episode_limit={self.meta['episode_limit']}.")
        if not np.isfinite(self.obs).all():
            raise DemonstrationError(f"{where}: 'obs' holds NaN or infinite values; record the dataset again.")
        pad = ~self.step_mask()
        if self.obs[pad].any() or self.actions[pad].any():
            raise DemonstrationError(f"{where}: 'obs'/'actions' are not zero after the episodes' ends "
                                     "(t >= lengths); the file is inconsistent, record it again.")
        n_actions = self.meta["n_actions"]
        if self.actions.size and (self.actions.min() < 0 or self.actions.max() >= n_actions):
            raise DemonstrationError(f"{where}: actions must be in [0, {n_actions}), got "
                                     f"[{self.actions.min()}, {self.actions.max()}].")
        n_rollouts = len(self.meta["rollouts"])
        if self.rollout.size and (self.rollout.min() < 0 or self.rollout.max() >= max(n_rollouts, 1)):
            raise DemonstrationError(f"{where}: 'rollout' indices must be in [0, {n_rollouts}) (entries of "
                                     f"meta['rollouts']), got [{self.rollout.min()}, {self.rollout.max()}].")
        if len(self.meta["slots"]) != n:
            raise DemonstrationError(f"{where}: meta['slots'] describes {len(self.meta['slots'])} slots but the "
                                     f"arrays have n_agents={n}.")

    def check_compatible(self, map_name: str, env_info: Mapping[str, Any], env_args: Mapping[str, Any]) -> None:
        """Raise :class:`DemonstrationError` unless these demonstrations fit a run on ``map_name`` whose
        environment reports ``env_info`` (``n_agents``, ``obs_shape``) and was built from ``env_args``
        (the observation flags of :data:`OBS_FLAGS`; unset ones take SMAC's defaults). Each message
        names both values."""
        where = _where(self.path)
        fix = ("Use demonstrations recorded with the same settings (python src/demos.py record / pipeline on "
               "a checkpoint of this map), or change the run's settings to the recording's.")
        meta = self.meta
        if map_name != meta["map_name"]:
            raise DemonstrationError(f"{where}: demonstrations recorded on map {meta['map_name']!r} but this run "
                                     f"uses map {map_name!r}. {fix}")
        for key, ours in (("n_agents", "n_agents"), ("obs_dim", "obs_shape")):
            if int(env_info[ours]) != int(meta[key]):
                raise DemonstrationError(f"{where}: demonstrations have {key}={meta[key]} but this run's environment "
                                         f"has {ours}={env_info[ours]} (map {map_name!r}). {fix}")
        run_flags = effective_obs_flags(env_args)
        demo_flags = effective_obs_flags(meta["obs_flags"])
        for key in OBS_FLAGS:
            if run_flags[key] != demo_flags[key]:
                raise DemonstrationError(f"{where}: demonstrations recorded with env_args.{key}={demo_flags[key]} "
                                         f"but this run uses env_args.{key}={run_flags[key]}; the observations "
                                         f"would not mean the same. {fix}")


def make_demonstrations(obs: np.ndarray, lengths: np.ndarray, *, map_name: str, n_actions: int, episode_limit: int,
                        actions: np.ndarray | None = None, won: np.ndarray | None = None,
                        env_args: Mapping[str, Any] | None = None, backend: str = "sim", style: str = "custom",
                        **meta: Any) -> Demonstrations:
    """A dataset from arrays made elsewhere (tests, conversions): ``obs [N, E, T, D]`` and ``lengths [N, E]``
    (steps at ``t >= lengths`` are zeroed), optional ``actions [N, E, T]`` and ``won [N, E]``. The metadata
    gets every required field (sources unknown: ``slots`` without checkpoints); ``meta`` adds or replaces
    fields."""
    obs = np.array(obs, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    n, e, t, d = obs.shape
    valid = np.arange(t)[None, None, :] < lengths[:, :, None]
    obs *= valid[..., None]
    actions = np.zeros((n, e, t), np.int64) if actions is None else np.asarray(actions, dtype=np.int64) * valid
    won = np.zeros((n, e), bool) if won is None else np.asarray(won, dtype=bool)
    slots = [{"checkpoint": None, "run": None, "t_env": None, "agent": i, "learner": None, "greedy_win_rate": None}
             for i in range(n)]
    base = {"format": FORMAT, "version": VERSION, "map_name": map_name, "n_agents": n, "n_actions": int(n_actions),
            "obs_dim": d, "episode_limit": int(episode_limit), "obs_flags": effective_obs_flags(env_args or {}),
            "backend": backend, "style": style, "n_episodes": e, "sampling": {"mode": None, "epsilon": None},
            "seed": None, "slots": slots, "rollouts": [{"team": slots, "n_episodes": e}],
            "win_rate": {"recorded": float(won.mean()) if won.size else None,
                         "recorded_per_slot": [float(w) for w in won.mean(axis=1)] if won.size else [None] * n,
                         "greedy_eval": [None] * n},
            "target_win_rate": None, "created": None, "dm2_commit": None}
    base.update(meta)
    demos = Demonstrations(obs=obs, actions=actions, lengths=lengths, won=won, meta=base)
    demos.validate()
    return demos


# ---- file I/O ------------------------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def _meta_json(meta: dict, path: str | None) -> str:
    try:
        return json.dumps(meta, sort_keys=True, default=_json_default, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise DemonstrationError(f"{_where(path)}: metadata cannot be stored as JSON ({exc}).") from None


def _arrays_hash(arrays: Mapping[str, np.ndarray]):
    digest = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(memoryview(a).cast("B"))
    return digest


def _checksum(arrays: Mapping[str, np.ndarray], meta_json: str) -> str:
    digest = _arrays_hash(arrays)
    digest.update(meta_json.encode())
    return digest.hexdigest()


def episodes_digest(demos: Demonstrations) -> str:
    """SHA-256 of the dataset's arrays only (observations, actions, lengths, wins), not its metadata: equal for
    the same episodes recorded at another time, path or commit (the stored checksum covers the metadata too),
    so datasets made on two machines can be compared."""
    return _arrays_hash({name: getattr(demos, name) for name in ARRAYS}).hexdigest()


def save_demonstrations(path: str, demos: Demonstrations) -> str:
    """Write ``demos`` to ``path`` (an ``.npz`` archive, see the module docstring) and return ``path``.

    The dataset is validated first. The file is written to a temporary file in the same directory, synced,
    and moved into place only if ``path`` does not exist: an existing file is never overwritten
    (:class:`DemonstrationError`). Missing parent directories are created.
    """
    path = os.fspath(path)
    if os.path.exists(path):
        raise DemonstrationError(f"{path} already exists; refusing to overwrite it. Choose another output path "
                                 "or delete the old file yourself.")
    demos.validate()
    meta_json = _meta_json(demos.meta, path)
    arrays = {name: getattr(demos, name) for name in ARRAYS}
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(meta_json), checksum=np.array(_checksum(arrays, meta_json)),
                                **arrays)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if path appeared meanwhile
        except FileExistsError:
            raise DemonstrationError(f"{path} already exists (created while this dataset was being written); "
                                     "refusing to overwrite it.") from None
        except OSError:  # file systems without hard links
            if os.path.exists(path):
                raise DemonstrationError(f"{path} already exists; refusing to overwrite it.") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    demos.path = path
    return path


def _read_member(archive, name: str, path: str) -> np.ndarray:
    try:
        return archive[name]
    except KeyError:
        raise DemonstrationError(f"{path} is a NumPy archive but lacks the {name!r} array, so it is not a dm2 "
                                 f"demonstrations file (members: {', '.join(archive.files)}). Record one with "
                                 "python src/demos.py record.") from None


def stored_checksum(path: str) -> str:
    """The content checksum stored in the demonstrations file ``path`` (SHA-256 of its arrays and metadata,
    as :func:`save_demonstrations` wrote it), read without loading the arrays."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return str(archive["checksum"][()])
    except FileNotFoundError:
        raise DemonstrationError(f"{path} does not exist.") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails in many ways
        raise DemonstrationError(f"{path} is not a dm2 demonstrations file ({type(exc).__name__}: {exc}).") from None


def load_demonstrations(path: str) -> Demonstrations:
    """Read a dataset written by :func:`save_demonstrations`; every array is read and checked.

    Raises :class:`DemonstrationError` for a missing file, a file that is not a dm2 dataset, a newer
    format version, a truncated or corrupt file (zip CRC, decompression or checksum failure) and
    inconsistent shapes or metadata.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DemonstrationError(f"Demonstrations file {path} does not exist (working directory {os.getcwd()}). "
                                 "Record one with python src/demos.py record (or pipeline).")
    if os.path.isdir(path):
        raise DemonstrationError(f"Demonstrations path {path} is a directory; give the .npz file inside it.")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _NPZ_MAGIC:
        raise DemonstrationError(f"{path} is not a demonstrations file (not a NumPy .npz archive); expected a "
                                 "file written by python src/demos.py.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta_raw = _read_member(archive, "meta", path)
            checksum = _read_member(archive, "checksum", path)
            meta_json = str(meta_raw[()])
            try:
                meta = json.loads(meta_json)
            except json.JSONDecodeError as exc:
                raise DemonstrationError(f"{path}: its metadata is not valid JSON ({exc}); the file is corrupt, "
                                         "record it again.") from None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise DemonstrationError(f"{path} is a NumPy archive with metadata, but not a dm2 demonstrations "
                                         f"file (format {meta.get('format') if isinstance(meta, dict) else meta!r},"
                                         f" expected {FORMAT!r}).")
            version = meta.get("version")
            if not isinstance(version, int) or version > VERSION:
                raise DemonstrationError(f"{path} has format version {version!r}, newer than this code reads "
                                         f"(version {VERSION}); update dm2 to read it.")
            arrays = {name: _read_member(archive, name, path) for name in ARRAYS}
    except DemonstrationError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, UnicodeDecodeError, KeyError,
            NotImplementedError, IndexError) as exc:
        raise DemonstrationError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); it cannot be "
                                 "read. Record the dataset again (or restore it from a copy).") from None
    if str(checksum[()]) != _checksum(arrays, meta_json):
        raise DemonstrationError(f"{path} is corrupt: its contents do not match the checksum stored when it was "
                                 "written. Record the dataset again (or restore it from a copy).")
    demos = Demonstrations(meta=meta, path=path, **arrays)
    demos.validate()
    return demos


def _rate(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def describe(demos: Demonstrations) -> str:
    """A few human-readable lines about a dataset (for the CLI's ``show``)."""
    m = demos.meta
    wr, sampling = m["win_rate"], m["sampling"]
    lines = [f"{demos.path or '(unsaved)'}: {m['style']} demonstrations on {m['map_name']} ({m['backend']})",
             f"  {demos.n_agents} slots x {demos.n_episodes} episodes, padded to {demos.max_t} steps, obs_dim "
             f"{demos.obs_dim}; mean length {demos.lengths.mean():.1f}",
             f"  sampling {sampling.get('mode')}"
             + (f" (epsilon {sampling['epsilon']})" if sampling.get("epsilon") is not None else "")
             + f", seed {m['seed']}, target win rate {m['target_win_rate']}",
             f"  win rate of the recorded episodes {_rate(wr.get('recorded'))}; greedy evaluation of the sources "
             + ", ".join(_rate(x) for x in wr.get("greedy_eval", []))]
    for i, slot in enumerate(m["slots"]):
        lines.append(f"  slot {i}: agent {slot.get('agent')} of {slot.get('checkpoint')} (t_env {slot.get('t_env')})")
    lines.append(f"  created {m['created']}, dm2 commit {m['dm2_commit']}")
    lines.append(f"  episodes digest (arrays only, comparable across machines) {episodes_digest(demos)}")
    return "\n".join(lines)

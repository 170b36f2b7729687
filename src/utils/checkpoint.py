"""Checkpoint files: one torch file per saved step, written atomically, read back with clear errors.

Layout (PyMARL's): ``<local_results_path>/models/<unique_token>/<t_env>/checkpoint.pt``. A checkpoint is
a dict holding ``format`` / ``version`` plus whatever the training loop saves (see ``run.py``:
learner state, environment states, RNG states, counters, logger history, config). Files are pickles
(``torch.save``): load only checkpoints you trust.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dm2-checkpoint"
VERSION = 1
EXPECTED = (f"a directory written by save_model=True (results/models/<token>/, holding <t_env>/{CHECKPOINT_FILE} "
            f"step directories), one of its <t_env> directories, or a {CHECKPOINT_FILE} file")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not a dm2 checkpoint; the message names the path."""


def check_state_keys(state: dict[str, Any], expected: set[str], owner: str, hint: str) -> None:
    """Raise a ``ValueError`` naming both key sets unless ``state`` has exactly the ``expected`` keys.

    ``owner`` names what is being restored ("IPPO learner"); ``hint`` says what likely differs."""
    if set(state) != expected:
        raise ValueError(f"{owner} state has keys {sorted(state)}, expected {sorted(expected)} ({hint})")


def capture_rng_state() -> dict[str, Any]:
    """The global random states of python, numpy and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored when both sides have CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["torch_cuda"]])


def save_checkpoint(step_dir: str, payload: dict[str, Any]) -> str:
    """Write ``payload`` to ``step_dir/checkpoint.pt`` atomically (temp file, fsync, rename).

    ``step_dir`` must not exist yet: an existing checkpoint is never overwritten. Returns the file path.
    """
    try:
        os.makedirs(step_dir, exist_ok=False)
    except FileExistsError:
        raise CheckpointError(f"Checkpoint directory {step_dir} already exists; refusing to overwrite it.") from None
    path = os.path.join(step_dir, CHECKPOINT_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _step_dirs(directory: str) -> dict[int, str]:
    steps = {}
    for name in os.listdir(directory):
        file = os.path.join(directory, name, CHECKPOINT_FILE)
        if name.isdigit() and os.path.isfile(file):
            steps[int(name)] = file
    return steps


def _verify_archive(path: str) -> None:
    """Cheap integrity check: a torch file is a zip archive whose directory (at its end) must be readable."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path} is corrupt or truncated ({exc}); expected a {CHECKPOINT_FILE} "
                              "written by save_model=True. Pick another step with load_step.") from None
    if not any(name.endswith("data.pkl") for name in names):
        raise CheckpointError(f"Checkpoint {path} is a zip archive but not a torch checkpoint (no data.pkl); "
                              f"expected a {CHECKPOINT_FILE} written by save_model=True.")


def find_checkpoint(checkpoint_path: str, load_step: int = 0) -> str:
    """The checkpoint file that ``checkpoint_path`` + ``load_step`` name (PyMARL's rules).

    ``checkpoint_path`` is a file, a step directory holding ``checkpoint.pt``, or a models directory of
    ``<t_env>`` step directories; there ``load_step=0`` picks the latest step and any other value the
    step closest to it. The chosen file must look like a readable torch archive.
    """
    if not os.path.exists(checkpoint_path):
        raise CheckpointError(f"checkpoint_path {checkpoint_path!r} does not exist (working directory "
                              f"{os.getcwd()}). Expected {EXPECTED}.")
    if os.path.isfile(checkpoint_path):
        path = checkpoint_path
    elif os.path.isfile(os.path.join(checkpoint_path, CHECKPOINT_FILE)):
        path = os.path.join(checkpoint_path, CHECKPOINT_FILE)
    else:
        steps = _step_dirs(checkpoint_path)
        if not steps:
            raise CheckpointError(f"checkpoint_path {checkpoint_path!r} holds no checkpoint (no {CHECKPOINT_FILE}, "
                                  f"no <t_env>/{CHECKPOINT_FILE}). Expected {EXPECTED}.")
        step = max(steps) if load_step == 0 else min(steps, key=lambda s: (abs(s - load_step), s))
        path = steps[step]
    _verify_archive(path)
    return path


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint file written by :func:`save_checkpoint` (tensors on the CPU)."""
    try:
        with open(path, "rb") as f:
            payload = torch.load(f, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist. Expected {EXPECTED}.") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, AttributeError,
            ModuleNotFoundError) as exc:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or "
                              f"was not written by this code. Expected {EXPECTED}.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a dm2 checkpoint (no format={FORMAT!r} marker). "
                              f"Expected {EXPECTED}.")
    if payload["version"] != VERSION:
        raise CheckpointError(f"Checkpoint {path} has format version {payload['version']}; this code reads "
                              f"version {VERSION}.")
    return payload

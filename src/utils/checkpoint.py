"""Checkpoint files: one torch file per saved step, written atomically, verified by a checksum on load.

Layout (PyMARL's): ``<local_results_path>/models/<unique_token>/<t_env>/checkpoint.pt``. A checkpoint is
a dict holding ``format`` / ``version`` plus whatever the training loop saves (see ``run.py``:
learner state, environment states, RNG states, counters, logger history, config). Files are pickles
(``torch.save``): load only checkpoints you trust.

Integrity. A ``torch.save`` file is a zip archive; :func:`save_checkpoint` serialises the payload in memory
and stores the SHA-256 of every byte before it in the archive's comment, the last field of the file::

    <torch.save zip archive ... end record with comment length 75> dm2-sha256:<64 hex digits>

Every byte is covered: the digest hashes everything up to the comment (the end record's comment length
included), and a change inside the comment makes it malformed or a different digest. Readers read the whole
file once, check the digest on those bytes and only then unpickle the same bytes, so nothing of a damaged
file is unpickled and the file cannot change between check and load. :func:`find_checkpoint` runs the same
check, so a run names a damaged checkpoint before it writes anything. A damaged file is a
:class:`CheckpointError` naming it, saying what is wrong and naming the nearest earlier checkpoint of the
same run that passes the check (``checkpoint_path`` + ``load_step`` to resume from it). The price: a
checkpoint is held in memory once more while it is saved or loaded, and hashing takes about 0.1 s per
100 MB at save, in :func:`find_checkpoint` and at load.

Why a footer in the same file, not a sidecar ``checkpoint.pt.sha256``: the digest cannot be separated from
its data (a copied ``checkpoint.pt`` keeps it; a half-copied step directory cannot pair a file with another
file's digest), the write stays one atomic rename (a sidecar needs two files, and a crash between them leaves
a checkpoint that looks unverifiable or damaged), and the file stays a standard zip archive that
``torch.load``, ``zipfile`` and ``unzip`` read unchanged. A header before the archive would break all three.

Format version 1 (written before checksums) has no footer. Such files still load, with an
:class:`UnverifiedCheckpointWarning`: refusing them would throw away runs without making them safer, since
they never had a digest. Damage that breaks their zip structure is still an error; damage inside them cannot
be detected. A version 2 payload without its footer (stripped by a tool, or damaged) is refused.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import re
import warnings
import zipfile
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "dm2-checkpoint"
VERSION = 2  # 2: SHA-256 footer; 1: none (still readable, unverified)
UNVERIFIED_VERSION = 1
EXPECTED = (f"a directory written by save_model=True (results/models/<token>/, holding <t_env>/{CHECKPOINT_FILE} "
            f"step directories), one of its <t_env> directories, or a {CHECKPOINT_FILE} file")
CHECKSUM_PREFIX = b"dm2-sha256:"
FOOTER_SIZE = len(CHECKSUM_PREFIX) + 64  # the zip comment: prefix + hex SHA-256
ZIP_END_RECORD = b"PK\x05\x06"  # signature of the zip end record; its last 2 bytes are the comment length
ZIP_END_RECORD_SIZE = 22


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, unreadable or not a dm2 checkpoint; the message names the path."""


class UnverifiedCheckpointWarning(UserWarning):
    """A format version 1 checkpoint was loaded: it has no checksum, so damage inside it goes unnoticed."""


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
    """Write ``payload`` to ``step_dir/checkpoint.pt`` with its checksum footer, atomically (temp file,
    fsync, rename, fsync of the directory).

    ``step_dir`` must not exist yet: an existing checkpoint is never overwritten. Returns the file path.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    archive = buffer.getbuffer()
    if archive[-ZIP_END_RECORD_SIZE:-ZIP_END_RECORD_SIZE + 4] != ZIP_END_RECORD or archive[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its archive with a comment-free zip end record; "
                           "cannot attach the checkpoint's checksum.")
    comment_size = FOOTER_SIZE.to_bytes(2, "little")  # the end record's comment length, announcing the footer
    digest = hashlib.sha256(archive[:-2])
    digest.update(comment_size)
    try:
        os.makedirs(step_dir, exist_ok=False)
    except FileExistsError:
        raise CheckpointError(f"Checkpoint directory {step_dir} already exists; refusing to overwrite it.") from None
    path = os.path.join(step_dir, CHECKPOINT_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.writelines((archive[:-2], comment_size, CHECKSUM_PREFIX + digest.hexdigest().encode()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    directory = os.open(step_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path


def _step_dirs(directory: str) -> dict[int, str]:
    steps = {}
    for name in os.listdir(directory):
        file = os.path.join(directory, name, CHECKPOINT_FILE)
        if name.isdigit() and os.path.isfile(file):
            steps[int(name)] = file
    return steps


def _recorded_digest(data: bytes) -> str | None:
    """The hex SHA-256 in a well-formed checksum footer at the end of ``data``, else ``None``."""
    footer = data[-FOOTER_SIZE:]
    digest = footer[len(CHECKSUM_PREFIX):]
    if footer.startswith(CHECKSUM_PREFIX) and re.fullmatch(rb"[0-9a-f]{64}", digest):
        return digest.decode()
    return None


def _previous_checkpoint(path: str) -> str:
    """A sentence naming the nearest earlier checkpoint of ``path``'s run that passes the integrity check
    (absolute paths), with the ``checkpoint_path`` / ``load_step`` that resume from it, or saying there is
    none; empty when ``path`` is not in a ``<t_env>`` step directory."""
    step_dir = os.path.dirname(os.path.abspath(path))
    step, models_dir = os.path.basename(step_dir), os.path.dirname(step_dir)
    if not step.isdigit():
        return ""
    earlier = {t: file for t, file in _step_dirs(models_dir).items() if t < int(step)}
    for t_env in sorted(earlier, reverse=True):
        try:
            _, verified = _read_verified(earlier[t_env], suggest=False)
        except CheckpointError:
            continue
        unverified = "" if verified else f" (format version {UNVERIFIED_VERSION}: no checksum, structure checked only)"
        return (f" The previous intact checkpoint of this run is {earlier[t_env]} (t_env {t_env}){unverified}: "
                f"resume from it with checkpoint_path={models_dir} load_step={t_env}.")
    if earlier:
        return f" No earlier checkpoint of this run in {models_dir} is intact either."
    return f" This run has no earlier checkpoint in {models_dir} to fall back to."


def _damaged(path: str, what: str, suggest: bool) -> CheckpointError:
    return CheckpointError(f"Checkpoint {path} {what}; nothing was loaded."
                           + (_previous_checkpoint(path) if suggest else ""))


def _read_verified(path: str, suggest: bool = True) -> tuple[bytes, bool]:
    """The bytes of checkpoint ``path`` and whether a checksum verified them (``False``: format version 1).

    Raises a :class:`CheckpointError` naming the file when it is missing, fails its checksum, is not a
    complete zip archive or not a torch file; with ``suggest`` the message names the previous intact
    checkpoint of the run. Unpickles nothing."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist. Expected {EXPECTED}.") from None
    except OSError as exc:
        raise CheckpointError(f"Checkpoint {path} cannot be read ({exc}).") from None
    recorded = _recorded_digest(data)
    if recorded is not None:
        actual = hashlib.sha256(memoryview(data)[:-FOOTER_SIZE]).hexdigest()
        if actual != recorded:
            raise _damaged(path, f"is damaged: checksum mismatch (its bytes hash to SHA-256 {actual[:16]}..., "
                                 f"it was saved as {recorded[:16]}...), so it changed after it was written "
                                 "(disk, copy or transfer)", suggest)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names, comment = archive.namelist(), archive.comment
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail in many ways
        raise _damaged(path, f"is corrupt or truncated (not a complete zip archive: {exc}); expected a "
                             f"{CHECKPOINT_FILE} written by save_model=True", suggest) from None
    if recorded is None and comment:
        raise _damaged(path, f"is damaged: its checksum footer is malformed or cut short ({comment[:FOOTER_SIZE]!r})",
                       suggest)
    if not any(name.endswith("data.pkl") for name in names):
        raise CheckpointError(f"Checkpoint {path} is a zip archive but not a torch checkpoint (no data.pkl); "
                              f"expected a {CHECKPOINT_FILE} written by save_model=True.")
    return data, recorded is not None


def find_checkpoint(checkpoint_path: str, load_step: int = 0) -> str:
    """The checkpoint file that ``checkpoint_path`` + ``load_step`` name (PyMARL's rules).

    ``checkpoint_path`` is a file, a step directory holding ``checkpoint.pt``, or a models directory of
    ``<t_env>`` step directories; there ``load_step=0`` picks the latest step and any other value the
    step closest to it. The chosen file must pass the integrity check of :func:`load_checkpoint`
    (checksum, zip structure): a damaged one is reported here, with the previous intact step.
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
    _read_verified(path)
    return path


def load_checkpoint(path: str) -> dict[str, Any]:
    """Read a checkpoint file written by :func:`save_checkpoint` (tensors on the CPU).

    The checksum is verified before anything is unpickled; a format version 1 file (no checksum) loads
    with an :class:`UnverifiedCheckpointWarning`."""
    data, verified = _read_verified(path)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unverified damaged bytes fail in many ways
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or "
                              f"was not written by this code. Expected {EXPECTED}.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a dm2 checkpoint (no format={FORMAT!r} marker). "
                              f"Expected {EXPECTED}.")
    version = payload.get("version")
    if not verified and version == VERSION:
        raise _damaged(path, f"is damaged: it has format version {VERSION} but its checksum footer is gone "
                             "(rewritten by another tool, or its end was damaged), so it cannot be verified", True)
    if version != (VERSION if verified else UNVERIFIED_VERSION):
        raise CheckpointError(f"Checkpoint {path} has format version {version}; this code reads version {VERSION} "
                              f"(and version {UNVERIFIED_VERSION}, unverified).")
    if not verified:
        warnings.warn(f"Checkpoint {path} has format version {UNVERIFIED_VERSION}, written before checkpoints "
                      "carried a checksum: damage inside it cannot be detected. Checkpoints written from now on "
                      "are verified.", UnverifiedCheckpointWarning, stacklevel=2)
    return payload

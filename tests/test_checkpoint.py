"""Checkpoint files: atomic writes, no overwriting, step selection, RNG round trip, clear errors."""
import os
import random

import numpy as np
import pytest
import torch

from utils.checkpoint import (CHECKPOINT_FILE, CheckpointError, capture_rng_state, find_checkpoint,
                              load_checkpoint, restore_rng_state, save_checkpoint)


def models_dir(tmp_path, steps=(100, 250, 400)):
    root = tmp_path / "models" / "token"
    for step in steps:
        save_checkpoint(str(root / str(step)), {"t_env": step, "weights": torch.full((3,), float(step))})
    return root


def test_round_trip_and_atomic_write(tmp_path):
    root = models_dir(tmp_path, steps=(7,))
    assert os.listdir(root / "7") == [CHECKPOINT_FILE]  # no temporary file left behind
    payload = load_checkpoint(str(root / "7" / CHECKPOINT_FILE))
    assert payload["t_env"] == 7 and torch.equal(payload["weights"], torch.full((3,), 7.0))


def test_existing_checkpoint_is_never_overwritten(tmp_path):
    root = models_dir(tmp_path, steps=(7,))
    before = (root / "7" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="already exists; refusing to overwrite"):
        save_checkpoint(str(root / "7"), {"t_env": 8})
    assert (root / "7" / CHECKPOINT_FILE).read_bytes() == before


def test_step_selection(tmp_path):
    root = str(models_dir(tmp_path))
    pick = lambda load_step: load_checkpoint(find_checkpoint(root, load_step))["t_env"]  # noqa: E731
    assert pick(0) == 400  # latest
    assert pick(260) == 250  # closest, as in PyMARL
    assert pick(10_000) == 400
    assert load_checkpoint(find_checkpoint(os.path.join(root, "100"), 0))["t_env"] == 100  # a step directory
    assert find_checkpoint(os.path.join(root, "100", CHECKPOINT_FILE)).endswith(CHECKPOINT_FILE)  # a file


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint_path '.*nowhere' does not exist.*Expected a directory "
                                              r"written by save_model=True"):
        find_checkpoint(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"'.*empty' holds no checkpoint"):
        find_checkpoint(str(tmp_path / "empty"))


def test_corrupt_files(tmp_path):
    root = models_dir(tmp_path, steps=(5,))
    path = root / "5" / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, e.g. a copy cut short
    with pytest.raises(CheckpointError, match=rf"{path} is corrupt or truncated"):
        find_checkpoint(str(root))
    with pytest.raises(CheckpointError, match=rf"{path} cannot be read"):
        load_checkpoint(str(path))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        find_checkpoint(str(path))


def test_foreign_and_newer_torch_files(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a dm2 checkpoint"):
        load_checkpoint(str(other))
    newer = tmp_path / "newer.pt"
    torch.save({"format": "dm2-checkpoint", "version": 99}, newer)
    with pytest.raises(CheckpointError, match="format version 99; this code reads version 1"):
        load_checkpoint(str(newer))


def test_rng_state_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    save_checkpoint(str(tmp_path / "s"), {"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(str(tmp_path / "s" / CHECKPOINT_FILE))["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])

"""Checkpoint files: atomic writes, no overwriting, step selection, checksums, RNG round trip, clear errors."""
import os
import random
import re
import zipfile

import numpy as np
import pytest
import torch

from utils.checkpoint import (CHECKPOINT_FILE, CheckpointError, UnverifiedCheckpointWarning, capture_rng_state,
                              find_checkpoint, load_checkpoint, restore_rng_state, save_checkpoint)

DAMAGED = r"is (damaged|corrupt or truncated).*; nothing was loaded\."


def models_dir(tmp_path, steps=(100, 250, 400), size=3):
    root = tmp_path / "models" / "token"
    for step in steps:
        save_checkpoint(str(root / str(step)), {"t_env": step, "weights": torch.full((size,), float(step))})
    return root


def flip(path, offset, n):
    """Invert ``n`` bytes of ``path`` from ``offset`` (negative: from the end)."""
    data = bytearray(path.read_bytes())
    start = offset % len(data)
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    path.write_bytes(data)


def save_v1(step_dir, payload):
    """A checkpoint as written before checksums: a plain torch.save of a format version 1 dict."""
    step_dir.mkdir(parents=True)
    torch.save({"format": "dm2-checkpoint", "version": 1, **payload}, step_dir / CHECKPOINT_FILE)
    return step_dir / CHECKPOINT_FILE


def test_round_trip_and_atomic_write(tmp_path):
    root = models_dir(tmp_path, steps=(7,))
    assert os.listdir(root / "7") == [CHECKPOINT_FILE]  # no temporary file left behind
    path = root / "7" / CHECKPOINT_FILE
    payload = load_checkpoint(str(path))
    assert payload["t_env"] == 7 and payload["version"] == 2 and torch.equal(payload["weights"], torch.full((3,), 7.0))
    # the checksum footer is the zip archive's comment: the file stays a standard torch file
    assert re.fullmatch(rb"dm2-sha256:[0-9a-f]{64}", zipfile.ZipFile(path).comment)
    assert torch.load(path, weights_only=False)["t_env"] == 7


def test_existing_checkpoint_is_never_overwritten(tmp_path):
    root = models_dir(tmp_path, steps=(7,))
    before = (root / "7" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="already exists; refusing to overwrite"):
        save_checkpoint(str(root / "7"), {"t_env": 8})
    assert (root / "7" / CHECKPOINT_FILE).read_bytes() == before
    assert os.listdir(root / "7") == [CHECKPOINT_FILE]


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


@pytest.mark.parametrize("n", [1, 4096])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_any_damaged_byte_is_caught_before_loading(tmp_path, where, n):
    """The issue's case: 4 KB flipped inside the file used to resume silently with different weights."""
    root = models_dir(tmp_path, steps=(100, 200), size=10_000)  # ~40 KB files, mostly tensor data
    path = root / "200" / CHECKPOINT_FILE
    size = path.stat().st_size
    flip(path, {"start": 0, "middle": size // 2 - n // 2, "end": -n}[where], n)
    if where == "middle":  # without the checksum this loads fine, with other weights
        assert not torch.equal(torch.load(path, weights_only=False)["weights"], torch.full((10_000,), 200.0))
    message = (rf"Checkpoint {path} {DAMAGED} The previous intact checkpoint of this run is "
               rf"{root / '100' / CHECKPOINT_FILE} \(t_env 100\): resume from it with checkpoint_path={root} "
               r"load_step=100\.")
    with pytest.raises(CheckpointError, match=message):
        find_checkpoint(str(root))  # the latest step, chosen and checked before a run starts
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(str(path))
    if where == "middle":
        with pytest.raises(CheckpointError, match="is damaged: checksum mismatch"):
            load_checkpoint(str(path))


def test_previous_step_suggestion(tmp_path):
    root = models_dir(tmp_path)  # steps 100, 250, 400
    flip(root / "400" / CHECKPOINT_FILE, 100, 1)
    flip(root / "250" / CHECKPOINT_FILE, 100, 1)  # a damaged earlier step is skipped
    with pytest.raises(CheckpointError, match=rf"intact checkpoint of this run is .*100.*load_step=100\.$"):
        find_checkpoint(str(root), 400)
    with pytest.raises(CheckpointError, match=rf"{DAMAGED} The previous intact checkpoint .* load_step=100\.$"):
        find_checkpoint(str(root), 250)
    flip(root / "100" / CHECKPOINT_FILE, 100, 1)
    with pytest.raises(CheckpointError, match=rf"{DAMAGED} No earlier checkpoint of this run in {root} is intact"):
        find_checkpoint(str(root), 400)
    with pytest.raises(CheckpointError, match=rf"{DAMAGED} This run has no earlier checkpoint in {root} to fall back"):
        find_checkpoint(str(root), 100)
    lone = tmp_path / "elsewhere" / "copy.pt"  # not in a <t_env> step directory: no suggestion
    lone.parent.mkdir()
    lone.write_bytes((root / "100" / CHECKPOINT_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=rf"Checkpoint {lone} {DAMAGED}$"):
        load_checkpoint(str(lone))


def test_truncated_and_foreign_files(tmp_path):
    root = models_dir(tmp_path, steps=(4, 5))
    path = root / "5" / CHECKPOINT_FILE
    data = path.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 1):  # e.g. a copy cut short
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"{path} {DAMAGED} The previous intact .* load_step=4\."):
            find_checkpoint(str(root))
    path.write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=rf"{path} is corrupt or truncated"):
        load_checkpoint(str(path))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        find_checkpoint(str(path))
    path.write_bytes(data + b"junk")  # bytes appended after the footer
    with pytest.raises(CheckpointError, match="is damaged: its checksum footer is malformed or cut short"):
        find_checkpoint(str(path))


def test_version_1_checkpoints_load_unverified(tmp_path):
    root = tmp_path / "models" / "old"
    path = save_v1(root / "300", {"t_env": 300})
    assert find_checkpoint(str(root)) == str(path)
    with pytest.warns(UnverifiedCheckpointWarning, match=rf"Checkpoint {path} has format version 1.*damage inside "
                                                         "it cannot be detected"):
        assert load_checkpoint(str(path))["t_env"] == 300
    save_checkpoint(str(root / "600"), {"t_env": 600})  # a resumed run adds verified checkpoints
    flip(root / "600" / CHECKPOINT_FILE, 0, 1)
    with pytest.raises(CheckpointError, match=r"is \S+300\S+ \(t_env 300\) \(format version 1: no checksum, "
                                              r"structure checked only\): resume .* load_step=300\."):
        find_checkpoint(str(root))
    path.write_bytes(path.read_bytes()[:-10])  # damage that breaks a version 1 file's structure is still caught
    with pytest.raises(CheckpointError, match=f"{path} is corrupt or truncated"):
        find_checkpoint(str(path))


def test_foreign_newer_and_stripped_files(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a dm2 checkpoint"):
        load_checkpoint(str(other))
    newer = save_checkpoint(str(tmp_path / "newer"), {"version": 99})
    with pytest.raises(CheckpointError, match="format version 99; this code reads version 2"):
        load_checkpoint(newer)
    stripped = tmp_path / "stripped.pt"  # version 2 without its footer: refused, not loaded unverified
    torch.save({"format": "dm2-checkpoint", "version": 2}, stripped)
    with pytest.raises(CheckpointError, match=f"{stripped} is damaged: it has format version 2 but its checksum "
                                              "footer is gone"):
        load_checkpoint(str(stripped))


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

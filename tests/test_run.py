"""The run side: logging fan-out, run directories, and end-to-end runs of `src/main.py` on the simulator
(Sacred records, exact resume from a checkpoint, evaluate + save_replay, bad checkpoints)."""
import datetime as real_datetime
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import main
import run as run_module
from config.loader import ConfigError, load_config
from utils.checkpoint import CHECKPOINT_FILE, CheckpointError
from utils.logging import Logger, StatAccumulator, episode_stat_means

MAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "main.py")
TINY = ["env_args.map_name=3m", "seed=1", "t_max=600", "batch_size_run=4", "test_nepisode=4", "test_interval=300",
        "log_interval=300", "save_model=True", "save_model_interval=300", "torch_threads=1"]


# --- units --------------------------------------------------------------------------------------------------

class FakeSacredRun:
    def __init__(self):
        self.scalars = []

    def log_scalar(self, key, value, t):
        self.scalars.append((key, value, t))


def test_log_stat_fans_out_to_sacred_tensorboard_and_console(tmp_path, caplog):
    console = logging.getLogger("dm2-test")
    sacred = FakeSacredRun()
    logger = Logger(console, sacred_run=sacred, tb_dir=str(tmp_path / "tb"))
    logger.log_stat("return_mean", 1.5, 10)
    logger.log_stat("return_mean", 2.5, 20)
    logger.log_stat("test_battle_won_mean", 0.25, 20)
    with caplog.at_level(logging.INFO, logger="dm2-test"):
        logger.print_recent_stats("Recent stats | t_env: 20")
    logger.close()
    assert sacred.scalars == [("return_mean", 1.5, 10), ("return_mean", 2.5, 20), ("test_battle_won_mean", 0.25, 20)]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    text = caplog.text
    assert "Recent stats | t_env: 20" in text and "return_mean:" in text and "2.5000" in text and "0.2500" in text

    resumed_sacred = FakeSacredRun()
    resumed = Logger(console, sacred_run=resumed_sacred)
    resumed.replay_history(logger.history)
    resumed.log_stat("return_mean", 3.0, 30)
    assert resumed_sacred.scalars == sacred.scalars + [("return_mean", 3.0, 30)]
    assert resumed.history == logger.history + [("return_mean", 30, 3.0)]


def test_stat_accumulator_means_and_state():
    acc = StatAccumulator()
    episodes = {"return": np.array([1.0, 3.0]), "battle_won": np.array([1, 0]), "ep_length": np.array([10, 20]),
                "dead_allies": np.array([0, 3]), "dead_enemies": np.array([3, 1])}
    acc.add_episodes(episodes)
    acc.add_scalars({"loss": 1.0})
    copy = StatAccumulator()
    copy.load_state_dict(acc.state_dict())
    acc.add_episodes({k: v[:1] for k, v in episodes.items()})
    acc.add_scalars({"loss": 2.0})
    means = acc.reduce()
    assert means["return_mean"] == pytest.approx(5 / 3) and means["battle_won_mean"] == pytest.approx(2 / 3)
    assert means["loss"] == 1.5 and means["return_std"] == pytest.approx(np.std([1, 3, 1]))
    assert acc.empty() and acc.reduce() == {}
    assert copy.reduce() == {**episode_stat_means(episodes), "loss": 1.0}


def test_test_env_seed_is_distinct_and_deterministic():
    assert run_module.test_env_seed(1) == run_module.test_env_seed(1) != 1
    assert run_module.test_env_seed(1) != run_module.test_env_seed(2)


def test_run_dirs_are_never_reused(tmp_path, monkeypatch):
    class FrozenDatetime:
        datetime = type("dt", (), {"now": staticmethod(lambda: real_datetime.datetime(2024, 1, 2, 3, 4, 5))})

    monkeypatch.setattr(run_module, "datetime", FrozenDatetime)
    cfg = load_config("ippo", "sc2", {"seed": 4, "save_model": True, "local_results_path": str(tmp_path)})
    token, dirs = run_module.reserve_run_dirs(cfg)
    assert token == "ippo__3m__seed4__2024-01-02_03-04-05" and set(dirs) == {"models", "tb_logs"}
    marker = os.path.join(dirs["models"], "keep")
    open(marker, "w").close()
    token2, dirs2 = run_module.reserve_run_dirs(cfg)
    assert token2 == token + "_1" and all(os.listdir(d) == [] for d in dirs2.values())
    assert os.path.exists(marker)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on machines without CUDA")
def test_use_cuda_without_cuda_warns_and_uses_the_cpu(caplog):
    with caplog.at_level(logging.WARNING):
        device = run_module.select_device(True, logging.getLogger("dm2-test"))
    assert device == torch.device("cpu") and "CUDA is not available" in caplog.text


# --- end to end (subprocesses running the real command line on the embedded simulator) ------------------------

def run_cli(cwd, *with_args, alg="ippo", command=()):
    proc = subprocess.run([sys.executable, MAIN, f"--config={alg}", *command, "with", *TINY, *with_args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A tiny IPPO run on 3m with checkpoints every 300 env steps."""
    cwd = tmp_path_factory.mktemp("runs")
    run_cli(cwd)
    sacred_dir = cwd / "results" / "sacred" / "3m" / "ippo"
    (token,) = os.listdir(cwd / "results" / "models")
    return cwd, sacred_dir, cwd / "results" / "models" / token


def test_sacred_run_directory(original):
    cwd, sacred_dir, models = original
    run_dir = sacred_dir / "1"
    assert {"config.json", "run.json", "cout.txt", "metrics.json", "info.json"} <= set(os.listdir(run_dir))
    assert read_json(run_dir / "run.json")["status"] == "COMPLETED"
    config = read_json(run_dir / "config.json")
    assert config["env_args"]["backend"] == "sim" and config["seed"] == 1 and config["name"] == "ippo"
    assert read_json(run_dir / "info.json")["env_backend"] == "sim"
    metrics = read_json(run_dir / "metrics.json")
    for key in ("test_battle_won_mean", "test_return_mean", "test_ep_length_mean", "test_dead_allies_mean",
                "test_dead_enemies_mean", "return_mean", "battle_won_mean", "episode"):
        assert metrics[key]["steps"], key
    assert metrics["test_return_mean"]["steps"][0] > 0  # tested after the first batch
    run_lines = [line for line in (run_dir / "cout.txt").read_text().splitlines() if "dm2.dm2_run" in line]
    assert "Environment backend: sim (the embedded simulator)" in run_lines[0]
    steps = sorted(int(s) for s in os.listdir(models))
    assert len(steps) >= 2 and steps[-1] == metrics["episode"]["steps"][-1]
    assert all(os.listdir(models / str(s)) == [CHECKPOINT_FILE] for s in steps)
    assert os.listdir(cwd / "results" / "tb_logs")


def assert_resume_is_exact(cwd, sacred_dir, models, alg="ippo", *with_args):
    """Resume from the first checkpoint: the resumed run's metrics equal the original's, number for number
    (the replayed history up to the checkpoint and everything computed after it), and nothing of the
    original run is touched."""
    first = sacred_dir / "1"
    before = {name: (first / name).read_bytes() for name in os.listdir(first)}
    mid = sorted(int(s) for s in os.listdir(models))[0]
    run_cli(cwd, f"checkpoint_path={models}", f"load_step={mid}", *with_args, alg=alg)
    resumed = sacred_dir / "2"
    assert {name: (first / name).read_bytes() for name in os.listdir(first)} == before
    (new_token,) = set(os.listdir(models.parent)) - {models.name}  # the resumed run writes under its own token
    original_steps = sorted(int(step) for step in os.listdir(models))
    assert sorted(int(step) for step in os.listdir(models.parent / new_token)) == [t for t in original_steps if t > mid]
    info = read_json(resumed / "info.json")["resumed_from"]
    assert info["t_env"] == mid and info["sacred_run_dir"].endswith(os.path.join("3m", alg, "1"))
    a, b = read_json(first / "metrics.json"), read_json(resumed / "metrics.json")
    assert set(a) == set(b) and max(a["episode"]["steps"]) > mid
    for key in a:
        assert (a[key]["steps"], a[key]["values"]) == (b[key]["steps"], b[key]["values"]), key


def test_resume_is_exact_and_overwrites_nothing(original):
    assert_resume_is_exact(*original)


def test_qmix_resume_is_exact(tmp_path):
    """QMIX adds a replay buffer, epsilon schedule and target networks to what must be restored."""
    qmix_args = ("batch_size=4", "buffer_size=64", "t_max=900")
    run_cli(tmp_path, *qmix_args, alg="qmix")
    (token,) = os.listdir(tmp_path / "results" / "models")
    metrics = read_json(tmp_path / "results" / "sacred" / "3m" / "qmix" / "1" / "metrics.json")
    assert metrics["loss"]["steps"]  # the learner trained before and after the checkpoint
    assert_resume_is_exact(tmp_path, tmp_path / "results" / "sacred" / "3m" / "qmix",
                           tmp_path / "results" / "models" / token, "qmix", *qmix_args)


def test_sacred_commands_pass_through(tmp_path):
    proc = run_cli(tmp_path, "seed=3", command=("print_config",))
    assert "seed = 3" in proc.stdout and "backend = 'sim'" in proc.stdout
    assert not (tmp_path / "results").exists()  # print_config starts no observed run


def test_evaluate_with_replays(original):
    cwd, sacred_dir, models = original
    final = max(int(s) for s in os.listdir(models))
    n_model_dirs = len(os.listdir(cwd / "results" / "models"))
    proc = run_cli(cwd, f"checkpoint_path={models}", "evaluate=True", "save_replay=True", "replay_nepisode=2",
                   "use_cuda=True")
    if not torch.cuda.is_available():
        assert "running on the CPU" in proc.stdout
    run_dir = sacred_dir / str(max(int(d) for d in os.listdir(sacred_dir) if d.isdigit()))
    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics) == {"test_return_mean", "test_return_std", "test_battle_won_mean", "test_ep_length_mean",
                            "test_dead_allies_mean", "test_dead_enemies_mean"}
    assert metrics["test_return_mean"]["steps"] == [final]
    result = read_json(run_dir / "run.json")["result"]
    assert len(result["replays"]) == 2 and all(p.endswith(".gif") and os.path.getsize(cwd / p) > 0
                                               for p in result["replays"])
    assert len(os.listdir(cwd / "results" / "models")) == n_model_dirs  # evaluation writes no checkpoints


def test_corrupt_checkpoint_is_rejected_before_the_run(original, tmp_path, monkeypatch):
    _, _, models = original
    step = sorted(os.listdir(models))[0]
    broken = tmp_path / "broken" / step
    shutil.copytree(models / step, broken)
    data = (broken / CHECKPOINT_FILE).read_bytes()
    (broken / CHECKPOINT_FILE).write_bytes(data[:100])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"{broken / CHECKPOINT_FILE} is corrupt or truncated"):
        main.main(["main.py", "--config=ippo", "with", f"checkpoint_path={broken}"])
    assert not (tmp_path / "results").exists()


def test_checkpoint_of_another_map_is_a_clear_error(original, tmp_path):
    _, _, models = original
    cfg = load_config("ippo", "sc2", {"env_args.map_name": "8m", "seed": 1, "batch_size_run": 2, "test_nepisode": 2,
                                      "evaluate": True, "use_tensorboard": False, "checkpoint_path": str(models)})
    with pytest.raises(CheckpointError, match=r"made on map '3m' with n_agents=3, but this run's environment has "
                                              r"n_agents=8"):
        run_module.run(None, cfg, logging.getLogger("dm2-test"))

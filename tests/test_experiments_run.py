"""End to end: a tiny study (3m, two seeds, a few thousand env steps) run by ``experiments.py run`` on this machine
and on a local Ray cluster, stopped with Ctrl-C mid-way and finished by re-running the same command: nothing
already trained is lost, the interrupted runs resume from their checkpoints, and each seed is one curve."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sweep.curves import load_curves
from test_experiments_spec import REPO, write_spec

TINY = """
    name: tiny
    results: study
    defaults: {use_tensorboard: false, test_nepisode: 4, test_interval: 500, log_interval: 500, batch_size_run: 8}
    stages:
      main:
        maps: [3m]
        seeds: [1, 2]
        with: {t_max: 5000, save_model_interval: 500}
        methods:
          ippo: {config: ippo}
"""
PIPELINE = """
    name: pipeline
    results: study
    defaults: {use_tensorboard: false, test_nepisode: 4, test_interval: 500, log_interval: 500, batch_size_run: 8}
    stages:
      experts:
        maps: [3m]
        seeds: [1]
        with: {t_max: 1500, save_model_interval: 500}
        methods:
          expert: {config: ippo}
      demos: {kind: demos, from: experts, targets: [0.0], styles: [dm2], episodes: 16, eval_episodes: 4}
      main:
        after: [demos]
        maps: [3m]
        seeds: [3]
        with: {t_max: 1000, gail_epochs: 2, gail_batch_size: 8}
        methods:
          dm2: {config: ippo_gail, demos: dm2_wr0}
"""


def command(spec, *flags):
    return [sys.executable, os.path.join(REPO, "src", "experiments.py"), "run", spec, "--progress-every", "1", *flags]


def checkpoints(tmp_path):
    models = tmp_path / "study" / "results" / "models"
    return sorted(models.glob("*/*/checkpoint.pt")) if models.is_dir() else []


def reported(tmp_path):
    """The t_env the running driver last reported for each running run (``state/progress.json``)."""
    try:
        return json.loads((tmp_path / "study" / "state" / "progress.json").read_text())["running_jobs"]
    except (OSError, ValueError, KeyError):
        return {}


def attempts(tmp_path, seed):
    path = tmp_path / "study" / "state" / "attempts" / "train" / "3m" / "ippo" / f"seed{seed}.json"
    return json.loads(path.read_text())["attempts"]


def interrupt_then_finish(tmp_path, flags):
    spec = write_spec(tmp_path, TINY)
    driver = subprocess.Popen(command(spec, "--parallel", "2", *flags), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    # both runs past their first checkpoint (t_env 500), far from t_max
    while not (len(reported(tmp_path)) == 2 and all((t or 0) >= 600 for t in reported(tmp_path).values())) \
            and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, driver.communicate()[0]
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 130, out
    assert "stopping: 2 running job(s) finish their iteration and save a checkpoint" in out
    # runs stopped mid-way exit with 143 (SIGTERM) after saving a checkpoint; one may have finished meanwhile,
    # and one that reached t_max as the signal came may be ended by it while exiting (-15: no handler left)
    stopped = [s for s in (1, 2) if attempts(tmp_path, s)[-1]["exit_code"] == 143]
    finished_anyway = (0, 143, -signal.SIGTERM)
    codes = {s: [a["exit_code"] for a in attempts(tmp_path, s)] for s in (1, 2)}
    assert stopped and all(codes[s][-1] in finished_anyway for s in (1, 2)), f"exit codes {codes}\n{out}"
    saved = {str(p) for p in checkpoints(tmp_path)}

    again = subprocess.run(command(spec, "--parallel", "2", *flags), cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    for seed in stopped:
        assert "resuming from t_env" in again.stdout and f"done: 3m/ippo/seed{seed}" in again.stdout
        assert [a["exit_code"] for a in attempts(tmp_path, seed)] == [143, 0]
    assert saved <= {str(p) for p in checkpoints(tmp_path)}  # nothing written before was lost
    curves = load_curves(str(tmp_path / "study" / "results" / "sacred"), "test_battle_won_mean")
    seeds = curves.seeds[("3m", "ippo")]
    assert [s.seed for s in seeds] == [1, 2] and all(s.finished and s.steps[-1] >= 5000 for s in seeds)
    assert all(len(s.runs) == 2 for s in seeds if s.seed in stopped)  # the run and its continuation: one curve
    status = subprocess.run([sys.executable, os.path.join(REPO, "src", "experiments.py"), "status", "study"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count(" done ") == 2, status.stdout
    return again.stdout


def test_a_study_stopped_with_ctrl_c_finishes_when_the_command_is_run_again(tmp_path):
    out = interrupt_then_finish(tmp_path, [])
    assert "tiny: 2/2 jobs done, 0 failed" in out


@pytest.mark.slow  # timing-dependent: in a container both runs once ended by SIGTERM before any checkpoint
def test_the_same_on_a_local_ray_cluster_with_results_pulled_back(tmp_path):
    pytest.importorskip("ray")
    out = interrupt_then_finish(tmp_path, ["--ray", "local", "--ray-cpus", "2", "--ray-storage", "pull"])
    assert "2 jobs, 2 at a time" in out
    hosts = {a["host"] for s in (1, 2) for a in attempts(tmp_path, s)}
    assert hosts == {os.uname().nodename}
    # every Sacred record came back into its own directory (the driver reserved the ids)
    records = sorted((tmp_path / "study" / "results" / "sacred" / "3m" / "ippo").glob("[0-9]*/run.json"))
    assert len(records) == sum(len(attempts(tmp_path, s)) for s in (1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--ray", "local", "--ray-cpus", "2"]], ids=["local", "ray-shared"])
def test_experts_demonstrations_and_dm2_in_one_command(tmp_path, flags):
    spec = write_spec(tmp_path, PIPELINE)
    proc = subprocess.run(command(spec, *flags), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "study" / "demos" / "demos" / "3m" / "dm2_wr0.npz").is_file()
    report = subprocess.run([sys.executable, os.path.join(REPO, "src", "experiments.py"), "report", spec],
                            cwd=tmp_path, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "study" / "report" / "report.md").read_text()
    assert "## Stage main" in text and "| dm2 | 1 |" in text

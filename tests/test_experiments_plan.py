"""A study's bookkeeping without training: the schedule simulation behind the time estimate, speeds measured from
run logs, job states read from disk, resume commands, checkpoint pruning and the driver lock."""
import json
import os
import subprocess
import sys

import pytest

from config.resume import RESUME_CHANGEABLE
from sweep.commands import train_launch
from sweep.layout import Layout
from sweep.plan import duration, make_plan, simulate
from sweep.spec import load_spec
from sweep.state import (DONE, FAILED, PENDING, RESUMABLE, StudyLocked, acquire_lock, checkpoints, end_attempt,
                         job_state,
                         log_tail, prune_checkpoints, release_lock, source_models_dir, start_attempt)
from sweep.throughput import Throughput, measure_log
from test_experiments_spec import GOOD, write_spec
from test_plot import write_run


def test_the_schedule_runs_jobs_in_order_when_a_slot_and_their_dependencies_are_free():
    seconds = {"a": 10.0, "b": 20.0, "c": 5.0, "d": 7.0}
    deps = {"c": ["a"], "d": ["b", "c"]}
    # 2 slots: a, b at 0; a ends 10 -> c 10..15; b ends 20 -> d 20..27
    assert simulate(["a", "b", "c", "d"], seconds, deps, slots=2) == {"a": 10, "b": 20, "c": 15, "d": 27}
    # 1 slot: in order a 0..10, b ..30, c ..35, d ..42
    assert simulate(["a", "b", "c", "d"], seconds, deps, slots=1)["d"] == 42
    # a done already, b running (its remaining 20 s), c free to start at once
    assert simulate(["a", "b", "c", "d"], seconds, deps, 2, finished=["a"], running=["b"]) == {
        "a": 0, "b": 20, "c": 5, "d": 27}
    # a dependency that never ends: the job is left out
    assert "d" not in simulate(["b", "c", "d"], seconds, deps, 2)


def test_speed_is_measured_between_the_runs_reports():
    log = ("[INFO 10:00:00] dm2 Recent stats | t_env:   100 / 5000 | episode:  4 | first iteration took 0:00:09\n"
           "loss: 1.0\n"
           "[INFO 10:00:02] dm2 Recent stats | t_env:  1100 / 5000 | episode: 40 | 500 env steps/s | time passed: x\n"
           "[INFO 10:00:03] dm2 Speed | t_env: 1500 / 5000 | 9,999 env steps/s | time passed: x\n"
           "[INFO 10:00:06] dm2 Recent stats | t_env:  2100 / 5000 | episode: 80 | 250 env steps/s | time passed: x\n")
    assert measure_log(log) == (2000, 6.0)  # 1000 steps at 500/s + 1000 at 250/s; the Speed line is not a report
    assert measure_log(log.split("loss")[0]) is None


def test_speeds_prefer_measurements_and_scale_with_threads(tmp_path):
    path = tmp_path / "throughput.json"
    table = Throughput.load(str(path))
    rate = table.rate("ippo", "5m_vs_6m", 2)
    assert (rate.steps_per_s, rate.source) == (4160.0, "bench default")
    assert table.rate("ippo", "5m_vs_6m", 1).steps_per_s == 2080.0  # linear in the threads
    assert table.rate("qmix", "5m_vs_6m", 1).steps_per_s == 737.0  # measured at 1 thread: used as it is
    borrowed = table.rate("ippo", "3m", 1)
    assert (borrowed.steps_per_s, borrowed.source) == (2080.0, "no figure: bench default on 5m_vs_6m")
    table.record("ippo", "3m", 1, 3000, 1.0, "3m/ippo/seed1")
    table.record("ippo", "3m", 1, 1000, 1.0, "3m/ippo/seed2")
    again = Throughput.load(str(path))  # saved, and preferred over the default
    assert (again.rate("ippo", "3m", 1).steps_per_s, again.rate("ippo", "3m", 1).source) == (2000.0,
                                                                                             "measured (2 runs)")
    assert again.rate("ippo", "3m", 2).steps_per_s == 4000.0
    table.record("ippo", "3m", 2, 3000, 1.0, "3m/ippo/seed3")
    again = Throughput.load(str(path))
    assert again.rate("ippo", "3m", 2).steps_per_s == 3000.0  # a measurement at 2 threads: only it counts
    # none at 4 threads: all 7000 steps over their seconds scaled to 4 threads, 1/4 + 1/4 + 2/4 s
    assert again.rate("ippo", "3m", 4).steps_per_s == 7000.0


@pytest.fixture
def study(tmp_path):
    spec = load_spec(write_spec(tmp_path, GOOD.format(results=tmp_path / "study")))
    return spec, Layout(spec.study_dir)


def fake_checkpoint(layout, run, step, token="2024-01-01_00-00-00"):
    step_dir = os.path.join(layout.models, f"{layout.models_prefix(run)}{token}", str(step))
    os.makedirs(step_dir)
    open(os.path.join(step_dir, "checkpoint.pt"), "wb").close()
    return step_dir


def test_job_states_come_from_the_runs_records_checkpoints_and_attempts(study, tmp_path):
    spec, layout = study
    runs = {run.key: run for run in spec.train_runs}
    done, stopped, failed, fresh = (runs[k] for k in ("3m/expert_ippo/seed1", "3m/expert_ippo/seed2",
                                                      "8m/expert_ippo/seed5", "3m/ippo/seed7"))
    sacred = tmp_path / "study" / "results" / "sacred"
    metric = "test_battle_won_mean"
    write_run(sacred, "3m", "expert_ippo", 1, {metric: ([0, 3100], [0.0, 0.5])}, seed=1, t_max=3000)
    write_run(sacred, "3m", "expert_ippo", 2, {metric: ([0, 1000], [0.0, 0.1])}, seed=2, t_max=3000,
              status="INTERRUPTED")
    fake_checkpoint(layout, stopped, 1000)
    newest = fake_checkpoint(layout, stopped, 2000, token="2024-01-02_00-00-00")
    start_attempt(layout, stopped, "python src/main.py ...", None)
    end_attempt(layout, stopped, 143)
    start_attempt(layout, failed, "python src/main.py ...", None)
    with open(layout.log(failed), "a") as f:
        f.write("line 1\nTraceback\nValueError: boom\n")
    end_attempt(layout, failed, 1)

    assert job_state(layout, done).status == DONE and job_state(layout, done).t_env == 3100
    state = job_state(layout, stopped)
    assert (state.status, state.t_env, state.checkpoint) == (RESUMABLE, 2000, newest)
    state = job_state(layout, failed)
    assert state.status == FAILED and state.note.startswith("exit status 1")
    assert log_tail(layout, failed, 2) == "Traceback\nValueError: boom"
    assert job_state(layout, fresh).status == PENDING
    assert job_state(layout, spec.stages["demos"].jobs[0]).status == PENDING

    # the expert resumed into two models directories is one models directory for the demos pipeline
    view = source_models_dir(layout, stopped)
    assert sorted(os.listdir(view)) == ["1000", "2000"]
    assert os.path.isfile(os.path.join(view, "2000", "checkpoint.pt"))
    # keep_checkpoints: latest
    assert prune_checkpoints(layout, stopped) == 1
    assert checkpoints(layout, stopped) == {2000: newest}

    # the plan leaves out the failed run and what waits for it: the demos of 8m (8m's IPPO run reads no
    # demonstrations and goes ahead)
    plan = make_plan(spec, [job_state(layout, j) for j in spec.jobs], Throughput.load(None), slots=2, threads=1)
    assert plan.blocked == ["8m/expert_ippo/seed5", "demos/8m"]
    retry = make_plan(spec, [job_state(layout, j) for j in spec.jobs], Throughput.load(None), 2, 1, retry_failed=True)
    assert retry.blocked == [] and retry.makespan > plan.makespan


def test_a_resume_changes_only_what_a_resumed_run_may_change(study):
    spec, layout = study
    run = next(r for r in spec.train_runs if r.key == "3m/dm2/seed7")
    fresh = train_launch(run, layout, threads=2)
    assert fresh.args[:3] == ["--config=ippo_gail", "--env-config=sc2", "with"]
    assert f"local_results_path={layout.results!r}" in fresh.args and "save_model=True" in fresh.args
    assert fresh.inputs == [run.method.demos.path(layout.study_dir, "3m")]
    resumed = train_launch(run, layout, threads=2, resume_from="results/models/tok/1000")
    assert resumed.args[0] == "with"
    keys = [arg.split("=", 1)[0] for arg in resumed.args[1:]]
    assert keys == ["checkpoint_path", "t_max", "local_results_path", "torch_threads"]
    assert set(keys) <= set(RESUME_CHANGEABLE)
    assert resumed.inputs[0] == os.path.join("results/models/tok/1000", "checkpoint.pt")


def test_one_driver_per_study(study):
    _, layout = study
    acquire_lock(layout)
    acquire_lock(layout)  # the same driver again: fine
    release_lock(layout)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.makedirs(layout.state, exist_ok=True)
        with open(layout.lock, "w") as f:
            json.dump({"pid": other.pid, "host": os.uname().nodename, "started": "now"}, f)
        with pytest.raises(StudyLocked, match=f"pid {other.pid}"):
            acquire_lock(layout)
    finally:
        other.kill()
        other.wait()
    acquire_lock(layout)  # its driver is gone: the lock is stale
    release_lock(layout)
    assert not os.path.exists(layout.lock)


def test_durations_read_like_clocks():
    assert duration(59) == "0:00:59" and duration(3 * 86400 + 3661) == "3 d 1:01:01"

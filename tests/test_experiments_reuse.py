"""``experiments.py run SPEC --from STUDY``: a new study starts with another study's jobs of the same settings (a
run may go on to a larger t_max), by hard links for what is never rewritten, and the other study stays as it was."""
import json
import os
import textwrap

import pytest

import experiments
from sweep.layout import Layout
from sweep.reuse import ReuseError, check_sources, copy_jobs, match_jobs
from sweep.spec import load_spec
from sweep.state import DONE, PENDING, RESUMABLE, acquire_lock, end_attempt, job_state, start_attempt
from test_experiments_plan import fake_checkpoint
from test_experiments_spec import GOOD, write_spec
from test_plot import write_run

METRIC = "test_battle_won_mean"
# the new study: main runs go on to 4000 steps; 8m's experts learn at another rate, so they and 8m's
# demonstrations are not the old study's
NEW = GOOD.replace("with: {{t_max: 2000}}", "with: {{t_max: 4000}}").replace("lr: 0.002", "lr: 0.005")


@pytest.fixture
def old_study(tmp_path):
    """A study at rest: 3m expert seed 1 done, seed 2 stopped at a checkpoint, the 3m demonstrations made, 3m's
    IPPO run done at 2000 steps with a checkpoint."""
    spec = load_spec(write_spec(tmp_path, GOOD.format(results=tmp_path / "old"), name="old.yaml"))
    layout = Layout(spec.study_dir)
    runs = {run.key: run for run in spec.train_runs}
    sacred = tmp_path / "old" / "results" / "sacred"
    write_run(sacred, "3m", "expert_ippo", 1, {METRIC: ([0, 3000], [0.0, 0.5])}, seed=1, t_max=3000)
    write_run(sacred, "3m", "expert_ippo", 2, {METRIC: ([0, 1000], [0.0, 0.1])}, seed=2, t_max=3000,
              status="INTERRUPTED")
    write_run(sacred, "3m", "ippo", 1, {METRIC: ([0, 2000], [0.0, 0.3])}, seed=7, t_max=2000)
    (sacred / "3m" / "ippo" / "_sources").mkdir()
    (sacred / "3m" / "ippo" / "_sources" / "main_0.py").write_text("# the code as run\n")
    for key, step in (("3m/expert_ippo/seed1", 3000), ("3m/expert_ippo/seed2", 1000), ("3m/ippo/seed7", 2000)):
        fake_checkpoint(layout, runs[key], step)
        start_attempt(layout, runs[key], "python src/main.py ...", None)
        with open(layout.log(runs[key]), "a") as f:
            f.write(f"{key} trained\n")
        end_attempt(layout, runs[key], 0 if key != "3m/expert_ippo/seed2" else 143)
    demos = next(job for job in spec.jobs if job.key == "demos/3m")
    os.makedirs(layout.demos_dir(demos))
    for file in (*(f"{name}.npz" for name in demos.files), "summary.json"):
        with open(os.path.join(layout.demos_dir(demos), file), "w") as f:
            f.write("{}")
    (tmp_path / "old" / "spec.yaml").write_text(textwrap.dedent(GOOD.format(results=tmp_path / "old")))
    return layout


def snapshot(root):
    """Every file under ``root`` with its content: to show a study was left as it was."""
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}


def test_a_new_study_starts_with_the_old_studys_jobs_of_the_same_settings(old_study, tmp_path):
    source = old_study
    before = snapshot(source.study_dir)
    new = load_spec(write_spec(tmp_path, NEW.format(results=tmp_path / "new"), name="new.yaml"))
    target = Layout(new.study_dir)
    check_sources(source, target)
    match = match_jobs(load_spec(source.spec_copy, study_dir=source.study_dir), new)
    assert [job.key for job in match.reused] == ["3m/expert_ippo/seed1", "3m/expert_ippo/seed2", "demos/3m",
                                                 "3m/ippo/seed7", "8m/ippo/seed7", "3m/dm2/seed7"]
    assert match.differ == ["8m/expert_ippo/seed5: different overrides", "demos/8m: different sources"]
    assert copy_jobs(source, target, match.reused) == 4  # 3m's DM² run had not started there

    states = {job.key: job_state(target, job) for job in new.jobs}
    assert (states["3m/expert_ippo/seed1"].status, states["3m/expert_ippo/seed1"].t_env) == (DONE, 3000)
    assert (states["3m/expert_ippo/seed2"].status, states["3m/expert_ippo/seed2"].t_env) == (RESUMABLE, 1000)
    assert states["demos/3m"].status == DONE
    # the IPPO run finished at 2000 there; here it goes on to 4000 from its checkpoint
    assert (states["3m/ippo/seed7"].status, states["3m/ippo/seed7"].t_env) == (RESUMABLE, 2000)
    assert states["8m/expert_ippo/seed5"].status == PENDING and states["3m/dm2/seed7"].status == PENDING
    assert os.path.isfile(os.path.join(target.sacred, "3m", "ippo", "_sources", "main_0.py"))

    # checkpoints are the same files (hard links); logs and attempts are copies, so appending here leaves the old
    # study's as they were, and so does deleting a checkpoint here (keep_checkpoints: latest)
    ippo = next(run for run in new.train_runs if run.key == "3m/ippo/seed7")
    new_ckpt = os.path.join(states["3m/ippo/seed7"].checkpoint, "checkpoint.pt")
    old_ckpt = new_ckpt.replace(target.study_dir, source.study_dir)
    assert os.path.samefile(new_ckpt, old_ckpt)
    with open(target.log(ippo), "a") as f:
        f.write("the new study's attempt\n")
    start_attempt(target, ippo, "python src/main.py with checkpoint_path=...", states["3m/ippo/seed7"].checkpoint)
    os.remove(new_ckpt)
    assert snapshot(source.study_dir) == before
    assert len(json.loads(open(target.attempts(ippo)).read())["attempts"]) == 2


def test_from_only_starts_a_new_study_from_a_study_at_rest(old_study, tmp_path, capsys):
    new = write_spec(tmp_path, NEW.format(results=tmp_path / "new"), name="new.yaml")
    # --dry-run says what would be reused and the plan counts it, but writes nothing
    assert experiments.main(["run", new, "--from", old_study.study_dir, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"From {old_study.study_dir}: 6 of 8 jobs have the same settings there and would be reused" in out
    assert "not reused, other settings: 8m/expert_ippo/seed5: different overrides" in out
    assert not os.path.exists(tmp_path / "new")

    with pytest.raises(ReuseError, match="this study's own directory"):
        check_sources(old_study, Layout(old_study.study_dir))
    with pytest.raises(ReuseError, match="not a study directory"):
        check_sources(Layout(str(tmp_path / "nothing")), Layout(str(tmp_path / "new")))
    acquire_lock(old_study)  # this process stands in for a running driver of the old study (not this one's)
    lock = json.loads(open(old_study.lock).read())
    lock["pid"] = os.getppid()
    with open(old_study.lock, "w") as f:
        json.dump(lock, f)
    with pytest.raises(ReuseError, match=f"its study is running \\(pid {os.getppid()}"):
        check_sources(old_study, Layout(str(tmp_path / "new")))
    os.remove(old_study.lock)

    (tmp_path / "new" / "logs").mkdir(parents=True)
    assert experiments.main(["run", new, "--from", old_study.study_dir]) == 2
    err = capsys.readouterr().err
    assert "already holds a study (logs/): --from only starts a new one. Run without --from to continue it" in err

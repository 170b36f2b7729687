"""A run's life cycle: stopping on SIGINT / SIGTERM with a final checkpoint and continuing it exactly; the
progress reports (speed and time left measured after the warm-up); the kernel compilation notice."""
import logging
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import run as run_module
from config.loader import load_config
from envs.sim import batched_env, engine
from test_run import MAIN, RUN_SPECIFIC, assert_same_state, read_json, sacred_run_dir
from utils.checkpoint import CHECKPOINT_FILE, load_checkpoint
from utils.logging import Logger

assert ("sacred_run_dir",) in RUN_SPECIFIC  # the comparison below relies on these exclusions

# 3m, checkpoints every 600 env steps; long enough (about 25 iterations) that a signal sent after the second
# report always arrives mid-run.
T_MAX = 3000
RUN = ["env_args.map_name=3m", "seed=7", f"t_max={T_MAX}", "batch_size_run=4", "test_nepisode=4",
       "test_interval=300", "log_interval=300", "save_model=True", "save_model_interval=600", "torch_threads=1"]


def _as_in_a_terminal():
    """Ctrl-C's default action in the run, as in a terminal's foreground: when the tests themselves run as a
    background job (``cmd &``), SIGINT is ignored, and a run rightly leaves an ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(cwd, *with_args, config="ippo"):
    args = [sys.executable, MAIN, *([f"--config={config}"] if config else []), "with", *with_args]
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_as_in_a_terminal)


def signal_after_reports(proc, sig, reports=2):
    """Send ``sig`` once the run has printed ``reports`` progress reports; returns (stdout, stderr)."""
    seen, lines = 0, []
    for line in proc.stdout:
        lines.append(line)
        if "Recent stats" in line:
            seen += 1
            if seen == reports:
                proc.send_signal(sig)
                break
    out, err = proc.communicate(timeout=600)
    return "".join(lines) + out, err


def new_models_dir(cwd, before, output: str = ""):
    """The models folder a run just made (``output``: its stdout + stderr, shown if it made none)."""
    made = set(os.listdir(cwd / "results" / "models")) - before
    assert len(made) == 1, f"expected one new models folder, got {sorted(made)}; the run printed:\n{output[-6000:]}"
    return cwd / "results" / "models" / made.pop()


def checkpoints(models):
    return {int(step): models / step / CHECKPOINT_FILE for step in os.listdir(models)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """An uninterrupted reference run, and the same run stopped by SIGTERM, resumed (with only
    checkpoint_path), stopped again by SIGINT, and resumed to the end."""
    ref_dir, cwd = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("interrupted")
    reference = start(ref_dir, *RUN)
    runs = {}
    for name, args, sig in (("term", RUN, signal.SIGTERM), ("int", None, signal.SIGINT), ("final", None, None)):
        before = set(os.listdir(cwd / "results" / "models")) if (cwd / "results").exists() else set()
        config = "ippo" if args else None
        args = args or [f"checkpoint_path={runs[previous]['models']}"]
        proc = start(cwd, *args, config=config)
        out, err = signal_after_reports(proc, sig) if sig else proc.communicate(timeout=600)
        models = new_models_dir(cwd, before, out + err)
        runs[name] = {"returncode": proc.returncode, "stdout": out, "stderr": err, "models": models, "cwd": cwd,
                      "sacred": sacred_run_dir(cwd, "ippo", models.name)}
        previous = name
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:] + err[-3000:]
    (token,) = os.listdir(ref_dir / "results" / "models")
    runs["reference"] = {"models": ref_dir / "results" / "models" / token,
                         "sacred": sacred_run_dir(ref_dir, "ippo", token)}
    return runs


@pytest.mark.parametrize("name, sig", [("term", signal.SIGTERM), ("int", signal.SIGINT)])
def test_a_signal_stops_after_the_iteration_with_a_checkpoint(chain, name, sig):
    run = chain[name]
    assert run["returncode"] == 128 + sig, run["stdout"][-3000:] + run["stderr"][-3000:]
    info = read_json(run["sacred"] / "info.json")["interrupted"]
    assert read_json(run["sacred"] / "run.json")["status"] == "INTERRUPTED"
    latest = max(checkpoints(run["models"]))
    assert info["signal"] == sig.name and info["t_env"] == latest < T_MAX
    assert os.path.samefile(run["cwd"] / info["checkpoint"], run["models"] / str(latest) / CHECKPOINT_FILE)
    assert f"{sig.name} received: finishing the current iteration, then saving a checkpoint" in run["stdout"]
    assert f"Stopped at t_env={latest}" in (run["sacred"] / "cout.txt").read_text()  # the record has the end too
    assert run["stderr"].strip().splitlines()[-1] == (
        f"dm2: stopped by {sig.name} at t_env={latest}, after finishing that iteration; checkpoint "
        f"{info['checkpoint']}."
        f" The run is recorded as INTERRUPTED. Continue it with: python src/main.py with checkpoint_path="
        f"{os.path.dirname(os.path.dirname(info['checkpoint']))}")


def test_resuming_after_signals_equals_the_uninterrupted_run(chain):
    """Every checkpoint the stopped-and-resumed runs wrote on the save schedule equals the reference run's of the
    same step in every piece of state; together they wrote every one of the reference's; the last run's
    metrics (history replayed through both interruptions) equal the reference's number for number."""
    assert chain["final"]["returncode"] == 0, chain["final"]["stderr"][-3000:]
    for later, earlier in (("int", "term"), ("final", "int")):
        resumed_from = read_json(chain[later]["sacred"] / "info.json")["resumed_from"]
        assert resumed_from["t_env"] == read_json(chain[earlier]["sacred"] / "info.json")["interrupted"]["t_env"]
    reference = checkpoints(chain["reference"]["models"])
    written = {}
    for name in ("term", "int", "final"):
        written.update(checkpoints(chain[name]["models"]))
    assert set(reference) <= set(written)
    stops = [read_json(chain[name]["sacred"] / "info.json")["interrupted"]["t_env"] for name in ("term", "int")]
    assert 0 < stops[0] < stops[1] < max(reference)  # both stops fell mid-run,
    assert any(stops[1] < step for step in checkpoints(chain["final"]["models"]) if step in reference)  # and after
    for step, path in reference.items():
        assert_same_state(load_checkpoint(path), load_checkpoint(written[step]))
    a = read_json(chain["reference"]["sacred"] / "metrics.json")
    b = read_json(chain["final"]["sacred"] / "metrics.json")
    assert set(a) == set(b)
    for key in a:
        assert (a[key]["steps"], a[key]["values"]) == (b[key]["steps"], b[key]["values"]), key


# --- the training loop's reports and signal handling, on a fake clock and fake components ------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def time(self):
        return self.now


class FakeRunner:
    """100 env steps (4 episodes) per call; a training call advances the clock by the next duration and may
    run ``on_call[i]`` (e.g. send a signal) during its i-th call."""

    def __init__(self, clock, durations=(), on_call=None):
        self.clock, self.durations, self.on_call, self.calls = clock, list(durations), on_call or {}, 0

    def run(self, test_mode, t_env):
        if not test_mode:
            self.calls += 1
            self.clock.now += self.durations.pop(0) if self.durations else 1.0
            if self.calls in self.on_call:
                self.on_call[self.calls]()
        zeros = np.zeros(4)
        return None, {"env_steps": 100, "return": zeros, "battle_won": zeros, "ep_length": zeros + 25,
                      "dead_allies": zeros, "dead_enemies": zeros}


def fake_trainer(monkeypatch, runner, clock, **overrides):
    monkeypatch.setattr(run_module, "time", types.SimpleNamespace(time=clock.time, perf_counter=time.perf_counter))
    cfg = load_config("ippo", "sc2", {"seed": 1, "t_max": 10000, "log_interval": 5000, "test_interval": 100000,
                                      **overrides}, check_components=False)
    parts = types.SimpleNamespace(train_runner=runner, test_runner=runner, train_env=None, env_info={},
                                  learner=types.SimpleNamespace(train=lambda batch, t_env, episode: {}))
    logger = Logger(logging.getLogger("dm2-test-trainer"))
    return run_module._Trainer(cfg, parts, logger, run_module.LoopState.start(cfg), None, None)


def test_speed_and_time_left_leave_out_the_warm_up(monkeypatch, caplog):
    """A 60 s first iteration (compiling, warming up), then 100 env steps/s: the first report comes after the
    first update and says how long it took; one speed report follows 10 s later (the next regular one is 40 s
    away); both that and the regular reports measure 100 env steps/s, not the 17-hour figure of before."""
    clock = FakeClock()
    trainer = fake_trainer(monkeypatch, FakeRunner(clock, durations=[60.0]), clock)
    with caplog.at_level(logging.INFO, logger="dm2-test-trainer"):
        trainer.train()
    lines = [record.getMessage().splitlines()[0] for record in caplog.records]
    reports = [line for line in lines if line.startswith(("Recent stats", "Speed"))]
    assert reports == [
        "Recent stats | t_env:        100 / 10000 | episode:        4 | first iteration took 0:01:00 (includes "
        "warm-up; env steps/s and time left are measured from its end)",
        "Speed | t_env: 1100 / 10000 | 100 env steps/s | time passed: 0:01:10 | estimated time left: 0:01:29 | "
        "next report at t_env 5100",
        "Recent stats | t_env:       5100 / 10000 | episode:      204 | 100 env steps/s | time passed: 0:01:50 | "
        "estimated time left: 0:00:49",
    ]
    assert lines[0] == "Beginning training for 10000 env steps (from t_env=0): a report after the first update, " \
                       "then every 5000 env steps"


def test_a_signal_stops_the_loop_between_iterations(monkeypatch):
    clock = FakeClock()
    sigterm = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    previous = signal.getsignal(signal.SIGTERM)
    trainer = fake_trainer(monkeypatch, FakeRunner(clock, on_call={3: sigterm}), clock)
    info = {}
    with pytest.raises(run_module.RunInterrupted) as stopped:
        trainer.train(info)
    assert (stopped.value.signum, stopped.value.t_env, stopped.value.checkpoint) == (signal.SIGTERM, 300, None)
    assert stopped.value.exit_code == 143 and "no checkpoint was written (save_model=False)" in str(stopped.value)
    assert info["interrupted"] == {"signal": "SIGTERM", "t_env": 300, "episode": 12, "checkpoint": None}
    assert signal.getsignal(signal.SIGTERM) is previous  # the handlers are put back

    # a second signal stops at once, inside the iteration
    trainer = fake_trainer(monkeypatch, FakeRunner(clock, on_call={2: lambda: (sigterm(), sigterm())}), clock)
    with pytest.raises(run_module.RunInterrupted) as stopped:
        trainer.train({})
    assert stopped.value.at_once and stopped.value.t_env is None and trainer.state.t_env == 100
    assert signal.getsignal(signal.SIGTERM) is previous


def test_an_ignored_sigint_stays_ignored(monkeypatch):
    """A job started in the background by a script (`python src/main.py ... &`) ignores SIGINT; so does the run."""
    clock = FakeClock()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = FakeRunner(clock, on_call={2: lambda: os.kill(os.getpid(), signal.SIGINT)})
        result = fake_trainer(monkeypatch, runner, clock, t_max=500).train()
        assert result["t_env"] == 500 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the simulator's kernels --------------------------------------------------------------------------------

def test_compiling_the_kernels_is_announced_and_timed(monkeypatch, caplog):
    """When preparing the kernels takes longer than COMPILE_NOTICE_AFTER_S, the console says they are being
    compiled (while it happens), then how long it took; served from the cache quickly, it says nothing."""
    built = []

    class SlowSim:  # stands in for the simulator: "compiles" one kernel signature, slowly
        def __init__(self, map_name, n_envs, seed):
            built.append(n_envs)
            time.sleep(0.3)
            engine.spawn_envs._cache_misses[("test",)] += 1

        def step(self, actions):
            pass

        def get_avail_actions(self):
            return np.ones((1, 3, 9))

        get_obs = get_state = close = lambda self: None

    console = logging.getLogger("dm2-test-compile")
    cfg = load_config("qmix", "sc2", {"seed": 1, "env_args.backend": "sim", "batch_size_run": 8,
                                      "test_nepisode": batched_env.PARALLEL_FROM})
    monkeypatch.setattr(run_module, "COMPILE_NOTICE_AFTER_S", 0.1)
    monkeypatch.setattr(batched_env, "BatchedStarCraft2Sim", SlowSim)
    try:
        with caplog.at_level(logging.INFO, logger="dm2-test-compile"):
            run_module.warm_up_simulator(cfg, console)
    finally:
        del engine.spawn_envs._cache_misses[("test",)]
    messages = [record.getMessage() for record in caplog.records]
    # the serial kernel (8 training envs) and the parallel one (PARALLEL_FROM test envs)
    assert built == [1, batched_env.PARALLEL_FROM]
    assert len(messages) == 2 and messages[0].startswith("Compiling the embedded simulator's Numba kernels: once "
                                                         "after installing or changing src/envs/sim, then cached in")
    assert messages[1].startswith("Compiled the simulator's kernels in 0.") and "later runs load them" in messages[1]

    monkeypatch.undo()  # the real simulator: once its kernels are compiled (or were cached), silent
    small = load_config("qmix", "sc2", {"seed": 1, "env_args.backend": "sim", "batch_size_run": 4, "test_nepisode": 4})
    run_module.warm_up_simulator(small, console)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dm2-test-compile"):
        run_module.warm_up_simulator(small, console)
    assert [r.getMessage() for r in caplog.records] == []


def test_a_signal_during_the_set_up_leaves_nothing(tmp_path, monkeypatch, capsys):
    """SIGTERM while the run is being set up (e.g. during a first kernel compilation): the set-up is undone,
    nothing is written, the exit status is 143."""
    import main

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt the set-up")

    monkeypatch.setattr(run_module, "build_envs", terminated)
    monkeypatch.chdir(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)
    status = main.cli(["main.py", "--config=ippo", "with", "batch_size_run=2", "test_nepisode=2"])
    assert status == 143 and os.listdir(tmp_path) == []  # the reserved results/tb_logs/<token> is gone
    assert capsys.readouterr().err == ("dm2: interrupted by SIGTERM during the set-up; no run was started and nothing "
                                       "was written.\n")
    assert signal.getsignal(signal.SIGTERM) is previous


def test_an_error_during_training_is_recorded_with_its_traceback(tmp_path, monkeypatch):
    """Past the set-up, an error is Sacred's: a FAILED run record whose cout.txt ends with the traceback (Sacred
    itself stops capturing before it records the failure, so the last lines and the traceback went missing)."""
    import learners
    import main

    calls = []

    def failing_train(self, batch, t_env, episode):
        calls.append(t_env)
        if len(calls) == 2:
            raise FloatingPointError("injected: loss is NaN")
        return {}

    monkeypatch.setattr(learners.REGISTRY["ippo"], "train", failing_train)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main.cli(["main.py", "--config=ippo", "--capture=sys", "with", "batch_size_run=2", "test_nepisode=2",
                  "t_max=1000", "log_interval=50", "use_tensorboard=False"])
    assert exit_.value.code == 1
    (run_dir,) = (tmp_path / "results" / "sacred" / "3m" / "ippo").glob("[0-9]*")
    assert read_json(run_dir / "run.json")["status"] == "FAILED"
    cout = (run_dir / "cout.txt").read_text()
    assert "Environment backend: sim" in cout
    assert cout.rstrip().endswith("FloatingPointError: injected: loss is NaN") and "Traceback" in cout

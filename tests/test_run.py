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
from components.demonstrations import make_demonstrations, save_demonstrations
from config import resume
from config.loader import ConfigError, load_config
from envs import sim
from utils.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
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

def cli_args(alg, *with_args, command=()):
    return [sys.executable, MAIN, f"--config={alg}", *command, "with", *TINY, *with_args]


def run_cli(cwd, *with_args, alg="ippo", command=(), bare=False, returncode=0):
    """Run ``src/main.py`` in ``cwd``: ``--config=<alg> with TINY <with_args>``, or with ``bare`` only
    ``with <with_args>`` (as a user resuming from a checkpoint types it)."""
    args = [sys.executable, MAIN, "with", *with_args] if bare else cli_args(alg, *with_args, command=command)
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == returncode, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


class BackgroundRun:
    """A training run started in the background in its own working directory; ``models()`` waits for it
    and returns its models directory (its only one)."""

    def __init__(self, cwd, alg, *with_args):
        self.cwd, self.alg, self.with_args = cwd, alg, with_args
        self.proc = subprocess.Popen(cli_args(alg, *with_args), cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.output = None

    def models(self):
        if self.output is None:
            self.output = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, self.output[0][-3000:] + self.output[1][-3000:]
            (token,) = os.listdir(self.cwd / "results" / "models")
            self._models = self.cwd / "results" / "models" / token
        return self._models


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sacred_run_dir(cwd, alg, token):
    """The Sacred run directory (``results/sacred/3m/<alg>/<id>``) of the run that recorded ``token`` as
    its ``unique_token`` (the name of its models / tb_logs directories)."""
    root = cwd / "results" / "sacred" / "3m" / alg
    (run_dir,) = [d for d in root.iterdir()
                  if (d / "info.json").is_file() and read_json(d / "info.json").get("unique_token") == token]
    return run_dir


def file_bytes(directory):
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


QMIX_ARGS = ("batch_size=4", "buffer_size=64")


def random_demonstrations_3m(path, seed=0) -> str:
    """A small demonstrations file for 3m (random observations): enough to train ``ippo_gail``."""
    info = sim.StarCraft2Env(map_name="3m").get_env_info()
    rng = np.random.default_rng(seed)
    demos = make_demonstrations(rng.standard_normal((3, 16, 20, info["obs_shape"])), rng.integers(5, 21, (3, 16)),
                                map_name="3m", n_actions=info["n_actions"], episode_limit=info["episode_limit"])
    return save_demonstrations(str(path), demos)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted tiny runs on 3m (checkpoints every 300 env steps) that the end-to-end tests read
    and resume: IPPO (with use_value_norm, so the normaliser is covered), DM² (ippo_gail) and QMIX. Each has
    its own working directory; they are started together (each process is mostly single-threaded
    start-up), each test waits for its own."""
    gail_dir = tmp_path_factory.mktemp("ippo_gail")
    demos = random_demonstrations_3m(gail_dir / "demos.npz")
    runs = {"ippo": BackgroundRun(tmp_path_factory.mktemp("ippo"), "ippo", "use_value_norm=True"),
            "ippo_gail": BackgroundRun(gail_dir, "ippo_gail", f"gail_data_path={demos}", "gail_epochs=3",
                                       "gail_batch_size=4"),
            "qmix": BackgroundRun(tmp_path_factory.mktemp("qmix"), "qmix", *QMIX_ARGS)}
    yield runs
    for run in runs.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.communicate()


@pytest.fixture(scope="module")
def original(uninterrupted):
    """The IPPO run: ``(cwd, its Sacred run dir, models)``."""
    run = uninterrupted["ippo"]
    models = run.models()
    return run.cwd, sacred_run_dir(run.cwd, "ippo", models.name), models


def test_sacred_run_directory(original):
    cwd, run_dir, models = original
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
    cout = (run_dir / "cout.txt").read_text().splitlines()
    # the set-up's lines (printed before Sacred started) open cout.txt, before Sacred's own
    started = next(i for i, line in enumerate(cout) if "Started run with ID" in line)
    assert any("Environment backend: sim (the embedded simulator)" in line for line in cout[:started])
    assert any("Finished training" in line for line in cout[started:])
    assert "Completed after" in cout[-1]  # to the run's very last line, however loaded the machine
    steps = sorted(int(s) for s in os.listdir(models))
    assert len(steps) >= 2 and steps[-1] == metrics["episode"]["steps"][-1]
    assert all(os.listdir(models / str(s)) == [CHECKPOINT_FILE] for s in steps)
    assert os.listdir(cwd / "results" / "tb_logs")


# Checkpoint fields that legitimately differ between a resumed run and the uninterrupted one: where the
# run's Sacred records are, and the two settings that asked for the resume. Everything else (learner
# parameters, optimiser moments and step counts, value normaliser, replay buffer and its generator,
# environment states, global RNG states, loop counters, pending statistics, logged history) must be equal.
RUN_SPECIFIC = {("sacred_run_dir",), ("config", "checkpoint_path"), ("config", "load_step")}


def assert_same_state(a, b, path=(), compared=None):
    """``a`` equals ``b`` exactly, recursively through dicts, lists and tuples: tensors (``torch.equal``,
    same dtype), numpy arrays (``array_equal``, same dtype) and plain values (same type, ``==``), except the
    ``RUN_SPECIFIC`` paths. Records every compared leaf path in ``compared``."""
    where = ".".join(map(str, path))
    if path in RUN_SPECIFIC:
        return
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same_state(a[key], b[key], path + (key,), compared)
        return
    if isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {type(a)} of {len(a)} != {type(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, path + (i,), compared)
        return
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), f"{where}: arrays differ"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"
    if compared is not None:
        compared.add(path)


# Leaves that the comparison must reach, per learner (path patterns; ``*`` matches one key).
MUST_COMPARE = {
    "common": ["learner.mac.*", "train_env.env_seeds", "train_env.episodes_started", "test_env.env_seeds",
               "rng.torch", "rng.numpy.1", "rng.python.1.*", "loop.t_env", "loop.episode", "log_history.*.*"],
    "ippo": ["learner.critic.*", "learner.actor_optim.state.*.exp_avg", "learner.actor_optim.state.*.exp_avg_sq",
             "learner.actor_optim.state.*.step", "learner.critic_optim.state.*.exp_avg_sq",
             "learner.critic_optim.state.*.step"],
    "value_norm": ["learner.value_norm.mean", "learner.value_norm.var", "learner.value_norm.count"],
    "gail": ["learner.gail.net.*", "learner.gail.optim.state.*.exp_avg", "learner.gail.optim.state.*.exp_avg_sq",
             "learner.gail.generators.*"],
    "qmix": ["learner.target_mac.*", "learner.mixer.*", "learner.target_mixer.*",
             "learner.optim.state.*.square_avg", "learner.optim.state.*.step", "learner.buffer.storage.obs",
             "learner.buffer.storage.actions", "learner.buffer.next_slot", "learner.buffer.generator"],
}


def _reached(pattern, compared):
    keys = pattern.split(".")
    return any(len(p) == len(keys) and all(k in ("*", str(x)) for k, x in zip(keys, p)) for p in compared)


def assert_resume_is_exact(cwd, models, alg="ippo", *, must_compare=()):
    """Resume ``models``' run (in ``cwd``) from its first checkpoint with nothing but ``checkpoint_path`` and
    ``load_step`` on the command line (no --config, no settings: they come from the checkpoint): every
    checkpoint the resumed run writes equals the uninterrupted run's checkpoint of the same step in every
    piece of state (its config included: seed, t_max, save_model, every learner key), its Sacred metrics
    equal the original's number for number (the replayed history up to the checkpoint and everything
    computed after it), and nothing of the original run is touched. The runs are found by what they
    record (models tokens, ``info.json``), so this works whatever other runs share ``cwd``."""
    original_run = sacred_run_dir(cwd, alg, models.name)
    untouched = {"sacred": file_bytes(original_run), "models": file_bytes(models)}
    tokens = set(os.listdir(models.parent))
    steps = sorted(int(s) for s in os.listdir(models))
    mid = steps[0]
    proc = run_cli(cwd, f"checkpoint_path={models}", f"load_step={mid}", bare=True)
    assert f"with the run's own config: --config={alg}, map 3m, seed 1, t_max 600." in proc.stdout
    assert {"sacred": file_bytes(original_run), "models": file_bytes(models)} == untouched

    (new_token,) = set(os.listdir(models.parent)) - tokens  # the resumed run writes under its own token
    resumed_models = models.parent / new_token
    assert sorted(int(step) for step in os.listdir(resumed_models)) == [t for t in steps if t > mid]
    resumed_run = sacred_run_dir(cwd, alg, new_token)
    info = read_json(resumed_run / "info.json")["resumed_from"]
    assert info["t_env"] == mid and os.path.samefile(info["checkpoint"], models / str(mid) / CHECKPOINT_FILE)
    assert os.path.samefile(cwd / info["sacred_run_dir"], original_run)

    compared = set()
    for step in steps[1:]:
        a = load_checkpoint(models / str(step) / CHECKPOINT_FILE)
        b = load_checkpoint(resumed_models / str(step) / CHECKPOINT_FILE)
        assert a["loop"]["t_env"] == step
        assert_same_state(a, b, compared=compared)
        # the excluded fields do differ (and say where each run is)
        assert os.path.samefile(cwd / a["sacred_run_dir"], original_run)
        assert os.path.samefile(cwd / b["sacred_run_dir"], resumed_run)
        assert (a["config"]["checkpoint_path"], b["config"]["checkpoint_path"]) == ("", str(models))
    missing = [p for p in MUST_COMPARE["common"] + MUST_COMPARE.get(alg, []) + list(must_compare)
               if not _reached(p, compared)]
    assert not missing, f"the comparison never reached {missing}"
    # and the state did move on after the checkpoint: the comparison is not between two copies of it
    first, final = load_checkpoint(models / str(mid) / CHECKPOINT_FILE), a
    assert any(not torch.equal(v, final["learner"]["mac"][k]) for k, v in first["learner"]["mac"].items())

    a, b = read_json(original_run / "metrics.json"), read_json(resumed_run / "metrics.json")
    assert set(a) == set(b) and max(a["episode"]["steps"]) > mid
    for key in a:
        assert (a[key]["steps"], a[key]["values"]) == (b[key]["steps"], b[key]["values"]), key


def test_resume_is_exact_and_overwrites_nothing(uninterrupted):
    """IPPO, with the value normaliser's running statistics."""
    run = uninterrupted["ippo"]
    assert_resume_is_exact(run.cwd, run.models(), "ippo", must_compare=MUST_COMPARE["value_norm"])


def test_ippo_gail_resume_is_exact(uninterrupted):
    """DM² adds the discriminators, their optimiser and their random generators."""
    run = uninterrupted["ippo_gail"]
    models = run.models()
    metrics = read_json(sacred_run_dir(run.cwd, "ippo_gail", models.name) / "metrics.json")
    assert metrics["gail_disc_loss"]["steps"] and metrics["gail_reward_mean"]["steps"]
    assert_resume_is_exact(run.cwd, models, "ippo_gail", must_compare=MUST_COMPARE["ippo"] + MUST_COMPARE["gail"])


def test_qmix_resume_is_exact(uninterrupted):
    """QMIX adds a replay buffer, epsilon schedule and target networks to what must be restored."""
    run = uninterrupted["qmix"]
    models = run.models()
    metrics = read_json(sacred_run_dir(run.cwd, "qmix", models.name) / "metrics.json")
    first_checkpoint = min(int(s) for s in os.listdir(models))
    loss_steps = metrics["loss"]["steps"]  # the learner trained before and after the checkpoint
    assert min(loss_steps) <= first_checkpoint < max(loss_steps)
    assert_resume_is_exact(run.cwd, models, "qmix")


def test_sacred_commands_pass_through(tmp_path):
    proc = run_cli(tmp_path, "seed=3", command=("print_config",))
    assert "seed = 3" in proc.stdout and "backend = 'sim'" in proc.stdout
    assert not (tmp_path / "results").exists()  # print_config starts no observed run


def test_evaluate_with_replays(original):
    cwd, original_run, models = original
    final = max(int(s) for s in os.listdir(models))
    n_model_dirs = len(os.listdir(cwd / "results" / "models"))
    sacred_runs = set(original_run.parent.iterdir())
    proc = run_cli(cwd, f"checkpoint_path={models}", "evaluate=True", "save_replay=True", "replay_nepisode=2",
                   "use_cuda=True", "use_value_norm=True")  # the run's model settings
    if not torch.cuda.is_available():
        assert "running on the CPU" in proc.stdout
    (run_dir,) = set(original_run.parent.iterdir()) - sacred_runs  # the evaluation's own Sacred run
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
    """Called directly (not through main.py, which already refuses another map), the set-up still checks the
    checkpoint against the environment, and leaves nothing behind."""
    _, _, models = original
    cfg = load_config("ippo", "sc2", {"env_args.map_name": "8m", "seed": 1, "batch_size_run": 2, "test_nepisode": 2,
                                      "evaluate": True, "checkpoint_path": str(models),
                                      "local_results_path": str(tmp_path / "results")})
    with pytest.raises(CheckpointError, match=r"made on map '3m' with n_agents=3, but this run's environment has "
                                              r"n_agents=8"):
        run_module.run(None, cfg, logging.getLogger("dm2-test"))
    assert os.listdir(tmp_path) == []  # the reserved tb_logs/<token> (and results/) were removed again


# --- resuming and evaluating take the checkpoint's config ---------------------------------------------------

def resolve(*with_args, config=None, env_config=None):
    return resume.resolve_config(config, env_config, main.collect_updates(list(with_args)))


def first_step(models) -> str:
    return str(min(int(step) for step in os.listdir(models)))


def test_resume_takes_the_checkpoint_config(original):
    _, run_dir, models = original
    step = first_step(models)
    resolved = resolve(f"checkpoint_path={models}", f"load_step={step}")
    saved = read_json(run_dir / "config.json")
    resumed = resolved.cfg.to_dict()
    assert resolved.config_name == "ippo" and resolved.checkpoint_path.endswith(f"/{step}/{CHECKPOINT_FILE}")
    assert {k: v for k, v in resumed.items() if k not in ("checkpoint_path", "load_step")} == \
           {k: v for k, v in saved.items() if k not in ("checkpoint_path", "load_step")}
    assert (resumed["seed"], resumed["t_max"], resumed["save_model"], resumed["use_value_norm"]) == (1, 600, True, True)
    # the same values given again, and changeable keys given with other values, are accepted
    again = resolve(f"checkpoint_path={models}", f"load_step={step}", *TINY, "use_value_norm=True", "t_max=1200",
                    "log_interval=100", "use_tensorboard=False", config="ippo", env_config="sc2")
    assert (again.cfg.t_max, again.cfg.log_interval, again.cfg.use_tensorboard) == (1200, 100, False)
    assert "changed: t_max 600 -> 1200, log_interval 300 -> 100, use_tensorboard True -> False" in again.notes[0][1]
    # evaluating may also change the evaluation's own settings
    evaluation = resolve(f"checkpoint_path={models}", "evaluate=True", "test_nepisode=8", "seed=5")
    assert (evaluation.cfg.test_nepisode, evaluation.cfg.seed, evaluation.cfg.lr) == (8, 5, saved["lr"])


@pytest.mark.parametrize("args, message", [
    (["lr=0.1", "env_args.map_name=8m"], r"but the command line changes lr=0\.1 \(the run has 0\.0005\), "
                                         r"env_args\.map_name='8m' \(the run has '3m'\)\. A resumed run may change "
                                         r"only t_max, .*Leave the other keys out"),
    (["seed=2"], r"changes seed=2 \(the run has 1\)"),
    (["test_nepisode=8"], r"changes test_nepisode=8 \(the run has 4\)"),  # changeable when evaluating only
    (["t_max=300"], r"is at t_env=\d+, which already reaches t_max=300: nothing to train\. Give a larger t_max"),
    (["evaluate=True", "lr=0.1"], r"evaluates the agents saved in .* changes lr=0\.1 .* An evaluation may change"),
])
def test_resume_rejects_changes_to_the_experiment(original, args, message):
    _, _, models = original
    with pytest.raises(ConfigError, match=message):
        resolve(f"checkpoint_path={models}", *args)


def test_resume_config_must_be_the_checkpoints_algorithm(original):
    _, _, models = original
    with pytest.raises(ConfigError, match=r"--config=qmix does not match checkpoint .*: that run was made with "
                                          r"--config=ippo \(learner 'ippo'\)\. .*leave --config out, or give "
                                          r"--config=ippo"):
        resolve(f"checkpoint_path={models}", config="qmix")
    # checkpoints written before the --config name was recorded: matched by their learner
    ckpt = load_checkpoint(models / first_step(models) / CHECKPOINT_FILE)
    del ckpt["command"]
    with pytest.raises(ConfigError, match=r"--config=qmix \(learner 'qmix'\) does not match checkpoint .* holds a "
                                          r"'ippo' learner.*give --config=ippo"):
        resume._checkpoint_alg("qmix", "sc2", ckpt, "ckpt.pt")
    assert resume._checkpoint_alg(None, "sc2", ckpt, "ckpt.pt") == "ippo"


def resave(source, target_dir, edit):
    """A copy of checkpoint ``source`` under ``target_dir/<step>/`` with ``edit(payload)`` applied."""
    payload = load_checkpoint(source)
    for key in ("format", "version"):
        payload.pop(key)
    edit(payload)
    from utils.checkpoint import save_checkpoint
    return save_checkpoint(str(target_dir / source.parent.name), payload)


def test_moved_demonstrations(uninterrupted, tmp_path):
    """DM²'s demonstrations are part of the experiment: a resume takes gail_data_path from the checkpoint;
    a moved file is named, and a copy elsewhere is accepted when its content is the run's."""
    run = uninterrupted["ippo_gail"]
    models = run.models()
    source = models / first_step(models) / CHECKPOINT_FILE
    demos = load_checkpoint(source)["config"]["gail_data_path"]
    gone = str(tmp_path / "moved_away.npz")

    def moved(payload):
        payload["config"]["gail_data_path"] = gone

    ckpt_file = resave(source, tmp_path / "models", moved)
    with pytest.raises(ConfigError, match=rf"trained on gail_data_path='{gone}', which does not exist any more .*"
                                          r"give its new location: with gail_data_path=<new path> \(accepted when "
                                          r"its content is identical"):
        resolve(f"checkpoint_path={ckpt_file}")
    copy = tmp_path / "copy.npz"
    shutil.copy(demos, copy)
    resolved = resolve(f"checkpoint_path={ckpt_file}", f"gail_data_path={copy}")
    assert resolved.cfg.gail_data_path == str(copy) and resolved.cfg.gail_epochs == 3
    assert any("same content" in note for _, note in resolved.notes)
    other = random_demonstrations_3m(tmp_path / "other.npz", seed=1)
    with pytest.raises(ConfigError, match=r"holds other demonstrations than the run .* was trained on"):
        resolve(f"checkpoint_path={ckpt_file}", f"gail_data_path={other}")
    # evaluation does not use the demonstrations: another file is only a warning
    notes = resolve(f"checkpoint_path={ckpt_file}", f"gail_data_path={other}", "evaluate=True").notes
    assert any(level == logging.WARNING and "evaluating with other demonstrations" in note for level, note in notes)

    def old_checkpoint(payload):  # written before checksums were recorded, and its file is gone
        moved(payload)
        del payload["data_checksums"]

    old_file = resave(source, tmp_path / "old_models", old_checkpoint)
    warned = resolve(f"checkpoint_path={old_file}", f"gail_data_path={copy}").notes
    assert any(level == logging.WARNING and "cannot be checked" in note for level, note in warned)


def test_setup_errors_are_one_line_and_leave_nothing(original, tmp_path, monkeypatch):
    """A checkpoint of another algorithm (refused while resolving the config) and demonstrations of another
    map (refused while building the learner): `dm2: error:`, exit status 2, no folder."""
    _, _, models = original
    proc = run_cli(tmp_path, f"checkpoint_path={models}", alg="qmix", returncode=2)
    assert proc.stderr.startswith("dm2: error: --config=qmix does not match checkpoint") and \
        "Traceback" not in proc.stderr + proc.stdout
    assert os.listdir(tmp_path) == []
    demos = random_demonstrations_3m(tmp_path / "demos.npz")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    status = main.cli(["main.py", "--config=ippo_gail", "with", "env_args.map_name=8m", f"gail_data_path={demos}",
                       "batch_size_run=2", "test_nepisode=2"])
    assert status == 2 and os.listdir(tmp_path / "work") == []


"""The command line of a job, as the researcher would type it: ``src/main.py`` for a training run (fresh, or
resuming its latest checkpoint exactly as config/resume.py resumes any run: ``with checkpoint_path=<step dir>``
plus the keys a resume may change), ``src/demos.py pipeline`` for a demonstrations job.

A :class:`Launch` holds the script (relative to the code directory) and its arguments; paths in the arguments
are as the driver sees them (relative to its working directory when given so), and every process runs in that
working directory. The executor prefixes the Python interpreter and the script's location on the machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sweep.layout import Layout
from sweep.spec import DemosJob, Job, TrainRun, run_config_overrides

MAIN = os.path.join("src", "main.py")
DEMOS = os.path.join("src", "demos.py")
#: Thread-count variables of the numerical libraries: a run gets its share of the cores, no more.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Launch:
    """One attempt at a job. ``args`` follow ``script``; ``threads`` cores it may use; ``gpus`` GPUs it needs;
    ``inputs`` files it reads that a remote worker without the study's storage needs shipped (relative to the
    working directory); ``resume_from`` the checkpoint it continues; ``log`` the job's log file."""

    job: Job
    script: str
    args: list[str]
    threads: int
    gpus: float = 0.0
    inputs: list[str] = field(default_factory=list)
    resume_from: str | None = None
    log: str = ""

    @property
    def key(self) -> str:
        return self.job.key

    def command(self, python: str, code_dir: str) -> list[str]:
        return [python, os.path.join(code_dir, self.script), *self.args]

    def shown(self) -> str:
        """The command as a researcher would type it in the repository (for logs and --dry-run)."""
        return " ".join(["python", self.script, *(_quote(a) for a in self.args)])

    def with_sacred_id(self, sacred_id: int) -> "Launch":
        """This launch with Sacred's ``--id`` (the run's record directory name) fixed."""
        return Launch(self.job, self.script, [f"--id={sacred_id}", *self.args], self.threads, self.gpus,
                      list(self.inputs), self.resume_from, self.log)


def _quote(arg: str) -> str:
    return f'"{arg}"' if any(c in arg for c in " '\"$&;|<>()*?[]") else arg


def sacred_value(value: Any) -> str:
    """A ``with`` value as Sacred parses it back (a Python literal): ``'dm2_wr0.5'``, ``True``, ``0.0005``."""
    return repr(value)


def train_launch(run: TrainRun, layout: Layout, threads: int, resume_from: str | None = None) -> Launch:
    """``src/main.py`` for ``run``: fresh, or (``resume_from``: a checkpoint step directory) resuming it, with the
    checkpoint's own config and the planned ``t_max``, results path and threads."""
    gpus = 1.0 if run.overrides.get("use_cuda") else 0.0
    runner_keys = {"local_results_path": layout.results, "torch_threads": threads}
    inputs = []
    if resume_from is not None:
        updates = {"checkpoint_path": resume_from, "t_max": run.t_max, **runner_keys}
        inputs.append(os.path.join(resume_from, "checkpoint.pt"))
        args = ["with"]
    else:
        updates = {**run_config_overrides(run, layout.study_dir), **runner_keys, "save_model": True,
                   "save_model_interval": run.save_model_interval}
        args = [f"--config={run.method.config}", f"--env-config={run.method.env_config}", "with"]
    if run.method.demos is not None:
        inputs.append(run.method.demos.path(layout.study_dir, run.map_name))
    args += [f"{key}={sacred_value(value)}" for key, value in updates.items()]
    return Launch(run, MAIN, args, threads, gpus, inputs, resume_from, layout.log(run))


def demos_launch(job: DemosJob, layout: Layout, source_dirs: list[str], threads: int) -> Launch:
    """``src/demos.py pipeline`` over the models directories of ``job``'s source runs (in the spec's seed order)."""
    args = ["pipeline", "--runs", *source_dirs, "--targets", *(f"{t:g}" for t in job.targets),
            "--out-dir", layout.demos_dir(job), "--styles", *job.styles, "--episodes", str(job.episodes),
            "--sampling", job.sampling, "--seed", str(job.seed), "--eval-episodes", str(job.eval_episodes),
            "--threads", str(threads)]
    if job.epsilon is not None:
        args += ["--epsilon", f"{job.epsilon:g}"]
    return Launch(job, DEMOS, args, threads, 0.0, [], None, layout.log(job))


def thread_environment(threads: int) -> dict[str, str]:
    """The environment variables that keep a process's numerical libraries to ``threads`` threads."""
    return {name: str(threads) for name in THREAD_VARIABLES}

"""Where a study keeps everything, under its study directory (``results/experiments/<name>/`` by default)::

    spec.yaml                          the spec as last run (``report <study dir>`` reads it)
    results/                           every run's local_results_path: sacred/<map>/<method>/<id>/, models/, tb_logs/
    demos/<stage>/<map>/               a demos stage's datasets, summary.md/json and checkpoint evaluations
    logs/train/<map>/<method>/seed<s>.log   a run's console output, every attempt appended
    logs/demos/<stage>/<map>.log       a demos job's output
    state/attempts/...json             each job's attempts (command, start, end, exit status, host)
    state/progress.json                the running driver's live progress (``status`` reads it)
    state/driver.lock                  the running driver (one at a time per study)
    state/views/<run>/                 a resumed expert run's checkpoints of all attempts, as one models directory
    report/                            report.md, figures/, statistics.json

and, beside the study directories, ``throughput.json``: env steps/s measured from finished runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from sweep.spec import DemosJob, Job, TrainRun


@dataclass(frozen=True)
class Layout:
    """The paths of the study in ``study_dir``."""

    study_dir: str

    @property
    def spec_copy(self) -> str:
        return os.path.join(self.study_dir, "spec.yaml")

    @property
    def results(self) -> str:
        return os.path.join(self.study_dir, "results")

    @property
    def sacred(self) -> str:
        return os.path.join(self.results, "sacred")

    @property
    def models(self) -> str:
        return os.path.join(self.results, "models")

    @property
    def state(self) -> str:
        return os.path.join(self.study_dir, "state")

    @property
    def progress(self) -> str:
        return os.path.join(self.state, "progress.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.state, "driver.lock")

    @property
    def report(self) -> str:
        return os.path.join(self.study_dir, "report")

    @property
    def throughput(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.study_dir)), "throughput.json")

    def demos_dir(self, job: DemosJob) -> str:
        return os.path.join(self.study_dir, "demos", job.stage, job.map_name)

    def log(self, job: Job) -> str:
        return os.path.join(self.study_dir, "logs", job.kind, f"{job.key}.log")

    def attempts(self, job: Job) -> str:
        return os.path.join(self.state, "attempts", job.kind, f"{job.key}.json")

    def sacred_dir(self, run: TrainRun) -> str:
        """``results/sacred/<map>/<method>``: the run's Sacred records (of every seed of the method)."""
        return os.path.join(self.sacred, run.map_name, run.method.name)

    def models_prefix(self, run: TrainRun) -> str:
        """The start of the run's models directory names, ``<method>__<map>__seed<seed>__`` (run.py's token)."""
        return f"{run.method.name}__{run.map_name}__seed{run.seed}__"

    def view(self, run: TrainRun) -> str:
        return os.path.join(self.state, "views", self.models_prefix(run).rstrip("_"))

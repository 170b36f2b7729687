"""Starting a study from another study's work: ``experiments.py run SPEC --from STUDY_DIR``.

A study that extends another (more seeds, longer runs, the same experts and demonstrations) need not train again
what the other has. ``--from`` starts the new study directory with every job of the new spec that the other
study has with the same settings: the same key, stage, method, map, seed and ``with`` overrides, except that a
training run's ``t_max`` may be larger (the run then goes on from its latest checkpoint, as an interrupted run
does) and its checkpoint interval may differ. What such a job has there comes over:

- a training run's Sacred records (every record of its seed, continuations included), its checkpoints and the
  Sacred source snapshot of its method (``_sources/``);
- a demonstrations job's directory (datasets, summary, checkpoint evaluations);
- each job's log and attempts.

Records, checkpoints and datasets are never written again once written, so they are hard links (copies across
file systems) and take no space; logs and attempts, which the new study appends to, are copies, so the other
study stays exactly as it was. Nothing of the new study may exist yet: ``--from`` starts a study, it never
merges into one.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass

from sweep.layout import Layout
from sweep.spec import Job, Spec, TrainRun
from sweep.state import models_dirs, read_lock, sacred_records


class ReuseError(RuntimeError):
    """``--from`` cannot start the study: the message says why and what to do."""


@dataclass(frozen=True)
class Match:
    """The jobs of the new spec found in the other study: ``reused`` with the same settings, and for each job
    with the same key but other settings a line saying what differs (``differ``)."""

    reused: list[Job]
    differ: list[str]


#: What of a training run may differ between the studies: how long it runs, and when it writes checkpoints (which
#: changes nothing it learns; a continued run keeps its own interval).
MAY_DIFFER = ("t_max", "save_model_interval")


def _settings(job: Job) -> Job:
    """``job`` without what may differ between the studies (:data:`MAY_DIFFER`)."""
    if isinstance(job, TrainRun):
        return dataclasses.replace(job, t_max=0, save_model_interval=0,
                                   overrides={k: v for k, v in job.overrides.items() if k not in MAY_DIFFER})
    return job


def _difference(old: Job, new: Job) -> str | None:
    """Why ``new`` cannot reuse ``old`` (the same key), or None when it can."""
    if type(old) is not type(new):
        return f"a {old.kind} job there, a {new.kind} job here"
    if isinstance(new, TrainRun) and new.t_max < old.t_max:
        return f"t_max {new.t_max} here is below the other study's {old.t_max}"
    a, b = _settings(old), _settings(new)
    fields = [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return f"different {', '.join(fields)}" if fields else None


def match_jobs(source: Spec, target: Spec) -> Match:
    """The jobs of ``target`` that ``source`` has with the same settings (see the module docstring)."""
    old = {job.key: job for job in source.jobs}
    reused, differ = [], []
    for job in target.jobs:
        if job.key not in old:
            continue
        why = _difference(old[job.key], job)
        if why is None:
            reused.append(job)
        else:
            differ.append(f"{job.key}: {why}")
    return Match(reused, differ)


def _link_tree(src: str, dst: str) -> None:
    """``dst`` as a copy of the directory ``src`` made of hard links (copies where links cannot be made)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def _copy_file(src: str, dst: str) -> None:
    if os.path.isfile(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)


def _started(layout: Layout) -> list[str]:
    """What of a study already exists in ``layout``'s directory (its results, demonstrations, logs or state)."""
    parts = ("results", "demos", "logs", "state")
    return [p for p in parts if os.path.exists(os.path.join(layout.study_dir, p))]


def check_sources(source: Layout, target: Layout) -> None:
    """Stop with a :class:`ReuseError` unless ``source`` is a study at rest and ``target`` holds nothing yet."""
    if os.path.abspath(source.study_dir) == os.path.abspath(target.study_dir):
        raise ReuseError(f"--from {source.study_dir} is this study's own directory: give another study's directory.")
    if not os.path.isfile(source.spec_copy):
        raise ReuseError(f"--from {source.study_dir}: not a study directory (no spec.yaml); give a directory that "
                         "`experiments.py run` has written, e.g. results/experiments/quick.")
    lock = read_lock(source)
    if lock is not None:
        raise ReuseError(f"--from {source.study_dir}: its study is running (pid {lock['pid']} on {lock['host']}); "
                         "wait until it ends or stop it (Ctrl-C), then start this one.")
    started = _started(target)
    if started:
        raise ReuseError(f"{target.study_dir} already holds a study ({', '.join(p + '/' for p in started)}): "
                         "--from only starts a new one. Run without --from to continue it, or give another "
                         "directory with --results.")


def copy_jobs(source: Layout, target: Layout, jobs: list[Job]) -> int:
    """Bring ``jobs``' records, checkpoints, datasets, logs and attempts from ``source`` into ``target`` (see the
    module docstring); returns how many of the jobs had anything to bring."""
    brought = 0
    for job in jobs:
        had = os.path.isfile(source.attempts(job))
        if isinstance(job, TrainRun):
            records = sacred_records(source, job)
            snapshot = os.path.join(source.sacred_dir(job), "_sources")
            if records and os.path.isdir(snapshot) and not os.path.exists(os.path.join(target.sacred_dir(job),
                                                                                        "_sources")):
                _link_tree(snapshot, os.path.join(target.sacred_dir(job), "_sources"))
            for record in records:
                _link_tree(record.path, os.path.join(target.sacred_dir(job), os.path.basename(record.path)))
            for models in models_dirs(source, job):
                _link_tree(models, os.path.join(target.models, os.path.basename(models)))
            had = had or bool(records)
        elif os.path.isdir(source.demos_dir(job)):
            _link_tree(source.demos_dir(job), target.demos_dir(job))
            had = True
        _copy_file(source.log(job), target.log(job))
        _copy_file(source.attempts(job), target.attempts(job))
        brought += had
    return brought

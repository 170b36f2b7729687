"""The live progress of a running study: one line (printed every ``--progress-every`` seconds) and the record
that ``experiments.py status`` shows while the driver runs (``state/progress.json``)."""
from __future__ import annotations

from typing import Mapping, Sequence

from sweep.plan import Plan, duration, steps
from sweep.spec import TrainRun
from sweep.state import DONE, FAILED, JobState


def env_steps(states: Sequence[JobState], live: Mapping[str, int]) -> tuple[int, int]:
    """``(env steps done, env steps planned)`` over the training runs; a running one counts its live t_env."""
    done = total = 0
    for s in states:
        if isinstance(s.job, TrainRun):
            total += s.job.t_max
            done += s.job.t_max if s.status == DONE else min(s.job.t_max, live.get(s.job.key, s.t_env))
    return done, total


def counts(states: Sequence[JobState], running: Sequence[str]) -> dict[str, int]:
    running = set(running)
    done = sum(s.status == DONE for s in states)
    failed = sum(s.status == FAILED and s.job.key not in running for s in states)
    return {"jobs": len(states), "done": done, "running": len(running), "failed": failed,
            "waiting": len(states) - done - failed - len(running)}


def progress_line(states: Sequence[JobState], running: Sequence[str], live: Mapping[str, int], plan: Plan) -> str:
    """``12/52 done, 2 running, 1 failed, 37 waiting | env steps 1.2M / 430M (0.3%) | ETA 4:05:00``."""
    c = counts(states, running)
    done, total = env_steps(states, live)
    share = f" ({100 * done / total:.1f}%)" if total else ""
    eta = "ETA " + duration(plan.makespan) if c["running"] or c["waiting"] else "finished"
    return (f"{c['done']}/{c['jobs']} done, {c['running']} running, {c['failed']} failed, {c['waiting']} waiting"
            f" | env steps {steps(done)} / {steps(total)}{share} | {eta}")


def progress_record(states: Sequence[JobState], running: Sequence[str], live: Mapping[str, int], plan: Plan) -> dict:
    done, total = env_steps(states, live)
    return {**counts(states, running), "env_steps_done": done, "env_steps_total": total,
            "eta_seconds": plan.makespan, "running_jobs": {key: live.get(key) for key in running}}

"""The plan of a study: every job's state, what is left to run (env steps) and the estimated time.

The time is estimated by simulating the schedule the runner follows: ``slots`` jobs at a time, each job started
in plan order as soon as a slot is free and the jobs it waits for (its stage's ``after`` stages on its map) are
done; a training run takes its remaining env steps / its measured speed (:mod:`sweep.throughput`), a demos job
its estimated seconds. The estimate is the time the last job ends. Failed jobs that are not retried, and the jobs
waiting for them, are left out (and listed as blocked).
"""
from __future__ import annotations

import datetime
import heapq
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from sweep.spec import DemosJob, Spec, TrainRun
from sweep.state import DONE, FAILED, JobState
from sweep.throughput import Rate, Throughput


@dataclass
class Plan:
    """The jobs in launch order with their states, estimated remaining seconds and speeds, the jobs left out
    (``blocked``: failed and not retried, or waiting for such a job), and the schedule's estimated end."""

    spec: Spec
    states: list[JobState]
    seconds: dict[str, float]
    rates: dict[str, Rate]
    slots: int
    threads: int
    retry_failed: bool
    blocked: list[str] = field(default_factory=list)
    makespan: float = 0.0

    @property
    def remaining_steps(self) -> int:
        return sum(s.remaining_steps for s in self.states if s.job.key not in self.blocked)


def estimate_seconds(state: JobState, throughput: Throughput, threads: int, remaining_steps: int | None = None
                     ) -> tuple[float, Rate | None]:
    """A job's remaining seconds (and, for a training run, the speed used)."""
    job = state.job
    if state.status == DONE:
        return 0.0, None
    if isinstance(job, DemosJob):
        n_checkpoints = sum(max(1, run.t_max // run.save_model_interval) for run in job.used_sources)
        return throughput.demos_seconds(n_checkpoints, len(job.files)), None
    rate = throughput.rate(job.method.config, job.map_name, threads)
    steps = state.remaining_steps if remaining_steps is None else remaining_steps
    return steps / max(rate.steps_per_s, 1e-9), rate


def simulate(order: Sequence[str], seconds: Mapping[str, float], deps: Mapping[str, Iterable[str]], slots: int,
             finished: Iterable[str] = (), running: Iterable[str] = ()) -> dict[str, float]:
    """When each job of ``order`` ends, from now (0 s), running ``slots`` at a time: ``finished`` jobs ended
    already, ``running`` ones occupy slots from the start; every other job starts, in ``order``, once a slot is
    free and its ``deps`` have ended. Jobs that can never start (a dependency that never ends) are left out."""
    end = {key: 0.0 for key in finished}
    active: list[tuple[float, int, str]] = []
    for i, key in enumerate(running):
        heapq.heappush(active, (seconds[key], i, key))
    pending = [k for k in order if k not in end and k not in set(running)]
    t, counter = 0.0, len(active)
    while True:
        while len(active) < slots:
            ready = next((k for k in pending if all(d in end and end[d] <= t for d in deps.get(k, ()))), None)
            if ready is None:
                break
            pending.remove(ready)
            heapq.heappush(active, (t + seconds[ready], counter, ready))
            counter += 1
        if not active:
            return end
        t, _, key = heapq.heappop(active)
        end[key] = t


def make_plan(spec: Spec, states: list[JobState], throughput: Throughput, slots: int, threads: int,
              retry_failed: bool = False, progress: Mapping[str, int] | None = None) -> Plan:
    """The plan for ``states`` (in the spec's job order). ``progress``: the t_env that running jobs have
    reached (their remaining steps count from there, and they hold slots from the start)."""
    progress = dict(progress or {})
    plan = Plan(spec, states, {}, {}, slots, threads, retry_failed)
    for state in states:
        remaining = None
        if state.job.key in progress and isinstance(state.job, TrainRun):
            remaining = max(0, state.job.t_max - progress[state.job.key])
        plan.seconds[state.job.key], rate = estimate_seconds(state, throughput, threads, remaining)
        if rate is not None:
            plan.rates[state.job.key] = rate
    deps = {s.job.key: [d.key for d in spec.dependencies(s.job)] for s in states}
    blocked = {s.job.key for s in states if s.status == FAILED and not retry_failed and s.job.key not in progress}
    changed = True
    while changed:  # whatever waits for a blocked job is blocked too
        changed = False
        for key, needs in deps.items():
            if key not in blocked and any(d in blocked for d in needs):
                blocked.add(key)
                changed = True
    plan.blocked = [s.job.key for s in states if s.job.key in blocked]
    order = [s.job.key for s in states if s.job.key not in blocked]
    done = [s.job.key for s in states if s.status == DONE]
    ends = simulate(order, plan.seconds, deps, slots, finished=done, running=[k for k in progress if k in deps])
    plan.makespan = max(ends.values(), default=0.0)
    return plan


def duration(seconds: float) -> str:
    """``3 d 04:05:06`` / ``4:05:06``."""
    seconds = int(round(max(seconds, 0.0)))
    days, rest = divmod(seconds, 86400)
    clock = str(datetime.timedelta(seconds=rest))
    return f"{days} d {clock}" if days else clock


def steps(n: float) -> str:
    """``1.25M`` / ``300k`` / ``950``."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def format_plan(plan: Plan) -> str:
    """The plan as printed before launching: per stage the jobs, their states, env steps to run and the
    sequential time; the speeds used; the estimated time with ``slots`` at a time."""
    spec = plan.spec
    lines = [f"Study {spec.name} ({spec.path}) in {spec.study_dir}"]
    rows = []
    for stage in spec.stages.values():
        states = [s for s in plan.states if s.job.stage == stage.name]
        count = {status: sum(s.status == status for s in states) for status in ("done", "resumable", "failed")}
        to_run = [s for s in states if s.status != DONE and s.job.key not in plan.blocked]
        rows.append((stage.name, stage.kind, len(states), count["done"], count["resumable"], count["failed"],
                     len(to_run), steps(sum(s.remaining_steps for s in to_run)) if stage.kind == "train" else "-",
                     duration(sum(plan.seconds[s.job.key] for s in to_run))))
    total = [s for s in plan.states if s.status != DONE and s.job.key not in plan.blocked]
    rows.append(("total", "", len(plan.states), sum(s.status == DONE for s in plan.states),
                 sum(s.status == "resumable" for s in plan.states), sum(s.status == FAILED for s in plan.states),
                 len(total), steps(plan.remaining_steps), duration(sum(plan.seconds[s.job.key] for s in total))))
    lines += _table(("stage", "kind", "jobs", "done", "resumable", "failed", "to run", "env steps to run",
                     "one at a time"), rows)
    used: dict[tuple[str, str], Rate] = {}
    for s in total:
        if isinstance(s.job, TrainRun):
            used[(s.job.method.config, s.job.map_name)] = plan.rates[s.job.key]
    if used:
        lines.append(f"Speeds used (env steps/s of one run with {plan.threads} torch thread"
                     f"{'s' * (plan.threads != 1)}):")
        lines += ["  " + line for line in _table(("config", "map", "env steps/s", "from"), [
            (config, map_name, f"{rate.steps_per_s:,.0f}", rate.source)
            for (config, map_name), rate in sorted(used.items())])]
    for key in plan.blocked:
        state = next(s for s in plan.states if s.job.key == key)
        why = (f"failed ({state.note}); rerun with --retry-failed" if state.status == FAILED
               else "waits for a failed job")
        lines.append(f"  left out: {key}: {why}")
    if total:
        until = datetime.datetime.now() + datetime.timedelta(seconds=plan.makespan)
        lines.append(f"{len(total)} jobs, {plan.slots} at a time with {plan.threads} torch thread"
                     f"{'s' * (plan.threads != 1)} each: estimated {duration(plan.makespan)} "
                     f"(until about {until:%a %d %b %H:%M}).")
    else:
        lines.append("Nothing to run: every job is done" + (" or left out." if plan.blocked else "."))
    return "\n".join(lines)

"""The scheduling loop of ``experiments.py run``, the same for every executor.

Each job starts, in the spec's order, once a slot is free and the jobs it waits for are done: a pending run
fresh, a resumable one from its latest checkpoint, a failed one only with ``retry_failed`` (from its checkpoint if
it has one). When an attempt ends the job's state is read again from disk, a training run's measured speed goes
to the throughput table, and a failure prints the tail of its log. A job killed from outside (not by this driver)
is resumed, at most :data:`MAX_LAUNCHES` times per invocation.

Ctrl-C or SIGTERM to the driver: it starts nothing more and forwards SIGTERM to every running job, which finishes
its iteration, writes a checkpoint and exits; the driver waits for them. A second Ctrl-C forwards it again (the
runs then stop at once, without a new checkpoint). Re-running the command continues from there.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from typing import TextIO

from sweep.commands import demos_launch, train_launch
from sweep.executor import Finished
from sweep.layout import Layout
from sweep.plan import duration, make_plan, steps
from sweep.progress import progress_line, progress_record
from sweep.spec import Job, Spec, TrainRun
from sweep.state import (DONE, FAILED, PENDING, RESUMABLE, JobState, acquire_lock, end_attempt, job_state,
                         prune_checkpoints, release_lock, source_models_dir, start_attempt, write_progress)
from sweep.throughput import Throughput, measure_log

MAX_LAUNCHES = 3
STOPPED = 130
#: A run's measured speed enters the throughput table only when measured over this many seconds (shorter runs are
#: dominated by start-up and say little about a long run's speed).
MIN_MEASURED_SECONDS = 30.0


class Runner:
    """Runs ``spec``'s jobs with ``executor`` (see the module docstring); :meth:`run` returns the exit status:
    0 when every job is done, 1 when some failed or could not run, 130 when stopped by a signal."""

    def __init__(self, spec: Spec, layout: Layout, executor, throughput: Throughput, threads: int,
                 states: list[JobState] | None = None, retry_failed: bool = False, out: TextIO = sys.stdout,
                 progress_seconds: float = 30.0, poll_seconds: float = 0.5,
                 min_measured_seconds: float = MIN_MEASURED_SECONDS):
        self.spec, self.layout, self.executor, self.throughput = spec, layout, executor, throughput
        self.threads, self.retry_failed, self.out = threads, retry_failed, out
        self.progress_seconds, self.poll_seconds = progress_seconds, poll_seconds
        self.min_measured_seconds = min_measured_seconds
        self.states = {s.job.key: s for s in (states or [job_state(layout, job) for job in spec.jobs])}
        self.jobs = {job.key: job for job in spec.jobs}
        self.launches: Counter = Counter()
        self.stop_requests = self.stops_sent = 0
        self.started = time.time()

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=self.out, flush=True)

    # --- the loop ----------------------------------------------------------------------------------------

    def run(self) -> int:
        acquire_lock(self.layout)
        try:
            if not (os.path.exists(self.layout.spec_copy) and os.path.samefile(self.spec.path, self.layout.spec_copy)):
                shutil.copyfile(self.spec.path, self.layout.spec_copy)
            with self._signals():
                self._loop()
        finally:
            self.executor.close()
            release_lock(self.layout)
        return self._summary()

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            self.stop_requests += 1

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> None:
        last_progress = 0.0
        while True:
            for finished in self.executor.poll():
                self._ended(finished)
            if self.stop_requests > self.stops_sent:
                self.stops_sent = self.stop_requests
                running = self.executor.running()
                if running:
                    self.say(f"stopping: {len(running)} running job(s) finish their iteration and save a checkpoint"
                             + (" (stopping at once, without a new checkpoint)" if self.stops_sent > 1 else
                                "; Ctrl-C again to stop them at once") + ". Re-run the same command to continue.")
                self.executor.stop()
            if not self.stop_requests:
                self._launch_ready()
            if not self.executor.running():
                break
            if time.time() - last_progress >= self.progress_seconds:
                self._progress()
                last_progress = time.time()
            time.sleep(self.poll_seconds)
        self._progress()

    def _ready(self, job: Job) -> bool:
        state = self.states[job.key]
        runnable = state.status in (PENDING, RESUMABLE) or (
            state.status == FAILED and self.retry_failed and self.launches[job.key] == 0)
        return (runnable and self.launches[job.key] < MAX_LAUNCHES and job.key not in self.executor.running()
                and all(self.states[dep.key].status == DONE for dep in self.spec.dependencies(job)))

    def _launch_ready(self) -> None:
        for job in self.spec.jobs:
            if len(self.executor.running()) >= self.executor.slots:
                return
            if self._ready(job):
                self._launch(job)

    def _launch(self, job: Job) -> None:
        state = self.states[job.key]
        if isinstance(job, TrainRun):
            launch = train_launch(job, self.layout, self.threads, state.checkpoint)
        else:
            launch = demos_launch(job, self.layout, [source_models_dir(self.layout, run) for run in job.used_sources],
                                  self.threads)
        start_attempt(self.layout, job, launch.shown(), launch.resume_from)
        self.executor.launch(launch)
        self.launches[job.key] += 1
        how = f"resuming from t_env {state.t_env}" if launch.resume_from else "starting"
        if state.status == FAILED:
            how = f"retrying after a failure ({how})"
        self.say(f"{how}: {job.key}")

    def _ended(self, finished: Finished) -> None:
        job = finished.launch.job
        end_attempt(self.layout, job, finished.exit_code, finished.host)
        self._prune([job.key])
        if isinstance(job, TrainRun):
            measured = measure_log(finished.output)
            if measured is not None and measured[1] >= self.min_measured_seconds:
                self.throughput.record(job.method.config, job.map_name, finished.launch.threads, *measured, job.key)
        state = self.states[job.key] = job_state(self.layout, job)
        if state.status == DONE:
            self.say(f"done: {job.key}" + (f" (t_env {state.t_env})" if isinstance(job, TrainRun) else ""))
        elif state.status == FAILED:
            tail = "\n".join("    " + line for line in finished.output.rstrip("\n").split("\n")[-15:])
            self.say(f"FAILED: {job.key}: exit status {finished.exit_code}; log {self.layout.log(job)}; its last "
                     f"lines:\n{tail}")
        else:
            self.say(f"stopped: {job.key} (exit status {finished.exit_code}; {state.note or 'starts again'})")

    def _prune(self, keys) -> None:
        """``keep_checkpoints: latest`` stages: delete the runs' older checkpoints."""
        for key in keys:
            job = self.jobs[key]
            if isinstance(job, TrainRun) and self.spec.stages[job.stage].keep_checkpoints == "latest":
                prune_checkpoints(self.layout, job)

    def _progress(self) -> None:
        live = self.executor.progress()
        running = self.executor.running()
        self._prune(running)
        plan = make_plan(self.spec, list(self.states.values()), self.throughput, self.executor.slots, self.threads,
                         self.retry_failed, progress={k: live.get(k, self.states[k].t_env) for k in running})
        self.say(progress_line(list(self.states.values()), running, live, plan))
        write_progress(self.layout, progress_record(list(self.states.values()), running, live, plan))

    def _summary(self) -> int:
        states = list(self.states.values())
        done = sum(s.status == DONE for s in states)
        failed = [s for s in states if s.status == FAILED]
        lines = [f"{self.spec.name}: {done}/{len(states)} jobs done, {len(failed)} failed, "
                 f"{len(states) - done - len(failed)} not finished; {duration(time.time() - self.started)} "
                 f"this time, {steps(sum(s.t_env for s in states if isinstance(s.job, TrainRun)))} env steps so far."]
        for s in failed:
            lines.append(f"  failed: {s.job.key} ({s.note}); log: {self.layout.log(s.job)}")
        cmd = f"python src/experiments.py run {self.spec.path}"
        if done < len(states):
            lines.append(f"Run the same command again to continue ({cmd} ...)"
                         + ("; add --retry-failed to rerun the failed jobs" if failed else "") + ".")
        else:
            lines.append(f"Report: python src/experiments.py report {self.spec.path}")
        self.say("\n".join(lines))
        if self.stop_requests:
            return STOPPED
        return 0 if done == len(states) else 1


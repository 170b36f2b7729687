"""What is on disk for each job, read fresh every time (so re-running a command picks up where things are):

- a training run is **done** when one of its Sacred records (``results/sacred/<map>/<method>/<id>``, this seed,
  not ``evaluate``) is COMPLETED at ``t_env >= t_max``;
- it is **resumable** from its latest checkpoint (``results/models/<method>__<map>__seed<s>__*/<t_env>/``, across
  every attempt's models directory) when it is not done;
- it **failed** when its last attempt ended with an error (exit status 1: an error during training, Sacred's
  FAILED record; 2: a set-up error); it is rerun only on request (``--retry-failed``), from its checkpoint if any;
- it is **pending** otherwise (a run stopped before its first checkpoint starts again).

A stop (Ctrl-C, SIGTERM: exit 130 / 143) or a killed process is not a failure: the run resumes. A demos job is
done when its ``summary.json`` and every dataset it plans exist.

Attempts (``state/attempts/<kind>/<key>.json``) record each launch: the command, start and end, exit status,
host and where its output starts in the job's log, so a failure's log tail is the failed attempt's.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field

from sweep.layout import Layout
from sweep.spec import DemosJob, Job, TrainRun
from utils.plotting import read_run

DONE, PENDING, RESUMABLE, FAILED, RUNNING = "done", "pending", "resumable", "failed", "running"
STOPPED_CODES = (130, 143)  # Ctrl-C / SIGTERM: the run saved a checkpoint and can resume
STEP_DIR = re.compile(r"^\d+$")


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


@dataclass
class JobState:
    """A job's status (``done`` / ``pending`` / ``resumable`` / ``failed``), how far it got (``t_env``, the latest
    checkpoint step or the finished run's), the checkpoint to resume from and its attempts."""

    job: Job
    status: str
    t_env: int = 0
    checkpoint: str | None = None
    attempts: list[dict] = field(default_factory=list)
    note: str = ""

    @property
    def remaining_steps(self) -> int:
        return 0 if self.status == DONE or not isinstance(self.job, TrainRun) else max(0, self.job.t_max - self.t_env)


def read_attempts(layout: Layout, job: Job) -> list[dict]:
    try:
        with open(layout.attempts(job)) as f:
            return json.load(f)["attempts"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"{layout.attempts(job)} is unreadable ({exc}); delete it to forget the job's attempts "
                           "(its runs on disk are not affected).") from None


def write_attempts(layout: Layout, job: Job, attempts: list[dict]) -> None:
    path = layout.attempts(job)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"job": job.key, "attempts": attempts}, f, indent=1)
    os.replace(tmp, path)


def start_attempt(layout: Layout, job: Job, command: str, resume_from: str | None, host: str | None = None) -> None:
    """Record that an attempt starts (its output is appended to the job's log from the current end)."""
    log = layout.log(job)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    offset = os.path.getsize(log) if os.path.exists(log) else 0
    attempts = read_attempts(layout, job)
    attempts.append({"started": now(), "ended": None, "exit_code": None, "command": command,
                     "resumed_from": resume_from, "host": host or socket.gethostname(), "log_offset": offset})
    write_attempts(layout, job, attempts)


def end_attempt(layout: Layout, job: Job, exit_code: int, host: str | None = None) -> None:
    attempts = read_attempts(layout, job)
    if not attempts:
        return
    attempts[-1].update(ended=now(), exit_code=int(exit_code))
    if host:
        attempts[-1]["host"] = host
    write_attempts(layout, job, attempts)


def failed(attempt: dict | None) -> bool:
    """The attempt ended in an error (not a stop, not killed, not still running)."""
    code = None if attempt is None else attempt.get("exit_code")
    return code is not None and code > 0 and code not in STOPPED_CODES


def log_tail(layout: Layout, job: Job, lines: int = 20, attempt: dict | None = None) -> str:
    """The last ``lines`` lines of the job's log, from the start of ``attempt`` (default: the last one)."""
    attempts = read_attempts(layout, job)
    attempt = attempt or (attempts[-1] if attempts else None)
    try:
        with open(layout.log(job), "rb") as f:
            f.seek(int(attempt.get("log_offset", 0)) if attempt else 0)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


def checkpoints(layout: Layout, run: TrainRun) -> dict[int, str]:
    """Every checkpoint step of ``run`` across its models directories: ``{t_env: step dir}`` (of equal steps,
    the later directory's)."""
    found: dict[int, str] = {}
    prefix = layout.models_prefix(run)
    if not os.path.isdir(layout.models):
        return found
    for token in sorted(d for d in os.listdir(layout.models) if d.startswith(prefix)):
        token_dir = os.path.join(layout.models, token)
        for step in os.listdir(token_dir):
            if STEP_DIR.match(step) and os.path.isfile(os.path.join(token_dir, step, "checkpoint.pt")):
                found[int(step)] = os.path.join(token_dir, step)
    return found


def sacred_records(layout: Layout, run: TrainRun, metric: str = "test_battle_won_mean") -> list:
    """The run's Sacred records (``utils.plotting.RunRecord``): this method, map and seed, training runs only."""
    base = layout.sacred_dir(run)
    if not os.path.isdir(base):
        return []
    records = []
    for entry in sorted(os.listdir(base)):
        path = os.path.join(base, entry)
        if os.path.isfile(os.path.join(path, "run.json")):
            record = read_run(path, metric)
            if record.problem is None and record.seed == run.seed and not record.evaluate:
                records.append(record)
    return records


def train_state(layout: Layout, run: TrainRun) -> JobState:
    attempts = read_attempts(layout, run)
    records = sacred_records(layout, run)
    finished = [r for r in records if r.status == "COMPLETED" and r.t_end >= run.t_max]
    if finished:
        return JobState(run, DONE, max(r.t_end for r in finished), attempts=attempts)
    steps = checkpoints(layout, run)
    latest = max(steps) if steps else None
    t_env = max([latest or 0, *(r.t_end for r in records)])
    checkpoint = steps[latest] if latest is not None else None
    last = attempts[-1] if attempts else None
    if failed(last):
        return JobState(run, FAILED, latest or 0, checkpoint, attempts,
                        f"exit status {last['exit_code']} at {last.get('ended')}")
    if checkpoint is not None:
        return JobState(run, RESUMABLE, latest, checkpoint, attempts, f"resumes from t_env {latest}")
    note = f"restarts: stopped at t_env {t_env} before its first checkpoint" if attempts or records else ""
    return JobState(run, PENDING, 0, None, attempts, note)


def demos_state(layout: Layout, job: DemosJob) -> JobState:
    attempts = read_attempts(layout, job)
    out = layout.demos_dir(job)
    if os.path.isfile(os.path.join(out, "summary.json")) and all(
            os.path.isfile(os.path.join(out, f"{name}.npz")) for name in job.files):
        return JobState(job, DONE, attempts=attempts)
    last = attempts[-1] if attempts else None
    if failed(last):
        return JobState(job, FAILED, attempts=attempts, note=f"exit status {last['exit_code']}")
    return JobState(job, PENDING, attempts=attempts)


def prune_checkpoints(layout: Layout, run: TrainRun) -> int:
    """Delete every checkpoint of ``run`` but its latest (a stage's ``keep_checkpoints: latest``: a QMIX checkpoint
    holds its replay buffer, hundreds of MB); returns how many were deleted. The latest is complete (checkpoints are
    written atomically), and it is all a resume needs."""
    steps = checkpoints(layout, run)
    latest = max(steps, default=None)
    for step, step_dir in steps.items():
        if step != latest:
            shutil.rmtree(step_dir, ignore_errors=True)
    return max(0, len(steps) - 1)


def job_state(layout: Layout, job: Job) -> JobState:
    return train_state(layout, job) if isinstance(job, TrainRun) else demos_state(layout, job)


def models_dirs(layout: Layout, run: TrainRun) -> list[str]:
    return sorted(os.path.join(layout.models, d) for d in os.listdir(layout.models)
                  if d.startswith(layout.models_prefix(run))) if os.path.isdir(layout.models) else []


def source_models_dir(layout: Layout, run: TrainRun) -> str:
    """One models directory holding every checkpoint of ``run`` (for the demos pipeline): its only models
    directory, or, for a run resumed into several, ``state/views/<run>/`` with one link per step."""
    dirs = models_dirs(layout, run)
    if len(dirs) == 1:
        return dirs[0]
    view = layout.view(run)
    os.makedirs(view, exist_ok=True)
    for step, step_dir in checkpoints(layout, run).items():
        link = os.path.join(view, str(step))
        target = os.path.relpath(step_dir, view)
        if os.path.islink(link) and os.readlink(link) != target:
            os.remove(link)
        if not os.path.lexists(link):
            os.symlink(target, link)
    return view


# --- the driver ------------------------------------------------------------------------------------------

class StudyLocked(RuntimeError):
    """Another driver is running this study."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(layout: Layout) -> dict | None:
    """The running driver's ``{pid, host, started}``, or None when none runs (a stale lock is ignored)."""
    try:
        with open(layout.lock) as f:
            lock = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    if lock.get("host") == socket.gethostname() and not _alive(int(lock.get("pid", -1))):
        return None
    return lock


def acquire_lock(layout: Layout) -> None:
    """Become the study's driver; :class:`StudyLocked` if another one runs (on this host: a live pid)."""
    os.makedirs(layout.state, exist_ok=True)
    lock = read_lock(layout)
    if lock is not None and int(lock.get("pid", -1)) != os.getpid():
        raise StudyLocked(f"another `experiments.py run` (pid {lock['pid']} on {lock['host']}, since "
                          f"{lock['started']}) is running the study in {layout.study_dir}; wait for it, stop it "
                          f"(Ctrl-C or kill {lock['pid']}), or delete {layout.lock} if it is gone.")
    tmp = f"{layout.lock}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": now()}, f)
    os.replace(tmp, layout.lock)


def release_lock(layout: Layout) -> None:
    lock = read_lock(layout)
    if lock is not None and int(lock.get("pid", -1)) == os.getpid():
        os.remove(layout.lock)


def write_progress(layout: Layout, progress: dict) -> None:
    os.makedirs(layout.state, exist_ok=True)
    tmp = f"{layout.progress}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "updated": now(), **progress}, f)
    os.replace(tmp, layout.progress)


def read_progress(layout: Layout) -> dict | None:
    """The running driver's last progress (None when no driver runs)."""
    if read_lock(layout) is None:
        return None
    try:
        with open(layout.progress) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None

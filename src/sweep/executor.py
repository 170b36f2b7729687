"""Executors run job attempts (:class:`~sweep.commands.Launch`) and report when they end. The contract, which
:class:`LocalExecutor` and :class:`sweep.ray_executor.RayExecutor` implement:

- ``slots``: how many jobs it runs at a time;
- ``launch(launch)``: start an attempt (its output is appended to ``launch.log``);
- ``poll()``: the attempts that ended since the last call, as :class:`Finished`;
- ``progress()``: ``{key: t_env}`` that running training runs have reported;
- ``running()``: the keys of the running attempts;
- ``stop()``: ask every running attempt to stop: SIGTERM, on which ``src/main.py`` finishes its iteration,
  writes a checkpoint and exits with 143; a second call sends it again (``main.py`` then stops at once, without
  a checkpoint);
- ``close()``: release what it holds.

Processes run in their own session, so a Ctrl-C in the terminal reaches only the driver, which forwards it.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from sweep.commands import Launch, thread_environment
from sweep.state import now

CODE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T_ENV = re.compile(rb"t_env:\s*(\d+)\s*/")
TAIL_BYTES = 16384


@dataclass
class Finished:
    """An attempt that ended: its exit status (negative: killed by that signal), where it ran, and its output."""

    launch: Launch
    exit_code: int
    host: str
    output: str


def die_with_parent() -> None:
    """In a child process before exec (Linux): receive SIGTERM when the driver dies, so that a killed driver leaves
    no run behind (each one saves a checkpoint and exits, and the next driver resumes it)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def attempt_header(launch: Launch) -> str:
    what = f"resuming {launch.resume_from}" if launch.resume_from else "start"
    return f"==== {now()} {launch.key}: {what} on {socket.gethostname()} ====\n$ {launch.shown()}\n"


def latest_t_env(tail: bytes) -> int | None:
    """The last ``t_env: N /`` of run.py's reports in a piece of a run's output."""
    found = T_ENV.findall(tail)
    return int(found[-1]) if found else None


def read_tail(path: str, size: int = TAIL_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read()
    except OSError:
        return b""


class LocalExecutor:
    """Up to ``slots`` processes at a time on this machine, in working directory ``cwd``."""

    def __init__(self, slots: int, cwd: str | None = None, python: str = sys.executable, code_dir: str = CODE_DIR):
        self.slots, self.cwd, self.python, self.code_dir = slots, cwd or os.getcwd(), python, code_dir
        self._procs: dict[str, tuple[subprocess.Popen, Launch, int]] = {}

    def launch(self, launch: Launch) -> None:
        os.makedirs(os.path.dirname(launch.log), exist_ok=True)
        offset = os.path.getsize(launch.log) if os.path.exists(launch.log) else 0
        with open(launch.log, "a") as log:
            log.write(attempt_header(launch))
            log.flush()
            proc = subprocess.Popen(launch.command(self.python, self.code_dir), cwd=self.cwd, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent,
                                    env={**os.environ, **thread_environment(launch.threads)})
        self._procs[launch.key] = (proc, launch, offset)

    def poll(self) -> list[Finished]:
        ended = []
        for key, (proc, launch, offset) in list(self._procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._procs[key]
            with open(launch.log, "rb") as f:
                f.seek(offset)
                output = f.read().decode("utf-8", "replace")
            ended.append(Finished(launch, code, socket.gethostname(), output))
        return ended

    def progress(self) -> dict[str, int]:
        out = {}
        for key, (_, launch, _) in self._procs.items():
            t_env = latest_t_env(read_tail(launch.log))
            if t_env is not None:
                out[key] = t_env
        return out

    def running(self) -> list[str]:
        return list(self._procs)

    def stop(self) -> None:
        for proc, _, _ in self._procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        """Nothing is left running: stop what still runs (SIGTERM) and wait for it."""
        self.stop()
        for proc, _, _ in self._procs.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()

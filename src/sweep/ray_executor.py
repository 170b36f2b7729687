"""Ray as the distributed engine: one Ray task per training run, declaring the CPUs (its torch threads) and GPUs
(1 with ``use_cuda``) it needs, so Ray places runs on the cluster's nodes as resources free up.

Storage (``--ray-storage``):

- ``shared`` (default): every node sees the driver's working directory at the same path (a shared file system;
  on one machine, trivially). The task runs ``src/main.py`` there and the run writes its results, checkpoints and
  log in place.
- ``pull``: the task runs in a temporary directory on its node. What the run reads (a checkpoint to resume, its
  demonstrations) is sent with the task; everything the run wrote comes back to the driver as a compressed archive
  and is unpacked into the study. The driver reserves each run's Sacred record directory first and gives the run
  its id (``--id``), so records made on different nodes never collide.

Code: by default the nodes run the repository at the driver's path; ``--ray-ship-code`` sends it with the tasks
(Ray's ``working_dir``). Demonstration jobs read every checkpoint of the expert runs and take seconds: they run
on the driver's machine, as the local executor runs them.

Stopping: a small coordinator actor holds a stop level that the tasks poll every second; on a stop, each task
sends SIGTERM to its run (a second stop sends it again), waits for the run to exit and returns normally, so a
``pull`` task still brings back the checkpoint it just wrote. The tasks also report their runs' t_env to the
coordinator for the progress line.

The task function and the coordinator use only the standard library and are sent to the workers by value, so
the workers need neither this package on their path nor anything installed beyond Ray.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

from sweep.commands import Launch, thread_environment
from sweep import executor as local_executor
from sweep.executor import CODE_DIR, Finished, LocalExecutor, attempt_header, die_with_parent
from sweep.layout import Layout
from sweep.spec import TrainRun

SHIP_EXCLUDES = [".git", ".venv", "results", "demos", "docs/results", "__pycache__", "*.pt", "*.npz"]


class RaySetupError(RuntimeError):
    """Ray cannot run the study as asked (not installed, or a setting that cannot work); the message says why."""



def _unpack(archive: bytes, dest: str) -> None:
    """Extract a tar.gz ``archive`` into ``dest``, refusing links and paths that leave it (tarfile's "data"
    filter; Python releases before 3.11.4 lack it, and there the members are checked here)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = os.path.realpath(dest)
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, member.name))
            if not (member.isfile() or member.isdir()) or os.path.commonpath([root, target]) != root:
                raise ValueError(f"refusing to extract {member.name!r} outside {dest} (or a link) from a run's archive")
        tar.extractall(dest)

def _import_ray():
    try:
        import ray
    except ImportError:
        raise RaySetupError("--ray needs Ray, which is not installed: pip install -r requirements-dev.txt (or "
                         "pip install 'ray==2.60.0'), or run without --ray on this machine.") from None
    return ray


class _Coordinator:
    """The Ray actor shared by the driver and its tasks: the stop level and the runs' latest t_env."""

    def __init__(self):
        self.level, self.t_env = 0, {}

    def stop(self) -> int:
        self.level += 1
        return self.level

    def stop_level(self) -> int:
        return self.level

    def report(self, key: str, t_env: int) -> None:
        self.t_env[key] = t_env

    def progress(self) -> dict:
        return dict(self.t_env)


def _pack(root: str, paths: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in paths:
            tar.add(os.path.join(root, path), arcname=path)
    return buffer.getvalue()


def _run_task(job: dict, coordinator, inputs: bytes | None) -> dict:
    """A job attempt on a Ray worker (standard library only). ``job``: ``command`` (script relative to the code
    directory, and arguments), ``code_dir`` (None: the task's working directory, i.e. shipped code), ``workspace``
    (the working directory in shared storage; None: a temporary one), ``log`` (shared storage: the job's log, to
    append to), ``env``, ``key``, ``header``. Returns the exit status, host, this attempt's output and, without
    shared storage, the files it wrote (a tar.gz)."""
    import ray  # the worker has Ray: it runs this task

    host = socket.gethostname()
    code_dir = job["code_dir"] or os.getcwd()
    workspace = job["workspace"] or tempfile.mkdtemp(prefix="dm2-job-")
    if not os.path.isdir(workspace):
        return {"exit_code": 2, "host": host, "output": f"experiments: error: the study's working directory "
                f"{workspace} does not exist on {host}: mount the shared storage there, or use --ray-storage pull.\n",
                "archive": None}
    if inputs:
        _unpack(inputs, workspace)
    before = {os.path.join(d, f) for d, _, files in os.walk(workspace) for f in files}
    log_path = os.path.join(workspace, job["log"]) if job["workspace"] else os.path.join(workspace, "attempt.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    t_env_pattern = re.compile(rb"t_env:\s*(\d+)\s*/")
    with open(log_path, "a") as log:
        log.write(job["header"])
        log.flush()
        proc = subprocess.Popen([sys.executable, os.path.join(code_dir, job["command"][0]), *job["command"][1:]],
                                cwd=workspace, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent, env={**os.environ, **job["env"]})
        signals_sent, last_report = 0, 0.0
        while proc.poll() is None:
            time.sleep(1.0)
            level = ray.get(coordinator.stop_level.remote())
            if level > signals_sent and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                signals_sent = level
            if time.time() - last_report > 2:
                with open(log_path, "rb") as f:
                    f.seek(max(offset, os.path.getsize(log_path) - 16384))
                    found = t_env_pattern.findall(f.read())
                if found:
                    coordinator.report.remote(job["key"], int(found[-1]))
                last_report = time.time()
    with open(log_path, "rb") as f:
        f.seek(offset)
        output = f.read().decode("utf-8", "replace")
    archive = None
    if not job["workspace"]:
        written = sorted(os.path.relpath(p, workspace) for d, _, files in os.walk(workspace) for p in
                         (os.path.join(d, f) for f in files) if p not in before and p != log_path)
        archive = _pack(workspace, written)
        shutil.rmtree(workspace, ignore_errors=True)
    return {"exit_code": proc.returncode, "host": host, "output": output, "archive": archive}


class RayExecutor:
    """Training runs as Ray tasks (``threads`` CPUs each); demos jobs on this machine. ``address``: ``auto``, a
    cluster address, or ``local`` (start Ray here, with ``local_cpus`` CPUs). An already initialised Ray (e.g. a
    test's ``ray.init``) is used as it is."""

    def __init__(self, address: str, layout: Layout, threads: int, storage: str = "shared", ship_code: bool = False,
                 local_cpus: int | None = None, cwd: str | None = None):
        ray = self.ray = _import_ray()
        self.layout, self.threads, self.storage, self.cwd = layout, threads, storage, cwd or os.getcwd()
        if storage == "pull" and (os.path.isabs(layout.study_dir) or ".." in os.path.normpath(layout.study_dir)
                                  .split(os.sep)):
            raise RaySetupError(f"--ray-storage pull needs the study directory inside this working directory, as a "
                                f"relative path (got {layout.study_dir}); give --results with a relative path.")
        runtime_env = {"working_dir": CODE_DIR, "excludes": SHIP_EXCLUDES} if ship_code else None
        self.ship_code = ship_code
        self.started_ray = False
        if not ray.is_initialized():
            if address == "local":
                ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
            else:
                ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
            self.started_ray = True
        for module in (sys.modules[__name__], local_executor):  # the task's code travels with it
            ray.cloudpickle.register_pickle_by_value(module)
        self.coordinator = ray.remote(num_cpus=0)(_Coordinator).remote()
        self.task = ray.remote(_run_task)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        self.local = LocalExecutor(1, self.cwd)
        self._refs: dict = {}  # ref -> Launch

    def launch(self, launch: Launch) -> None:
        if not isinstance(launch.job, TrainRun):
            self.local.launch(launch)
            return
        inputs = None
        if self.storage == "pull":
            launch = launch.with_sacred_id(self._reserve_sacred_id(launch.job))
            present = [p for p in launch.inputs if os.path.exists(os.path.join(self.cwd, p))]
            inputs = _pack(self.cwd, present) if present else None
        job = {"command": [launch.script, *launch.args], "code_dir": None if self.ship_code else CODE_DIR,
               "workspace": self.cwd if self.storage == "shared" else None, "key": launch.key,
               "log": os.path.relpath(launch.log, self.cwd), "env": thread_environment(launch.threads),
               "header": attempt_header(launch)}
        ref = self.task.options(num_cpus=launch.threads, num_gpus=launch.gpus, max_retries=0).remote(
            job, self.coordinator, inputs)
        self._refs[ref] = launch

    def _reserve_sacred_id(self, run: TrainRun) -> int:
        """The next free Sacred id of the run's method on its map, its directory created here (empty until the
        run's record comes back)."""
        base = self.layout.sacred_dir(run)
        os.makedirs(base, exist_ok=True)
        n = max([int(d) for d in os.listdir(base) if d.isdigit()], default=0) + 1
        while True:
            try:
                os.mkdir(os.path.join(base, str(n)))
                return n
            except FileExistsError:
                n += 1

    def poll(self) -> list[Finished]:
        ended = self.local.poll()
        if not self._refs:
            return ended
        ready, _ = self.ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        for ref in ready:
            launch = self._refs.pop(ref)
            try:
                result = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost node or worker: the run resumes from its checkpoint
                result = {"exit_code": -1, "host": "?", "output": f"the Ray task failed: {exc}\n", "archive": None}
            if self.storage == "pull":
                if result["archive"]:
                    _unpack(result["archive"], self.cwd)
                os.makedirs(os.path.dirname(launch.log), exist_ok=True)
                with open(launch.log, "a") as log:
                    log.write(result["output"])
            ended.append(Finished(launch, int(result["exit_code"]), result["host"], result["output"]))
        return ended

    def progress(self) -> dict[str, int]:
        reported = self.ray.get(self.coordinator.progress.remote())
        running = set(self.running())
        return {**{k: v for k, v in reported.items() if k in running}, **self.local.progress()}

    def running(self) -> list[str]:
        return [launch.key for launch in self._refs.values()] + self.local.running()

    def stop(self) -> None:
        self.ray.get(self.coordinator.stop.remote())
        self.local.stop()

    def close(self) -> None:
        if self._refs:
            self.stop()
            while self._refs:
                self.poll()
                time.sleep(0.5)
        self.local.close()
        self.ray.kill(self.coordinator)
        if self.started_ray:
            self.ray.shutdown()

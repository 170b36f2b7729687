"""How many real StarCraft II games may run at once on this machine (``env_args.max_concurrent_games``).

Every real-game environment is one game process (plus its Python worker) that takes a CPU core while it
steps and memory for as long as it runs. The default cap (``max_concurrent_games: 0``) is derived from what
this process may use: the CPU cores it may run on (its affinity, and a container's CPU quota) and the memory
available to it (``MemAvailable``, and a container's memory limit), at :data:`GAME_MEMORY_GIB` per game,
leaving one core to the learner::

    cap = max(1, min(cores - 1, floor(available memory / GAME_MEMORY_GIB)))

A run plays as many episodes as its config asks for; when that is more than the cap, the runner plays them
in waves of at most ``cap`` games (see ``runners.episode_runner``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

#: Memory set aside per game (the StarCraft II process and its Python worker), in GiB. A conservative
#: planning figure, not a measurement: the game cannot run where this code is developed. When your games
#: need less, set env_args.max_concurrent_games explicitly.
GAME_MEMORY_GIB = 2.0
_GIB = 1024 ** 3
_CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class GameBudget:
    """``cap`` games at once; ``cores`` and ``memory_gib`` are what the machine offers this process
    (``memory_gib`` is None where it cannot be read); ``configured`` says that the cap was set by
    ``env_args.max_concurrent_games`` rather than derived."""

    cap: int
    cores: int
    memory_gib: float | None
    configured: bool

    def describe(self) -> str:
        """One line for the console, e.g. ``at most 7 games at once (from 8 cores and 60.1 GiB ...)``."""
        memory = "unknown memory" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB available memory"
        games = "1 game" if self.cap == 1 else f"{self.cap} games"
        if self.configured:
            return (f"at most {games} at once (env_args.max_concurrent_games={self.cap}; this machine "
                    f"offers {self.cores} cores and {memory})")
        return (f"at most {games} at once (env_args.max_concurrent_games=0: derived from {self.cores} "
                f"cores and {memory}, one core left to the learner, {GAME_MEMORY_GIB:g} GiB per game)")

    def oversubscribed(self) -> bool:
        """Whether a configured cap asks for more games than the derived one would allow."""
        return self.configured and self.cap > derived_cap(self.cores, self.memory_gib)


def check_max_concurrent_games(value) -> int:
    """``value`` as an int if it is a valid ``env_args.max_concurrent_games``, else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"env_args.max_concurrent_games must be 0 (derive the cap from this machine's cores and "
                         f"memory) or a positive number of games; got {value!r}")
    return int(value)


def derived_cap(cores: int, memory_gib: float | None) -> int:
    """The default cap for ``cores`` usable cores and ``memory_gib`` available memory (see the module doc)."""
    by_memory = math.inf if memory_gib is None else math.floor(memory_gib / GAME_MEMORY_GIB)
    return int(max(1, min(cores - 1, by_memory)))


def budget(max_concurrent_games: int = 0) -> GameBudget:
    """The cap for this machine: ``max_concurrent_games`` when positive, else derived (module docstring)."""
    requested = check_max_concurrent_games(max_concurrent_games)
    cores, memory = usable_cores(), available_memory_gib()
    if requested:
        return GameBudget(cap=requested, cores=cores, memory_gib=memory, configured=True)
    return GameBudget(cap=derived_cap(cores, memory), cores=cores, memory_gib=memory, configured=False)


# ------------------------------------------------------------------------------------------ machine facts
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_dirs(controller: str) -> list[str]:
    """This process's cgroup directories for ``controller`` ("" = cgroup v2), innermost first."""
    dirs = []
    for line in (_read("/proc/self/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            base = os.path.join(_CGROUP_ROOT, controller) if controller else _CGROUP_ROOT
            parts = [p for p in path.split("/") if p]
            dirs += [os.path.join(base, *parts[:k]) for k in range(len(parts), -1, -1)]
    return dirs


def _cgroup_cpu_limit() -> float:
    """Cores allowed by a CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); inf without one."""
    limit = math.inf
    for d in _cgroup_dirs(""):
        fields = (_read(os.path.join(d, "cpu.max")) or "max").split()
        if fields[0] != "max":
            limit = min(limit, int(fields[0]) / int(fields[1]))
    for d in _cgroup_dirs("cpu"):
        quota, period = _read(os.path.join(d, "cpu.cfs_quota_us")), _read(os.path.join(d, "cpu.cfs_period_us"))
        if quota and period and int(quota) > 0:
            limit = min(limit, int(quota) / int(period))
    return limit


def usable_cores() -> int:
    """CPU cores this process may use: its affinity mask, bounded by a container's CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpu_limit()
    return max(1, cores if quota == math.inf else min(cores, math.floor(quota)))


def _cgroup_memory_room() -> float:
    """Bytes left under a memory limit (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``); inf without one."""
    room = math.inf
    for controller, limit_file, usage_file in (("", "memory.max", "memory.current"),
                                               ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes")):
        for d in _cgroup_dirs(controller):
            limit, usage = _read(os.path.join(d, limit_file)), _read(os.path.join(d, usage_file))
            if limit and limit != "max" and int(limit) < 2 ** 60:  # v1 writes "no limit" as a huge number
                room = min(room, int(limit) - int(usage or 0))
    return room


def available_memory_gib() -> float | None:
    """Memory available to new processes, in GiB: ``MemAvailable`` (Linux; physical memory elsewhere),
    bounded by a container's memory limit. None where neither can be read."""
    available = math.inf
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available == math.inf and hasattr(os, "sysconf"):
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    available = min(available, _cgroup_memory_room())
    return None if available == math.inf else max(available, 0) / _GIB

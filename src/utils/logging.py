"""Run logging: one ``log_stat(key, value, t_env)`` fans out to the console report, Sacred's metrics
(``metrics.json``) and TensorBoard, PyMARL style.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Mapping

import numpy as np

EPISODE_STATS = ("return", "battle_won", "ep_length", "dead_allies", "dead_enemies")


class _StdoutHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is at the time, so that Sacred's Python-level output capture
    (which replaces ``sys.stdout`` while a run lasts) sees every line."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler sets it; the current sys.stdout always wins
        pass


def get_console_logger(name: str = "dm2") -> logging.Logger:
    """A logger printing ``[INFO 12:34:56] dm2 message`` to stdout (which Sacred captures into cout.txt)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def episode_stat_means(stats: Mapping[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    """Per-episode arrays ``[n_episodes]`` (a runner's stats) -> ``<prefix>return_mean``, ``return_std``,
    ``battle_won_mean``, ``ep_length_mean``, ``dead_allies_mean``, ``dead_enemies_mean``."""
    means = {}
    for key in EPISODE_STATS:
        values = np.asarray(stats[key], dtype=np.float64)
        means[f"{prefix}{key}_mean"] = float(values.mean())
        if key == "return":
            means[f"{prefix}return_std"] = float(values.std())
    return means


class StatAccumulator:
    """Collects training statistics between two log points and reduces them to the values logged.

    ``add_episodes(stats)`` takes a runner's per-episode arrays ``[B]``; ``add_scalars(d)`` takes a learner's
    ``{name: float}``. ``reduce()`` returns the episode means (see :func:`episode_stat_means`) over every
    episode since the last reduce, plus each scalar's mean over the calls that reported it, and clears.
    Its state is checkpointed so a resumed run logs the same numbers as an uninterrupted one.
    """

    def __init__(self):
        self._clear()

    def _clear(self) -> None:
        self._episodes: dict[str, list[float]] = {k: [] for k in EPISODE_STATS}
        self._scalars: dict[str, list[float]] = {}

    def add_episodes(self, stats: Mapping[str, np.ndarray]) -> None:
        for key in EPISODE_STATS:
            self._episodes[key].extend(np.asarray(stats[key], dtype=np.float64).tolist())

    def add_scalars(self, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self._scalars.setdefault(key, []).append(float(value))

    def empty(self) -> bool:
        return not self._episodes["return"] and not self._scalars

    def reduce(self) -> dict[str, float]:
        out = episode_stat_means(self._episodes) if self._episodes["return"] else {}
        out.update({key: float(np.mean(values)) for key, values in self._scalars.items()})
        self._clear()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": {k: list(v) for k, v in self._episodes.items()},
                "scalars": {k: list(v) for k, v in self._scalars.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._episodes = {k: list(state["episodes"][k]) for k in EPISODE_STATS}
        self._scalars = {k: list(v) for k, v in state["scalars"].items()}


class Logger:
    """Fan-out of logged statistics.

    Args:
        console: where ``print_recent_stats`` writes.
        sacred_run: the Sacred ``Run`` (``_run.log_scalar`` -> ``metrics.json``), or None.
        tb_dir: TensorBoard log directory, or None for no TensorBoard.

    Every ``log_stat`` is also kept in ``history`` (``[(key, t_env, value)]``), which a checkpoint stores;
    ``replay_history`` re-emits it to Sacred and TensorBoard so a resumed run's records hold the whole
    curve, exactly as the uninterrupted run's would.
    """

    def __init__(self, console: logging.Logger, sacred_run=None, tb_dir: str | None = None):
        self.console = console
        self.sacred_run = sacred_run
        self.tb_writer = None
        if tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb_writer = SummaryWriter(log_dir=tb_dir)
        self.history: list[tuple[str, int, float]] = []
        self.latest: dict[str, tuple[int, float]] = {}

    def _emit(self, key: str, value: float, t: int) -> None:
        if self.sacred_run is not None:
            self.sacred_run.log_scalar(key, value, t)
        if self.tb_writer is not None:
            self.tb_writer.add_scalar(key, value, t)

    def log_stat(self, key: str, value: float, t: int) -> None:
        value, t = float(value), int(t)
        self._emit(key, value, t)
        self.history.append((key, t, value))
        self.latest[key] = (t, value)

    def replay_history(self, history: list[tuple[str, int, float]]) -> None:
        """Re-emit a previous run's logged statistics (to Sacred and TensorBoard, not the console)."""
        for key, t, value in history:
            self._emit(key, value, t)
            self.latest[key] = (t, value)
        self.history = list(history) + self.history

    def print_recent_stats(self, header: str) -> None:
        """``header`` then the latest value of every statistic, four per line (PyMARL's layout)."""
        lines, row = [header], []
        for key in sorted(self.latest):
            row.append(f"{key + ':':<28}{self.latest[key][1]:>12.4f}")
            if len(row) == 4:
                lines.append("    ".join(row))
                row = []
        if row:
            lines.append("    ".join(row))
        self.console.info("\n".join(lines))

    def close(self) -> None:
        if self.tb_writer is not None:
            self.tb_writer.close()
            self.tb_writer = None

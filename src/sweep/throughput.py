"""Env steps per second of one training run, by ``--config``, map and torch threads: what the plan's time
estimates are made from.

Defaults come from ``experiments/throughput.yaml`` (``bench/bench_training.py`` figures, with the machine they were
measured on). Every run that ends adds its own measured speed to ``throughput.json`` beside the study directories
(:func:`measure_log` reads it from the run's console output: the env steps and seconds between its speed reports,
so start-up, kernel compilation and the first iteration's warm-up do not count). A measured figure for the same
config and map takes precedence over the defaults.

Speeds measured at another thread count are scaled linearly with the threads (an approximation: an IPPO update
on 5m_vs_6m is 1.75x faster with 2 threads than with 1, not 2x). A config or map without any figure borrows one
(another map of the config; else IPPO's), and the plan says so.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from sweep.state import now

DEFAULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "experiments", "throughput.yaml")
FALLBACK_CONFIG = "ippo"
MAX_SAMPLES = 20  # measured runs kept per (config, map)
#: ``Recent stats | t_env:  61668 / 1000000 | episode: 1792 | 2,523 env steps/s | ...`` (run.py's report line)
SPEED_LINE = re.compile(r"Recent stats \| t_env:\s*(\d+)\s*/\s*\d+ \|[^|]*\|\s*(?:([\d,.]+) env steps/s)?")


@dataclass(frozen=True)
class Rate:
    """Env steps per second of one run, and where the figure comes from (shown in the plan)."""

    steps_per_s: float
    source: str


def measure_log(text: str) -> tuple[int, float] | None:
    """``(env steps, seconds)`` of training in a run's console output: over its speed reports, each one's env
    steps since the report before it divided by its speed. None without two reports."""
    steps = seconds = 0.0
    previous = None
    for match in SPEED_LINE.finditer(text):
        t_env = int(match.group(1))
        speed = match.group(2)
        if previous is not None and speed is not None and t_env > previous:
            rate = float(speed.replace(",", ""))
            if rate > 0:
                steps += t_env - previous
                seconds += (t_env - previous) / rate
        previous = t_env
    return (int(steps), seconds) if seconds > 0 else None


def _scaled(samples: list[tuple[int, float, float]], threads: int) -> float:
    """The speed at ``threads`` of ``(threads_i, steps_i, seconds_i)`` samples: their steps over their seconds,
    of the samples at ``threads`` if there are any, else of all, each one's seconds scaled linearly to ``threads``
    (``seconds_i * threads_i / threads``)."""
    samples = [x for x in samples if x[0] == threads] or samples
    return sum(s for _, s, _ in samples) / sum(sec * t / threads for t, _, sec in samples)


class Throughput:
    """The defaults and the measured figures; :meth:`rate` for the plan, :meth:`record` after a run."""

    def __init__(self, defaults: dict[str, Any], measured: dict[str, Any], path: str | None):
        self.defaults, self.measured, self.path = defaults, measured, path

    @classmethod
    def load(cls, path: str | None, defaults_path: str = DEFAULTS) -> "Throughput":
        with open(defaults_path) as f:
            defaults = yaml.safe_load(f)
        measured: dict[str, Any] = {"rates": {}}
        if path is not None and os.path.isfile(path):
            try:
                with open(path) as f:
                    measured = json.load(f)
            except (OSError, ValueError):
                measured = {"rates": {}}  # a damaged cache only loses measured figures
        return cls(defaults, measured, path)

    def _measured(self, config: str, map_name: str) -> list[tuple[int, float, float]]:
        return [(s["threads"], s["steps"], s["seconds"])
                for s in self.measured["rates"].get(config, {}).get(map_name, [])]

    def _default(self, config: str, map_name: str) -> list[tuple[int, float, float]]:
        table = (self.defaults.get("rates") or {}).get(config, {}).get(map_name, {})
        return [(int(t), float(r), 1.0) for t, r in table.items()]

    def _exact(self, config: str, map_name: str, threads: int) -> Rate | None:
        samples = self._measured(config, map_name)
        if samples:
            return Rate(_scaled(samples, threads), f"measured ({len(samples)} run{'s' * (len(samples) != 1)})")
        samples = self._default(config, map_name)
        if samples:
            return Rate(_scaled(samples, threads), "bench default")
        return None

    def rate(self, config: str, map_name: str, threads: int) -> Rate:
        """The speed of a ``config`` run on ``map_name`` with ``threads`` torch threads."""
        exact = self._exact(config, map_name, threads)
        if exact is not None:
            return exact
        for cfg, note in ((config, ""), (FALLBACK_CONFIG, f"{FALLBACK_CONFIG}'s ")):
            maps = list(self.measured["rates"].get(cfg, {})) + list((self.defaults.get("rates") or {}).get(cfg, {}))
            for other in maps:
                borrowed = self._exact(cfg, other, threads)
                if borrowed is not None:
                    return Rate(borrowed.steps_per_s, f"no figure: {note}{borrowed.source} on {other}")
        raise ValueError(f"no throughput figure at all: {DEFAULTS} needs `rates: {{{FALLBACK_CONFIG}: ...}}`")

    def demos_seconds(self, n_checkpoints: int, n_datasets: int) -> float:
        d = self.defaults.get("demos_seconds") or {}
        return d.get("start", 15) + n_checkpoints * d.get("per_checkpoint", 1.5) + n_datasets * d.get("per_dataset", 8)

    def record(self, config: str, map_name: str, threads: int, steps: int, seconds: float, run: str) -> None:
        """Add a run's measured speed (kept: the last ``MAX_SAMPLES`` of each config and map) and save."""
        samples = self.measured["rates"].setdefault(config, {}).setdefault(map_name, [])
        samples.append({"threads": int(threads), "steps": int(steps), "seconds": round(float(seconds), 3),
                        "run": run, "at": now()})
        del samples[:-MAX_SAMPLES]
        if self.path is not None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(self.measured, f, indent=1)
            os.replace(tmp, self.path)

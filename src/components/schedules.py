"""Schedules of exploration parameters as a function of ``t_env``."""
from __future__ import annotations


class LinearSchedule:
    """``start -> finish`` linearly over ``duration`` env steps, then flat at ``finish`` (PyMARL's
    ``DecayThenFlatSchedule`` with linear decay). Stateless: ``value(t_env)`` depends only on ``t_env``."""

    def __init__(self, start: float, finish: float, duration: int):
        if duration <= 0:
            raise ValueError(f"schedule duration must be a positive number of env steps, got {duration!r}")
        self.start, self.finish, self.duration = float(start), float(finish), int(duration)

    def value(self, t_env: int) -> float:
        frac = min(max(t_env, 0) / self.duration, 1.0)
        return self.start + frac * (self.finish - self.start)

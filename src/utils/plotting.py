"""Learning curves from Sacred ``FileStorageObserver`` runs: mean ± standard error across seeds.

Runs live in ``<results>/<map>/<alg>/<run id>/`` with ``run.json`` (status), ``config.json`` and
``metrics.json``, which maps each metric name to ``{"steps": [...], "values": [...], "timestamps": [...]}``
(steps are ``t_env``). Runs are grouped by (map, alg); each group's runs are interpolated linearly onto a
common ``t_env`` grid spanning the range that every run in the group covers, so that every point of a curve
averages all of the group's seeds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

#: Sacred run statuses whose metrics are left out of the curves.
SKIPPED_STATUSES = ("FAILED", "QUEUED")


class PlotError(ValueError):
    """Nothing can be plotted from the given results (with what to do about it)."""


@dataclass
class Run:
    """One Sacred run's series of a metric; ``steps`` and ``values`` are float64 ``[T]``, steps increasing."""

    path: str
    map_name: str
    alg: str
    status: str
    steps: np.ndarray
    values: np.ndarray


@dataclass
class Curve:
    """A (map, alg) group on its common grid: ``t``, ``mean``, ``sem`` float64 ``[G]``; ``finals`` ``[n_runs]``.

    ``sem`` is the standard error of the mean across runs (NaN with a single run); ``finals`` holds each
    run's value at the grid's last point ``t[-1]``.
    """

    map_name: str
    alg: str
    t: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    finals: np.ndarray
    runs: list[str]

    @property
    def n_runs(self) -> int:
        return len(self.runs)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _clean_series(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by step; of repeated steps (e.g. from a resumed run) the last logged one."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.append(steps[1:] != steps[:-1], True)
    return steps[last], values[last]


def find_runs(results_dir: str, metric: str, maps=None, algs=None) -> tuple[list[Run], list[str]]:
    """Every run under ``results_dir`` (of the given maps / algs, all if ``None``) that logged ``metric``.

    Returns ``(runs, skipped)``: ``skipped`` says, for each run left out, which one and why (failed,
    unreadable, or without the metric). Raises :class:`PlotError` when no run is left.
    """
    if not os.path.isdir(results_dir):
        raise PlotError(f"results directory {results_dir!r} does not exist; runs are written to "
                        "results/sacred by src/main.py, or pass --results DIR")
    runs, skipped, seen, matched, metrics_seen = [], [], set(), 0, set()
    for root, dirs, files in os.walk(results_dir):
        dirs.sort()
        if "run.json" not in files:
            continue
        dirs[:] = []  # a run directory holds no further runs
        alg_dir = os.path.dirname(root)
        alg, map_name = os.path.basename(alg_dir), os.path.basename(os.path.dirname(alg_dir))
        seen.add((map_name, alg))
        if (maps is not None and map_name not in maps) or (algs is not None and alg not in algs):
            continue
        matched += 1
        try:
            status = _read_json(os.path.join(root, "run.json")).get("status", "UNKNOWN")
        except (OSError, ValueError) as err:
            skipped.append(f"{root}: unreadable run.json ({err})")
            continue
        if status in SKIPPED_STATUSES:
            skipped.append(f"{root}: the run is {status}")
            continue
        try:
            logged = _read_json(os.path.join(root, "metrics.json"))
        except FileNotFoundError:
            skipped.append(f"{root}: no metrics.json")
            continue
        except (OSError, ValueError) as err:
            skipped.append(f"{root}: unreadable metrics.json ({err})")
            continue
        metrics_seen.update(logged)
        series = logged.get(metric)
        steps, values = _clean_series(series["steps"], series["values"]) if series else ((), ())
        if len(steps) == 0:
            skipped.append(f"{root}: no values of metric {metric!r}")
            continue
        runs.append(Run(root, map_name, alg, status, steps, values))
    if not runs:
        raise PlotError(_nothing_found(results_dir, metric, maps, algs, seen, matched, metrics_seen))
    return runs, skipped


def _nothing_found(results_dir, metric, maps, algs, seen, matched, metrics_seen) -> str:
    """Why :func:`find_runs` found nothing to plot, with what there is instead."""
    if not seen:
        return (f"no Sacred runs (directories holding run.json) under {results_dir!r}; "
                "expected <results>/<map>/<alg>/<run id>/run.json")
    found = ", ".join(f"{m}/{a}" for m, a in sorted(seen))
    if not matched:
        wanted = " ".join(f"{flag} {' '.join(names)}" for flag, names in (("--maps", maps), ("--algs", algs))
                          if names is not None)
        return f"no run under {results_dir!r} matches {wanted}; map/alg with runs: {found}"
    if not metrics_seen:
        return f"no run under {results_dir!r} has usable metrics (see the skipped runs); map/alg with runs: {found}"
    return (f"no run under {results_dir!r} logged metric {metric!r}; metrics found: "
            f"{', '.join(sorted(metrics_seen))}")


def aggregate(runs: list[Run], n_points: int = 200) -> list[Curve]:
    """Group ``runs`` by (map, alg) and average each group on its common grid of ``n_points`` t_env values.

    A single run keeps its own logged steps. Raises :class:`PlotError` for a group whose runs share no
    ``t_env`` range.
    """
    if n_points < 2:
        raise PlotError(f"the grid needs at least 2 points, got {n_points}")
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.map_name, run.alg), []).append(run)
    curves = []
    for (map_name, alg), members in sorted(groups.items()):
        lo = max(r.steps[0] for r in members)
        hi = min(r.steps[-1] for r in members)
        if len(members) == 1:
            t = members[0].steps
        elif hi > lo:
            t = np.linspace(lo, hi, n_points)
        elif hi == lo:
            t = np.array([hi])
        else:
            spans = "; ".join(f"{r.path}: t_env {r.steps[0]:g}..{r.steps[-1]:g}" for r in members)
            raise PlotError(f"the runs of {alg} on {map_name} share no t_env range, so they cannot be averaged "
                            f"({spans}); choose runs with --maps/--algs or move the odd one out")
        ys = np.stack([np.interp(t, r.steps, r.values) for r in members])  # [n_runs, G]
        n = len(members)
        sem = ys.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(t), np.nan)
        curves.append(Curve(map_name, alg, t, ys.mean(axis=0), sem, ys[:, -1], [r.path for r in members]))
    return curves


def summary_table(curves: list[Curve], metric: str) -> str:
    """A text table: per map and method, the final mean ± s.e. of ``metric``, at which t_env, over how many seeds."""
    header = ("map", "method", "seeds", "t_env", f"final {metric}")
    rows = []
    for c in curves:
        final = f"{c.finals.mean():.4f}"
        final += f" ± {c.sem[-1]:.4f}" if c.n_runs > 1 else " (one seed: no s.e.)"
        rows.append((c.map_name, c.alg, str(c.n_runs), f"{c.t[-1]:.0f}", final))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def plot_curves(curves: list[Curve], metric: str, out_dir: str, fmt: str = "png") -> list[str]:
    """One figure per map, one curve (mean, shaded ± s.e.) per method; returns the files written.

    Files are ``<out_dir>/<map>_<metric>.<fmt>``; a method keeps its colour across maps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib

    if fmt not in ("png", "pdf"):
        raise PlotError(f"unknown figure format {fmt!r}; valid choices: png, pdf")
    os.makedirs(out_dir, exist_ok=True)
    palette = matplotlib.colormaps["tab10"].colors
    colours = {alg: palette[i % len(palette)] for i, alg in enumerate(sorted({c.alg for c in curves}))}
    paths = []
    for map_name in sorted({c.map_name for c in curves}):
        fig = Figure(figsize=(5.0, 3.6), constrained_layout=True)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for c in (c for c in curves if c.map_name == map_name):
            colour = colours[c.alg]
            ax.plot(c.t, c.mean, color=colour, label=f"{c.alg} (n={c.n_runs})")
            if c.n_runs > 1:
                ax.fill_between(c.t, c.mean - c.sem, c.mean + c.sem, color=colour, alpha=0.25, linewidth=0)
        ax.set_title(map_name)
        ax.set_xlabel("environment steps (t_env)")
        ax.set_ylabel(metric)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        path = os.path.join(out_dir, f"{map_name}_{metric}.{fmt}")
        fig.savefig(path, dpi=150)
        paths.append(path)
    return paths

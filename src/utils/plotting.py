"""Learning curves from Sacred ``FileStorageObserver`` runs: mean ± standard error across seeds.

Runs live in ``<results>/<map>/<alg>/<run id>/`` with ``run.json`` (status, start time), ``config.json``
(seed, evaluate, t_max), ``info.json`` (``resumed_from`` for a resumed run) and ``metrics.json``, which maps
each metric name to ``{"steps": [...], "values": [...], "timestamps": [...]}`` (steps are ``t_env``).

What is averaged is seeds, not run directories (:func:`select_seeds`):

- only training runs count: an ``evaluate=True`` run scores a checkpoint and is left out;
- a run resumed from a checkpoint continues the run that wrote it (``info.json``'s
  ``resumed_from.sacred_run_dir``), and may itself be resumed. The seed's series is the first run's points
  up to the resume ``t_env``, then the continuation's points after it: the continuation's ``metrics.json``
  starts with the logged history up to the checkpoint, replayed (``Logger.replay_history``), which is not
  counted twice (:func:`_join`), and whatever the interrupted run logged after its checkpoint is superseded
  by the continuation. The seed is the first run's ``config.json`` seed (a continuation restores the
  checkpoint's random state; its own config seed plays no part);
- a seed is finished when its last run is ``COMPLETED`` and reached ``t_max``; unfinished seeds (``RUNNING``,
  ``FAILED``, ``INTERRUPTED``, or short of ``t_max``) are left out unless asked for;
- runs of one (map, alg, seed) that do not continue one another are duplicates and count once: the one
  kept is finished rather than unfinished, then the longest (largest ``t_env`` reached), then the one
  started last.

:func:`run_report` gives every run a line saying whether it was used and why (not). Each (map, alg)
group's seeds are interpolated linearly onto a common ``t_env`` grid spanning the range that every seed
covers, so that every point of a curve averages all of the group's seeds.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np


class PlotError(ValueError):
    """Nothing can be plotted from the given results (with what to do about it)."""


@dataclass
class RunRecord:
    """One Sacred run directory: what plotting needs from its four JSON files.

    ``name`` is ``<map>/<alg>/<run id>``. ``steps`` and ``values`` (float64 ``[T]``, steps increasing) are
    the plotted metric as this run logged it, replayed history included. ``t_start`` is 0, or the resume
    ``t_env`` for a continuation, or the evaluated checkpoint's ``t_env``; ``t_end`` is the last ``t_env``
    of any metric. ``parent`` names (``<map>/<alg>/<run id>``) the run a continuation resumed from,
    ``metrics`` every metric the run logged, ``problem`` why the run cannot be read (then the other fields
    keep their defaults).
    """

    path: str
    name: str
    map_name: str
    alg: str
    status: str = "UNKNOWN"
    seed: int | None = None
    evaluate: bool = False
    t_max: int | None = None
    t_start: int = 0
    t_end: int = 0
    start_time: str = ""
    parent: str | None = None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    metrics: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def finished(self) -> bool:
        return self.status == "COMPLETED" and (self.t_max is None or self.t_end >= self.t_max)

    def progress(self) -> str:
        """How far the run got, e.g. ``INTERRUPTED at t_env 300 of t_max 1000``."""
        return f"{self.status} at t_env {self.t_end} of t_max {self.t_max}"


@dataclass
class Seed:
    """One training seed of a (map, alg): its runs (the first, then each continuation) and joined series."""

    map_name: str
    alg: str
    seed: int
    runs: list[RunRecord]
    steps: np.ndarray
    values: np.ndarray

    @property
    def finished(self) -> bool:
        return self.runs[-1].finished

    @property
    def label(self) -> str:
        """The seed's runs, e.g. ``3m/ippo/3 → 3m/ippo/5``."""
        return " → ".join(r.name for r in self.runs)


@dataclass
class ReportLine:
    """One run's verdict: used (in seed ``seed``) or skipped, and why (``note``)."""

    run: RunRecord
    seed: int | None
    used: bool
    note: str


@dataclass
class Selection:
    """What :func:`select_seeds` decided: the seeds to average, a line per run, and warnings to show."""

    seeds: list[Seed]
    lines: list[ReportLine]
    warnings: list[str]


@dataclass
class Curve:
    """A (map, alg) group on its common grid: ``t``, ``mean``, ``sem`` float64 ``[G]``; ``finals`` ``[n]``.

    ``sem`` is the standard error of the mean across seeds (NaN with a single seed); ``finals`` holds each
    seed's value at the grid's last point ``t[-1]``.
    """

    map_name: str
    alg: str
    t: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    finals: np.ndarray
    seeds: list[Seed]

    @property
    def n(self) -> int:
        return len(self.seeds)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _natural(name: str) -> list:
    """Sort key putting run ids in numeric order (``3m/ippo/9`` before ``3m/ippo/10``)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def _clean_series(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Finite points sorted by step, one per step (of repeated steps, the last logged one)."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[keep], values[keep]
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.append(steps[1:] != steps[:-1], True)
    return steps[last], values[last]


def _run_name(path: str) -> str:
    """``<map>/<alg>/<run id>``: the last three components of a run directory's path."""
    return "/".join(os.path.normpath(path).split(os.sep)[-3:])


def _read_run_file(path: str, file: str) -> tuple[dict, str | None]:
    """``(contents, None)`` of the JSON ``file`` of run directory ``path``, or ``({}, why it cannot be read)``.

    A missing ``info.json`` reads as ``{}``: Sacred writes it only once the run has put something in it.
    """
    try:
        return _read_json(os.path.join(path, file)), None
    except FileNotFoundError:
        return {}, None if file == "info.json" else f"no {file}"
    except (OSError, ValueError) as err:
        return {}, f"unreadable {file} ({err})"


def read_run(path: str, metric: str) -> RunRecord:
    """The :class:`RunRecord` of the Sacred run directory ``path`` (``<results>/<map>/<alg>/<run id>``)."""
    name = _run_name(path)
    record = RunRecord(path, name, *name.split("/")[:2])
    run, record.problem = _read_run_file(path, "run.json")
    record.status, record.start_time = run.get("status", "UNKNOWN"), run.get("start_time", "")
    files = {}
    for file in ("config.json", "info.json", "metrics.json"):
        files[file], problem = _read_run_file(path, file)
        record.problem = record.problem or problem
    config, logged = files["config.json"], files["metrics.json"]
    record.seed = config.get("seed")
    if record.problem is None and record.seed is None:
        record.problem = "config.json has no seed"
    if record.problem is not None:
        return record
    record.evaluate, record.t_max = bool(config.get("evaluate")), config.get("t_max")
    record.metrics = tuple(logged)
    if logged.get(metric):
        record.steps, record.values = _clean_series(logged[metric]["steps"], logged[metric]["values"])
    resumed_from = files["info.json"].get("resumed_from")
    if resumed_from:
        record.parent, record.t_start = _run_name(resumed_from["sacred_run_dir"]), int(resumed_from["t_env"])
    record.t_end = int(max((max(s["steps"]) for s in logged.values() if s.get("steps")), default=record.t_start))
    if record.evaluate:
        record.t_start = record.t_end
    return record


def find_runs(results_dir: str, metric: str, maps=None, algs=None) -> list[RunRecord]:
    """Every run directory under ``results_dir`` (of the given maps / algs, all if ``None``), read for ``metric``.

    Runs come sorted by map, alg and run id. Raises :class:`PlotError` when there is no run directory, or
    none of the given maps / algs.
    """
    if not os.path.isdir(results_dir):
        raise PlotError(f"results directory {results_dir!r} does not exist; runs are written to "
                        "results/sacred by src/main.py, or pass --results DIR")
    runs, seen = [], set()
    for root, dirs, files in os.walk(results_dir):
        dirs.sort()
        if "run.json" not in files:
            continue
        dirs[:] = []  # a run directory holds no further runs
        map_name, alg = _run_name(root).split("/")[:2]
        seen.add((map_name, alg))
        if (maps is None or map_name in maps) and (algs is None or alg in algs):
            runs.append(read_run(root, metric))
    if not seen:
        raise PlotError(f"no Sacred runs (directories holding run.json) under {results_dir!r}; "
                        "expected <results>/<map>/<alg>/<run id>/run.json")
    if not runs:
        wanted = " ".join(f"{flag} {' '.join(names)}" for flag, names in (("--maps", maps), ("--algs", algs))
                          if names is not None)
        found = ", ".join(f"{m}/{a}" for m, a in sorted(seen))
        raise PlotError(f"no run under {results_dir!r} matches {wanted}; map/alg with runs: {found}")
    return sorted(runs, key=lambda r: _natural(r.name))


def nothing_to_plot(runs: list[RunRecord], metric: str, results_dir: str) -> str:
    """Why :func:`select_seeds` kept no seed of ``runs``, with what there is instead."""
    metrics_seen = {name for r in runs for name in r.metrics}
    if not metrics_seen:
        return f"no run under {results_dir!r} has usable metrics (see the report of the runs)"
    if not any(len(r.steps) for r in runs):
        return (f"no run under {results_dir!r} logged metric {metric!r}; metrics found: "
                f"{', '.join(sorted(metrics_seen))}")
    return (f"no finished training run under {results_dir!r} logged metric {metric!r} (see the report of the "
            "runs; --include-unfinished plots unfinished runs too)")


def _join(chain: list[RunRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The series of a run and its continuations: each run's points up to the next one's resume t_env, then
    the next one's points.

    A continuation's own series starts with the history replayed from the checkpoint: a step both have
    counts once (the same value, taken from the continuation), and the replay fills in the points that a
    run killed outright (status ``RUNNING``) logged but Sacred had not yet written to its metrics.json.
    """
    steps, values = chain[0].steps, chain[0].values
    for child in chain[1:]:
        before = steps <= child.t_start
        steps, values = _clean_series(np.concatenate([steps[before], child.steps]),
                                      np.concatenate([values[before], child.values]))
    return steps, values


def _rank(seed: Seed) -> tuple:
    """Which of duplicate seeds to keep, the largest: finished, then longest, then started last."""
    first, last = seed.runs[0], seed.runs[-1]
    return seed.finished, last.t_end, first.start_time, _natural(first.name)


def _preference(kept: Seed, other: Seed) -> str:
    """Why ``kept`` ranks above ``other`` (:func:`_rank`), in words."""
    if kept.finished != other.finished:
        return "finished"
    if kept.runs[-1].t_end != other.runs[-1].t_end:
        return f"longer: t_env {kept.runs[-1].t_end} vs {other.runs[-1].t_end}"
    if kept.runs[0].start_time != other.runs[0].start_time:
        return "started later"
    return "same length and start time, later run id"


def _used_note(seed: Seed, i: int) -> str:
    """The report note of ``seed.runs[i]`` in a used seed: which part of its series counts."""
    run = seed.runs[i]
    prev = seed.runs[i - 1] if i > 0 else None
    succ = seed.runs[i + 1] if i + 1 < len(seed.runs) else None
    if prev is None and succ is None:
        note = "used"
    elif prev is None:
        note = f"used up to t_env {succ.t_start}; continued by {succ.name}"
    elif succ is None:
        note = f"used from t_env {run.t_start}; resumes {prev.name}"
    else:
        note = f"used t_env {run.t_start}..{succ.t_start}; resumes {prev.name}, continued by {succ.name}"
    if prev is None and run.parent is not None:
        note += f" (resumed from {run.parent}, which is not usable: the history replayed into this run stands in)"
    return note


def _skipped_note(seed: Seed, i: int, reason: str) -> str:
    """The report note of ``seed.runs[i]`` in a skipped seed; an unfinished seed's earlier runs name its last."""
    last = seed.runs[-1]
    if reason == "unfinished":
        where = last.progress() if i == len(seed.runs) - 1 else f"continued by {last.name}, {last.progress()}"
        return f"skipped: unfinished, {where} (--include-unfinished to plot it)"
    return f"skipped: {reason}"


def select_seeds(runs: list[RunRecord], metric: str, include_unfinished: bool = False) -> Selection:
    """Group ``runs`` into seeds (the rules are in this module's docstring) and report on every run.

    With ``include_unfinished`` unfinished seeds are used too, each one with a warning; otherwise they are
    skipped. The seeds come sorted by map, alg and seed.
    """
    verdicts: dict[str, ReportLine] = {}
    warnings: list[str] = []
    training = {}
    for run in runs:
        if run.problem is not None:
            verdicts[run.name] = ReportLine(run, run.seed, False, f"skipped: {run.problem}")
        elif run.evaluate:
            verdicts[run.name] = ReportLine(run, run.seed, False,
                                            "skipped: evaluate=True (scores a checkpoint, not a training run)")
        else:
            training[run.name] = run
    continued = {run.parent for run in training.values() if run.parent in training}
    for run in training.values():
        if run.parent is not None and run.parent not in training:
            warnings.append(f"{run.name} resumed from {run.parent}, which is not a usable run under the results "
                            f"directory: the history replayed into {run.name} up to t_env {run.t_start} stands in")

    groups: dict[tuple[str, str, int], list[Seed]] = {}
    skipped: list[tuple[Seed, str]] = []  # seeds left out, with the reason
    for leaf in (r for r in training.values() if r.name not in continued):
        chain = [leaf]
        while chain[0].parent in training:
            chain.insert(0, training[chain[0].parent])
        seed = Seed(leaf.map_name, leaf.alg, chain[0].seed, chain, *_join(chain))
        if len(seed.steps):
            groups.setdefault((seed.map_name, seed.alg, seed.seed), []).append(seed)
        else:
            skipped.append((seed, f"no values of metric {metric!r}"))

    used = []
    for (map_name, alg, seed_id), candidates in sorted(groups.items()):
        kept, *others = sorted(candidates, key=_rank, reverse=True)
        skipped += [(other, f"duplicate of seed {seed_id}; kept {kept.label} ({_preference(kept, other)})")
                    for other in others]
        if others:
            warnings.append(f"{map_name}/{alg} seed {seed_id} was run {len(candidates)} times "
                            f"({', '.join(c.label for c in candidates)}): counted once, using {kept.label} "
                            f"({_preference(kept, others[0])})")
        if not kept.finished and not include_unfinished:
            skipped.append((kept, "unfinished"))
            continue
        used.append(kept)
        if not kept.finished:
            warnings.append(f"{map_name}/{alg} seed {seed_id} is unfinished ({kept.runs[-1].progress()}) and "
                            "included (--include-unfinished)")
        for i, run in enumerate(kept.runs):
            note = _used_note(kept, i)
            if not kept.finished:
                note += f"; UNFINISHED ({kept.runs[-1].progress()}), included by --include-unfinished"
            if others:
                note += f"; kept over duplicate {', '.join(o.label for o in others)}"
            verdicts[run.name] = ReportLine(run, seed_id, True, note)
    for seed, reason in skipped:  # a run shared with a used seed (a resumed run's branch) stays used
        for i, run in enumerate(seed.runs):
            verdicts.setdefault(run.name, ReportLine(run, seed.seed, False, _skipped_note(seed, i, reason)))
    return Selection(used, sorted(verdicts.values(), key=lambda line: _natural(line.run.name)), warnings)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """``header``, a rule and ``rows`` as lines of left-aligned columns (the last one's rule as its header)."""
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()  # noqa: E731
    rule = tuple("-" * w for w in widths[:-1]) + ("-" * len(header[-1]),)
    return [line(header), line(rule)] + [line(r) for r in rows]


def run_report(selection: Selection, results_dir: str, metric: str) -> str:
    """One line per run: map, method, seed, run, status, the t_env it covered, and used / skipped with why."""
    rows = []
    for line in selection.lines:
        run = line.run
        span = "-" if run.problem else f"{run.t_start}..{run.t_end}" if run.t_start != run.t_end else str(run.t_end)
        seed = "?" if line.seed is None else str(line.seed)
        rows.append((run.map_name, run.alg, seed, run.name, run.status, span, line.note))
    used = sum(line.used for line in selection.lines)
    n = len(selection.seeds)
    title = f"Runs under {results_dir} for {metric}: {used} of {len(selection.lines)} used, as {n} seed{'s' * (n != 1)}"
    return "\n".join([title] + _table(("map", "method", "seed", "run", "status", "t_env", "verdict"), rows))


def aggregate(seeds: list[Seed], n_points: int = 200) -> list[Curve]:
    """Group ``seeds`` by (map, alg) and average each group on its common grid of ``n_points`` t_env values.

    A single seed keeps its own logged steps. Raises :class:`PlotError` for a group whose seeds share no
    ``t_env`` range.
    """
    if n_points < 2:
        raise PlotError(f"the grid needs at least 2 points, got {n_points}")
    groups: dict[tuple[str, str], list[Seed]] = {}
    for seed in seeds:
        groups.setdefault((seed.map_name, seed.alg), []).append(seed)
    curves = []
    for (map_name, alg), members in sorted(groups.items()):
        lo = max(s.steps[0] for s in members)
        hi = min(s.steps[-1] for s in members)
        if len(members) == 1:
            t = members[0].steps
        elif hi > lo:
            t = np.linspace(lo, hi, n_points)
        elif hi == lo:
            t = np.array([hi])
        else:
            spans = "; ".join(f"seed {s.seed} ({s.label}): t_env {s.steps[0]:g}..{s.steps[-1]:g}" for s in members)
            raise PlotError(f"the seeds of {alg} on {map_name} share no t_env range, so they cannot be averaged "
                            f"({spans}); choose runs with --maps/--algs or move the odd one out")
        ys = np.stack([np.interp(t, s.steps, s.values) for s in members])  # [n_seeds, G]
        n = len(members)
        sem = ys.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(t), np.nan)
        curves.append(Curve(map_name, alg, t, ys.mean(axis=0), sem, ys[:, -1], members))
    return curves


def summary_table(curves: list[Curve], metric: str) -> str:
    """A text table: per map and method, the final mean ± s.e. of ``metric``, at which t_env, over which seeds.

    Seeds marked ``*`` are unfinished (only used with ``--include-unfinished``).
    """
    header = ("map", "method", "n", "seeds", "t_env", f"final {metric}")
    rows = []
    for c in curves:
        final = f"{c.finals.mean():.4f}"
        final += f" ± {c.sem[-1]:.4f}" if c.n > 1 else " (one seed: no s.e.)"
        seeds = ",".join(f"{s.seed}{'' if s.finished else '*'}" for s in c.seeds)
        rows.append((c.map_name, c.alg, str(c.n), seeds, f"{c.t[-1]:.0f}", final))
    lines = _table(header, rows)
    if any(not s.finished for c in curves for s in c.seeds):
        lines.append("* unfinished seed, included by --include-unfinished")
    return "\n".join(lines)


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
            ax.plot(c.t, c.mean, color=colour, label=f"{c.alg} (n={c.n})")
            if c.n > 1:
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

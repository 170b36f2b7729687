"""A study's learning curves: the Sacred runs under ``<study>/results/sacred`` grouped into seeds by
``utils.plotting`` (resumed runs joined to their parents, evaluate runs left out, duplicates counted once), then
per (map, method) the seeds' series and their mean ± standard error on a common t_env grid."""
from __future__ import annotations

from dataclasses import dataclass

from utils.plotting import Curve, PlotError, Seed, aggregate, find_runs, run_report, select_seeds


@dataclass
class StudyCurves:
    """``seeds[(map, method)]``: the seeds (each with ``steps``/``values`` ``[T]``); ``curves[(map, method)]``: their
    mean ± s.e.; ``runs_report``: a line per Sacred run (used or skipped, and why); ``warnings``."""

    seeds: dict[tuple[str, str], list[Seed]]
    curves: dict[tuple[str, str], Curve]
    runs_report: str
    warnings: list[str]

    @property
    def maps(self) -> list[str]:
        return sorted({m for m, _ in self.seeds})

    @property
    def methods(self) -> list[str]:
        return sorted({a for _, a in self.seeds})


def load_curves(sacred_dir: str, metric: str, include_unfinished: bool = False) -> StudyCurves:
    """The curves of every finished seed under ``sacred_dir`` (``<map>/<method>/<id>/``); with
    ``include_unfinished`` unfinished seeds too. No runs yet gives empty curves, not an error."""
    try:
        runs = find_runs(sacred_dir, metric)
    except PlotError as exc:
        return StudyCurves({}, {}, f"No runs: {exc}", [])
    selection = select_seeds(runs, metric, include_unfinished=include_unfinished)
    seeds: dict[tuple[str, str], list[Seed]] = {}
    for seed in selection.seeds:
        seeds.setdefault((seed.map_name, seed.alg), []).append(seed)
    curves = {(c.map_name, c.alg): c for c in aggregate(selection.seeds)} if selection.seeds else {}
    return StudyCurves(seeds, curves, run_report(selection, sacred_dir, metric), list(selection.warnings))

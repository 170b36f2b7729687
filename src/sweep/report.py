"""``experiments.py report``: ``report.md`` with the spec's figures, the claims table, rliable aggregate statistics
(IQM with stratified-bootstrap CIs, probability of improvement over the figure's baseline, performance profiles),
a per-map table of final win rate, AUC and steps to thresholds, and the list of runs used; ``statistics.json``
holds every number. Without a spec (a bare Sacred results directory) every map and method is one figure and
there are no claims.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
from typing import Any, Mapping, Sequence

import numpy as np

from sweep.claims import HOLDS, FAILS, claim_series, judge
from sweep.curves import StudyCurves, load_curves
from sweep.figures import Figure, demonstrator_win_rate, draw_learning_curves, draw_profiles, method_colours
from sweep.layout import Layout
from sweep.spec import ReportOptions, Spec
from sweep.stats import (interval_estimates, mean_se, performance_profiles, probability_of_improvement, rectangular,
                         seed_scores, steps_to_threshold)

PROFILE_TAUS = np.linspace(0.0, 1.0, 101)
VERDICT_MARKS = {HOLDS: "✅ holds", FAILS: "❌ does not hold"}


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _mean_se(x) -> str:
    """``0.500 ± 0.010``, or ``0.500`` for a single seed."""
    mean, se = mean_se(x)
    return _fmt(mean) + ("" if math.isnan(se) else f" ± {_fmt(se)}")


def _steps(x: float) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.0f}k"


def _ci(values: Sequence[float]) -> str:
    point, low, high = values
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def run_hosts(curves: StudyCurves) -> list[str]:
    """Where the used runs ran (Sacred's host record): ``"<n> runs on <hostname> (<cpu>)"`` per host."""
    counts: dict[str, int] = {}
    for seeds in curves.seeds.values():
        for seed in seeds:
            for run in seed.runs:
                try:
                    with open(os.path.join(run.path, "run.json")) as f:
                        host = json.load(f).get("host", {})
                except (OSError, ValueError):
                    continue
                key = f"{host.get('hostname', '?')} ({host.get('cpu', '?')})"
                counts[key] = counts.get(key, 0) + 1
    return [f"{n} run{'s' * (n != 1)} on {key}" for key, n in sorted(counts.items())]


class _Context:
    """What every section needs: the curves, labels, colours, demonstrators' win rates and options."""

    def __init__(self, spec: Spec | None, curves: StudyCurves, options: ReportOptions):
        self.spec, self.curves, self.options = spec, curves, options
        order = list(spec.methods) if spec else curves.methods
        self.labels = {m: (spec.methods[m].label if spec and m in spec.methods else m) for m in order}
        self.colours = method_colours(order)

    def series(self, map_name: str, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
        return claim_series(self.curves.seeds)(map_name, method)

    def demonstrators(self, figure: Figure, map_name: str) -> list[tuple[str, float]]:
        lines = []
        for ref in figure.demonstrators:
            rate = demonstrator_win_rate(self.spec.study_dir, ref, map_name)
            if rate is not None:
                lines.append((f"demonstrators {ref.file} ({rate:.2f})", rate))
        return lines

    def method_demonstrators(self, method: str, map_name: str) -> float | None:
        demos = self.spec.methods[method].demos if self.spec and method in self.spec.methods else None
        return None if demos is None else demonstrator_win_rate(self.spec.study_dir, demos, map_name)


def _figure_statistics(ctx: _Context, figure: Figure, figures_dir: str, fmt: str, stats: dict) -> list[str]:
    """The figure's aggregate statistics and per-map table, as markdown lines (numbers also into ``stats``)."""
    options, methods, maps = ctx.options, list(figure.methods), list(figure.maps)
    per_map: dict[str, dict[str, dict[str, np.ndarray]]] = {"auc": {}, "final": {}}
    horizons = {}
    for map_name in maps:
        series = {m: ctx.series(map_name, m) for m in methods if ctx.series(map_name, m)}
        for metric in ("auc", "final"):
            scores, horizons[map_name] = seed_scores(series, metric, options.final_fraction)
            for m, x in scores.items():
                per_map[metric].setdefault(m, {})[map_name] = x
    lines = []
    with_data = [m for m in methods if m in per_map["final"]]
    common = [mp for mp in maps if with_data and all(len(per_map["final"][m].get(mp, ())) for m in with_data)]
    record: dict[str, Any] = {"horizon": horizons, "aggregate_maps": common, "methods": {}}
    if not common and with_data:
        lines += ["", "(No map where every method of the figure has finished seeds: no aggregate statistics yet.)"]
    if common:
        final_scores, kept = rectangular(per_map["final"], common)
        auc_scores, _ = rectangular(per_map["auc"], common)
        final_ci = interval_estimates(final_scores, options.bootstrap_reps)
        auc_ci = interval_estimates(auc_scores, options.bootstrap_reps)
        lines += ["", f"**Aggregate over {', '.join(common)}** (rliable; scores per seed and map; IQM = "
                      "interquartile mean; 95% stratified-bootstrap confidence intervals):", "",
                  "| method | seeds per map | IQM final win rate | mean final | IQM AUC | mean AUC |",
                  "|---|---|---|---|---|---|"]
        for m in methods:
            if m in final_ci:
                cells = [_ci(final_ci[m]["iqm"]), _ci(final_ci[m]["mean"]), _ci(auc_ci[m]["iqm"]), _ci(auc_ci[m]["mean"])]
                lines.append(f"| {ctx.labels[m]} | {kept[m]} | " + " | ".join(cells) + " |")
                record["methods"][m] = {"seeds_per_map": kept[m], "final": final_ci[m], "auc": auc_ci[m]}
        uneven = [m for m in final_scores if any(len(per_map["final"][m][mp]) > kept[m] for mp in common)]
        if uneven:
            lines.append(f"\n(rliable needs equal seeds on every map: {', '.join(ctx.labels[m] for m in uneven)} "
                         "use their first seeds only.)")
        if figure.baseline and figure.baseline in final_scores:
            base = figure.baseline
            lines += ["", f"**Probability of improvement over {ctx.labels[base]}** P(method > {ctx.labels[base]}) "
                          "(rliable, 95% CI; 0.5 = no difference):", "",
                      "| method | on final win rate | on AUC |", "|---|---|---|"]
            record["probability_of_improvement"] = {"baseline": base}
            for m in methods:
                if m != base and m in final_scores:
                    n = min(kept[m], kept[base])
                    poi_final = probability_of_improvement(final_scores[m][:n], final_scores[base][:n],
                                                           options.bootstrap_reps)
                    poi_auc = probability_of_improvement(auc_scores[m][:n], auc_scores[base][:n],
                                                         options.bootstrap_reps)
                    lines.append(f"| {ctx.labels[m]} | {_ci(poi_final)} | {_ci(poi_auc)} |")
                    record["probability_of_improvement"][m] = {"final": poi_final, "auc": poi_auc}
        if final_scores:
            profiles, cis = performance_profiles(final_scores, PROFILE_TAUS, options.bootstrap_reps)
            path = draw_profiles(profiles, cis, PROFILE_TAUS, ctx.labels, ctx.colours,
                                 f"{figure.title}: performance profile", "final win rate τ",
                                 os.path.join(figures_dir, f"{figure.name}_profile.{fmt}"))
            lines += ["", f"![performance profile](figures/{os.path.basename(path)})"]
    lines += _threshold_table(ctx, figure, per_map, horizons, record)
    stats[figure.name] = record
    return lines


def _threshold_table(ctx: _Context, figure: Figure, per_map: Mapping, horizons: Mapping[str, float],
                     record: dict) -> list[str]:
    """Per map and method: seeds, final win rate, AUC (mean ± s.e.) and steps to each threshold."""
    options = ctx.options
    lines = ["", f"**Per map** (up to the horizon every seed reached; final = mean over its last "
                 f"{100 * options.final_fraction:g}%; steps to a win rate: mean ± s.e. over the seeds that reached "
                 "it, and how many did):"]
    record["per_map"] = {}
    for map_name in figure.maps:
        horizon = horizons.get(map_name, math.nan)
        thresholds = sorted({*options.thresholds, *(round(rate, 3) for _, rate in ctx.demonstrators(figure, map_name))})
        lines += ["", f"*{map_name}* (horizon {_steps(horizon)} env steps)", "",
                  "| method | seeds | final | AUC | " + " | ".join(f"steps to {t:g}" for t in thresholds) + " |",
                  "|---|---|---|---|" + "---|" * len(thresholds)]
        for m in figure.methods:
            series = ctx.series(map_name, m)
            if not series:
                lines.append(f"| {ctx.labels[m]} | 0 | – | – |" + " – |" * len(thresholds))
                continue
            cells, row_record = [], {}
            for t in thresholds:
                hits = [steps_to_threshold(s, v, t, horizon) for s, v in series]
                reached = [h for h in hits if h is not None]
                mean, se = mean_se(reached)
                cells.append(f"{_steps(mean)}" + (f" ± {_steps(se)}" if len(reached) > 1 else "")
                             + f" ({len(reached)}/{len(hits)})")
                row_record[f"steps_to_{t:g}"] = hits
            lines.append(f"| {ctx.labels[m]} | {len(series)} | {_mean_se(per_map['final'][m][map_name])} | "
                         f"{_mean_se(per_map['auc'][m][map_name])} | " + " | ".join(cells) + " |")
            record["per_map"].setdefault(map_name, {})[m] = {
                "final": per_map["final"][m][map_name].tolist(), "auc": per_map["auc"][m][map_name].tolist(),
                **row_record}
    return lines


def _claims_section(ctx: _Context, stats: dict) -> list[str]:
    if not ctx.spec or not ctx.spec.claims:
        return []
    options = ctx.options
    lines = ["## Claims", "", "| claim | verdict | numbers | test |", "|---|---|---|---|"]
    stats["claims"] = []
    tests: dict[str, str] = {}
    for claim in ctx.spec.claims:
        v = judge(claim, ctx.series, ctx.labels, ctx.method_demonstrators, options.alpha, options.margin,
                  options.final_fraction)
        numbers = "<br>".join(c.text for c in v.comparisons)
        lines.append(f"| {claim.text} | {VERDICT_MARKS.get(v.verdict, '❔ ' + v.verdict)} | {numbers} | {v.short} |")
        tests.setdefault(v.short, v.test)
        stats["claims"].append({"id": claim.id, "text": claim.text, "verdict": v.verdict, "test": v.test,
                                "comparisons": [{"map": c.map_name, "text": c.text, "p": c.p,
                                                 "p_against": c.p_against} for c in v.comparisons]})
    lines += ["", "Tests (auc: the mean test win rate over training; final: at its end):", ""]
    lines += [f"- *{short}*: {text}." for short, text in tests.items()]
    return lines + [""]


def _default_figures(curves: StudyCurves) -> dict[str, Figure]:
    return {"all": Figure("all", "All runs", tuple(curves.methods), tuple(curves.maps))}


def write_report(spec: Spec | None, out_dir: str, fmt: str = "png", include_unfinished: bool = False,
                 sacred_dir: str | None = None) -> list[str]:
    """Write ``report.md``, ``statistics.json``, ``runs.txt`` and ``figures/`` into ``out_dir``; returns the files.
    ``spec`` None: a report of every run under ``sacred_dir``."""
    options = spec.report if spec else ReportOptions()
    sacred_dir = sacred_dir or Layout(spec.study_dir).sacred
    curves = load_curves(sacred_dir, options.metric, include_unfinished)
    ctx = _Context(spec, curves, options)
    figures_dir = os.path.join(out_dir, "figures")
    os.makedirs(figures_dir, exist_ok=True)
    figures = spec.figures if spec else _default_figures(curves)
    stats: dict[str, Any] = {"metric": options.metric, "options": options.__dict__, "figures": {}}
    written = []

    title = spec.name if spec else os.path.basename(os.path.normpath(sacred_dir))
    commit = _git_commit()
    lines = [f"# {title}: results", ""]
    if spec and spec.description:
        lines += [spec.description, ""]
    n_seeds = sum(len(s) for s in curves.seeds.values())
    lines += [f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} from `{sacred_dir}`"
              + (f" (spec `{spec.path}`)" if spec else "") + (f", code {commit}" if commit else "") + ".",
              f"Metric: `{options.metric}` (greedy test episodes). {n_seeds} seed{'s' * (n_seeds != 1)} of "
              f"{len(curves.methods)} method{'s' * (len(curves.methods) != 1)} on {len(curves.maps)} "
              f"map{'s' * (len(curves.maps) != 1)}"
              + (" (unfinished seeds included)" if include_unfinished else " (finished seeds only)") + "; every run "
              "and why it was used or not: [runs.txt](runs.txt).",
              f"Runs: {'; '.join(run_hosts(curves)) or 'none yet'}. Report made on: {machine()}.", ""]
    if spec:
        lines += ["Reproduce:", "", "```bash", f"python src/experiments.py run {spec.path}",
                  f"python src/experiments.py report {spec.path}", "```", ""]
    lines += _claims_section(ctx, stats)
    for figure in figures.values():
        demonstrators = {m: ctx.demonstrators(figure, m) for m in figure.maps} if spec else {}
        path = draw_learning_curves(figure, curves.curves, ctx.labels, ctx.colours, demonstrators, options.metric,
                                    os.path.join(figures_dir, f"{figure.name}.{fmt}"))
        written.append(path)
        lines += [f"## {figure.title}", "", f"![{figure.title}](figures/{os.path.basename(path)})", "",
                  "Mean over seeds, standard error shaded"
                  + ("; dashed: the demonstrators' greedy win rates" if figure.demonstrators else "") + "."]
        lines += _figure_statistics(ctx, figure, figures_dir, fmt, stats["figures"])
        lines.append("")
    if curves.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in curves.warnings] + [""]
    for name, text in (("report.md", "\n".join(lines)), ("statistics.json", json.dumps(stats, indent=1, default=float)),
                       ("runs.txt", curves.runs_report + "\n")):
        path = os.path.join(out_dir, name)
        with open(path, "w") as f:
            f.write(text)
        written.append(path)
    written += sorted(os.path.join(figures_dir, f) for f in os.listdir(figures_dir) if "_profile." in f)
    return written


def _git_commit() -> str | None:
    from demo_pipeline import git_commit

    return git_commit()

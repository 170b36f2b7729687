"""The report's figures, drawn like the paper's: one panel per map, each method's mean test win rate across seeds
with the standard error shaded, the demonstrators' win rates as horizontal dashed lines, and one colour per
method across every figure of the report.

A spec's ``figures:``::

    figures:
      fig2:
        title: "Figure 2: DM² against IPPO and QMIX"
        methods: [ippo, qmix, dm2_wr0.3, dm2_wr0.5]   # in legend order
        maps: [5m_vs_6m, 3s_vs_4z]                     # default: every map these methods ran on
        demonstrators: [dm2_wr0.3, dm2_wr0.5]          # demos files whose demonstrators' win rate is drawn
        baseline: ippo                                 # probability of improvement of every other method over it

Without ``figures:`` there is one figure per training stage. A demonstrator's win rate is the greedy win rate
of the checkpoint(s) the dataset was recorded from (``summary.json`` of its demos stage; for styles that mix
runs, the mean over the slots' checkpoints).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from sweep.spec import DemosRef, Spec, demos_ref

FIGURE_KEYS = ("title", "methods", "maps", "demonstrators", "baseline")


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    methods: tuple[str, ...]
    maps: tuple[str, ...]
    demonstrators: tuple[DemosRef, ...] = ()
    baseline: str | None = None


def parse_figures(spec: Spec, raw: Mapping[str, Any], w) -> dict[str, Figure]:
    """The spec's figures, checked: known methods, maps they ran on, demonstrators of a demos stage."""
    ran_on: dict[str, list[str]] = {}
    for run in spec.train_runs:
        ran_on.setdefault(run.method.name, [])
        if run.map_name not in ran_on[run.method.name]:
            ran_on[run.method.name].append(run.map_name)
    if not raw:
        figures = {}
        for stage in spec.stages.values():
            if stage.kind == "train":
                methods = tuple(dict.fromkeys(run.method.name for run in stage.jobs))
                figures[stage.name] = Figure(stage.name, f"Stage {stage.name}", methods,
                                             tuple(stage.maps))
        return figures
    figures = {}
    for name, body in raw.items():
        where = f"figures: {name}"
        body = w.mapping(body, where, FIGURE_KEYS)
        methods = w.names(body.get("methods"), f"{where}: methods")
        for method in methods:
            if method not in spec.methods:
                raise w.error(f"{where}: methods", f"unknown method {method!r}.{_hint(method, spec.methods)}")
        maps = w.names(body["maps"], f"{where}: maps") if body.get("maps") else list(
            dict.fromkeys(m for method in methods for m in ran_on[method]))
        for map_name in maps:
            if not any(map_name in ran_on[method] for method in methods):
                raise w.error(f"{where}: maps", f"none of the figure's methods runs on {map_name!r}.")
        every_stage = set(spec.stages)
        refs = tuple(demos_ref(w, ref, f"{where}: demonstrators", spec.stages, every_stage)
                     for ref in (body.get("demonstrators") or []))
        baseline = body.get("baseline")
        if baseline is not None and baseline not in methods:
            raise w.error(f"{where}: baseline", f"{baseline!r} is not one of the figure's methods "
                                                f"({', '.join(methods)}).")
        figures[name] = Figure(name, str(body.get("title") or name), tuple(methods), tuple(maps), refs, baseline)
    return figures


def _hint(name: str, choices) -> str:
    from sweep.spec import did_you_mean

    return f"{did_you_mean(name, list(choices))} Methods: {', '.join(choices)}."


def demonstrator_win_rate(study_dir: str, ref: DemosRef, map_name: str) -> float | None:
    """The greedy win rate of the demonstrators of ``ref`` on ``map_name`` (None until the dataset exists)."""
    path = os.path.join(study_dir, "demos", ref.stage, map_name, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    for dataset in summary.get("datasets", []):
        if dataset.get("file") == f"{ref.file}.npz":
            rates = [s["greedy_win_rate"] for s in dataset.get("slots", []) if s.get("greedy_win_rate") is not None]
            return float(np.mean(rates)) if rates else None
    return None


def method_colours(methods: Sequence[str]) -> dict[str, tuple]:
    """One colour per method, in the given order (the spec's), the same in every figure."""
    import matplotlib

    palette = list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["Dark2"].colors)
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(fig)
    return fig


def draw_learning_curves(figure: Figure, curves: Mapping[tuple[str, str], Any], labels: Mapping[str, str],
                         colours: Mapping[str, tuple], demonstrators: Mapping[str, list[tuple[str, float]]],
                         metric: str, path: str) -> str:
    """``figure``'s panels (one per map): each method's mean ± s.e. (``curves[(map, method)]``, a
    ``utils.plotting.Curve``) and the demonstrators' ``(label, win rate)`` lines of each map. Writes ``path``."""
    maps = list(figure.maps)
    fig = _new_figure(4.2 * len(maps) + 0.4, 3.6)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    handles = {}
    for ax, map_name in zip(axes, maps):
        for method in figure.methods:
            curve = curves.get((map_name, method))
            if curve is None:
                continue
            colour = colours[method]
            (line,) = ax.plot(curve.t, curve.mean, color=colour, linewidth=1.6)
            if curve.n > 1:
                ax.fill_between(curve.t, curve.mean - curve.sem, curve.mean + curve.sem, color=colour, alpha=0.2,
                                linewidth=0)
            handles.setdefault(method, (line, f"{labels.get(method, method)}"))
        for i, (label, rate) in enumerate(demonstrators.get(map_name, [])):
            line = ax.axhline(rate, color="0.35", linestyle=("--", ":", "-.")[i % 3], linewidth=1.1)
            handles.setdefault(f"demo:{label}", (line, label))
        ax.set_title(map_name)
        ax.set_xlabel("environment steps")
        if "won" in metric:
            ax.set_ylim(-0.02, 1.02)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        ax.grid(alpha=0.3)
        if not any(key[0] == map_name for key in curves):
            ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
    axes[0].set_ylabel("test win rate" if metric == "test_battle_won_mean" else metric)
    if handles:
        fig.legend([h for h, _ in handles.values()], [lab for _, lab in handles.values()], loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize="small", frameon=False)
    fig.suptitle(figure.title)
    fig.savefig(path, dpi=150, bbox_inches="tight")  # a one-panel figure is narrower than its title and legend
    return path


def draw_profiles(profiles: Mapping[str, np.ndarray], cis: Mapping[str, np.ndarray], taus: np.ndarray,
                  labels: Mapping[str, str], colours: Mapping[str, tuple], title: str, xlabel: str, path: str) -> str:
    """Performance profiles (rliable's score distributions) with their 95% CIs shaded. Writes ``path``."""
    fig = _new_figure(5.0, 3.6)
    ax = fig.add_subplot()
    for method, profile in profiles.items():
        ax.plot(taus, profile, color=colours[method], label=labels.get(method, method), linewidth=1.6)
        ax.fill_between(taus, cis[method][0], cis[method][1], color=colours[method], alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title)
    fig.savefig(path, dpi=150, bbox_inches="tight")  # a one-panel figure is narrower than its title and legend
    return path

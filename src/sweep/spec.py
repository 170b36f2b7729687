"""A study spec (``experiments/*.yaml``): stages with dependencies, each a grid of maps x methods x seeds x
``with`` overrides, plus the figures and claims of its report. :func:`load_spec` reads, checks and expands one;
every problem is a :class:`SpecError` naming the file, the stage and the bad value with the valid choices,
raised before anything runs.

A spec::

    name: paper_fig2                      # default: the file name
    description: ...
    results: results/experiments/paper_fig2   # the study directory (default results/experiments/<name>)
    defaults: {use_tensorboard: false}    # `with` overrides of every training run
    stages:
      experts:                            # kind: train (the default)
        maps: [5m_vs_6m, 3s_vs_4z]
        seeds: [112358]
        with: {t_max: 2000000, save_model_interval: 100000}
        per_map: {5m_vs_6m: {seeds: [112358, 1285842, 78590, 119527, 122529]}}
        methods:
          expert_ippo: {config: ippo}
      demos:
        kind: demos
        from: experts                     # the training stage whose checkpoints are the demonstrators
        targets: [0.3, 0.5]
        styles: [dm2]
      main:
        after: [demos]
        maps: [5m_vs_6m, 3s_vs_4z]
        seeds: [1, 2]
        methods:
          ippo: {config: ippo, label: IPPO}
          dm2_wr0.5: {config: ippo_gail, label: "DM² (≈0.5)", demos: dm2_wr0.5}
    figures: {...}                        # see sweep.figures
    claims: [...]                         # see sweep.claims
    report: {...}                         # see ReportOptions

Dependencies are per map: a stage's jobs on map M wait for the jobs of the stages in its ``after`` on map M
(demonstrations on M come from experts on M), and only for the ones whose outputs they read: a demos job starts when
the runs it takes checkpoints from are done, a run with ``demos`` when its dataset is written, and a run without one
(``ippo`` above) does not wait for the demos stage (see :meth:`Spec.dependencies`). A method's name is its Sacred ``name`` (the folder under
``results/sacred/<map>/``), so it is unique in the spec; ``(map, method, seed)`` identifies a run.
"""
from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from components.demonstrations import STYLES
from config.loader import dotted_leaves

DEFAULT_RESULTS_ROOT = os.path.join("results", "experiments")
DEFAULT_ENV_CONFIG = "sc2"
STAGE_KINDS = ("train", "demos")
#: Keys the runner sets for every run: a spec gives them through maps, seeds, method names and ``demos``.
RUNNER_KEYS = {
    "env_args.map_name": "the stage's `maps`",
    "seed": "the stage's `seeds`",
    "name": "the method's name (its key under `methods`)",
    "local_results_path": "the study directory (`results`)",
    "checkpoint_path": "the runner (it resumes interrupted runs itself)",
    "load_step": "the runner (it resumes interrupted runs itself)",
    "evaluate": "nothing: a study trains",
    "save_model": "the runner (always True, so that every run can be resumed)",
    "torch_threads": "the command line (`--threads`, or cores / `--parallel`)",
    "gail_data_path": "the method's `demos: <file>` (a file of a demos stage)",
}
TOP_KEYS = ("name", "description", "results", "defaults", "stages", "figures", "claims", "report")
TRAIN_KEYS = ("kind", "description", "after", "maps", "seeds", "methods", "with", "per_map", "grid",
              "keep_checkpoints")
KEEP_CHECKPOINTS = ("all", "latest")
DEMOS_KEYS = ("kind", "description", "after", "from", "maps", "targets", "styles", "episodes", "sampling", "epsilon",
              "seed", "eval_episodes")
METHOD_KEYS = ("config", "env_config", "label", "with", "demos", "maps", "seeds", "per_map")
PER_MAP_KEYS = ("seeds", "with")
SAMPLINGS = ("stochastic", "greedy", "epsilon")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class SpecError(ValueError):
    """A spec that cannot run: the message names the file, the place in it and what to do."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


@dataclass(frozen=True)
class DemosRef:
    """A demonstrations file of a demos stage: ``<stage>``'s ``<file>.npz`` on each map (``dm2_wr0.5``)."""

    stage: str
    file: str

    def path(self, study_dir: str, map_name: str) -> str:
        return os.path.join(study_dir, "demos", self.stage, map_name, f"{self.file}.npz")


@dataclass(frozen=True)
class Method:
    """One compared method: a ``--config`` with ``with`` overrides, named (Sacred ``name``) and labelled."""

    name: str
    config: str
    env_config: str
    label: str
    overrides: Mapping[str, Any]  # the method's own `with` (and its grid point), dotted keys
    demos: DemosRef | None = None


@dataclass(frozen=True)
class TrainRun:
    """One training run: ``python src/main.py --config=<method.config> with ...`` until ``t_max``."""

    stage: str
    method: Method
    map_name: str
    seed: int
    overrides: Mapping[str, Any]  # the `with` overrides of this map (method, per_map, stage, defaults)
    t_max: int
    save_model_interval: int

    @property
    def key(self) -> str:
        return f"{self.map_name}/{self.method.name}/seed{self.seed}"

    kind = "train"


@dataclass(frozen=True)
class DemosJob:
    """One demonstrations job: ``src/demos.py pipeline`` on the checkpoints of ``sources`` (one map)."""

    stage: str
    map_name: str
    sources: tuple[TrainRun, ...]  # in seed order: the first is the team of dm2 / non_concurrent
    targets: tuple[float, ...]
    styles: tuple[str, ...]
    episodes: int
    sampling: str
    epsilon: float | None
    seed: int
    eval_episodes: int
    n_agents: int | None = None

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.map_name}"

    @property
    def used_sources(self) -> tuple[TrainRun, ...]:
        """The runs the pipeline reads: the first (the team of dm2 / non_concurrent), or the first n_agents when a
        style mixes runs (concurrent_not_cotrained, neither)."""
        if set(self.styles) <= {"dm2", "non_concurrent"}:
            return self.sources[:1]
        return self.sources[:self.n_agents] if self.n_agents else self.sources

    @property
    def files(self) -> tuple[str, ...]:
        """The dataset names it writes (``<style>_wr<target>``), as :func:`demo_pipeline.dataset_filename`."""
        return tuple(dataset_name(style, t) for t in self.targets for style in self.styles)

    kind = "demos"


def dataset_name(style: str, target: float) -> str:
    """``dm2_wr0.5``: the demos pipeline's file name (``demo_pipeline.dataset_filename``) without ``.npz``."""
    return f"{style}_wr{float(target):g}"


Job = TrainRun | DemosJob


@dataclass
class Stage:
    """A stage as written: its kind, dependencies and (expanded) jobs."""

    name: str
    kind: str
    after: tuple[str, ...]
    description: str = ""
    jobs: list[Job] = field(default_factory=list)
    keep_checkpoints: str = "all"  # training stages: "latest" deletes a run's older checkpoints as it goes

    @property
    def maps(self) -> list[str]:
        return list(dict.fromkeys(job.map_name for job in self.jobs))


@dataclass(frozen=True)
class ReportOptions:
    """``report:`` settings. ``final_fraction``: a seed's final score is its mean metric over the last fraction
    of the common t_env range; ``thresholds``: win rates for the steps-to-threshold table (the demonstrators'
    win rates are added); ``alpha``: the tests' significance level; ``margin``: the equivalence margin of
    ``similar`` claims; ``bootstrap_reps``: rliable's stratified bootstrap replications."""

    metric: str = "test_battle_won_mean"
    final_fraction: float = 0.1
    thresholds: tuple[float, ...] = (0.5, 0.8)
    alpha: float = 0.05
    margin: float = 0.05
    bootstrap_reps: int = 2000


@dataclass
class Spec:
    """A checked, expanded spec: stages in dependency order, their jobs, figures, claims and report options."""

    name: str
    path: str
    description: str
    study_dir: str
    stages: dict[str, Stage]
    methods: dict[str, Method]
    figures: dict[str, dict]
    claims: list[dict]
    report: ReportOptions
    raw: dict

    @property
    def jobs(self) -> list[Job]:
        return [job for stage in self.stages.values() for job in stage.jobs]

    @property
    def train_runs(self) -> list[TrainRun]:
        return [job for job in self.jobs if isinstance(job, TrainRun)]

    def dependencies(self, job: Job) -> list[Job]:
        """The jobs ``job`` waits for, on its map. Where it reads another stage's outputs it waits only for the
        jobs that write them: a demos job for the runs whose checkpoints it uses (``used_sources``, not every run
        of its ``from`` stage), a run for the demos job of its ``demos`` dataset; a run that reads no dataset does
        not wait for a demos stage at all. Any other ``after`` stage is waited for as a whole."""
        deps: list[Job] = []
        for name in self.stages[job.stage].after:
            if isinstance(job, DemosJob) and job.sources and name == job.sources[0].stage:
                deps.extend(job.used_sources)
                continue
            reads = isinstance(job, TrainRun) and job.method.demos is not None and job.method.demos.stage == name
            if self.stages[name].kind != "demos" or reads:
                deps.extend(dep for dep in self.stages[name].jobs if dep.map_name == job.map_name)
        return deps



# --- reading ---------------------------------------------------------------------------------------------

class _Where:
    """Error messages that name the spec file and the place in it."""

    def __init__(self, path: str):
        self.path = path

    def error(self, where: str, message: str) -> SpecError:
        return SpecError(f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}")

    def mapping(self, value: Any, where: str, allowed: Sequence[str] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(where, f"must be a mapping, got {type(value).__name__} {value!r}.")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.error(where, f"unknown key {key!r}.{did_you_mean(key, allowed)} Valid keys: "
                                            f"{', '.join(allowed)}.")
        return dict(value)

    def names(self, value: Any, where: str) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise self.error(where, f"must be a non-empty list of names, got {value!r}.")
        if len(set(value)) != len(value):
            raise self.error(where, f"lists a name twice: {value!r}.")
        return list(value)

    def seeds(self, value: Any, where: str) -> list[int]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        ok = isinstance(value, (list, tuple)) and value and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in value)
        if not ok:
            raise self.error(where, f"must be a non-empty list of integer seeds in [0, 2**32), got {value!r}.")
        if len(set(value)) != len(value):
            raise self.error(where, f"lists a seed twice: {value!r}.")
        return list(value)

    def number(self, value: Any, where: str, lo: float, hi: float, integer: bool = False) -> float:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
            raise self.error(where, f"must be {'an integer' if integer else 'a number'} in [{lo:g}, {hi:g}], "
                                    f"got {value!r}.")
        return value


def _overrides(w: _Where, value: Any, where: str) -> dict[str, Any]:
    """A ``with`` mapping as dotted keys, refusing the keys the runner sets."""
    dotted = dotted_leaves(w.mapping(value, where))
    for key in dotted:
        if key in RUNNER_KEYS:
            raise w.error(where, f"`{key}` is set by the runner from {RUNNER_KEYS[key]}; leave it out of `with`.")
    return dotted


def read_yaml(path: str) -> dict:
    """The spec file's mapping (``SpecError`` when missing or not YAML)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        specs = sorted(os.listdir("experiments")) if os.path.isdir("experiments") else []
        raise SpecError(f"spec file {path!r} does not exist."
                        + (f" Specs in experiments/: {', '.join(specs)}." if specs else "")) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a mapping with `stages:` (see docs/experiments.md), got "
                        f"{type(data).__name__}.")
    return data


def load_spec(path: str, study_dir: str | None = None) -> Spec:
    """Read, check and expand the spec at ``path``; ``study_dir`` overrides its ``results``. Every run's config is
    resolved with ``config.loader`` as ``src/main.py`` would (:class:`_Configs`)."""
    raw = read_yaml(path)
    w = _Where(path)
    w.mapping(raw, "", TOP_KEYS)
    name = raw.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise w.error("name", f"must be a name of letters, digits, '_', '.', '+', '-', got {name!r}.")
    study_dir = study_dir or raw.get("results") or os.path.join(DEFAULT_RESULTS_ROOT, name)
    if not isinstance(study_dir, str):
        raise w.error("results", f"must be a directory path, got {study_dir!r}.")
    defaults = _overrides(w, raw.get("defaults"), "defaults")
    stages_raw = w.mapping(raw.get("stages"), "stages")
    if not stages_raw:
        raise w.error("stages", "a spec needs at least one stage (see docs/experiments.md).")
    order = _stage_order(w, stages_raw)

    stages: dict[str, Stage] = {}
    methods: dict[str, Method] = {}
    owners: dict[str, str] = {}
    with _Configs(path, study_dir) as configs:
        for stage_name in order:
            body = w.mapping(stages_raw[stage_name], f"stage {stage_name!r}")
            kind = body.get("kind", "train")
            if kind not in STAGE_KINDS:
                raise w.error(f"stage {stage_name!r}", f"unknown kind {kind!r}.{did_you_mean(kind, STAGE_KINDS)} "
                                                       f"Valid kinds: {', '.join(STAGE_KINDS)}.")
            if kind == "train":
                stage = _train_stage(w, stage_name, body, defaults, stages, methods, owners, configs)
            else:
                stage = _demos_stage(w, stage_name, body, stages)
            stages[stage_name] = stage
    spec = Spec(name=name, path=path, description=str(raw.get("description", "") or "").strip(),
                study_dir=study_dir, stages=stages, methods=methods, figures={}, claims=[],
                report=_report_options(w, raw.get("report")), raw=raw)
    _check_identities(w, spec)
    from sweep.figures import parse_figures
    from sweep.claims import parse_claims

    spec.figures = parse_figures(spec, w.mapping(raw.get("figures"), "figures"), w)
    spec.claims = parse_claims(spec, raw.get("claims"), w)
    return spec


def _stage_order(w: _Where, stages_raw: Mapping[str, Any]) -> list[str]:
    """Stage names with every stage after its dependencies (``after``, and a demos stage's ``from``); a missing
    dependency or a cycle is an error naming it."""
    deps: dict[str, list[str]] = {}
    for name, body in stages_raw.items():
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise w.error("stages", f"stage name {name!r} must be letters, digits, '_', '.', '+', '-'.")
        body = w.mapping(body, f"stage {name!r}")
        after = w.names(body["after"], f"stage {name!r}: after") if body.get("after") else []
        if body.get("kind") == "demos" and isinstance(body.get("from"), str) and body["from"] not in after:
            after = [body["from"], *after]
        for dep in after:
            if dep not in stages_raw:
                raise w.error(f"stage {name!r}: after", f"depends on stage {dep!r}, which the spec does not define."
                                                        f"{did_you_mean(dep, list(stages_raw))} Stages: "
                                                        f"{', '.join(stages_raw)}.")
        deps[name] = after
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise w.error("stages", f"the dependencies form a cycle: {' -> '.join(cycle)}. A stage cannot "
                                    "(indirectly) wait for itself; remove one of these `after` entries.")
        state[name] = "active"
        for dep in deps[name]:
            visit(dep, path + [name])
        state[name] = "done"
        order.append(name)

    for name in stages_raw:
        visit(name, [])
    return order


def _upstream(stages: Mapping[str, Stage], names: Sequence[str]) -> set[str]:
    """``names`` and every stage they (indirectly) depend on."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(stages[name].after)
    return seen


def _train_stage(w: _Where, name: str, body: dict, defaults: dict, stages: dict[str, Stage],
                 methods: dict[str, Method], owners: dict[str, str], configs: "_Configs") -> Stage:
    where = f"stage {name!r}"
    w.mapping(body, where, TRAIN_KEYS)
    after = tuple(w.names(body["after"], f"{where}: after")) if body.get("after") else ()
    maps = w.names(body.get("maps"), f"{where}: maps")
    seeds = w.seeds(body.get("seeds"), f"{where}: seeds")
    stage_with = _overrides(w, body.get("with"), f"{where}: with")
    per_map = _per_map(w, body.get("per_map"), f"{where}: per_map", maps)
    grid = _grid(w, body.get("grid"), f"{where}: grid")
    methods_raw = w.mapping(body.get("methods"), f"{where}: methods")
    if not methods_raw:
        raise w.error(f"{where}: methods", "a training stage needs at least one method, e.g. "
                                           "`methods: {ippo: {config: ippo}}`.")
    keep = body.get("keep_checkpoints", "all")
    if keep not in KEEP_CHECKPOINTS:
        raise w.error(f"{where}: keep_checkpoints", f"must be one of {', '.join(KEEP_CHECKPOINTS)}, got {keep!r}.")
    stage = Stage(name, "train", after, str(body.get("description", "") or ""), keep_checkpoints=keep)
    upstream = _upstream(stages, after)
    for method_name, method_body in methods_raw.items():
        mwhere = f"{where}: method {method_name!r}"
        m = w.mapping(method_body, mwhere, METHOD_KEYS)
        if "config" not in m or not isinstance(m["config"], str):
            raise w.error(mwhere, "needs `config: <alg>` (a file of src/config/algs/).")
        demos = demos_ref(w, m.get("demos"), mwhere, stages, upstream) if m.get("demos") is not None else None
        method_maps = w.names(m["maps"], f"{mwhere}: maps") if m.get("maps") else maps
        for map_name in method_maps:
            if map_name not in maps:
                raise w.error(f"{mwhere}: maps", f"map {map_name!r} is not one of the stage's maps "
                                                 f"({', '.join(maps)}).")
        method_seeds = w.seeds(m["seeds"], f"{mwhere}: seeds") if m.get("seeds") is not None else None
        own = _overrides(w, m.get("with"), f"{mwhere}: with")
        method_per_map = _per_map(w, m.get("per_map"), f"{mwhere}: per_map", method_maps)
        for variant_name, variant_overrides, variant_label in _variants(method_name, m.get("label"), grid):
            if not NAME_PATTERN.match(variant_name):
                raise w.error(mwhere, f"the method name {variant_name!r} must be letters, digits, '_', '.', '+', "
                                      "'-' (it names the run's results folder).")
            if variant_name in owners:
                raise w.error(mwhere, f"method {variant_name!r} is also defined in stage {owners[variant_name]!r}. "
                                      "A method's name is its runs' Sacred name (results/sacred/<map>/<name>), so "
                                      "it must be unique in the spec; rename one.")
            owners[variant_name] = name
            method = Method(variant_name, m["config"], m.get("env_config", DEFAULT_ENV_CONFIG),
                            str(m.get("label") or variant_name) if not grid else variant_label,
                            {**own, **variant_overrides}, demos)
            methods[variant_name] = method
            for map_name in method_maps:
                stage_seeds, stage_map_with = per_map.get(map_name, (None, {}))
                own_seeds, own_map_with = method_per_map.get(map_name, (None, {}))
                run_seeds = own_seeds or method_seeds or stage_seeds or seeds
                overrides = {**defaults, **stage_with, **stage_map_with, **own, **own_map_with, **variant_overrides}
                for seed in run_seeds:
                    stage.jobs.append(configs.resolve(TrainRun(name, method, map_name, seed, overrides, 0, 0)))
    return stage


def _per_map(w: _Where, value: Any, where: str, maps: Sequence[str]) -> dict[str, tuple[list[int] | None, dict]]:
    """``per_map: {<map>: {seeds: [...], with: {...}}}`` as ``{map: (seeds or None, dotted with)}``."""
    out = {}
    for map_name, settings in w.mapping(value, where).items():
        if map_name not in maps:
            raise w.error(where, f"map {map_name!r} is not one of the maps here ({', '.join(maps)}).")
        settings = w.mapping(settings, f"{where}: {map_name}", PER_MAP_KEYS)
        seeds = w.seeds(settings["seeds"], f"{where}: {map_name}: seeds") if settings.get("seeds") is not None else None
        out[map_name] = (seeds, _overrides(w, settings.get("with"), f"{where}: {map_name}: with"))
    return out


def _grid(w: _Where, value: Any, where: str) -> list[tuple[str, list]]:
    """``grid: {lr: [0.0005, 0.001]}`` as ``[(dotted key, values)]``."""
    grid = dotted_leaves(w.mapping(value, where))
    out = []
    for key, values in grid.items():
        if key in RUNNER_KEYS:
            raise w.error(where, f"`{key}` is set by the runner from {RUNNER_KEYS[key]}.")
        if not isinstance(values, (list, tuple)) or not values:
            raise w.error(where, f"`{key}` must list the values to try, got {values!r}.")
        out.append((key, list(values)))
    return out


def _variants(method: str, label: Any, grid: list[tuple[str, list]]):
    """``(name, overrides, label)`` of each grid point of ``method``: ``ippo-lr0.001`` for ``lr: 0.001``."""
    if not grid:
        yield method, {}, str(label or method)
        return
    keys = [key for key, _ in grid]
    for values in itertools.product(*(vals for _, vals in grid)):
        suffix = "-".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in zip(keys, values))
        shown = ", ".join(f"{key}={value}" for key, value in zip(keys, values))
        yield f"{method}-{suffix}", dict(zip(keys, values)), f"{label or method} ({shown})"


def demos_ref(w: _Where, value: Any, where: str, stages: Mapping[str, Stage], upstream: set[str]) -> DemosRef:
    """``demos: dm2_wr0.5`` (the demos stage upstream) or ``demos: <stage>/<file>``, checked to be a file that a
    demos stage this one waits for writes."""
    if not isinstance(value, str) or not value:
        raise w.error(where, f"`demos` names a dataset of a demos stage, e.g. dm2_wr0.5, got {value!r}.")
    demos_stages = [s for s in stages.values() if s.kind == "demos"]
    stage_name, _, file = value.rpartition("/")
    file = file[:-4] if file.endswith(".npz") else file
    if stage_name:
        if stage_name not in stages or stages[stage_name].kind != "demos":
            raise w.error(where, f"demos {value!r}: {stage_name!r} is not a demos stage defined before this one "
                                 f"(demos stages: {', '.join(s.name for s in demos_stages) or 'none'}).")
        candidates = [stages[stage_name]]
    else:
        candidates = [s for s in demos_stages if s.name in upstream]
        if not candidates:
            raise w.error(where, f"demos {value!r} needs a demos stage in this stage's `after` (directly or "
                                 f"through another stage); demos stages: "
                                 f"{', '.join(s.name for s in demos_stages) or 'none'}.")
        if len(candidates) > 1:
            raise w.error(where, f"demos {value!r}: several demos stages come before this stage "
                                 f"({', '.join(s.name for s in candidates)}); write <stage>/{file}.")
    stage = candidates[0]
    if stage.name not in upstream:
        raise w.error(where, f"uses demonstrations of stage {stage.name!r} but does not wait for it: add "
                             f"{stage.name!r} to this stage's `after`.")
    files = sorted({f for job in stage.jobs for f in job.files})
    if file not in files:
        raise w.error(where, f"demos {value!r}: stage {stage.name!r} does not write {file}.npz; it writes "
                             f"{', '.join(files)} (its styles x targets).{did_you_mean(file, files)}")
    return DemosRef(stage.name, file)


def _demos_stage(w: _Where, name: str, body: dict, stages: dict[str, Stage]) -> Stage:
    where = f"stage {name!r}"
    w.mapping(body, where, DEMOS_KEYS)
    source = body.get("from")
    train_stages = [s.name for s in stages.values() if s.kind == "train"]
    if not isinstance(source, str) or source not in stages or stages[source].kind != "train":
        raise w.error(f"{where}: from", f"must name the training stage whose checkpoints are the demonstrators, "
                                        f"got {source!r}. Training stages: {', '.join(train_stages) or 'none'}.")
    source_stage = stages[source]
    if source_stage.keep_checkpoints != "all":
        raise w.error(f"{where}: from", f"stage {source!r} keeps only its runs' latest checkpoints "
                                        "(keep_checkpoints: latest), but demonstrators are chosen among all of them; "
                                        "give it keep_checkpoints: all.")
    after = tuple(dict.fromkeys([source, *(w.names(body["after"], f"{where}: after") if body.get("after") else [])]))
    methods = list(dict.fromkeys(run.method.name for run in source_stage.jobs))
    if len(methods) != 1:
        raise w.error(f"{where}: from", f"stage {source!r} has several methods ({', '.join(methods)}); a demos "
                                        "stage takes its demonstrators from a stage of one method.")
    maps = w.names(body["maps"], f"{where}: maps") if body.get("maps") else source_stage.maps
    for map_name in maps:
        if map_name not in source_stage.maps:
            raise w.error(f"{where}: maps", f"stage {source!r} trains no run on {map_name!r} (its maps: "
                                            f"{', '.join(source_stage.maps)}).")
    targets = body.get("targets")
    if not isinstance(targets, (list, tuple)) or not targets:
        raise w.error(f"{where}: targets", f"must list target greedy win rates, e.g. [0.3, 0.5], got {targets!r}.")
    targets = tuple(float(w.number(t, f"{where}: targets", 0.0, 1.0)) for t in targets)
    if len({f"{t:g}" for t in targets}) != len(targets):
        raise w.error(f"{where}: targets", f"repeats a value: {list(targets)}.")
    styles = tuple(w.names(body.get("styles", ["dm2"]), f"{where}: styles"))
    for style in styles:
        if style not in STYLES:
            raise w.error(f"{where}: styles", f"unknown style {style!r}.{did_you_mean(style, STYLES)} Styles: "
                                              f"{', '.join(STYLES)} (docs/demonstrations.md).")
    sampling = body.get("sampling", "stochastic")
    if sampling not in SAMPLINGS:
        raise w.error(f"{where}: sampling", f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}.")
    epsilon = body.get("epsilon")
    if sampling == "epsilon":
        epsilon = float(w.number(epsilon, f"{where}: epsilon", 0.0, 1.0))
    elif epsilon is not None:
        raise w.error(f"{where}: epsilon", f"is only used with `sampling: epsilon` (sampling is {sampling!r}).")
    stage = Stage(name, "demos", after, str(body.get("description", "") or ""))
    for map_name in maps:
        sources = tuple(run for run in source_stage.jobs if run.map_name == map_name)
        needed = _n_agents(map_name)
        for style in styles:
            if style in ("concurrent_not_cotrained", "neither") and needed and len(sources) < needed:
                raise w.error(f"{where}: styles", f"style {style!r} needs {needed} independently trained runs on "
                                                  f"{map_name} (one per agent), but stage {source!r} has "
                                                  f"{len(sources)} there (seeds "
                                                  f"{', '.join(str(r.seed) for r in sources)}). Give it "
                                                  f"{needed} seeds on {map_name} (per_map) or drop the style.")
        stage.jobs.append(DemosJob(
            name, map_name, sources, targets, styles,
            int(w.number(body.get("episodes", 1000), f"{where}: episodes", 1, math.inf, integer=True)),
            sampling, epsilon, int(w.number(body.get("seed", 0), f"{where}: seed", 0, 2**32 - 1, integer=True)),
            int(w.number(body.get("eval_episodes", 128), f"{where}: eval_episodes", 1, math.inf, integer=True)),
            needed))
    return stage


def _n_agents(map_name: str) -> int | None:
    """Agents on ``map_name`` in the embedded simulator's map list (None for maps only the real game has)."""
    from envs.sim.maps import SCENARIOS

    scenario = SCENARIOS.get(map_name)
    return None if scenario is None else scenario.n_agents


def _check_identities(w: _Where, spec: Spec) -> None:
    seen: dict[str, str] = {}
    for run in spec.train_runs:
        if run.key in seen:
            raise w.error(f"stage {run.stage!r}", f"run {run.key} is also planned by stage {seen[run.key]!r}.")
        seen[run.key] = run.stage


def _report_options(w: _Where, value: Any) -> ReportOptions:
    body = w.mapping(value, "report", list(ReportOptions.__dataclass_fields__))
    defaults = ReportOptions()
    thresholds = body.get("thresholds", list(defaults.thresholds))
    if not isinstance(thresholds, (list, tuple)):
        raise w.error("report: thresholds", f"must be a list of win rates, got {thresholds!r}.")
    metric = body.get("metric", defaults.metric)
    if not isinstance(metric, str):
        raise w.error("report: metric", f"must be a metric name, got {metric!r}.")
    return ReportOptions(
        metric=metric,
        final_fraction=float(w.number(body.get("final_fraction", defaults.final_fraction),
                                      "report: final_fraction", 1e-6, 1.0)),
        thresholds=tuple(float(w.number(t, "report: thresholds", 0.0, 1.0)) for t in thresholds),
        alpha=float(w.number(body.get("alpha", defaults.alpha), "report: alpha", 1e-6, 0.5)),
        margin=float(w.number(body.get("margin", defaults.margin), "report: margin", 0.0, 1.0)),
        bootstrap_reps=int(w.number(body.get("bootstrap_reps", defaults.bootstrap_reps), "report: bootstrap_reps",
                                    100, 10**6, integer=True)))


# --- the run configs -------------------------------------------------------------------------------------

class _Configs:
    """Resolves training runs' configs as ``src/main.py`` would (unknown keys, wrong types, unknown maps and
    components are errors naming the stage and method) and fills in each run's ``t_max`` and checkpoint interval.
    Demonstrations that a demos stage has not written yet stand in as an empty placeholder file (the learner
    checks only that the file exists; ``src/main.py`` checks the dataset itself when the run starts)."""

    def __init__(self, path: str, study_dir: str):
        self.path, self.study_dir = path, study_dir
        self._resolved: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> "_Configs":
        self._tmp = tempfile.TemporaryDirectory(prefix="dm2-spec-")
        self.placeholder = os.path.join(self._tmp.name, "demonstrations-written-by-a-demos-stage.npz")
        open(self.placeholder, "wb").close()
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def resolve(self, run: TrainRun) -> TrainRun:
        from config.loader import ConfigError, load_config

        key = (run.method.name, run.map_name)
        if key not in self._resolved:
            overrides = run_config_overrides(run, self.study_dir)
            if run.method.demos is not None and not os.path.isfile(overrides["gail_data_path"]):
                overrides["gail_data_path"] = self.placeholder
            try:
                self._resolved[key] = load_config(
                    run.method.config, run.method.env_config, overrides,
                    overrides_label=f"the `with` of method {run.method.name!r} (stage {run.stage!r})")
            except ConfigError as exc:
                raise SpecError(f"{self.path}: stage {run.stage!r}, method {run.method.name!r}, map {run.map_name}: "
                                f"{exc}") from None
        cfg = self._resolved[key]
        interval = run.overrides.get("save_model_interval")
        if interval is None:  # checkpoints often enough to lose at most a tenth of a run
            interval = max(1, min(cfg.save_model_interval, cfg.t_max // 10))
        return TrainRun(run.stage, run.method, run.map_name, run.seed, run.overrides, int(cfg.t_max), int(interval))


def run_config_overrides(run: TrainRun, study_dir: str) -> dict[str, Any]:
    """Every ``with`` override of a fresh run but the runner's process settings (threads, results path)."""
    overrides = copy.deepcopy(dict(run.overrides))
    overrides.update({"env_args.map_name": run.map_name, "seed": run.seed, "name": run.method.name})
    if run.method.demos is not None:
        overrides["gail_data_path"] = run.method.demos.path(study_dir, run.map_name)
    return overrides

"""A paper's claims as data, each judged **holds**, **does not hold** or **inconclusive**, with the numbers and the
test that decided it. A spec's ``claims:``::

    claims:
      - id: dm2_faster_than_ippo
        text: DM² learns faster than IPPO on both maps
        test: better                 # better | similar | above_demonstrators
        metric: auc                  # auc (mean win rate during training) | final (end of training)
        a: [dm2_wr0.3, dm2_wr0.5]
        b: [ippo]
        maps: [5m_vs_6m, 3s_vs_4z]   # default: every map where all of a and b ran
        pool: false                  # true: a's seeds and b's seeds are pooled (a main effect, e.g. co-training)

The tests, per map, on per-seed scores over the horizon every compared seed reached (:mod:`sweep.stats`):

- ``better``: each a is better than each b (or pooled a than pooled b): Welch's one-sided t-test.
- ``similar``: a and b are equivalent within ``margin`` (default ``report.margin``): two one-sided tests (TOST).
- ``above_demonstrators``: each a (a DM² method with ``demos``) ends above its demonstrators' greedy win rate:
  one-sample one-sided t-test of its ``final`` scores against that rate.

A claim **holds** when every comparison is significant (p < alpha); it **does not hold** when some comparison is
significant the other way (p < alpha / comparisons, Bonferroni; for ``similar``: a two-sided difference); otherwise,
or when a comparison lacks data (fewer than two seeds), it is **inconclusive**.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sweep.spec import Spec
from sweep.stats import mean_se, one_sample_greater, seed_scores, tost, welch_greater

CLAIM_KEYS = ("id", "text", "test", "metric", "a", "b", "maps", "pool", "margin")
TESTS = ("better", "similar", "above_demonstrators")
METRICS = ("auc", "final")
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    test: str
    metric: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    maps: tuple[str, ...]
    pool: bool = False
    margin: float | None = None


@dataclass
class Comparison:
    """One test of a claim on one map: the groups' scores, the p-values for and against, and a line of numbers."""

    map_name: str
    text: str
    p: float           # for the claim
    p_against: float   # against it
    missing: bool = False


@dataclass
class Verdict:
    """A claim's verdict; ``test`` the full description of how it was judged, ``short`` a few words of it."""

    claim: Claim
    verdict: str
    test: str
    short: str
    comparisons: list[Comparison] = field(default_factory=list)


def parse_claims(spec: Spec, raw: Any, w) -> list[Claim]:
    """The spec's claims, checked: known tests, metrics and methods, ``above_demonstrators`` on DM² methods."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise w.error("claims", f"must be a list of claims, got {type(raw).__name__}.")
    from sweep.spec import did_you_mean

    ran_on: dict[str, set[str]] = {}
    for run in spec.train_runs:
        ran_on.setdefault(run.method.name, set()).add(run.map_name)
    claims, ids = [], set()
    for i, body in enumerate(raw):
        where = f"claims[{i}]"
        body = w.mapping(body, where, CLAIM_KEYS)
        claim_id = body.get("id") or f"claim{i + 1}"
        if claim_id in ids:
            raise w.error(where, f"claim id {claim_id!r} is used twice.")
        ids.add(claim_id)
        where = f"claim {claim_id!r}"
        test = body.get("test")
        if test not in TESTS:
            raise w.error(where, f"unknown test {test!r}.{did_you_mean(str(test), TESTS)} Tests: {', '.join(TESTS)}.")
        metric = body.get("metric", "final" if test == "above_demonstrators" else "auc")
        if metric not in METRICS:
            raise w.error(where, f"unknown metric {metric!r}; valid: {', '.join(METRICS)}.")
        a = w.names(body.get("a"), f"{where}: a")
        b = w.names(body["b"], f"{where}: b") if test != "above_demonstrators" else []
        if test == "above_demonstrators" and body.get("b"):
            raise w.error(where, "`above_demonstrators` compares each method of `a` with its own demonstrators; "
                                 "leave `b` out.")
        for method in a + b:
            if method not in spec.methods:
                raise w.error(where, f"unknown method {method!r}.{did_you_mean(method, list(spec.methods))} "
                                     f"Methods: {', '.join(spec.methods)}.")
        if test == "above_demonstrators":
            for method in a:
                if spec.methods[method].demos is None:
                    raise w.error(where, f"method {method!r} learns from no demonstrations (no `demos`).")
        common = set.intersection(*(ran_on.get(m, set()) for m in a + b))
        maps = w.names(body["maps"], f"{where}: maps") if body.get("maps") else sorted(common)
        for map_name in maps:
            if map_name not in common:
                raise w.error(f"{where}: maps", f"not every method of the claim runs on {map_name!r}.")
        if not maps:
            raise w.error(where, "its methods share no map.")
        margin = body.get("margin")
        if margin is not None:
            margin = float(w.number(margin, f"{where}: margin", 0.0, 1.0))
        claims.append(Claim(claim_id, str(body.get("text") or claim_id), test, metric, tuple(a), tuple(b),
                            tuple(maps), bool(body.get("pool", False)), margin))
    return claims


METRIC_WORDS = {"auc": "mean test win rate during training (AUC up to the common horizon)",
                "final": "final test win rate (mean over the last {pct:g}% of the common horizon)"}

Series = Callable[[str, str], list[tuple[np.ndarray, np.ndarray]]]


def _numbers(label: str, x: np.ndarray) -> str:
    m, se = mean_se(x)
    if len(x) == 0:
        return f"{label}: no finished seed"
    return f"{label} {m:.3f} ± {se:.3f} (n={len(x)})" if len(x) > 1 else f"{label} {m:.3f} (n=1)"


def _p(p: float) -> str:
    return "p = n/a" if math.isnan(p) else f"p = {p:.3g}"


def _groups(claim: Claim) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    if claim.pool:
        return [(claim.a, claim.b)]
    return [((a,), (b,)) for a in claim.a for b in claim.b]


def judge(claim: Claim, series: Series, labels: Mapping[str, str], demonstrators: Callable[[str, str], float | None],
          alpha: float, margin: float, final_fraction: float) -> Verdict:
    """The verdict of ``claim``. ``series(map, method)``: the method's per-seed ``(steps, values)`` on the map;
    ``demonstrators(method, map)``: the win rate of the method's demonstrators there (None when unknown)."""
    words = METRIC_WORDS[claim.metric].format(pct=100 * final_fraction)
    margin = claim.margin if claim.margin is not None else margin
    comparisons: list[Comparison] = []
    for map_name in claim.maps:
        if claim.test == "above_demonstrators":
            for method in claim.a:
                scores, _ = seed_scores({method: series(map_name, method)}, claim.metric, final_fraction)
                x = scores[method]
                rate = demonstrators(method, map_name)
                if rate is None:
                    comparisons.append(Comparison(map_name, f"{map_name}: {labels[method]}: demonstrators' win rate "
                                                            "unknown (no demos summary)", math.nan, math.nan, True))
                    continue
                p, p_against = one_sample_greater(x, rate), one_sample_greater(-x, -rate)
                comparisons.append(Comparison(map_name, f"{map_name}: {_numbers(labels[method], x)} vs demonstrators "
                                                        f"{rate:.3f}, {_p(p)}", p, p_against, len(x) < 2))
            continue
        for group_a, group_b in _groups(claim):
            members = {m: series(map_name, m) for m in dict.fromkeys(group_a + group_b)}
            scores, horizon = seed_scores(members, claim.metric, final_fraction)
            x = np.concatenate([scores[m] for m in group_a])
            y = np.concatenate([scores[m] for m in group_b])
            name_a, name_b = (" + ".join(labels[m] for m in g) for g in (group_a, group_b))
            if claim.test == "better":
                p, p_against = welch_greater(x, y), welch_greater(y, x)
                shown = _p(p)
            else:
                p = tost(x, y, margin)
                p_against = min(1.0, 2 * min(welch_greater(x, y), welch_greater(y, x)))
                shown = f"equivalence within ±{margin:g}: {_p(p)}; difference: {_p(p_against)}"
            at = f" (to t_env {horizon:,.0f})" if not math.isnan(horizon) else ""
            comparisons.append(Comparison(map_name, f"{map_name}{at}: {_numbers(name_a, x)} vs {_numbers(name_b, y)}, "
                                                    f"{shown}", p, p_against, len(x) < 2 or len(y) < 2))
    k = len(comparisons)
    test = {"better": f"Welch's one-sided t-test on each seed's {words}",
            "similar": f"two one-sided Welch tests (TOST) of equivalence within ±{margin:g} on each seed's {words}",
            "above_demonstrators": f"one-sample one-sided t-test of each seed's {words} against the demonstrators' "
                                   "greedy win rate"}[claim.test]
    test += (f"; per map{', seeds pooled per group' if claim.pool else ''}; holds if every comparison has p < "
             f"{alpha:g}, does not hold if one goes the other way with p < {alpha:g}/{k} (Bonferroni)")
    short = {"better": "Welch t, one-sided", "similar": f"TOST ±{margin:g}",
             "above_demonstrators": "one-sample t, one-sided"}[claim.test] + f", {claim.metric}"
    against = [c.p_against for c in comparisons if not math.isnan(c.p_against)]
    if any(p < alpha / k for p in against):
        verdict = FAILS
    elif comparisons and all(not c.missing and not math.isnan(c.p) and c.p < alpha for c in comparisons):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    return Verdict(claim, verdict, test, short, comparisons)


def claim_series(seeds: Mapping[tuple[str, str], Sequence[Any]]) -> Series:
    """``series(map, method)`` over ``StudyCurves.seeds``: each finished seed's ``(steps, values)``."""
    return lambda map_name, method: [(s.steps, s.values) for s in seeds.get((map_name, method), [])]

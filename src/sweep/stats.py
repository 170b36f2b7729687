"""Per-seed scores of learning curves, aggregate statistics with ``rliable`` and the hypothesis tests of the claims.

Scores of one seed's curve (its test win rate at logged ``t_env`` steps, read as piecewise linear, and as the first
logged value from t_env 0 to the first log), over a **horizon** H that every compared seed on the map reached:

- ``auc``: the area under the curve over [0, H] divided by H: the mean win rate during training, which rewards
  learning faster (the paper's "learns faster");
- ``final``: the mean over the last ``final_fraction`` of [0, H] (the end of training, smoothed);
- ``steps to threshold``: the first logged t_env <= H at which the win rate reached the threshold, or none.

Aggregates (rliable, Agarwal et al. 2021): scores arranged ``[seeds, maps]`` per method; the interquartile mean
(IQM) with stratified-bootstrap 95% confidence intervals, the probability of improvement P(X > Y), and
performance profiles (the fraction of runs scoring above tau). rliable needs the same number of seeds on every
map of a method: the first seeds (in seed order) up to the smallest count are used, and the report says so.

Tests (scipy): Welch's t-test (one-sided), the one-sample t-test against a constant, and the two one-sided tests
(TOST) for equivalence within a margin. With fewer than two seeds on a side, or no variance on both, a test has
no p-value (NaN) and the claims that need it are inconclusive.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Mapping, Sequence

import numpy as np

SEED = 0  # the bootstrap's random state: the same results give the same intervals


@contextlib.contextmanager
def _bootstrap():
    """rliable's bootstrap passes a ``RandomState`` the way ``arch`` now deprecates (it still works)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
        yield np.random.RandomState(SEED)


def _extended(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve from t_env 0: its first value held back to 0."""
    if len(steps) and steps[0] > 0:
        return np.concatenate([[0.0], steps]), np.concatenate([values[:1], values])
    return steps, values


def mean_over(steps: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    """The mean of the piecewise-linear curve over ``[lo, hi]`` (its value at ``lo`` when ``hi == lo``)."""
    steps, values = _extended(np.asarray(steps, float), np.asarray(values, float))
    if hi <= lo:
        return float(np.interp(lo, steps, values))
    grid = np.union1d(steps[(steps > lo) & (steps < hi)], [lo, hi])
    v = np.interp(grid, steps, values)
    return float(((v[1:] + v[:-1]) * np.diff(grid)).sum() / 2 / (hi - lo))


def auc(steps: np.ndarray, values: np.ndarray, horizon: float) -> float:
    """Normalised area under the curve over ``[0, horizon]``: the mean win rate during training."""
    return mean_over(steps, values, 0.0, horizon)


def final(steps: np.ndarray, values: np.ndarray, horizon: float, fraction: float) -> float:
    """The mean over the last ``fraction`` of ``[0, horizon]``."""
    return mean_over(steps, values, horizon * (1.0 - fraction), horizon)


def steps_to_threshold(steps: np.ndarray, values: np.ndarray, threshold: float, horizon: float) -> float | None:
    """The first logged t_env <= ``horizon`` whose value is >= ``threshold``; None if never."""
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    hit = np.nonzero((values >= threshold) & (steps <= horizon))[0]
    return float(steps[hit[0]]) if len(hit) else None


def common_horizon(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """The last t_env that every series reached."""
    return float(min(s[-1] for s, _ in series))


def mean_se(x: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (NaN with fewer than two values)."""
    x = np.asarray(x, float)
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def _p(result) -> float:
    p = float(result.pvalue)
    return p if np.isfinite(p) else math.nan


def welch_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """p-value of Welch's t-test with the alternative mean(a) > mean(b)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2 or (a.var() == 0 and b.var() == 0):
        return math.nan
    return _p(stats.ttest_ind(a, b, equal_var=False, alternative="greater"))


def one_sample_greater(x: Sequence[float], value: float) -> float:
    """p-value of the one-sample t-test with the alternative mean(x) > ``value``."""
    from scipy import stats

    x = np.asarray(x, float)
    if len(x) < 2 or x.var() == 0:
        return math.nan
    return _p(stats.ttest_1samp(x, value, alternative="greater"))


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """p-value of the two one-sided Welch tests of equivalence: H0 |mean(a) - mean(b)| >= ``margin``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return max(welch_greater(a + margin, b), welch_greater(b + margin, a))


# --- rliable ----------------------------------------------------------------------------------------------

def rectangular(scores: Mapping[str, Mapping[str, Sequence[float]]], maps: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """``{method: [seeds, maps]}`` for rliable from ``scores[method][map]`` (per-seed scores in seed order): each
    method keeps its first n seeds on every map, n the smallest count over the maps. Also returns n per method.
    Methods missing a map are left out."""
    out, kept = {}, {}
    for method, by_map in scores.items():
        if not all(len(by_map.get(m, ())) for m in maps):
            continue
        n = min(len(by_map[m]) for m in maps)
        out[method] = np.stack([np.asarray(by_map[m][:n], float) for m in maps], axis=1)
        kept[method] = n
    return out, kept


def interval_estimates(score_dict: Mapping[str, np.ndarray], reps: int) -> dict[str, dict[str, list[float]]]:
    """IQM and mean of each method's ``[seeds, maps]`` scores with stratified-bootstrap 95% CIs:
    ``{method: {"iqm": [point, low, high], "mean": [...]}}``."""
    from rliable import library as rly
    from rliable import metrics

    if not score_dict:
        return {}
    with _bootstrap() as random_state:
        points, cis = rly.get_interval_estimates(
            dict(score_dict), lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]), reps=reps,
            random_state=random_state)
    return {m: {name: [float(points[m][i]), float(cis[m][0][i]), float(cis[m][1][i])]
                for i, name in enumerate(("iqm", "mean"))} for m in score_dict}


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int) -> list[float]:
    """P(X > Y) of two methods' ``[seeds, maps]`` scores (rliable; ties count half), ``[point, low, high]``."""
    from rliable import library as rly
    from rliable import metrics

    with _bootstrap() as random_state:
        points, cis = rly.get_interval_estimates({"pair": (x, y)}, metrics.probability_of_improvement, reps=reps,
                                                 random_state=random_state)
    return [float(np.ravel(points["pair"])[0]), float(np.ravel(cis["pair"][0])[0]), float(np.ravel(cis["pair"][1])[0])]


def performance_profiles(score_dict: Mapping[str, np.ndarray], taus: np.ndarray, reps: int
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score distributions (fraction of runs with score > tau) with bootstrap CIs, ``{method: [len(taus)]}``."""
    from rliable import library as rly

    with _bootstrap() as random_state:
        return rly.get_interval_estimates(dict(score_dict), lambda s: rly.score_distributions(s, taus), reps=reps,
                                          random_state=random_state)


def seed_scores(series: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], metric: str, final_fraction: float
                ) -> tuple[dict[str, np.ndarray], float]:
    """Each method's per-seed ``metric`` (``auc`` or ``final``) over the horizon common to every seed of every
    method in ``series`` (``{method: [(steps, values) per seed]}``); returns the scores and the horizon."""
    everything = [s for runs in series.values() for s in runs]
    if not everything:
        return {m: np.zeros(0) for m in series}, math.nan
    horizon = common_horizon(everything)
    if metric == "auc":
        score = lambda s, v: auc(s, v, horizon)  # noqa: E731
    elif metric == "final":
        score = lambda s, v: final(s, v, horizon, final_fraction)  # noqa: E731
    else:
        raise ValueError(f"unknown score {metric!r}; valid: auc, final")
    return {m: np.array([score(s, v) for s, v in runs], float) for m, runs in series.items()}, horizon

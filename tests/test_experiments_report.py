"""``experiments.py report`` on a small synthetic results tree whose numbers are computed by hand: the scores, the
aggregate statistics, the claims' verdicts and the files written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sweep.claims import FAILS, HOLDS, INCONCLUSIVE, claim_series, judge
from sweep.report import write_report
from sweep.spec import load_spec
from sweep.stats import auc, final, steps_to_threshold, tost, welch_greater
from test_experiments_spec import REPO, write_spec
from test_plot import write_run

METRIC = "test_battle_won_mean"
STEPS = list(range(0, 1001, 100))
SPEC = """
    name: synthetic
    results: {results}
    stages:
      experts: {{maps: [3m], seeds: [1], methods: {{expert: {{config: ippo}}}}}}
      demos: {{kind: demos, from: experts, targets: [0.3], styles: [dm2]}}
      main:
        after: [demos]
        maps: [3m, 8m]
        seeds: [1, 2, 3, 4]
        with: {{t_max: 1000}}
        methods:
          ippo: {{config: ippo, label: IPPO}}
          qmix: {{config: qmix, label: QMIX}}
          dm2: {{config: ippo_gail, label: DM2, demos: dm2_wr0.3, maps: [3m]}}
    figures:
      main: {{title: Main, methods: [ippo, qmix, dm2], demonstrators: [dm2_wr0.3], baseline: ippo}}
    claims:
      - {{id: faster, text: DM2 faster than IPPO, test: better, a: [dm2], b: [ippo]}}
      - {{id: slower, text: IPPO faster than DM2, test: better, a: [ippo], b: [dm2]}}
      - {{id: qmix, text: QMIX faster than IPPO, test: better, a: [qmix], b: [ippo]}}
      - {{id: alike, text: QMIX like IPPO, test: similar, a: [qmix], b: [ippo], margin: 0.05}}
      - {{id: demos, text: DM2 above its demonstrators, test: above_demonstrators, a: [dm2]}}
    report: {{bootstrap_reps: 200}}
"""


def slope_runs(root, map_name, method, slope, extra=0.0):
    """Seeds 1..4 with win rate ``slope * t / 1000 + 0.01 * seed + extra`` at t = 0, 100, ..., 1000."""
    for seed in (1, 2, 3, 4):
        values = [slope * t / 1000 + 0.01 * seed + extra for t in STEPS]
        write_run(root, map_name, method, seed, {METRIC: (STEPS, values)}, seed=seed, t_max=1000)


@pytest.fixture
def study(tmp_path):
    spec = load_spec(write_spec(tmp_path, SPEC.format(results=tmp_path / "study")))
    sacred = tmp_path / "study" / "results" / "sacred"
    for map_name in ("3m", "8m"):
        slope_runs(sacred, map_name, "ippo", 0.5)
        slope_runs(sacred, map_name, "qmix", 0.5, extra=0.002)
    slope_runs(sacred, "3m", "dm2", 0.9)
    summary = tmp_path / "study" / "demos" / "demos" / "3m" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"datasets": [{"file": "dm2_wr0.3.npz", "slots": [
        {"greedy_win_rate": 0.3}, {"greedy_win_rate": 0.3}, {"greedy_win_rate": 0.3}]}]}))
    return spec


def test_scores_of_a_curve_by_hand():
    steps, values = np.array([100.0, 200, 400]), np.array([0.2, 0.4, 0.8])
    # from 0 the first value holds: area 0.2*100 + 0.3*100 + 0.6*200 = 170 over 400
    assert auc(steps, values, 400) == pytest.approx(170 / 400)
    assert final(steps, values, 400, 0.25) == pytest.approx((0.6 + 0.8) / 2)  # mean over [300, 400]
    assert steps_to_threshold(steps, values, 0.4, 400) == 200
    assert steps_to_threshold(steps, values, 0.8, 300) is None
    a, b = [0.50, 0.52, 0.54], [0.40, 0.42, 0.44]
    assert welch_greater(a, b) < 0.01 < 0.99 < welch_greater(b, a)
    assert tost(a, [x + 0.001 for x in a], 0.05) < 0.05 < 0.5 < tost(a, b, 0.05)
    assert np.isnan(welch_greater([0.5], b))  # one seed: no test


def test_claims_hold_fail_or_stay_inconclusive(study):
    from sweep.curves import load_curves

    curves = load_curves(os.path.join(study.study_dir, "results", "sacred"), METRIC)
    labels = {m: study.methods[m].label for m in study.methods}
    verdicts = {c.id: judge(c, claim_series(curves.seeds), labels, lambda m, mp: 0.3, 0.05, 0.05, 0.1)
                for c in study.claims}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "faster": HOLDS, "slower": FAILS, "qmix": INCONCLUSIVE, "alike": HOLDS, "demos": HOLDS}
    # AUC = mean of 0.9 t/1000 + 0.01 k over [0, 1000] = 0.45 + 0.01 k, k = 1..4
    assert verdicts["faster"].comparisons[0].text.startswith("3m (to t_env 1,000): DM2 0.475 ± 0.006 (n=4) vs IPPO "
                                                             "0.275 ± 0.006 (n=4), p = ")
    assert [c.map_name for c in verdicts["qmix"].comparisons] == ["3m", "8m"]
    assert "Welch's one-sided t-test" in verdicts["faster"].test and "Bonferroni" in verdicts["faster"].test
    # final = mean over the last 10%: 0.9 * 0.95 + 0.01 k
    assert verdicts["demos"].comparisons[0].text.startswith("3m: DM2 0.880 ± 0.006 (n=4) vs demonstrators 0.300")


def test_the_report_has_the_figures_statistics_and_claims(study, tmp_path):
    out = tmp_path / "report"
    paths = write_report(study, str(out))
    assert sorted(os.listdir(out)) == ["figures", "report.md", "runs.txt", "statistics.json"]
    assert sorted(os.listdir(out / "figures")) == ["main.png", "main_profile.png"]
    assert all(os.path.exists(p) for p in paths)
    report = (out / "report.md").read_text()
    assert "| DM2 faster than IPPO | ✅ holds |" in report
    assert "| IPPO faster than DM2 | ❌ does not hold |" in report
    assert "| QMIX faster than IPPO | ❔ inconclusive |" in report
    assert "![Main](figures/main.png)" in report
    stats = json.loads((out / "statistics.json").read_text())
    main = stats["figures"]["main"]
    assert main["aggregate_maps"] == ["3m"]  # where every method of the figure ran
    # IQM of DM2's final scores on 3m (0.865..0.895) is the mean of the middle half: 0.88
    assert main["methods"]["dm2"]["final"]["iqm"][0] == pytest.approx(0.88)
    assert main["probability_of_improvement"]["dm2"]["final"][0] == pytest.approx(1.0)
    assert main["per_map"]["3m"]["dm2"]["steps_to_0.5"] == [600.0] * 4  # 0.9 t + 0.01 k >= 0.5 first at 600
    assert main["per_map"]["3m"]["ippo"]["steps_to_0.3"] == [600.0, 600.0, 600.0, 600.0]
    assert "| DM2 | 4 | 0.880 ± 0.006 | 0.475 ± 0.006 |" in report
    assert [c["verdict"] for c in stats["claims"]] == [HOLDS, FAILS, INCONCLUSIVE, HOLDS, HOLDS]


def test_a_report_of_a_bare_results_directory_and_of_a_study_without_runs(tmp_path):
    sacred = tmp_path / "sacred"
    slope_runs(sacred, "3m", "ippo", 0.5)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "src", "experiments.py"), "report", str(sacred)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (sacred / "report" / "report.md").read_text()
    assert "## All runs" in report and "| ippo | 4 |" in report
    empty = load_spec(write_spec(tmp_path, SPEC.format(results=tmp_path / "empty"), "empty.yaml"))
    write_report(empty, str(tmp_path / "empty_report"))
    text = (tmp_path / "empty_report" / "report.md").read_text()
    assert "0 seeds" in text and "❔ inconclusive" in text

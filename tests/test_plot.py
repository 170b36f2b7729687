"""The plotting command on small synthetic Sacred results trees with hand-computed expectations."""
import json

import numpy as np
import pytest

import plot
from utils.plotting import PlotError, aggregate, find_runs, select_seeds

METRIC = "test_battle_won_mean"


def write_run(root, map_name, alg, run_id, series, status="COMPLETED", seed=0, t_max=None, evaluate=False,
              resumed_from=None, start="2024-01-01T00:00:00"):
    """A Sacred FileStorageObserver run directory as src/main.py writes it; ``series`` maps metric ->
    (steps, values). ``t_max`` defaults to the last logged step; ``resumed_from`` = (parent run directory
    as the checkpoint recorded it, resume t_env) makes it a continuation."""
    run = root / map_name / alg / str(run_id)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": status, "start_time": start}))
    t_max = max(max(steps) for steps, _ in series.values()) if t_max is None else t_max
    (run / "config.json").write_text(json.dumps({
        "seed": seed, "t_max": t_max, "evaluate": evaluate, "env_args": {"map_name": map_name},
        "checkpoint_path": "results/models/tok" if evaluate or resumed_from else ""}))
    info = {"env_backend": "sim", "unique_token": f"{alg}__{map_name}__seed{seed}__{run_id}"}
    if resumed_from:
        parent, t_env = resumed_from
        info["resumed_from"] = {"checkpoint": f"results/models/tok/{t_env}/checkpoint.pt", "t_env": t_env,
                                "sacred_run_dir": parent}
    (run / "info.json").write_text(json.dumps(info))
    metrics = {name: {"steps": list(steps), "values": list(values), "timestamps": ["t"] * len(steps)}
               for name, (steps, values) in series.items()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def results(tmp_path):
    """3m: ippo (3 seeds on different step grids), qmix (2 seeds + 1 failed); 8m: ippo (1 seed),
    qmix (1 run without the metric)."""
    root = tmp_path / "sacred"
    # ippo on 3m, t_max 300. Seed 1 logged step 200 twice: the later value 0.4 counts.
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 100, 200, 200, 300], [0.0, 0.2, 0.9, 0.4, 0.6])}, seed=1)
    write_run(root, "3m", "ippo", 2, {METRIC: ([0, 150, 310], [0.0, 0.3, 0.62])}, seed=2, t_max=300)  # 0.002 t
    write_run(root, "3m", "ippo", 3, {METRIC: ([10, 200, 400], [0.11, 0.3, 0.5])}, seed=3, t_max=300)  # 0.001t+.1
    (root / "3m" / "ippo" / "_sources").mkdir()  # Sacred's source copies: not a run
    write_run(root, "3m", "qmix", 1, {METRIC: ([0, 300], [0.2, 0.8])}, seed=1)
    write_run(root, "3m", "qmix", 2, {METRIC: ([0, 300], [0.4, 1.0])}, seed=2)
    write_run(root, "3m", "qmix", 3, {METRIC: ([0, 150], [0.0, 0.0])}, status="FAILED", seed=3, t_max=300)
    write_run(root, "8m", "ippo", 1, {METRIC: ([0, 50, 100], [1.0, 2.0, 3.0]), "test_return_mean": ([0], [5.0])})
    write_run(root, "8m", "qmix", 1, {"test_return_mean": ([0, 100], [1.0, 2.0])})
    return root


def table_rows(stdout):
    """Rows of the printed summary table (the second block) as lists of cells (header and rule excluded)."""
    lines = stdout.split("\n\n")[1].splitlines()
    return [line.split(None, 5) for line in lines[2:]]


def test_command_prints_final_values_and_writes_figures(results, tmp_path, capsys):
    out = tmp_path / "figures"
    assert plot.main(["--results", str(results), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = {(r[0], r[1]): r[2:] for r in table_rows(captured.out)}
    # common range of ippo on 3m: t_env 10..300; finals at 300: 0.6, 0.6, 0.4 -> 0.5333 ± 0.1155/sqrt(3)
    assert rows[("3m", "ippo")] == ["3", "1,2,3", "300", "0.5333 ± 0.0667"]
    # qmix on 3m: the failed run is left out; finals 0.8, 1.0 -> 0.9 ± 0.1414/sqrt(2)
    assert rows[("3m", "qmix")] == ["2", "1,2", "300", "0.9000 ± 0.1000"]
    assert rows[("8m", "ippo")] == ["1", "0", "100", "3.0000 (one seed: no s.e.)"]
    assert ("8m", "qmix") not in rows
    assert "3m/qmix/3  FAILED     0..150  skipped: unfinished, FAILED at t_env 150 of t_max 300" in captured.out
    assert "8m/qmix/1  COMPLETED  0..100  skipped: no values of metric 'test_battle_won_mean'" in captured.out
    assert captured.err == ""
    for map_name in ("3m", "8m"):
        path = out / f"{map_name}_{METRIC}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {path}" in captured.out


def test_curves_average_the_interpolated_seeds(results):
    selection = select_seeds(find_runs(str(results), METRIC, maps=["3m"], algs=["ippo"]), METRIC)
    assert [s.seed for s in selection.seeds] == [1, 2, 3] and all(line.used for line in selection.lines)
    (curve,) = aggregate(selection.seeds, n_points=30)
    assert curve.t[0] == 10 and curve.t[-1] == 300 and len(curve.t) == 30
    seed1 = np.interp(curve.t, [0, 100, 200, 300], [0.0, 0.2, 0.4, 0.6])
    seed2, seed3 = 0.002 * curve.t, 0.001 * curve.t + 0.1
    np.testing.assert_allclose(curve.mean, (seed1 + seed2 + seed3) / 3)
    np.testing.assert_allclose(curve.sem, np.std([seed1, seed2, seed3], axis=0, ddof=1) / np.sqrt(3))
    np.testing.assert_allclose(curve.finals, [0.6, 0.6, 0.4])


def test_filters_and_pdf(results, tmp_path, capsys):
    out = tmp_path / "pdf"
    argv = ["--results", str(results), "--out", str(out), "--format", "pdf", "--maps", "3m", "MMM",
            "--algs", "qmix"]
    assert plot.main(argv) == 0
    captured = capsys.readouterr()
    assert [r[:2] for r in table_rows(captured.out)] == [["3m", "qmix"]]
    assert "--maps MMM: no seed with metric" in captured.err
    assert [p.name for p in out.iterdir()] == [f"3m_{METRIC}.pdf"]
    assert (out / f"3m_{METRIC}.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("argv, message", [
    (["--results", "{root}/missing"], "does not exist"),
    (["--results", "{root}/sacred/3m/ippo/_sources"], "no Sacred runs"),
    (["--metric", "test_win"], "logged metric 'test_win'; metrics found: test_battle_won_mean, test_return_mean"),
    (["--maps", "5m_vs_6m"], "matches --maps 5m_vs_6m; map/alg with runs: 3m/ippo, 3m/qmix, 8m/ippo, 8m/qmix"),
    (["--maps", "3m", "--algs", "qmix", "--metric", "x", "--results", "{root}/failed"],
     "no finished training run under '{root}/failed' logged metric 'x' (see the report of the runs; "
     "--include-unfinished plots unfinished runs too)"),
])
def test_nothing_to_plot_is_a_clear_error(results, tmp_path, capsys, argv, message):
    write_run(tmp_path / "failed", "3m", "qmix", 1, {"x": ([0, 5], [0.0, 1.0])}, status="FAILED", t_max=10)
    argv = [a.format(root=tmp_path) for a in argv]
    if "--results" not in argv:
        argv += ["--results", str(results)]
    assert plot.main(argv + ["--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(root=tmp_path) in err
    assert not (tmp_path / "figs").exists()


def test_seeds_without_a_common_range_are_refused(tmp_path):
    root = tmp_path / "sacred"
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 100], [0.0, 1.0])}, seed=1)
    write_run(root, "3m", "ippo", 2, {METRIC: ([200, 300], [0.0, 1.0])}, seed=2)
    selection = select_seeds(find_runs(str(root), METRIC), METRIC)
    with pytest.raises(PlotError, match="share no t_env range"):
        aggregate(selection.seeds)


# A results tree as experiments leave it: 5m_vs_6m/ippo, t_max 1000, test points every 250 env steps.
STEPS = [0, 250, 500, 750, 1000]


@pytest.fixture
def lineage(tmp_path):
    """Seeds 1 and 2 trained normally (seed 2 twice: run 2, then the rerun 7, which started later); seed 3
    killed (run 3, INTERRUPTED after its checkpoint at 500, having logged up to 600) and resumed from that
    checkpoint (run 5: replays run 3's history up to 500, then goes on; Sacred drew its config seed); run 4
    evaluates seed 1's checkpoint at 500; seed 4 FAILED at 250."""
    root = tmp_path / "sacred"

    def run(run_id, values, steps=STEPS, **kwargs):
        episodes = kwargs.pop("episodes", steps)  # the last t_env a run reached is that of any metric
        write_run(root, "5m_vs_6m", "ippo", run_id, {METRIC: (steps, values), "episode": (episodes, episodes)},
                  t_max=1000, start=f"2024-01-0{run_id}T00:00:00", **kwargs)

    run(1, [0.0, 0.2, 0.4, 0.6, 0.8], seed=1)
    run(2, [0.0, 0.1, 0.2, 0.3, 0.4], seed=2)
    run(3, [0.0, 0.1, 0.3, 0.9], steps=[0, 250, 500, 600], episodes=[0, 250, 500, 600, 650], seed=3,
        status="INTERRUPTED")
    run(4, [0.45], steps=[500], seed=1, evaluate=True)
    run(5, [0.0, 0.1, 0.3, 0.5, 0.7], seed=91234, resumed_from=("results/sacred/5m_vs_6m/ippo/3", 500))
    run(6, [0.0, 0.5], steps=[0, 250], seed=4, status="FAILED")
    run(7, [0.0, 0.3, 0.5, 0.7, 0.9], seed=2)
    return root


LINEAGE_REPORT = """\
Runs under {root} for test_battle_won_mean: 4 of 7 used, as 3 seeds
map       method  seed  run              status       t_env      verdict
--------  ------  ----  ---------------  -----------  ---------  -------
5m_vs_6m  ippo    1     5m_vs_6m/ippo/1  COMPLETED    0..1000    used
5m_vs_6m  ippo    2     5m_vs_6m/ippo/2  COMPLETED    0..1000    skipped: duplicate of seed 2; kept 5m_vs_6m/ippo/7 (started later)
5m_vs_6m  ippo    3     5m_vs_6m/ippo/3  INTERRUPTED  0..650     used up to t_env 500; continued by 5m_vs_6m/ippo/5
5m_vs_6m  ippo    1     5m_vs_6m/ippo/4  COMPLETED    500        skipped: evaluate=True (scores a checkpoint, not a training run)
5m_vs_6m  ippo    3     5m_vs_6m/ippo/5  COMPLETED    500..1000  used from t_env 500; resumes 5m_vs_6m/ippo/3
5m_vs_6m  ippo    4     5m_vs_6m/ippo/6  FAILED       0..250     skipped: unfinished, FAILED at t_env 250 of t_max 1000 (--include-unfinished to plot it)
5m_vs_6m  ippo    2     5m_vs_6m/ippo/7  COMPLETED    0..1000    used; kept over duplicate 5m_vs_6m/ippo/2
"""


def test_seeds_are_grouped_joined_and_deduplicated(lineage):
    selection = select_seeds(find_runs(str(lineage), METRIC), METRIC)
    assert [(s.seed, s.label) for s in selection.seeds] == [
        (1, "5m_vs_6m/ippo/1"), (2, "5m_vs_6m/ippo/7"), (3, "5m_vs_6m/ippo/3 → 5m_vs_6m/ippo/5")]
    # seed 3: run 3 up to its checkpoint, then run 5; run 3's point at 600 (after the checkpoint) and run 5's
    # replay of 0..500 are not counted
    seed3 = selection.seeds[2]
    np.testing.assert_array_equal(seed3.steps, STEPS)
    np.testing.assert_array_equal(seed3.values, [0.0, 0.1, 0.3, 0.5, 0.7])
    (curve,) = aggregate(selection.seeds, n_points=5)
    np.testing.assert_allclose(curve.t, STEPS)
    np.testing.assert_allclose(curve.mean, [0.0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(curve.finals, [0.8, 0.9, 0.7])
    np.testing.assert_allclose(curve.sem[-1], 0.1 / np.sqrt(3))
    assert selection.warnings == [
        "5m_vs_6m/ippo seed 2 was run 2 times (5m_vs_6m/ippo/2, 5m_vs_6m/ippo/7): counted once, using "
        "5m_vs_6m/ippo/7 (started later)"]


def test_the_command_reports_every_run(lineage, tmp_path, capsys):
    assert plot.main(["--results", str(lineage), "--metric", METRIC, "--out", str(tmp_path / "figures"),
                      "--format", "png"]) == 0
    captured = capsys.readouterr()
    report, _, wrote = captured.out.split("\n\n")
    assert report + "\n" == LINEAGE_REPORT.format(root=lineage)
    assert table_rows(captured.out) == [["5m_vs_6m", "ippo", "3", "1,2,3", "1000", "0.8000 ± 0.0577"]]
    assert captured.err == ("warning: 5m_vs_6m/ippo seed 2 was run 2 times (5m_vs_6m/ippo/2, 5m_vs_6m/ippo/7): "
                            "counted once, using 5m_vs_6m/ippo/7 (started later)\n")
    assert wrote == f"wrote {tmp_path / 'figures' / f'5m_vs_6m_{METRIC}.png'}\n"


def test_unfinished_seeds_only_on_request_and_marked(lineage, tmp_path, capsys):
    assert plot.main(["--results", str(lineage), "--out", str(tmp_path / "f"), "--include-unfinished"]) == 0
    captured = capsys.readouterr()
    assert ("5m_vs_6m/ippo/6  FAILED       0..250     used; UNFINISHED (FAILED at t_env 250 of t_max 1000), "
            "included by --include-unfinished") in captured.out
    # the FAILED seed cuts the common range to 0..250; finals there: 0.2, 0.3, 0.1, 0.5
    finals = np.array([0.2, 0.3, 0.1, 0.5])
    final = f"{finals.mean():.4f} ± {finals.std(ddof=1) / 2:.4f}"
    assert table_rows(captured.out) == [["5m_vs_6m", "ippo", "4", "1,2,3,4*", "250", final],
                                        ["*", "unfinished", "seed,", "included", "by", "--include-unfinished"]]
    assert ("warning: 5m_vs_6m/ippo seed 4 is unfinished (FAILED at t_env 250 of t_max 1000) and included "
            "(--include-unfinished)") in captured.err


def test_chains_branches_and_missing_parents(tmp_path):
    """A seed killed twice (runs A → B → C = 1 → 2 → 3), a second continuation of A's checkpoint that was
    given up (D = 4), and a continuation whose parent's directory is gone (E = 5: its replayed history
    stands in). Checkpoints are recorded with absolute paths here."""
    root = tmp_path / "sacred"
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 100, 200, 300], [0.0, 0.1, 0.2, 0.9])}, seed=7,
              status="INTERRUPTED", t_max=800)
    # B was killed outright after its checkpoint at 600, before Sacred wrote its points past 400: C's replay
    # of B's history fills them in
    write_run(root, "3m", "ippo", 2, {METRIC: ([0, 100, 200, 400], [0.0, 0.1, 0.2, 0.4])},
              seed=8, status="RUNNING", t_max=800, resumed_from=(str(root / "3m" / "ippo" / "1"), 200))
    write_run(root, "3m", "ippo", 3, {METRIC: ([0, 100, 200, 400, 600, 800], [0.0, 0.1, 0.2, 0.4, 0.6, 0.8])},
              seed=9, t_max=800, resumed_from=(str(root / "3m" / "ippo" / "2"), 600))
    write_run(root, "3m", "ippo", 4, {METRIC: ([0, 100, 200, 300], [0.0, 0.1, 0.2, 0.5])}, seed=10,
              status="INTERRUPTED", t_max=800, resumed_from=(str(root / "3m" / "ippo" / "1"), 200))
    write_run(root, "3m", "ippo", 5, {METRIC: ([0, 400, 800], [0.0, 0.2, 0.4])}, seed=11, t_max=800,
              resumed_from=("results/sacred/3m/ippo/0", 400))
    selection = select_seeds(find_runs(str(root), METRIC), METRIC)
    a_to_c, e = selection.seeds
    assert (a_to_c.seed, a_to_c.label) == (7, "3m/ippo/1 → 3m/ippo/2 → 3m/ippo/3")
    np.testing.assert_array_equal(a_to_c.steps, [0, 100, 200, 400, 600, 800])
    np.testing.assert_array_equal(a_to_c.values, [0.0, 0.1, 0.2, 0.4, 0.6, 0.8])
    assert (e.seed, e.label) == (11, "3m/ippo/5")
    np.testing.assert_array_equal(e.values, [0.0, 0.2, 0.4])
    assert [(line.run.name, line.seed, line.note) for line in selection.lines] == [
        ("3m/ippo/1", 7, "used up to t_env 200; continued by 3m/ippo/2; kept over duplicate 3m/ippo/1 → 3m/ippo/4"),
        ("3m/ippo/2", 7, "used t_env 200..600; resumes 3m/ippo/1, continued by 3m/ippo/3; "
                         "kept over duplicate 3m/ippo/1 → 3m/ippo/4"),
        ("3m/ippo/3", 7, "used from t_env 600; resumes 3m/ippo/2; kept over duplicate 3m/ippo/1 → 3m/ippo/4"),
        ("3m/ippo/4", 7, "skipped: duplicate of seed 7; kept 3m/ippo/1 → 3m/ippo/2 → 3m/ippo/3 (finished)"),
        ("3m/ippo/5", 11, "used (resumed from 3m/ippo/0, which is not usable: the history replayed into this run "
                          "stands in)"),
    ]
    assert selection.warnings == [
        "3m/ippo/5 resumed from 3m/ippo/0, which is not a usable run under the results directory: the history "
        "replayed into 3m/ippo/5 up to t_env 400 stands in",
        "3m/ippo seed 7 was run 2 times (3m/ippo/1 → 3m/ippo/2 → 3m/ippo/3, 3m/ippo/1 → 3m/ippo/4): "
        "counted once, using 3m/ippo/1 → 3m/ippo/2 → 3m/ippo/3 (finished)"]


def test_a_completed_run_short_of_t_max_is_unfinished(tmp_path):
    root = tmp_path / "sacred"
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 500], [0.0, 0.5])}, seed=1, t_max=1000)
    selection = select_seeds(find_runs(str(root), METRIC), METRIC)
    assert selection.seeds == [] and [line.note for line in selection.lines] == [
        "skipped: unfinished, COMPLETED at t_env 500 of t_max 1000 (--include-unfinished to plot it)"]

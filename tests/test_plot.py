"""The plotting command on a small synthetic Sacred results tree with hand-computed expectations."""
import json

import numpy as np
import pytest

import plot
from utils.plotting import PlotError, aggregate, find_runs

METRIC = "test_battle_won_mean"


def write_run(root, map_name, alg, run_id, series, status="COMPLETED", seed=0):
    """A Sacred FileStorageObserver run directory; ``series`` maps metric -> (steps, values)."""
    run = root / map_name / alg / str(run_id)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": status, "start_time": "2024-01-01T00:00:00"}))
    (run / "config.json").write_text(json.dumps({"seed": seed, "env_args": {"map_name": map_name}}))
    metrics = {name: {"steps": list(steps), "values": list(values), "timestamps": ["t"] * len(steps)}
               for name, (steps, values) in series.items()}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def results(tmp_path):
    """3m: ippo (3 seeds on different step grids), qmix (2 seeds + 1 failed); 8m: ippo (1 seed),
    qmix (1 run without the metric)."""
    root = tmp_path / "sacred"
    # ippo on 3m. Seed 1 logged step 200 twice (a resumed run): the later value 0.4 counts.
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 100, 200, 200, 300], [0.0, 0.2, 0.9, 0.4, 0.6])}, seed=1)
    write_run(root, "3m", "ippo", 2, {METRIC: ([0, 150, 310], [0.0, 0.3, 0.62])}, seed=2)  # 0.002 t
    write_run(root, "3m", "ippo", 3, {METRIC: ([10, 200, 400], [0.11, 0.3, 0.5])}, seed=3)  # 0.001 t + 0.1
    (root / "3m" / "ippo" / "_sources").mkdir()  # Sacred's source copies: not a run
    write_run(root, "3m", "qmix", 1, {METRIC: ([0, 300], [0.2, 0.8])})
    write_run(root, "3m", "qmix", 2, {METRIC: ([0, 300], [0.4, 1.0])})
    write_run(root, "3m", "qmix", 3, {METRIC: ([0, 300], [0.0, 0.0])}, status="FAILED")
    write_run(root, "8m", "ippo", 1, {METRIC: ([0, 50, 100], [1.0, 2.0, 3.0]), "test_return_mean": ([0], [5.0])})
    write_run(root, "8m", "qmix", 1, {"test_return_mean": ([0, 100], [1.0, 2.0])})
    return root


def table_rows(stdout):
    """Rows of the printed table as lists of cells (header and rule excluded)."""
    lines = stdout.split("\n\n")[0].splitlines()
    return [line.split(None, 4) for line in lines[2:]]


def test_command_prints_final_values_and_writes_figures(results, tmp_path, capsys):
    out = tmp_path / "figures"
    assert plot.main(["--results", str(results), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = {(r[0], r[1]): r[2:] for r in table_rows(captured.out)}
    # common range of ippo on 3m: t_env 10..300; finals at 300: 0.6, 0.6, 0.4 -> 0.5333 ± 0.1155/sqrt(3)
    assert rows[("3m", "ippo")] == ["3", "300", "0.5333 ± 0.0667"]
    # qmix on 3m: the failed run is left out; finals 0.8, 1.0 -> 0.9 ± 0.1414/sqrt(2)
    assert rows[("3m", "qmix")] == ["2", "300", "0.9000 ± 0.1000"]
    assert rows[("8m", "ippo")] == ["1", "100", "3.0000 (one seed: no s.e.)"]
    assert ("8m", "qmix") not in rows
    assert "3m/qmix/3: the run is FAILED" in captured.err
    assert "8m/qmix/1: no values of metric 'test_battle_won_mean'" in captured.err
    for map_name in ("3m", "8m"):
        path = out / f"{map_name}_{METRIC}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {path}" in captured.out


def test_curves_average_the_interpolated_seeds(results):
    runs, skipped = find_runs(str(results), METRIC, maps=["3m"], algs=["ippo"])
    assert len(runs) == 3 and skipped == []
    (curve,) = aggregate(runs, n_points=30)
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
    assert "--maps MMM: no run with metric" in captured.err
    assert [p.name for p in out.iterdir()] == [f"3m_{METRIC}.pdf"]
    assert (out / f"3m_{METRIC}.pdf").read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("argv, message", [
    (["--results", "{root}/missing"], "does not exist"),
    (["--results", "{root}/sacred/3m/ippo/_sources"], "no Sacred runs"),
    (["--metric", "test_win"], "logged metric 'test_win'; metrics found: test_battle_won_mean, test_return_mean"),
    (["--maps", "5m_vs_6m"], "matches --maps 5m_vs_6m; map/alg with runs: 3m/ippo, 3m/qmix, 8m/ippo, 8m/qmix"),
])
def test_nothing_to_plot_is_a_clear_error(results, tmp_path, capsys, argv, message):
    argv = [a.format(root=tmp_path) for a in argv]
    if "--results" not in argv:
        argv += ["--results", str(results)]
    assert plot.main(argv + ["--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "figs").exists()


def test_runs_without_a_common_range_are_refused(tmp_path):
    root = tmp_path / "sacred"
    write_run(root, "3m", "ippo", 1, {METRIC: ([0, 100], [0.0, 1.0])})
    write_run(root, "3m", "ippo", 2, {METRIC: ([200, 300], [0.0, 1.0])})
    runs, _ = find_runs(str(root), METRIC)
    with pytest.raises(PlotError, match="share no t_env range"):
        aggregate(runs)

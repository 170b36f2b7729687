"""Study specs (src/sweep/spec.py): the shipped specs expand as documented; bad specs are rejected before anything
runs, with an error naming the place, the bad value and the valid choices."""
import os
import subprocess
import sys
import textwrap

import pytest

from sweep.spec import SpecError, load_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")


def write_spec(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


GOOD = """
    name: tiny
    results: {results}
    defaults: {{use_tensorboard: false, test_nepisode: 8}}
    stages:
      experts:
        maps: [3m, 8m]
        seeds: [1, 2]
        with: {{t_max: 3000, save_model_interval: 1000, lr: 0.001}}
        per_map:
          8m: {{seeds: [5], with: {{t_max: 4000, lr: 0.002}}}}
        methods:
          expert_ippo: {{config: ippo}}
      demos:
        kind: demos
        from: experts
        targets: [0.3, 0.5]
        styles: [dm2]
      main:
        after: [demos]
        maps: [3m, 8m]
        seeds: [7]
        with: {{t_max: 2000}}
        methods:
          ippo: {{config: ippo, label: IPPO, with: {{lr: 0.003}}, per_map: {{8m: {{with: {{lr: 0.004}}}}}}}}
          dm2: {{config: ippo_gail, demos: dm2_wr0.5, maps: [3m]}}
"""


@pytest.fixture
def good(tmp_path):
    return load_spec(write_spec(tmp_path, GOOD.format(results=tmp_path / "study")))


def test_a_spec_expands_into_runs_and_demos_jobs_in_dependency_order(good):
    assert list(good.stages) == ["experts", "demos", "main"]
    keys = [job.key for job in good.jobs]
    assert keys == ["3m/expert_ippo/seed1", "3m/expert_ippo/seed2", "8m/expert_ippo/seed5", "demos/3m", "demos/8m",
                    "3m/ippo/seed7", "8m/ippo/seed7", "3m/dm2/seed7"]
    runs = {run.key: run for run in good.train_runs}
    # with: defaults < stage < stage per_map < method < method per_map
    assert runs["3m/expert_ippo/seed1"].overrides["lr"] == 0.001
    assert runs["8m/expert_ippo/seed5"].overrides["lr"] == 0.002
    assert runs["3m/ippo/seed7"].overrides["lr"] == 0.003
    assert runs["8m/ippo/seed7"].overrides["lr"] == 0.004
    assert runs["3m/ippo/seed7"].overrides["use_tensorboard"] is False
    # t_max from the resolved config; without a save_model_interval, a tenth of t_max
    assert (runs["8m/expert_ippo/seed5"].t_max, runs["8m/expert_ippo/seed5"].save_model_interval) == (4000, 1000)
    assert (runs["3m/ippo/seed7"].t_max, runs["3m/ippo/seed7"].save_model_interval) == (2000, 200)
    dm2 = runs["3m/dm2/seed7"].method
    assert (dm2.demos.stage, dm2.demos.file) == ("demos", "dm2_wr0.5")
    assert dm2.demos.path(good.study_dir, "3m").endswith(os.path.join("study", "demos", "demos", "3m",
                                                                      "dm2_wr0.5.npz"))
    demos = good.stages["demos"].jobs[0]
    assert demos.files == ("dm2_wr0.3", "dm2_wr0.5")
    assert [r.seed for r in demos.sources] == [1, 2] and [r.seed for r in demos.used_sources] == [1]
    # dependencies are per map, and only on the jobs whose outputs a job reads: the dm2 team comes from the
    # first expert alone, and IPPO reads no demonstrations
    assert [j.key for j in good.dependencies(runs["3m/dm2/seed7"])] == ["demos/3m"]
    assert [j.key for j in good.dependencies(demos)] == ["3m/expert_ippo/seed1"]
    assert good.dependencies(runs["8m/ippo/seed7"]) == []
    assert good.methods["ippo"].label == "IPPO" and good.methods["dm2"].label == "dm2"


@pytest.mark.parametrize("name, runs, jobs", [("quick", 19, 21), ("dm2_check", 14, 15), ("paper_fig2", 42, 44),
                                              ("paper_fig3", 45, 46), ("paper_fig4", 10, 10), ("aaai_extras", 75, 80)])
def test_the_shipped_specs_expand(name, runs, jobs):
    spec = load_spec(os.path.join(EXPERIMENTS, f"{name}.yaml"))
    assert (len(spec.train_runs), len(spec.jobs)) == (runs, jobs)
    assert spec.study_dir == os.path.join("results", "experiments", name)
    for run in spec.train_runs:
        if spec.stages[run.stage].keep_checkpoints == "latest":
            assert run.stage not in {s.jobs[0].sources[0].stage for s in spec.stages.values() if s.kind == "demos"}


def test_the_dm2_check_continues_the_quick_study():
    """dm2_check reuses a quick study (``run --from``): the same experts and demonstrations (same job, same
    settings), and the quick study's fig2 DM² and IPPO runs under the same keys, so they go on from their 1M-step
    checkpoints."""
    quick = load_spec(os.path.join(EXPERIMENTS, "quick.yaml"))
    check = load_spec(os.path.join(EXPERIMENTS, "dm2_check.yaml"))
    shared_stages = ("experts", "demos_fig2")
    assert [j for j in quick.jobs if j.stage in shared_stages] == [j for j in check.jobs if j.stage in shared_stages]
    quick_runs = {r.key: r for r in quick.train_runs if r.stage == "fig2" and r.method.config != "qmix"}
    check_runs = {r.key: r for r in check.train_runs}
    assert set(quick_runs) <= set(check_runs)
    for key, run in quick_runs.items():
        assert (run.method, run.t_max, check_runs[key].t_max) == (check_runs[key].method, 1_000_000, 2_000_000)
    assert {s for s in check.stages} == {"experts", "demos_fig2", "fig2"}
    fig2 = [r for r in check.train_runs if r.stage == "fig2"]
    assert {r.seed for r in fig2} == {1, 2, 3} and {r.method.name for r in fig2} == {"ippo", "dm2_wr0.3", "dm2_wr0.5"}


def test_the_paper_specs_use_the_papers_settings():
    fig2 = load_spec(os.path.join(EXPERIMENTS, "paper_fig2.yaml"))
    main = [r for r in fig2.train_runs if r.stage == "main"]
    assert {r.seed for r in main} == {112358, 1285842, 78590, 119527, 122529}
    assert {r.t_max for r in main} == {10_000_000}
    assert {r.map_name for r in main} == {"5m_vs_6m", "3s_vs_4z"}
    assert {r.method.name for r in main} == {"ippo", "qmix", "dm2_wr0.3", "dm2_wr0.5"}
    fig3 = load_spec(os.path.join(EXPERIMENTS, "paper_fig3.yaml"))
    assert fig3.stages["demos"].jobs[0].styles == ("dm2", "non_concurrent", "concurrent_not_cotrained", "neither")
    assert len(fig3.stages["demos"].jobs[0].used_sources) == 5  # one independently trained team per agent


BAD_CASES = {
    "unknown config key": (
        """
        stages:
          main:
            maps: [3m]
            seeds: [1]
            methods:
              ippo: {config: ippo, with: {ppo_epoch: 4}}
        """, ["stage 'main', method 'ippo', map 3m", "Unknown config key 'ppo_epoch'", "Did you mean 'ppo_epochs'"]),
    "unknown map": (
        """
        stages:
          main:
            maps: [3m, 5m_vs_7m]
            seeds: [1]
            methods:
              ippo: {config: ippo}
        """, ["map 5m_vs_7m", "Unknown map '5m_vs_7m'", "5m_vs_6m"]),
    "unknown alg config": (
        """
        stages:
          main:
            maps: [3m]
            seeds: [1]
            methods:
              ippo: {config: ipo}
        """, ["Unknown --config 'ipo'", "Did you mean 'ippo'", "qmix"]),
    "cycle": (
        """
        stages:
          a: {after: [c], maps: [3m], seeds: [1], methods: {ippo: {config: ippo}}}
          b: {after: [a], maps: [3m], seeds: [1], methods: {qmix: {config: qmix}}}
          c: {after: [b], maps: [3m], seeds: [1], methods: {ippo2: {config: ippo}}}
        """, ["cycle: a -> c -> b -> a"]),
    "missing dependency": (
        """
        stages:
          main: {after: [expert], maps: [3m], seeds: [1], methods: {ippo: {config: ippo}}}
          experts: {maps: [3m], seeds: [1], methods: {e: {config: ippo}}}
        """, ["stage 'main': after", "stage 'expert', which the spec does not define", "Did you mean 'experts'"]),
    "a dataset no demos stage writes": (
        """
        stages:
          experts: {maps: [3m], seeds: [1], methods: {e: {config: ippo}}}
          demos: {kind: demos, from: experts, targets: [0.3], styles: [dm2]}
          main: {after: [demos], maps: [3m], seeds: [1], methods: {d: {config: ippo_gail, demos: dm2_wr0.5}}}
        """, ["does not write dm2_wr0.5.npz", "it writes dm2_wr0.3"]),
    "demonstrations without waiting for them": (
        """
        stages:
          experts: {maps: [3m], seeds: [1], methods: {e: {config: ippo}}}
          demos: {kind: demos, from: experts, targets: [0.3], styles: [dm2]}
          main: {after: [experts], maps: [3m], seeds: [1], methods: {d: {config: ippo_gail, demos: dm2_wr0.3}}}
        """, ["needs a demos stage in this stage's `after`"]),
    "too few teams for a style": (
        """
        stages:
          experts: {maps: [3m], seeds: [1, 2], methods: {e: {config: ippo}}}
          demos: {kind: demos, from: experts, targets: [0.3], styles: [dm2, neither]}
        """, ["style 'neither' needs 3 independently trained runs on 3m", "seeds 1, 2"]),
    "a key the runner sets": (
        """
        stages:
          main: {maps: [3m], seeds: [1], with: {seed: 3}, methods: {ippo: {config: ippo}}}
        """, ["`seed` is set by the runner from the stage's `seeds`"]),
    "a method name used twice": (
        """
        stages:
          a: {maps: [3m], seeds: [1], methods: {ippo: {config: ippo}}}
          b: {maps: [8m], seeds: [1], methods: {ippo: {config: ippo}}}
        """, ["method 'ippo' is also defined in stage 'a'", "must be unique"]),
    "unknown stage key": (
        """
        stages:
          main: {maps: [3m], seed: [1], methods: {ippo: {config: ippo}}}
        """, ["stage 'main': unknown key 'seed'", "Did you mean 'seeds'"]),
    "unknown style": (
        """
        stages:
          experts: {maps: [3m], seeds: [1], methods: {e: {config: ippo}}}
          demos: {kind: demos, from: experts, targets: [0.3], styles: [concurrent]}
        """, ["unknown style 'concurrent'", "non_concurrent"]),
    "unknown claim method": (
        """
        stages:
          main: {maps: [3m], seeds: [1], methods: {ippo: {config: ippo}}}
        claims:
          - {id: c, test: better, a: [ipo], b: [ippo]}
        """, ["claim 'c'", "unknown method 'ipo'"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_specs_are_rejected_with_the_place_and_the_choices(tmp_path, case):
    text, expected = BAD_CASES[case]
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(path)
    for part in expected:
        assert part in message


def test_a_bad_spec_runs_nothing_and_writes_nothing(tmp_path):
    text, _ = BAD_CASES["cycle"]
    path = write_spec(tmp_path, "results: " + str(tmp_path / "study") + "\n" + textwrap.dedent(text))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "src", "experiments.py"), "run", path],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("experiments: error: ") and "cycle" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["study.yaml"]


def test_dry_run_prints_the_plan_and_every_command_and_writes_nothing(tmp_path):
    path = write_spec(tmp_path, GOOD.format(results=tmp_path / "study"))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "src", "experiments.py"), "run", path, "--dry-run",
                           "--parallel", "2"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "total" in out and "8 jobs, 2 at a time with 1 torch thread each: estimated" in out
    assert ("3m/ippo/seed7: python src/main.py --config=ippo --env-config=sc2 with use_tensorboard=False "
            "test_nepisode=8 t_max=2000 lr=0.003 \"env_args.map_name='3m'\" seed=7 \"name='ippo'\"") in out
    assert "demos/3m: python src/demos.py pipeline --runs" in out
    assert not os.path.exists(tmp_path / "study")

"""A whole study in one command: run a spec's jobs resumably, here or on a Ray cluster; show its state; report it.

    python src/experiments.py run experiments/quick.yaml                 # plan, then run N at a time here
    python src/experiments.py run experiments/quick.yaml --dry-run       # the plan and every command, nothing run
    python src/experiments.py run experiments/paper_fig2.yaml --ray auto # one Ray task per run on a cluster
    python src/experiments.py run experiments/dm2_check.yaml --from results/experiments/quick
                                                                         # start from another study's runs
    python src/experiments.py status experiments/quick.yaml              # every job's state, failures' log tails
    python src/experiments.py report experiments/quick.yaml              # figures, statistics, claims: report.md

Re-running ``run`` skips finished jobs, resumes interrupted runs from their latest checkpoint and reruns failed
ones with ``--retry-failed``. Ctrl-C stops the runs cleanly (each saves a checkpoint). The spec format, the study
directory and the report are described in docs/experiments.md. Errors print ``experiments: error: ...`` and exit
with status 2; ``run`` exits with 0 when every job is done, 1 when some failed, 130 when stopped.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sweep.commands import demos_launch, train_launch  # noqa: E402
from sweep.executor import LocalExecutor  # noqa: E402
from sweep.layout import Layout  # noqa: E402
from sweep.plan import format_plan, make_plan  # noqa: E402
from sweep.progress import progress_line  # noqa: E402
from sweep.ray_executor import RayExecutor, RaySetupError  # noqa: E402
from sweep.reuse import ReuseError, check_sources, copy_jobs, match_jobs  # noqa: E402
from sweep.spec import SpecError, TrainRun, load_spec  # noqa: E402
from sweep.state import (DONE, FAILED, StudyLocked, job_state, log_tail, models_dirs, read_lock,  # noqa: E402
                         read_progress)
from sweep.throughput import Throughput  # noqa: E402


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python src/experiments.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="See docs/experiments.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("run", help="run a study's jobs (resumable), after printing the plan",
                       description="Print the plan (jobs, env steps, estimated time), then run every job that is not "
                                   "done: N at a time on this machine, or as Ray tasks with --ray.")
    p.add_argument("spec", help="the study's spec, e.g. experiments/quick.yaml")
    p.add_argument("--results", help="the study directory (default: the spec's `results`, else "
                                     "results/experiments/<name>)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and every command; run nothing")
    p.add_argument("--parallel", type=_positive, help=f"jobs at a time on this machine (default: one per core, "
                                                      f"{cores()} here)")
    p.add_argument("--threads", type=_positive, help="torch (and simulator) threads per job (default: cores / "
                                                     "--parallel, at least 1; with --ray: 1)")
    p.add_argument("--retry-failed", action="store_true", help="rerun failed jobs (from their last checkpoint)")
    p.add_argument("--from", dest="reuse_from", metavar="STUDY_DIR",
                   help="start this (new) study with the jobs another study directory has with the same settings "
                        "(a run's t_max may grow: it goes on from its checkpoint); hard links, the other study "
                        "is left as it was")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between progress lines (default %(default)s)")
    g = p.add_argument_group("Ray (pip install ray; see docs/experiments.md)")
    g.add_argument("--ray", metavar="ADDRESS", help="run each job as a Ray task: `auto` (the cluster this machine "
                                                    "belongs to), `local` (start Ray here) or a cluster address")
    g.add_argument("--ray-cpus", type=_positive, help="with --ray local: the CPUs Ray may use (default: all)")
    g.add_argument("--ray-storage", choices=("shared", "pull"), default="shared",
                   help="shared: every node sees this working directory (shared file system) and runs write there; "
                        "pull: runs write on their node and the results come back to this machine (default "
                        "%(default)s)")
    g.add_argument("--ray-ship-code", action="store_true",
                   help="send this repository's code with the tasks (for nodes without a copy at the same path)")

    p = sub.add_parser("status", help="every job's state (done, running, resumable, failed) and failures' logs")
    p.add_argument("spec", help="the spec, or a study directory (holding spec.yaml)")
    p.add_argument("--results", help="the study directory, if not the spec's")
    p.add_argument("--tail", type=int, default=15, help="log lines shown per failed job (default %(default)s)")

    p = sub.add_parser("report", help="figures, aggregate statistics and the claims table (report.md)",
                       description="Write report.md with the spec's figures, rliable aggregate statistics, "
                                   "steps-to-threshold and AUC tables and the claims table. Given a Sacred results "
                                   "directory without a spec: every map and method, no claims.")
    p.add_argument("spec", help="the spec, a study directory (holding spec.yaml) or a Sacred results directory "
                                "(<map>/<method>/<id>/)")
    p.add_argument("--results", help="the study directory, if not the spec's")
    p.add_argument("--out", help="where report.md and the figures go (default: <study>/report)")
    p.add_argument("--format", choices=("png", "pdf"), default="png", help="figure format (default %(default)s)")
    p.add_argument("--include-unfinished", action="store_true",
                   help="also use seeds that have not reached t_max (marked in the report)")
    return parser


def resolve_spec(target: str, results: str | None):
    """The spec of ``target``: a spec file, or a study directory holding the ``spec.yaml`` of its last run."""
    if os.path.isdir(target):
        copy = Layout(target).spec_copy
        if not os.path.isfile(copy):
            raise SpecError(f"{target} is a directory without spec.yaml: give the spec file (experiments/*.yaml) or "
                            "a study directory that `run` has written.")
        return load_spec(copy, study_dir=results or target)
    return load_spec(target, study_dir=results)


def _executor(args, threads: int, layout: Layout):
    if args.ray:
        return RayExecutor(args.ray, layout, threads, storage=args.ray_storage, ship_code=args.ray_ship_code,
                           local_cpus=args.ray_cpus)
    return LocalExecutor(args.parallel or cores())


def cmd_run(args) -> int:
    from sweep.runner import Runner

    spec = resolve_spec(args.spec, args.results)
    layout = Layout(spec.study_dir)
    parallel = args.parallel or cores()
    threads = args.threads or (1 if args.ray else max(1, cores() // parallel))
    reused = _reuse(args.reuse_from, spec, layout, args.dry_run) if args.reuse_from else {}
    states = [job_state(reused.get(job.key, layout), job) for job in spec.jobs]
    throughput = Throughput.load(layout.throughput)
    if args.dry_run:
        print(format_plan(make_plan(spec, states, throughput, parallel, threads, args.retry_failed)))
        print("\nCommands (run in this directory):")
        for state in states:
            if state.status != DONE and (state.status != FAILED or args.retry_failed):
                print(f"  {state.job.key}: {_shown_command(state, layout, threads)}")
        return 0
    lock = read_lock(layout)
    if lock is not None:
        raise StudyLocked(f"another `experiments.py run` (pid {lock['pid']} on {lock['host']}) is running the study "
                          f"in {spec.study_dir}; `status` shows its progress.")
    executor = _executor(args, threads, layout)
    print(format_plan(make_plan(spec, states, throughput, executor.slots, threads, args.retry_failed)), flush=True)
    runner = Runner(spec, layout, executor, throughput, threads, states, args.retry_failed,
                    progress_seconds=args.progress_every)
    return runner.run()


def _reuse(source_dir: str, spec, layout: Layout, dry_run: bool) -> dict[str, Layout]:
    """``run --from``: bring the other study's matching jobs into this one (with ``dry_run`` only say which);
    returns where each reused job's state is to be read until then (``{key: the other study's layout}``)."""
    source = Layout(source_dir)
    check_sources(source, layout)
    match = match_jobs(load_spec(source.spec_copy, study_dir=source_dir), spec)
    print(f"From {source_dir}: {len(match.reused)} of {len(spec.jobs)} jobs have the same settings there"
          + (" and would be reused (hard links; the other study is left as it was)." if dry_run else "."))
    for line in match.differ:
        print(f"  not reused, other settings: {line}")
    if dry_run:
        return {job.key: source for job in match.reused}
    brought = copy_jobs(source, layout, match.reused)
    print(f"Reused {brought} of them (the others had not started there).", flush=True)
    return {}


def _shown_command(state, layout: Layout, threads: int) -> str:
    job = state.job
    if isinstance(job, TrainRun):
        return train_launch(job, layout, threads, state.checkpoint).shown()
    sources = []
    for run in job.used_sources:
        dirs = models_dirs(layout, run)
        sources.append(dirs[0] if len(dirs) == 1 else os.path.join(layout.models, layout.models_prefix(run) + "*"))
    return demos_launch(job, layout, sources, threads).shown()


def cmd_status(args) -> int:
    spec = resolve_spec(args.spec, args.results)
    layout = Layout(spec.study_dir)
    states = [job_state(layout, job) for job in spec.jobs]
    progress = read_progress(layout) or {}
    running = progress.get("running_jobs", {})
    rows = []
    for s in states:
        status = "running" if s.job.key in running else s.status
        t_env = running.get(s.job.key) or s.t_env
        reached = f"{t_env}/{s.job.t_max}" if isinstance(s.job, TrainRun) else "-"
        rows.append((s.job.stage, s.job.key, status, reached, str(len(s.attempts)), s.note))
    widths = [max(len(r[i]) for r in rows + [("stage", "job", "status", "t_env", "attempts", "")])
              for i in range(6)]
    print(f"Study {spec.name} in {spec.study_dir}")
    for row in [("stage", "job", "status", "t_env", "attempts", "note"), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if progress:
        live = {k: v for k, v in running.items() if v is not None}
        plan = make_plan(spec, states, Throughput.load(layout.throughput), 1, 1)
        plan.makespan = progress.get("eta_seconds", plan.makespan)
        print(f"\nRunning (driver pid {progress['pid']} on {progress['host']}, updated {progress['updated']}): "
              + progress_line(states, list(running), live, plan))
    for s in states:
        if s.status == FAILED:
            print(f"\n{s.job.key} failed ({s.note}); last lines of {layout.log(s.job)}:")
            print(log_tail(layout, s.job, args.tail))
    return 0


def cmd_report(args) -> int:
    from sweep.report import write_report

    if os.path.isdir(args.spec) and not os.path.isfile(Layout(args.spec).spec_copy):
        paths = write_report(None, args.out or os.path.join(args.spec, "report"), args.format,
                             args.include_unfinished, sacred_dir=args.spec)
    else:
        spec = resolve_spec(args.spec, args.results)
        paths = write_report(spec, args.out or Layout(spec.study_dir).report, args.format, args.include_unfinished)
    for path in paths:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "status": cmd_status, "report": cmd_report}[args.command](args)
    except (SpecError, StudyLocked, RaySetupError, ReuseError) as exc:
        print(f"experiments: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Demonstrations for DM²: evaluate training checkpoints, pick demonstrators, record datasets.

    python src/demos.py evaluate results/models/<token> [--episodes 128]
    python src/demos.py select   results/models/<token> --target 0.3 [--target 0.5]
    python src/demos.py record   <checkpoint> --episodes 1000 --sampling stochastic --seed 0 --out demos/x.npz
    python src/demos.py build    --style neither --runs <models dirs> --target 0.5 --out demos/neither.npz
    python src/demos.py pipeline --runs <models dirs> --targets 0.3 0.5 --out-dir demos/5m_vs_6m
    python src/demos.py show     demos/x.npz

``python src/demos.py <command> --help`` explains each command; docs/demonstrations.md has the file format,
the four ablation styles and examples. The Python API is ``demo_pipeline`` (this file only parses
arguments). Nothing existing is ever overwritten.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import demo_pipeline as dp  # noqa: E402
from components.demonstrations import (SAMPLING_MODES, STYLES, DemonstrationError, describe,  # noqa: E402
                                       load_demonstrations)
from utils.checkpoint import CheckpointError  # noqa: E402

DEFAULT_EVAL_DIR = os.path.join("demos", "evaluations")

STYLE_HELP = """styles (slot i = the expert that agent i imitates; K = --episodes; N = n_agents):
  dm2                       co-trained, concurrent: one checkpoint's team plays K episodes; slot i gets
                            agent i's observations of episodes [0, K)
  non_concurrent            co-trained, not concurrent: the same team plays N*K episodes; slot i gets
                            episodes [K*i, K*(i+1))
  concurrent_not_cotrained  slot i's policy is agent i of run i (independently trained seeds); the mixed
                            team plays K episodes together; slot i gets episodes [0, K)
  neither                   run i's own team plays K episodes; slot i gets agent i's observations of them
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--batch-size", type=_positive, default=dp.DEFAULT_BATCH_SIZE,
                   help="environments stepped together (default %(default)s). The same seed gives the same "
                        "dataset only with the same batch size.")
    g.add_argument("--backend", choices=("sim", "starcraft2"), default=None,
                   help="environment backend (default: the one the checkpoint's run used)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default %(default)s)")
    g.add_argument("--quiet", action="store_true", help="no progress output")


def _add_eval_options(p: argparse.ArgumentParser, eval_dir_default: str | None | bool, flag: str = "--eval-episodes"
                      ) -> None:
    g = p.add_argument_group("checkpoint evaluation")
    g.add_argument(flag, dest="eval_episodes", type=_non_negative, default=dp.DEFAULT_EVAL_EPISODES,
                   help="greedy episodes per checkpoint (default %(default)s); with record or build --checkpoints "
                        "the sources are evaluated for the metadata, 0 skips that")
    g.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation battles (default %(default)s)")
    if eval_dir_default is False:  # record: sources are evaluated directly, no cache
        p.set_defaults(eval_dir=None)
        return
    g.add_argument("--eval-dir", default=eval_dir_default,
                   help="where the evaluation tables <token>.csv are cached; rows are only appended, a checkpoint "
                        "evaluated with the same episodes, seed and backend is not evaluated again (default "
                        + (eval_dir_default or "<out-dir>/evaluations") + ")")


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recording")
    g.add_argument("--episodes", type=_positive, default=dp.DEFAULT_EPISODES,
                   help="episodes per agent, K (default %(default)s, the paper's)")
    g.add_argument("--sampling", choices=SAMPLING_MODES, default="stochastic",
                   help="stochastic: sample the policy's action distribution (IPPO, as the reference code); "
                        "greedy: best action; epsilon: random available action with probability --epsilon, else "
                        "the best (also for QMIX's Q-values). Default %(default)s")
    g.add_argument("--epsilon", type=_probability, default=None, help="epsilon of --sampling epsilon, e.g. 0.05")
    g.add_argument("--seed", type=int, default=0, help="recording seed: the same seed gives the same dataset "
                                                       "(default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python src/demos.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Demonstration datasets for DM² from training checkpoints "
                    "(results/models/<token>/<t_env>/checkpoint.pt, written with save_model=True).",
        epilog=STYLE_HELP + "\nSee docs/demonstrations.md for the file format and examples.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("evaluate", help="greedy win rate of every checkpoint of a run (table t_env -> win rate)",
                       description="Evaluate every checkpoint of one or more runs greedily and print the table "
                                   "t_env -> win rate; the table is cached as CSV in --eval-dir/<token>.csv.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="a run's models directory, results/models/<token>")
    _add_eval_options(p, DEFAULT_EVAL_DIR, "--episodes")
    _add_run_options(p)

    p = sub.add_parser("select", help="the checkpoint of a run nearest a target greedy win rate",
                       description="Evaluate a run's checkpoints (cached, as `evaluate`) and print the checkpoint "
                                   "whose greedy win rate is nearest each --target (ties: the earliest).")
    p.add_argument("run", metavar="RUN", help="a run's models directory, results/models/<token>")
    p.add_argument("--target", type=_probability, action="append", required=True,
                   help="target win rate, e.g. 0.3 (repeatable)")
    _add_eval_options(p, DEFAULT_EVAL_DIR, "--episodes")
    _add_run_options(p)

    p = sub.add_parser("record", help="record a dataset from one checkpoint (or one per agent: a mixed team)",
                       description="Record --episodes joint episodes from a checkpoint's team (style dm2), or from "
                                   "a mixed team when one checkpoint per agent is given (slot i = agent i of the "
                                   "i-th checkpoint; style concurrent_not_cotrained).")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="checkpoint.pt, a <t_env> step directory, or a models directory (then --load-step)")
    p.add_argument("--load-step", type=int, default=0,
                   help="with a models directory: the step nearest this t_env (0 = the latest)")
    p.add_argument("--out", required=True, help="output .npz file (must not exist)")
    _add_sampling_options(p)
    _add_eval_options(p, False)
    _add_run_options(p)

    p = sub.add_parser("build", help="record one ablation style (dm2, non_concurrent, concurrent_not_cotrained, "
                                     "neither)", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Record one demonstration style. Give --runs (models directories; the "
                                   "checkpoint nearest --target is selected in each) or --checkpoints (used as "
                                   "they are). dm2/non_concurrent use the first; the other two need one run per "
                                   "agent (the first n_agents are used).", epilog=STYLE_HELP)
    p.add_argument("--style", choices=STYLES, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", nargs="+", metavar="RUN", help="runs' models directories")
    src.add_argument("--checkpoints", nargs="+", metavar="CHECKPOINT", help="checkpoints, used as given")
    p.add_argument("--target", type=_probability, default=None,
                   help="with --runs: target greedy win rate for the selection (e.g. 0.3)")
    p.add_argument("--out", required=True, help="output .npz file (must not exist)")
    _add_sampling_options(p)
    _add_eval_options(p, DEFAULT_EVAL_DIR)
    _add_run_options(p)

    p = sub.add_parser("pipeline", help="evaluate runs, select per target, write every possible style + summary",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="For finished runs on one map: evaluate every checkpoint (cached), select per "
                                   "run the checkpoint nearest each target, and write <style>_wr<target>.npz for "
                                   "every style the runs allow (dm2 and non_concurrent from --team-run; the other "
                                   "two when at least n_agents runs are given), then summary.json and summary.md. "
                                   "Re-running the same command reuses evaluations and existing datasets.",
                       epilog=STYLE_HELP)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="runs' models directories (one map)")
    p.add_argument("--targets", nargs="+", type=_probability, required=True, help="target win rates, e.g. 0.3 0.5")
    p.add_argument("--out-dir", required=True, help="output directory, e.g. demos/5m_vs_6m")
    p.add_argument("--team-run", default=None, help="the run whose team gives dm2/non_concurrent (default: the "
                                                    "first of --runs)")
    p.add_argument("--styles", nargs="+", choices=STYLES, default=None,
                   help="only these styles (default: all that the runs allow)")
    _add_sampling_options(p)
    _add_eval_options(p, None)
    _add_run_options(p)

    p = sub.add_parser("show", help="describe a dataset file (sources, sizes, win rates)",
                       description="Load (and so verify) a dataset file and describe it.")
    p.add_argument("files", nargs="+", metavar="FILE")
    return parser


def _evaluate_runs(args, runs):
    if args.eval_episodes < 1:
        raise DemonstrationError("Evaluating a run's checkpoints needs at least one episode per checkpoint "
                                 f"(--episodes / --eval-episodes), got {args.eval_episodes}.")
    tables = {}
    for run in runs:
        tables[run] = dp.evaluate_run(run, args.eval_episodes, args.eval_seed, cache_dir=args.eval_dir,
                                      backend=args.backend, batch_size=args.batch_size, progress=args.progress)
    return tables


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "show":
        for file in args.files:
            print(describe(load_demonstrations(file)))
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.progress = None if args.quiet else _progress
    common = dict(batch_size=args.batch_size, backend=args.backend, progress=args.progress)

    if args.command == "evaluate":
        for run, table in _evaluate_runs(args, args.runs).items():
            print(f"{run} (greedy, {args.eval_episodes} episodes, seed {args.eval_seed}; cached in "
                  f"{dp.evaluation_cache_path(run, args.eval_dir)})")
            print(dp.format_table(table))
    elif args.command == "select":
        table = _evaluate_runs(args, [args.run])[args.run]
        chosen = {t: dp.select_checkpoint(table, t) for t in args.target}
        marks = {}
        for t, e in chosen.items():
            marks[e.t_env] = marks.get(e.t_env, "<-") + f" target {t:g}"
        print(dp.format_table(table, marks))
        for t, e in chosen.items():
            print(f"target {t:g}: {e.checkpoint} (t_env {e.t_env}, greedy win rate {e.win_rate:.3f})")
    elif args.command == "record":
        if os.path.exists(args.out):
            raise DemonstrationError(f"{args.out} already exists; refusing to overwrite it. Choose another --out.")
        ckpts = [dp.load_policy(c, args.load_step) for c in args.checkpoints]
        demos = dp.record_demonstrations(ckpts, args.episodes, args.sampling, args.epsilon, args.seed,
                                         greedy_win_rates=_evaluate_sources(args, ckpts), out=args.out, **common)
        print(describe(demos))
    elif args.command == "build":
        greedy = {}
        if args.runs:
            if args.target is None:
                raise DemonstrationError("build --runs needs --target (the win rate of the checkpoints to select); "
                                         "or give --checkpoints directly.")
            if args.style in ("concurrent_not_cotrained", "neither"):  # enough runs? (before evaluating them)
                first = dp.load_policy(args.runs[0])
                n = int(first.env_info["n_agents"])
                if len(args.runs) < n:
                    raise DemonstrationError(
                        f"Style {args.style!r} needs {n} independently trained runs on {first.map_name!r} (one per "
                        f"agent: n_agents={n}), but {len(args.runs)} run(s) were given. Train more seeds.")
            tables = _evaluate_runs(args, args.runs)
            ckpts = [dp.select_checkpoint(tables[r], args.target) for r in args.runs]
            greedy = {e.checkpoint: e.win_rate for table in tables.values() for e in table}
            for r, e in zip(args.runs, ckpts):
                _say_selected(args, r, e)
            ckpts = [e.checkpoint for e in ckpts]
        else:
            if os.path.exists(args.out):
                raise DemonstrationError(f"{args.out} already exists; refusing to overwrite it. Choose another --out.")
            ckpts = [dp.load_policy(c) for c in args.checkpoints]
        if args.style in ("dm2", "non_concurrent"):
            if len(ckpts) > 1 and args.progress:
                args.progress(f"style {args.style} uses one team: the first of {len(ckpts)} given")
            ckpts = ckpts[:1]
        else:
            n = int(dp.load_policy(ckpts[0]).env_info["n_agents"])
            if len(ckpts) > n and args.progress:
                args.progress(f"style {args.style} uses one run per agent: the first {n} of {len(ckpts)} given")
            ckpts = ckpts[:n]
        if not args.runs:
            greedy = _evaluate_sources(args, ckpts)
        demos = dp.build_demonstrations(args.style, ckpts, args.episodes, args.sampling, args.epsilon, args.seed,
                                        target_win_rate=args.target, greedy_win_rates=greedy, out=args.out, **common)
        print(describe(demos))
    elif args.command == "pipeline":
        summary = dp.run_pipeline(args.runs, args.targets, args.out_dir, n_episodes=args.episodes,
                                  eval_episodes=args.eval_episodes, eval_seed=args.eval_seed, sampling=args.sampling,
                                  epsilon=args.epsilon, seed=args.seed, team_run=args.team_run, styles=args.styles,
                                  eval_dir=args.eval_dir, **common)
        for d in summary["datasets"]:
            print(f"{os.path.join(args.out_dir, d['file'])}: {d['style']}, target {d['target_win_rate']:g}, "
                  f"recorded win rate {d['recorded_win_rate']:.3f}")
        for s in summary["skipped"]:
            print(f"skipped {s['style']}: {s['reason']}")
        print(f"summary: {os.path.join(args.out_dir, 'summary.md')}")
    return 0


def _evaluate_sources(args, ckpts) -> dict[str, float]:
    """Greedy win rates of the distinct source checkpoints, for the dataset's metadata."""
    rates = {}
    if args.eval_episodes < 1:
        return rates
    for c in ckpts:
        path = c.path if isinstance(c, dp.PolicyCheckpoint) else c
        if path not in rates:
            ev = dp.evaluate_checkpoint(c, args.eval_episodes, args.eval_seed, backend=args.backend,
                                        batch_size=args.batch_size)
            rates[ev.checkpoint] = ev.win_rate
            if args.progress:
                args.progress(f"greedy win rate of {ev.checkpoint}: {ev.win_rate:.3f} ({args.eval_episodes} episodes)")
    return rates


def _say_selected(args, run, e) -> None:
    if args.progress:
        args.progress(f"{run}: target {args.target:g} -> t_env {e.t_env} (greedy win rate {e.win_rate:.3f})")


def cli(argv: list[str] | None = None) -> int:
    try:
        return main(argv)
    except (DemonstrationError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. head
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(cli())

"""Plot learning curves from the runs under ``results/sacred``: mean ± standard error across seeds.

    python src/plot.py                                   # test win rate, every map and method
    python src/plot.py --metric test_return_mean --maps 3m 5m_vs_6m --algs ippo ippo_gail --format pdf

Averages training seeds, not run directories: ``evaluate=True`` runs are left out, a resumed run is joined
to the run it continues, unfinished seeds are left out (``--include-unfinished`` keeps them, marked) and
duplicate runs of a seed count once. It prints a line per run (used, or skipped and why), then each
method's final value over how many seeds, and writes one figure per map (one curve per method) to ``--out``.
"""
from __future__ import annotations

import argparse
import sys

from utils.plotting import PlotError, aggregate, find_runs, nothing_to_plot, plot_curves, run_report, \
    select_seeds, summary_table


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/sacred",
                        help="Sacred FileStorageObserver directory, laid out as <map>/<alg>/<run id>/ "
                             "(default: %(default)s)")
    parser.add_argument("--metric", default="test_battle_won_mean",
                        help="metric to plot, a metrics.json key (default: %(default)s)")
    parser.add_argument("--maps", nargs="+", help="maps to plot (default: every map with runs)")
    parser.add_argument("--algs", nargs="+", help="methods to plot (default: every method with runs)")
    parser.add_argument("--out", default="figures", help="directory for the figures (default: %(default)s)")
    parser.add_argument("--format", default="png", choices=("png", "pdf"),
                        help="figure file format (default: %(default)s)")
    parser.add_argument("--points", type=int, default=200,
                        help="points of the common t_env grid each seed is interpolated onto "
                             "(default: %(default)s)")
    parser.add_argument("--include-unfinished", action="store_true",
                        help="also average seeds whose last run is RUNNING, FAILED, INTERRUPTED or short of "
                             "t_max (marked * in the table; each one is warned about)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runs = find_runs(args.results, args.metric, maps=args.maps, algs=args.algs)
        selection = select_seeds(runs, args.metric, include_unfinished=args.include_unfinished)
        print(run_report(selection, args.results, args.metric))
        print()
        for warning in selection.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not selection.seeds:
            raise PlotError(nothing_to_plot(runs, args.metric, args.results))
        for flag, wanted, found in (("--maps", args.maps, {s.map_name for s in selection.seeds}),
                                    ("--algs", args.algs, {s.alg for s in selection.seeds})):
            for name in sorted(set(wanted or ()) - found):
                print(f"warning: {flag} {name}: no seed with metric {args.metric!r}", file=sys.stderr)
        curves = aggregate(selection.seeds, n_points=args.points)
        paths = plot_curves(curves, args.metric, args.out, args.format)
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(curves, args.metric))
    print()
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plot learning curves from the runs under ``results/sacred``: mean ± standard error across seeds.

    python src/plot.py                                   # test win rate, every map and method
    python src/plot.py --metric test_return_mean --maps 3m 5m_vs_6m --algs ippo ippo_gail --format pdf

Writes one figure per map (one curve per method) to ``--out`` and prints each method's final value.
Runs that failed or never logged the metric are skipped with a warning.
"""
from __future__ import annotations

import argparse
import sys

from utils.plotting import PlotError, aggregate, find_runs, plot_curves, summary_table


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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runs, skipped = find_runs(args.results, args.metric, maps=args.maps, algs=args.algs)
        for reason in skipped:
            print(f"warning: skipped {reason}", file=sys.stderr)
        for flag, wanted, found in (("--maps", args.maps, {r.map_name for r in runs}),
                                    ("--algs", args.algs, {r.alg for r in runs})):
            for name in sorted(set(wanted or ()) - found):
                print(f"warning: {flag} {name}: no run with metric {args.metric!r}", file=sys.stderr)
        curves = aggregate(runs, n_points=args.points)
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

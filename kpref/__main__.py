"""Command line: ``python -m kpref verify [--quick]``, ``python -m kpref report [--quick] ...`` and
``python -m kpref sweep [--quick] [--jobs N | --scheduler tcp://HOST:PORT] ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kpref", description="kpref: the exact K-P flow reference")
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser("verify", help="the oracle checks itself on every cell and prints a table")
    p_verify.add_argument("--quick", action="store_true", help="fewer sizes and draws (under a minute)")
    p_verify.add_argument("--seed", type=int, default=0, help="seed of the random problems (default 0)")
    from .experiments import _report
    _report.add_arguments(sub.add_parser("report", help="train small RNNs and show their dynamic collapse "
                                                        "with exact operators (figures + report.json)"))
    from .experiments import _sweep
    _sweep.add_arguments(sub.add_parser("sweep", help="cells x g x seeds x tasks: one folder per run, resumable, "
                                                      "on local processes (--jobs) or Dask (--scheduler)"))
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report.main(args)
    if args.command == "sweep":
        return _sweep.main(args)
    if args.command == "verify":
        from .testing._verify import run_verify

        return run_verify(quick=args.quick, seed=args.seed)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())

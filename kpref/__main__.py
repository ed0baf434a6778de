"""Command line: ``python -m kpref verify [--quick]``, ``python -m kpref report [--quick] ...`` and
``python -m kpref sweep [--quick] [--jobs N | --scheduler tcp://HOST:PORT] ...``.

Exit status: 0 success, 1 a failed check (``verify``), 2 a user mistake (one
line on stderr, no traceback), 130 interrupted by Ctrl-C (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys


def _seed(text):
    """argparse type of ``--seed``: a decimal integer in [0, 2**63) (one-line error otherwise)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63), got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kpref", description="kpref: the exact K-P flow reference")
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser("verify", help="the oracle checks itself on every cell and prints a table")
    p_verify.add_argument("--quick", action="store_true", help="fewer sizes and draws (under a minute)")
    p_verify.add_argument("--seed", type=_seed, default=0, help="seed of the random problems (default 0)")
    from .experiments import _report
    from ._signals import restore_sigint

    restore_sigint()            # imports done: from here Ctrl-C is a KeyboardInterrupt the commands handle
    _report.add_arguments(sub.add_parser("report", help="train small RNNs and show their dynamic collapse "
                                                        "with exact operators (figures + report.json)"))
    from .experiments import _sweep
    _sweep.add_arguments(sub.add_parser("sweep", help="cells x g x seeds x tasks: one folder per run, resumable, "
                                                      "on local processes (--jobs) or Dask (--scheduler)"))
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report.main(args, argv=sys.argv[1:] if argv is None else list(argv))
    if args.command == "sweep":
        return _sweep.main(args)
    if args.command == "verify":
        from .testing._verify import run_verify

        return run_verify(quick=args.quick, seed=args.seed)
    return 2  # pragma: no cover


def run(argv=None):
    """``main`` with Ctrl-C anywhere (imports included) turned into one line and exit status 130."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("kpref: interrupted", file=sys.stderr)
        return 130


def _exit_now(code):
    """Flush and leave without interpreter finalization.

    A Ctrl-C can land inside a third-party constructor (numba's llvmlite
    objects during a JIT compile); finalizing such a half-built object at
    shutdown prints an "Exception ignored" traceback after our one line. By
    now every artifact is committed or left unchanged and worker pools are shut
    down, so nothing needs finalizing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:              # pragma: no cover - a closed pipe: nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        status = run()
    except KeyboardInterrupt:          # a second Ctrl-C while printing
        _exit_now(130)
    if status == 130:
        _exit_now(130)
    sys.exit(status)

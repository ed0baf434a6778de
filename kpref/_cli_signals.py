"""Ctrl-C while ``python -m kpref`` is still importing: one line on stderr and exit status 130.

``python -m kpref`` imports the package (numpy, scipy, numba: seconds) before
``kpref.__main__`` runs, so the CLI's own ``KeyboardInterrupt`` handling
cannot cover that time. :func:`install_import_sigint` is called first thing
in ``kpref/__init__.py`` and acts only when the package is being imported by
``python -m kpref`` (``sys.argv[0] == '-m'`` while Python locates the module):
until :func:`restore_sigint` (called by the CLI once its imports are done), a
SIGINT prints ``kpref: interrupted`` and exits with 130. Nothing has been
written at that point, so exiting at once loses nothing. Library imports
(``import kpref``) are not affected.
"""

from __future__ import annotations

import os
import signal
import sys


def _exit_130(signum, frame):
    try:
        sys.stderr.write("kpref: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def install_import_sigint():
    if sys.argv[:1] == ["-m"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_130)


def restore_sigint():
    if signal.getsignal(signal.SIGINT) is _exit_130:
        signal.signal(signal.SIGINT, signal.default_int_handler)

"""Ctrl-C in kpref: held across compiles and commits, and one line while ``python -m kpref`` imports.

:func:`sigint_deferred` holds a SIGINT that arrives inside a block and
delivers it, to whatever handler was installed, when the block ends. kpref
uses it around every numba compile (a KeyboardInterrupt raised inside
LLVM's ctypes callbacks is swallowed as "Exception ignored" and leaves
numba's code library half-built: the run then crashes later with
``RuntimeError: no compiled object yet``, or carries on as if Ctrl-C had
not been pressed) and around the commit of a report (renames that must not
be cut in two).

Ctrl-C while ``python -m kpref`` is still importing: one line on stderr and exit status 130.

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
import threading
from contextlib import contextmanager


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


@contextmanager
def sigint_deferred():
    """Hold a SIGINT that arrives inside the block; deliver it to the previous handler when the block ends.

    Main thread only (Python runs signal handlers there); elsewhere, or when
    the SIGINT handler was not installed from Python, the block runs as is.
    Nested blocks hand the signal outwards, so it is delivered once, at the
    end of the outermost block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is None:    # pragma: no cover - a handler set from C: leave it alone
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)

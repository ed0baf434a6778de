"""The one place kpref imports numba.

kpref has no pure-Python fallback: without numba it fails at import, loudly,
with the command that installs it. Every kernel is compiled with
``cache=True`` (compiled code is kept beside the module, so a second process
starts warm) and ``fastmath=False`` (IEEE semantics: the oracle does not
reassociate sums), and compiles with Ctrl-C held until the compile is done
(:func:`kpref._signals.sigint_deferred`): a KeyboardInterrupt raised inside
LLVM's callbacks would be swallowed and leave numba's code library
half-built. The decorator is public as :func:`kpref.cells.njit`, for the
kernels of a new cell.
"""

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "kpref needs numba and has no pure-Python fallback; install it with "
        "`python -m pip install numba` (or reinstall kpref, which depends on it)"
    ) from exc

from ._signals import sigint_deferred

__all__ = ["njit", "numba"]


def njit(func=None, *, nogil=False):
    """``numba.njit(cache=True)`` with Ctrl-C held while a signature compiles: the decorator of every kernel.

    Compiling (or loading from the cache) goes through the dispatcher's
    ``compile``, both for a call from Python and for a call from another
    kernel being compiled; the wrapper holds SIGINT for that time and
    delivers it when the compile is done, so an interrupted program stops
    with a KeyboardInterrupt and numba's state intact. Calls that find a
    compiled signature do not pass through it.

    ``@njit`` or ``@njit(nogil=True)``: a ``nogil`` kernel releases the GIL
    while it runs, so threads (e.g. :attr:`kpref.analysis.KBlocks.workers`)
    run it in parallel; it must not touch Python objects.
    """
    if func is None:
        if not isinstance(nogil, bool):
            raise TypeError(f"nogil: expected a bool, got {nogil!r}")
        return lambda f: njit(f, nogil=nogil)
    if not callable(func):
        raise TypeError(f"njit: expected a Python function, got {type(func).__name__}")
    dispatcher = numba.njit(cache=True, nogil=bool(nogil))(func)
    compile_signature = dispatcher.compile

    def compile_holding_sigint(sig):
        with sigint_deferred():
            return compile_signature(sig)

    dispatcher.compile = compile_holding_sigint
    return dispatcher

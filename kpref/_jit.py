"""The one place kpref imports numba.

kpref has no pure-Python fallback: without numba it fails at import, loudly,
with the command that installs it. Every kernel is compiled with
``cache=True`` (compiled code is kept beside the module, so a second process
starts warm) and ``fastmath=False`` (IEEE semantics: the oracle does not
reassociate sums).
"""

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "kpref needs numba and has no pure-Python fallback; install it with "
        "`python -m pip install numba` (or reinstall kpref, which depends on it)"
    ) from exc

__all__ = ["njit", "numba"]


def njit(func):
    """``numba.njit(cache=True)``: the decorator of every kernel in kpref."""
    return numba.njit(cache=True)(func)

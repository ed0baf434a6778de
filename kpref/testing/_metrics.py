"""The relative error every kpref checker reports (one definition for verify and check_backend)."""

from __future__ import annotations

import numpy as np

__all__ = ["norm_ratio", "relative_error"]


def norm_ratio(num, den):
    """``‖num‖ / ‖den‖`` (Frobenius over all entries); 0 when both vanish, ``inf`` when only ``den`` does."""
    n = float(np.linalg.norm(np.ravel(num)))
    d = float(np.linalg.norm(np.ravel(den)))
    if d > 0:
        return n / d
    return 0.0 if n == 0 else np.inf


def relative_error(a, b):
    """``‖a − b‖ / ‖b‖``, with :func:`norm_ratio`'s conventions for ``b = 0``."""
    return norm_ratio(np.asarray(a) - np.asarray(b), b)

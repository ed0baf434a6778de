r"""Explicit Runge–Kutta tableaux (Butcher tableaux), validated at construction.

A tableau ``(a, b, c)`` with ``s`` stages defines the step of size ``Δt``::

    Z_i = h + Δt Σ_{j<i} a_ij k_j,   k_i = f(Z_i),   h' = h + Δt Σ_i b_i k_i

and is checked to be *explicit* (``a_ij = 0`` for ``j ≥ i``), *consistent*
(``Σ_i b_i = 1``, first-order accuracy) and to have nodes matching its rows
(``Σ_j a_ij = c_i``, the time of stage ``i`` is ``t + c_i Δt``). The two
sums are compared to within ``8 ε (1 + Σ|terms|)``, the rounding of a sum of
``s`` floats written as decimals (1/6 + 1/3 + 1/3 + 1/6 is exactly 1 in
float64, 0.1·10 terms would not be). ``order`` is the declared order of
accuracy; it is documentation for users of the tableau (the continuous
adjoint's deviation is ``O(Δt^order)``) and is not re-derived here.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["ButcherTableau", "METHODS"]

_EPS = 2.0 ** -52


def _floats(name, values):
    kind = getattr(getattr(values, "dtype", None), "kind", "f")
    if kind != "f":
        # an integer, boolean or object array is a mistake as for any kpref array (never cast silently)
        raise TypeError(f"{name}: expected real floating values, got an array of dtype {values.dtype}")
    try:
        out = tuple(values)
    except TypeError:
        raise TypeError(f"{name}: expected a sequence of real numbers, got {type(values).__name__}") from None
    for v in out:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{name}: expected finite real numbers, got {v!r}")
    return tuple(float(v) for v in out)


def _close(total, target, terms):
    return abs(total - target) <= 8 * _EPS * (1.0 + sum(abs(t) for t in terms))


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method: stage matrix ``a`` (s × s), weights ``b``, nodes ``c``.

    Parameters
    ----------
    name : str
    order : int
        Declared order of accuracy (≥ 1).
    a : s × s nested sequence of floats
        Strictly lower triangular (explicit method).
    b, c : length-s sequences of floats
        ``Σ b = 1`` and ``c_i = Σ_j a_ij``.

    Raises
    ------
    TypeError, ValueError
        Naming the field and the violated condition, with the figures.
    """

    name: str
    order: int
    a: tuple
    b: tuple
    c: tuple
    #: Per stage ``i``, the nonzero ``(j, a_ij)`` with ``j < i``: what the stepper runs.
    terms: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name: expected a non-empty string, got {self.name!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, numbers.Integral) or self.order < 1:
            raise ValueError(f"order: expected a positive integer, got {self.order!r}")
        b = _floats("b", self.b)
        s = len(b)
        if s == 0:
            raise ValueError("b: expected at least one stage, got none")
        c = _floats("c", self.c)
        if len(c) != s:
            raise ValueError(f"c: expected {s} nodes (one per weight in b), got {len(c)}")
        try:
            rows = tuple(self.a)
        except TypeError:
            raise TypeError(f"a: expected an {s} x {s} nested sequence, got {type(self.a).__name__}") from None
        if len(rows) != s:
            raise ValueError(f"a: expected {s} rows (one per stage), got {len(rows)}")
        a = tuple(_floats(f"a[{i}]", row) for i, row in enumerate(rows))
        for i, row in enumerate(a):
            if len(row) != s:
                raise ValueError(f"a[{i}]: expected {s} entries, got {len(row)}")
            upper = [(j, v) for j, v in enumerate(row) if j >= i and v != 0.0]
            if upper:
                j, v = upper[0]
                raise ValueError(f"a[{i}][{j}]: expected 0 (an explicit method has a_ij = 0 for j >= i), got {v!r}")
            if not _close(sum(row), c[i], row):
                raise ValueError(f"c[{i}]: expected the row sum of a, sum_j a[{i}][j] = {sum(row)!r}, got {c[i]!r}")
        if not _close(sum(b), 1.0, b):
            raise ValueError(f"b: expected weights summing to 1 (a consistent method), got sum {sum(b)!r}")
        object.__setattr__(self, "order", int(self.order))
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "terms", tuple(tuple((j, v) for j, v in enumerate(row) if v != 0.0) for row in a))

    @property
    def stages(self):
        """``s``, the number of stages."""
        return len(self.b)


METHODS = OrderedDict(
    euler=ButcherTableau("euler", 1, ((0.0,),), (1.0,), (0.0,)),
    midpoint=ButcherTableau("midpoint", 2, ((0.0, 0.0), (0.5, 0.0)), (0.0, 1.0), (0.0, 0.5)),
    rk4=ButcherTableau(
        "rk4", 4,
        ((0.0, 0.0, 0.0, 0.0), (0.5, 0.0, 0.0, 0.0), (0.0, 0.5, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0)),
        (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0),
        (0.0, 0.5, 0.5, 1.0),
    ),
)

"""Checking derivatives, operators and whole other implementations against kpref.

* :func:`dottest` / :func:`dottest_pair` — is the adjoint the adjoint?
* :func:`taylor_test` — is the derivative the derivative (remainder at rate 2)?
* :func:`complex_step` — a derivative to rounding, for analytic functions.
* :func:`richardson` — an extrapolated central difference with an error estimate.
* :func:`check_backend` → :class:`Report` — every operator of another
  implementation (torch, JAX, a GPU kernel) against kpref's, with budgets,
  the worst entry decoded, every step over budget and named hints;
* :func:`check_operator` — any backend callable against any kpref
  ``LinearOperator`` (partial traces, marginal sums, ...), the same way;
* :func:`as_operator` — a backend callable as a ``LinearOperator``
  (for :mod:`kpref.analysis`, :func:`kpref.todense`).
* :mod:`kpref.testing.strategies` — hypothesis strategies drawing kpref problems
  (also importable as :mod:`kpref.strategies`).

Each checker raises ``AssertionError`` with a diagnosis (the check, the
metric, the threshold, what to try next) and returns the number it judged,
so a test can also report it.
"""

from ._checkers import complex_step, dottest, dottest_pair, richardson, taylor_test
from ._backend import OPERATORS, OperatorCheck, Report, check_backend, reference_backend
from ._operator import as_operator, check_operator

__all__ = ["dottest", "dottest_pair", "taylor_test", "complex_step", "richardson",
           "check_backend", "Report", "OperatorCheck", "reference_backend", "OPERATORS",
           "check_operator", "as_operator"]

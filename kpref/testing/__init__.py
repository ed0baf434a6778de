"""Checking derivatives, operators and whole other implementations against kpref.

* :func:`dottest` / :func:`dottest_pair` — is the adjoint the adjoint?
* :func:`taylor_test` — is the derivative the derivative (remainder at rate 2)?
* :func:`complex_step` — a derivative to rounding, for analytic functions.
* :func:`richardson` — an extrapolated central difference with an error estimate.
* :func:`check_backend` → :class:`Report` — every operator of another
  implementation (torch, JAX, a GPU kernel) against kpref's, with budgets,
  the worst entry decoded, every step over budget and named hints;
* :func:`check_field` — a user's ODE vector field against itself (tangents
  against differences of ``f``, adjoints by dot tests), naming the culprit.
* :func:`run_verify` / :func:`verify_cell` — ``python -m kpref verify``: the
  oracle checks itself, one table row per check (rows ``(check, cell, size,
  worst, threshold)``); :func:`verify_cell` is a new cell's acceptance test.
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

from ._checkers import complex_step, dottest, dottest_pair, richardson, symmetric_residual, taylor_test
from ._backend import (OPERATORS, OperatorCheck, Report, check_backend, describe_param_index, describe_state_index,
                       reference_backend)
from ._verify import continuous_adjoint_order, run_verify, verify_cell
from ._field import check_field
from ._operator import as_operator, check_operator

__all__ = ["dottest", "dottest_pair", "symmetric_residual", "taylor_test", "complex_step", "richardson",
           "check_backend", "Report", "OperatorCheck", "reference_backend", "OPERATORS", "describe_param_index",
           "describe_state_index", "check_operator", "as_operator", "verify_cell", "run_verify",
           "continuous_adjoint_order", "check_field"]

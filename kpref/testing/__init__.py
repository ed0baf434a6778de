"""Checking derivatives, operators and whole other implementations against kpref.

* :func:`dottest` / :func:`dottest_pair` — is the adjoint the adjoint?
* :func:`taylor_test` — is the derivative the derivative (remainder at rate 2)?
* :func:`complex_step` — a derivative to rounding, for analytic functions.
* :func:`richardson` — an extrapolated central difference with an error estimate.
* :func:`check_backend` → :class:`Report` — every operator of another
  implementation (torch, JAX, a GPU kernel) against kpref's, with budgets
  and the worst entry decoded.
* :func:`run_verify` / :func:`verify_cell` — ``python -m kpref verify``: the
  oracle checks itself, one table row per check (rows ``(check, cell, size,
  worst, threshold)``).
* :mod:`kpref.testing.strategies` — hypothesis strategies drawing kpref problems
  (also importable as :mod:`kpref.strategies`).

Each checker raises ``AssertionError`` with a diagnosis (the check, the
metric, the threshold, what to try next) and returns the number it judged,
so a test can also report it.
"""

from ._checkers import complex_step, dottest, dottest_pair, richardson, symmetric_residual, taylor_test
from ._backend import OperatorCheck, Report, check_backend, reference_backend
from ._verify import continuous_adjoint_order, run_verify, verify_cell

__all__ = ["dottest", "dottest_pair", "symmetric_residual", "taylor_test", "complex_step", "richardson",
           "check_backend", "Report", "OperatorCheck", "reference_backend",
           "run_verify", "verify_cell", "continuous_adjoint_order"]

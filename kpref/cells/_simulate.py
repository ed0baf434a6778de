"""Trajectories: ``z = simulate(cell, theta, x, h0)`` (SPEC §1–2)."""

from __future__ import annotations

import numpy as np

from ._cell import Cell
from .._checks import as_real_array, as_real_or_complex_array, check_bool, check_finite_result

__all__ = ["simulate", "check_problem"]


def check_problem(cell, theta, x, h0=None):
    """Check and convert ``(cell, theta, x, h0)``; return ``(theta, x, h0)`` as float64.

    ``x`` must be (B, T, N) and ``h0`` (B, S) (zeros when ``None``).
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    theta = cell.check_theta(theta)
    x = as_real_array("x", x, (None, None, cell.input_size), ("B", "T", "N"))
    B = x.shape[0]
    if h0 is None:
        h0 = np.zeros((B, cell.state_size))
    else:
        h0 = as_real_array("h0", h0, (B, cell.state_size), ("B", "S"))
    return theta, x, h0


def _run(cell, theta, x, h0):
    """Unchecked forward sweep: z[:, t] = F(z[:, t-1], x[:, t])."""
    B, T, _ = x.shape
    dtype = np.result_type(theta, x, h0)  # complex128 only in complex-step use
    theta, x, h0 = (np.asarray(a, dtype=dtype) for a in (theta, x, h0))
    return cell._sweep(theta, x, h0)


def simulate(cell, theta, x, h0=None, *, complex_step=False):
    """Run the recurrence ``h_t = F(h_{t-1}, x_t; θ)`` for ``t = 1 … T``.

    Parameters
    ----------
    cell : kpref cell
    theta : (p,) array
        Flat parameters (``cell.param_shapes`` layout).
    x : (B, T, N) array
    h0 : (B, S) array, optional
        Initial state ``h_0``; zeros by default.
    complex_step : bool, default False
        Accept complex ``theta``, ``x``, ``h0`` and run in complex128, so that
        ``Im z(θ + i s v) / s`` is ``dz/dθ · v`` to rounding. Only for cells
        declaring ``cell.analytic`` (refused otherwise: the complex step of a
        non-analytic F, e.g. ReLU, is silently wrong).

    Returns
    -------
    z : (B, T, S) float64 array (complex128 with ``complex_step`` and complex input)
        ``z[:, t]`` is the state after step ``t + 1`` (``h_0`` excluded).

    Raises
    ------
    FloatingPointError
        If the trajectory overflows to inf/NaN (every input being finite).
    """
    if not check_bool("complex_step", complex_step):
        theta, x, h0 = check_problem(cell, theta, x, h0)
        z = _run(cell, theta, x, h0)
        # a trajectory that overflows (e.g. Linear at large gain) raises FloatingPointError, never returns inf/NaN
        check_finite_result("simulate: the trajectory z", z, "the recurrence diverged: lower the gain g, the weights "
                            "or the input scale")
        return z
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    if not cell.analytic:
        raise ValueError(f"complex_step: {cell!r} does not declare analytic=True; the complex step of a "
                         "non-analytic step is wrong (use kpref.testing.richardson)")
    theta = as_real_or_complex_array("theta", theta, (cell.num_params,), ("p",))
    x = as_real_or_complex_array("x", x, (None, None, cell.input_size), ("B", "T", "N"))
    B = x.shape[0]
    h0 = (np.zeros((B, cell.state_size)) if h0 is None
          else as_real_or_complex_array("h0", h0, (B, cell.state_size), ("B", "S")))
    return _run(cell, theta, x, h0)

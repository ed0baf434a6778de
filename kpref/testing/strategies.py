"""Hypothesis strategies that draw kpref problems, for this and other projects' tests.

Every float is bounded, finite and never subnormal; every size is bounded, so
a test drawing from here runs in bounded time::

    from hypothesis import given
    import kpref.strategies as kst

    @given(kst.problems())
    def test_my_backend(problem):
        cell, theta, x, h0 = problem
        ...

Register a profile with ``deadline=None`` in your ``conftest.py``: the first
example of a test compiles numba kernels.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..cells import GRU, LSTM, Elman, LeakyRNN, Linear
from ..ode import RateODE

__all__ = ["cell_names", "cells", "problems", "trajectory_vectors", "finite_arrays", "CELL_FACTORIES"]


#: name → factory(input_size, hidden_size, bias) of every built-in cell.
CELL_FACTORIES = {
    "elman_tanh": lambda n, h, bias: Elman(n, h, "tanh", bias=bias),
    "elman_relu": lambda n, h, bias: Elman(n, h, "relu", bias=bias),
    "gru": lambda n, h, bias: GRU(n, h, bias=bias),
    "leaky": lambda n, h, bias: LeakyRNN(n, h, alpha=0.3, bias=bias),
    "linear": lambda n, h, bias: Linear(n, h, bias=bias),
    "lstm": lambda n, h, bias: LSTM(n, h, bias=bias),
    "rate_euler": lambda n, h, bias: RateODE(n, h, tau=1.0, dt=0.2, method="euler", bias=bias),
    "rate_midpoint": lambda n, h, bias: RateODE(n, h, tau=1.0, dt=0.2, method="midpoint", bias=bias),
    "rate_rk4": lambda n, h, bias: RateODE(n, h, tau=1.0, dt=0.2, method="rk4", bias=bias),
}


def cell_names():
    """Names of the built-in cells the strategies draw from."""
    return sorted(CELL_FACTORIES)


def finite_arrays(shape, bound=1.0):
    """Arrays of ``shape`` with finite float64 entries in ``[-bound, bound]``, no subnormals."""
    return st.lists(
        st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64),
        min_size=int(np.prod(shape)), max_size=int(np.prod(shape)),
    ).map(lambda v: np.asarray(v, dtype=np.float64).reshape(shape))


@st.composite
def cells(draw, names=None, max_input=3, max_hidden=5):
    """A built-in cell with bounded sizes (``names`` restricts the kinds)."""
    available = cell_names()
    names = available if names is None else list(names)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"names: expected a subset of {available}, got unknown {unknown}")
    name = draw(st.sampled_from(names))
    n = draw(st.integers(1, max_input))
    h = draw(st.integers(1, max_hidden))
    bias = draw(st.booleans())
    return CELL_FACTORIES[name](n, h, bias)


@st.composite
def problems(draw, names=None, max_batch=3, max_time=6, max_input=3, max_hidden=5, scale=1.0):
    """``(cell, theta, x, h0)``: a cell, parameters drawn by seed, inputs and initial state.

    Parameters come from ``cell.init_params`` with a drawn seed (optionally a
    drawn gain ``g``), inputs and ``h0`` are bounded by ``scale``.
    """
    cell = draw(cells(names=names, max_input=max_input, max_hidden=max_hidden))
    B = draw(st.integers(1, max_batch))
    T = draw(st.integers(1, max_time))
    seed = draw(st.integers(0, 2**32 - 1))
    g = draw(st.one_of(st.none(), st.floats(0.3, 2.0, allow_nan=False, allow_subnormal=False)))
    theta = cell.init_params(rng=seed, g=g)
    x = draw(finite_arrays((B, T, cell.input_size), scale))
    h0 = draw(finite_arrays((B, cell.state_size), scale))
    return cell, theta, x, h0


def trajectory_vectors(shape, bound=1.0):
    """Flat trajectory-space vectors for a ``(B, T, S)`` shape, C order over (b, t, s)."""
    shape = tuple(int(s) for s in shape)
    return finite_arrays((int(np.prod(shape)),), bound)

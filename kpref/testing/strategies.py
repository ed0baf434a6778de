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

from .._checks import check_positive_float, check_positive_int, check_size_memory
from ..cells import GRU, LSTM, Elman, LeakyRNN, Linear
from ..ode import RateODE
from ._checkers import _check_shape_arg

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
    """Arrays of ``shape`` with finite float64 entries in ``[-bound, bound]``, no subnormals.

    ``shape`` and ``bound`` are checked here, not when hypothesis first draws (where a bad one would
    fail inside the test with hypothesis's message).
    """
    shape = _check_shape_arg("shape", shape)
    bound = check_positive_float("bound", bound)
    check_size_memory(f"shape={shape}", 8 * 4 * int(np.prod(shape, dtype=object)), what="one drawn array")
    return st.lists(
        st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64),
        min_size=int(np.prod(shape)), max_size=int(np.prod(shape)),
    ).map(lambda v: np.asarray(v, dtype=np.float64).reshape(shape))


def _check_names(names):
    available = cell_names()
    if names is None:
        return available
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"names: expected None or a sequence of cell names from {available}, got {names!r}")
    names = list(names)
    unknown = sorted(set(map(str, names)) - set(available))
    if not names or unknown or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names: expected a non-empty subset of {available}, got {names!r}")
    return names


def _sizes(**sizes):
    """Each bound an int >= 1, small enough that the largest drawn problem fits (checked when the strategy
    is built): θ of an LSTM (4H(H + N + 2)) and a few (B, T, N + 2H) arrays."""
    out = {k: check_positive_int(k, v) for k, v in sizes.items()}
    H, N = out.get("max_hidden", 1), out.get("max_input", 1)
    B, T = out.get("max_batch", 1), out.get("max_time", 1)
    check_size_memory(", ".join(f"{k}={v}" for k, v in out.items()),
                      8 * (4 * H * (H + N + 2) + 4 * B * T * (N + 2 * H)), what="the largest drawn problem")
    return out


def cells(names=None, max_input=3, max_hidden=5):
    """A built-in cell with bounded sizes (``names`` restricts the kinds)."""
    names = _check_names(names)
    _sizes(max_input=max_input, max_hidden=max_hidden)
    return _cells(names, max_input, max_hidden)


@st.composite
def _cells(draw, names, max_input, max_hidden):
    name = draw(st.sampled_from(names))
    n = draw(st.integers(1, max_input))
    h = draw(st.integers(1, max_hidden))
    bias = draw(st.booleans())
    return CELL_FACTORIES[name](n, h, bias)


def problems(names=None, max_batch=3, max_time=6, max_input=3, max_hidden=5, scale=1.0):
    """``(cell, theta, x, h0)``: a cell, parameters drawn by seed, inputs and initial state.

    Parameters come from ``cell.init_params`` with a drawn seed (optionally a
    drawn gain ``g``), inputs and ``h0`` are bounded by ``scale``.
    """
    names = _check_names(names)
    _sizes(max_batch=max_batch, max_time=max_time, max_input=max_input, max_hidden=max_hidden)
    scale = check_positive_float("scale", scale)
    return _problems(names, max_batch, max_time, max_input, max_hidden, scale)


@st.composite
def _problems(draw, names, max_batch, max_time, max_input, max_hidden, scale):
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
    shape = _check_shape_arg("shape", shape)
    return finite_arrays((int(np.prod(shape)),), bound)

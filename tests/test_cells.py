"""Property tests of every cell's hand-derived products (SPEC §2–3), over random problems.

For each cell and random sizes, parameters and inputs:
* dot tests of (A, Aᵀ) and (G, Gᵀ) with symmetric residual ≤ 1e-13;
* tangents against complex-step derivatives (≤ 1e-12 relative) where the cell
  is analytic, and against Richardson-extrapolated central differences for ReLU;
* Taylor remainders of F in h and in θ falling at rate 2;
* the dense Jacobians against the products.
"""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import kpref
import kpref.strategies as kst
from kpref.testing import complex_step, dottest_pair, richardson, taylor_test
from tests.helpers import rel as _rel

ANALYTIC = [n for n in kst.cell_names() if n != "elman_relu"]
# Linear is linear in h and in θ separately: its remainders are round-off; its closed form is tested instead
CURVED = [n for n in ANALYTIC if n != "linear"]


def _rows(problem, rng):
    """A step point at every (trial, step) row of the problem's trajectory."""
    cell, theta, x, h0 = problem
    lin = kpref.linearize(cell, theta, x, h0)
    return cell, theta, lin.point


@given(kst.problems(), st.integers(1, 3), st.integers(0, 2**31))
def test_state_pair_dot(problem, k, seed):
    cell, theta, pt = _rows(problem, seed)
    shape = (k, pt.num_rows, cell.state_size)
    dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(pt, W), shape, shape,
                 rng=seed, n_pairs=3, rtol=1e-13, name=f"{cell!r} A")


@given(kst.problems(), st.integers(1, 3), st.integers(0, 2**31))
def test_param_pair_dot(problem, k, seed):
    cell, theta, pt = _rows(problem, seed)
    dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(pt, W),
                 (k, cell.num_params), (k, pt.num_rows, cell.state_size),
                 rng=seed, n_pairs=3, rtol=1e-13, name=f"{cell!r} G")


@given(kst.problems(names=ANALYTIC), st.integers(0, 2**31))
def test_tangents_against_complex_step(problem, seed):
    cell, theta, pt = _rows(problem, seed)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(pt.h.shape)
    d = rng.standard_normal(cell.num_params)
    cs_state = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, v)
    cs_param = complex_step(lambda th: cell.step(th, pt.h, pt.x, complex_step=True), theta, d)
    assert _rel(cell.state_jvp(pt, v[None])[0], cs_state) <= 1e-12
    assert _rel(cell.param_jvp(pt, d[None])[0], cs_param) <= 1e-12


@given(kst.problems(names=["elman_relu"]), st.integers(0, 2**31))
def test_relu_tangents_against_richardson(problem, seed):
    cell, theta, pt = _rows(problem, seed)
    rng = np.random.default_rng(seed)
    p = cell.unflatten(theta)
    a = pt.x @ p["weight_ih"].T + pt.h @ p["weight_hh"].T
    if cell.bias:
        a = a + p["bias_ih"] + p["bias_hh"]
    margin = float(np.min(np.abs(a)))
    # at a kink (a = 0) ReLU has no derivative to compare against (torch's convention ReLU'(0) = 0)
    assume(margin >= 1e-6)
    v = rng.standard_normal(pt.h.shape)
    # F is linear in h between kinks, and the pre-activations move by s·(v W_hhᵀ) along the step s:
    # with h_fd = margin / (2 speed) no difference crosses a kink, so truncation is exactly 0 and
    # the central differences err only by rounding, ≤ 2 ε ‖F‖ / (2 h_fd/2) per entry-norm at the
    # smaller step of a two-level table, amplified ≤ 5/3 by the extrapolation: bound 100 ε ‖F‖ / h_fd.
    speed = max(float(np.abs(v @ p["weight_hh"].T).max()), 1e-300)
    h_fd = min(1.0, 0.5 * margin / speed)
    F = cell.step(theta, pt.h, pt.x)
    est, err = richardson(lambda h: cell.step(theta, h, pt.x), pt.h, v, h=h_fd, levels=2)
    bound = 100 * np.finfo(float).eps * max(np.linalg.norm(F), 1.0) / h_fd
    assert np.linalg.norm(cell.state_jvp(pt, v[None])[0] - est) <= bound
    assert err <= bound


def _taylor_or_exact(f, x, dx, d):
    """Taylor test at rate 2, or — where f is linear along dx — exactness of the tangent."""
    taylor_test(f, x, dx, d, linear_ok=True)  # e.g. LeakyRNN is linear in θ over one step


@given(kst.problems(names=CURVED), st.integers(0, 2**31))
def test_taylor_remainders_rate_two(problem, seed):
    cell, theta, pt = _rows(problem, seed)
    rng = np.random.default_rng(seed)
    # a generic point: at h = x = 0 without bias, tanh'' vanishes and the remainder falls at rate 3
    pt = cell.point(theta, pt.h + 0.5 * rng.standard_normal(pt.h.shape), pt.x)
    v = rng.standard_normal(pt.h.shape)
    d = rng.standard_normal(cell.num_params)
    taylor_test(lambda h: cell.step(theta, h, pt.x), pt.h, v, cell.state_jvp(pt, v[None])[0])
    _taylor_or_exact(lambda th: cell.step(th, pt.h, pt.x), theta, d, cell.param_jvp(pt, d[None])[0])


@given(kst.problems())
def test_dense_jacobians_match_products(problem):
    cell, theta, pt = _rows(problem, 0)
    A = cell.state_jacobian(pt)
    G = cell.param_jacobian(pt)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, pt.num_rows, cell.state_size))
    d = rng.standard_normal((2, cell.num_params))
    assert np.allclose(np.einsum("mij,kmj->kmi", A, v), cell.state_jvp(pt, v), rtol=1e-13, atol=1e-14)
    assert np.allclose(np.einsum("mip,kp->kmi", G, d), cell.param_jvp(pt, d), rtol=1e-13, atol=1e-14)


def test_a_wrong_adjoint_is_caught():
    """The dot test of the step pair fails for a deliberately wrong adjoint (A itself instead of Aᵀ)."""
    cell = kpref.Elman(2, 4)
    theta = cell.init_params(rng=3, g=1.5)
    rng = np.random.default_rng(0)
    pt = cell.point(theta, rng.standard_normal((3, 4)), rng.standard_normal((3, 2)))
    shape = (1, 3, 4)
    with pytest.raises(AssertionError, match="dottest"):
        dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_jvp(pt, W), shape, shape, rng=1)


@pytest.mark.parametrize("name", kst.cell_names())
def test_init_params_seeded_and_gain(name):
    cell = kst.CELL_FACTORIES[name](3, 8, True)
    a, b = cell.init_params(rng=5), cell.init_params(rng=5)
    assert a.dtype == np.float64 and a.shape == (cell.num_params,)
    assert np.array_equal(a, b)
    bound = 1 / np.sqrt(cell.hidden_size)
    assert np.all(np.abs(a) <= bound)
    big = cell.init_params(rng=np.random.default_rng(5), g=3.0)
    w = cell.unflatten(big)["weight_hh"]
    assert np.abs(w).max() > bound  # the Gaussian recurrent weights, not the uniform default
    assert cell.flatten(cell.unflatten(big)).tobytes() == big.tobytes()

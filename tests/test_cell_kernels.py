"""The hand-derived kernels of the GRU, LeakyRNN and Linear cells (kpref/cells/_gru.py, kpref/cells/_leaky.py).

For each cell, bias on and off, on random rows and blocks of k ≥ 2 vectors:

* dot tests of (state_jvp, state_vjp) and (param_jvp, param_vjp), symmetric residual ≤ 1e-13;
* the dense state Jacobian equals state_jvp of the identity;
* state_jvp and param_jvp equal the complex-step derivative (step 1e-30) of
  ``cell.step(..., complex_step=True)`` to ≤ 1e-12 relative;
* each weight site of ``weight_sites`` reproduces param_jvp restricted to its parameters;
* the forward steps against the SPEC §2 formulas written independently in NumPy;
* Linear: F is W h + U x + b and A = W exactly; LeakyRNN(alpha=1) is W tanh(h) + U x + b;
* bad constructor arguments are refused with messages naming them;
* deliberately wrong adjoints / tangents are caught by the same checks.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import kpref
from kpref import StepPoint
from kpref.strategies import finite_arrays
from kpref.testing import complex_step, dottest_pair
from tests.helpers import rel as _rel

KINDS = ["gru", "leaky", "leaky1", "linear"]


def make_cell(kind, n, h, bias):
    if kind == "gru":
        return kpref.GRU(n, h, bias=bias)
    if kind == "leaky":
        return kpref.LeakyRNN(n, h, alpha=0.3, bias=bias)
    if kind == "leaky1":
        return kpref.LeakyRNN(n, h, alpha=1.0, bias=bias)
    return kpref.Linear(n, h, bias=bias)


@st.composite
def step_points(draw, kinds=KINDS):
    """(cell, theta, pt): a cell, parameters (optionally with gain g) and a point at M bounded rows."""
    kind = draw(st.sampled_from(kinds))
    n, h, M = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    cell = make_cell(kind, n, h, draw(st.booleans()))
    g = draw(st.one_of(st.none(), st.floats(0.3, 2.0, allow_nan=False, allow_subnormal=False)))
    theta = cell.init_params(rng=draw(st.integers(0, 2**32 - 1)), g=g)
    hs = draw(finite_arrays((M, h), 2.0))
    xs = draw(finite_arrays((M, n), 2.0))
    return cell, theta, cell.point(theta, hs, xs)


# ------------------------------------------------------------- dot tests
@given(step_points(), st.integers(2, 4), st.integers(0, 2**31))
def test_state_pair_dot(problem, k, seed):
    cell, theta, pt = problem
    shape = (k, pt.num_rows, cell.state_size)
    dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(pt, W), shape, shape,
                 rng=seed, n_pairs=3, rtol=1e-13, name=f"{cell!r} A")


@given(step_points(), st.integers(2, 4), st.integers(0, 2**31))
def test_param_pair_dot(problem, k, seed):
    cell, theta, pt = problem
    dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(pt, W),
                 (k, cell.num_params), (k, pt.num_rows, cell.state_size),
                 rng=seed, n_pairs=3, rtol=1e-13, name=f"{cell!r} G")


# ------------------------------------------------- tangents and Jacobian
@given(step_points())
def test_state_jacobian_is_jvp_of_identity(problem):
    cell, theta, pt = problem
    S = cell.state_size
    E = np.broadcast_to(np.eye(S)[:, None, :], (S, pt.num_rows, S))
    AE = cell.state_jvp(pt, E)                         # AE[i, m] = A_m e_i
    A = cell.state_jacobian(pt)
    assert A.shape == (pt.num_rows, S, S) and A.dtype == np.float64
    assert np.allclose(A, AE.transpose(1, 2, 0), rtol=1e-14, atol=1e-15)


@given(step_points(), st.integers(0, 2**31))
def test_tangents_against_complex_step(problem, seed):
    cell, theta, pt = problem
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((2, pt.num_rows, cell.state_size))
    d = rng.standard_normal((2, cell.num_params))
    AV, Gd = cell.state_jvp(pt, V), cell.param_jvp(pt, d)
    for j in range(2):
        cs_h = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, V[j], h=1e-30)
        cs_th = complex_step(lambda th: cell.step(th, pt.h, pt.x, complex_step=True), theta, d[j], h=1e-30)
        assert _rel(AV[j], cs_h) <= 1e-12
        assert _rel(Gd[j], cs_th) <= 1e-12


@given(step_points(), st.integers(0, 2**31))
def test_sites_reproduce_param_jvp(problem, seed):
    """For each weight site: D (δW_site @ activity) = G δθ with δθ supported on the site's parameters."""
    cell, theta, pt = problem
    rng = np.random.default_rng(seed)
    slices = cell.param_slices()
    covered = []
    for names, act, D in cell.weight_sites(pt):
        M, S, o = D.shape
        assert M == pt.num_rows and S == cell.state_size and act.shape[0] == M
        d = np.zeros(cell.num_params)
        parts = []
        for name in names:
            block = rng.standard_normal(cell.param_shapes[name])
            d[slices[name]] = block.ravel()
            parts.append(block.reshape(o, -1))            # a bias becomes the column of the trailing 1
            covered.append(name)
        dW = np.hstack(parts)
        assert dW.shape == (o, act.shape[1])
        pred = np.einsum("mso,om->ms", D, dW @ act.T)
        assert np.allclose(pred, cell.param_jvp(pt, d[None])[0], rtol=1e-13, atol=1e-14 * (1 + np.abs(pred).max()))
    assert sorted(covered) == sorted(cell.param_shapes)


# ------------------------------------------- forward steps, closed forms
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


@given(step_points(kinds=["gru"]))
def test_gru_step_matches_spec_formula(problem):
    cell, theta, pt = problem
    p = cell.unflatten(theta)
    H = cell.hidden_size
    gi = pt.x @ p["weight_ih"].T + (p["bias_ih"] if cell.bias else 0.0)
    gh = pt.h @ p["weight_hh"].T + (p["bias_hh"] if cell.bias else 0.0)
    r = _sigmoid(gi[:, :H] + gh[:, :H])
    u = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    expected = (1 - u) * n + u * pt.h
    assert np.allclose(cell.step(theta, pt.h, pt.x), expected, rtol=1e-14, atol=1e-15)


@given(step_points(kinds=["leaky"]))
def test_leaky_step_matches_spec_formula(problem):
    cell, theta, pt = problem
    p = cell.unflatten(theta)
    a = np.tanh(pt.h) @ p["weight_hh"].T + pt.x @ p["weight_ih"].T + (p["bias"] if cell.bias else 0.0)
    expected = (1 - cell.alpha) * pt.h + cell.alpha * a
    assert np.allclose(cell.step(theta, pt.h, pt.x), expected, rtol=1e-14, atol=1e-15)


@given(step_points(kinds=["linear"]), st.integers(0, 2**31))
def test_linear_closed_form_and_A_is_W(problem, seed):
    cell, theta, pt = problem
    p = cell.unflatten(theta)
    W = p["weight_hh"]
    expected = pt.h @ W.T + pt.x @ p["weight_ih"].T + (p["bias"] if cell.bias else 0.0)
    assert np.allclose(cell.step(theta, pt.h, pt.x), expected, rtol=1e-14, atol=1e-15)
    A = cell.state_jacobian(pt)
    assert np.array_equal(A, np.broadcast_to(W, A.shape))                 # A = W, bit for bit
    V = np.random.default_rng(seed).standard_normal((3, pt.num_rows, cell.hidden_size))
    assert np.allclose(cell.state_jvp(pt, V), V @ W.T, rtol=1e-14, atol=1e-15)
    assert np.allclose(cell.state_vjp(pt, V), V @ W, rtol=1e-14, atol=1e-15)


@given(step_points(kinds=["leaky1"]))
def test_leaky_alpha_one_is_tanh_rnn(problem):
    cell, theta, pt = problem
    p = cell.unflatten(theta)
    expected = np.tanh(pt.h) @ p["weight_hh"].T + pt.x @ p["weight_ih"].T + (p["bias"] if cell.bias else 0.0)
    assert np.allclose(cell.step(theta, pt.h, pt.x), expected, rtol=1e-14, atol=1e-15)


def test_leaky_with_alpha_matches_rate_ode_euler():
    """LeakyRNN(α) is the Euler step of RateODE with dt/τ = α (same parameters), to rounding."""
    leaky = kpref.LeakyRNN(2, 5, alpha=0.25)
    ode = kpref.RateODE(2, 5, tau=2.0, dt=0.5, method="euler")
    theta = leaky.init_params(rng=4, g=1.5)
    x = np.random.default_rng(5).standard_normal((3, 7, 2))
    z1, z2 = kpref.simulate(leaky, theta, x), kpref.simulate(ode, theta, x)
    assert np.allclose(z1, z2, rtol=1e-13, atol=1e-14)


def test_layout_and_gain():
    gru = kpref.GRU(3, 4)
    assert list(gru.param_shapes.items()) == [("weight_ih", (12, 3)), ("weight_hh", (12, 4)),
                                              ("bias_ih", (12,)), ("bias_hh", (12,))]
    assert list(kpref.GRU(3, 4, bias=False).param_shapes) == ["weight_ih", "weight_hh"]
    for cls in (lambda b: kpref.LeakyRNN(3, 4, alpha=0.5, bias=b), lambda b: kpref.Linear(3, 4, bias=b)):
        assert list(cls(True).param_shapes.items()) == [("weight_hh", (4, 4)), ("weight_ih", (4, 3)), ("bias", (4,))]
        assert list(cls(False).param_shapes) == ["weight_hh", "weight_ih"]
    # g redraws the three H×H blocks of GRU's weight_hh (Gaussian, std g/√H), nothing else
    H = 200
    gru = kpref.GRU(2, H)
    a, b = gru.unflatten(gru.init_params(rng=1)), gru.unflatten(gru.init_params(rng=1, g=2.0))
    for blk in range(3):
        w = b["weight_hh"][blk * H:(blk + 1) * H]
        assert abs(w.std() / (2.0 / np.sqrt(H)) - 1) < 0.02
    for name in ("weight_ih", "bias_ih", "bias_hh"):
        assert np.abs(b[name]).max() <= 1 / np.sqrt(H)


def test_complex_step_keeps_dtypes():
    for cell in (kpref.GRU(2, 3, bias=False), kpref.LeakyRNN(2, 3, alpha=0.5, bias=False), kpref.Linear(2, 3)):
        theta = cell.init_params(rng=0)
        out = cell.step(theta.astype(complex), np.zeros((2, 3)), np.ones((2, 2)), complex_step=True)
        assert out.dtype == np.complex128
        assert cell.step(theta, np.zeros((2, 3)), np.ones((2, 2))).dtype == np.float64
        with pytest.raises(TypeError, match="theta: expected a real floating array, got complex"):
            cell.step(theta.astype(complex), np.zeros((2, 3)), np.ones((2, 2)))


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("alpha, exc, match", [
    (0.0, ValueError, r"alpha: expected a finite number > 0, got 0.0"),
    (-0.5, ValueError, r"alpha: expected a finite number > 0"),
    (1.5, ValueError, r"alpha: expected a number in \(0, 1.0\], got 1.5"),
    (float("nan"), ValueError, r"alpha: expected a finite number > 0, got nan"),
    (True, TypeError, r"alpha: expected a positive real number, got True"),
    ("0.5", TypeError, r"alpha: expected a positive real number, got '0.5'"),
    (None, TypeError, r"alpha: expected a positive real number, got None"),
])
def test_bad_alpha_refused(alpha, exc, match):
    with pytest.raises(exc, match=match):
        kpref.LeakyRNN(2, 3, alpha=alpha)


@pytest.mark.parametrize("factory", [
    lambda b: kpref.GRU(2, 3, bias=b),
    lambda b: kpref.LeakyRNN(2, 3, bias=b),
    lambda b: kpref.Linear(2, 3, bias=b),
])
@pytest.mark.parametrize("bias", [1, 0, "yes", None, 1.0])
def test_bias_must_be_bool(factory, bias):
    with pytest.raises(TypeError, match=r"bias: expected a bool, got"):
        factory(bias)


@pytest.mark.parametrize("cls", [kpref.GRU, kpref.LeakyRNN, kpref.Linear])
def test_bad_sizes_and_inputs_refused(cls):
    with pytest.raises(ValueError, match=r"hidden_size: expected an integer >= 1, got 0"):
        cls(2, 0)
    with pytest.raises(TypeError, match=r"input_size: expected an integer >= 1, got 2.0"):
        cls(2.0, 3)
    cell = cls(2, 3)
    theta = cell.init_params(rng=0)
    with pytest.raises(ValueError, match=r"x: expected shape \(4, 2\) with N=2, got shape \(4, 3\)"):
        cell.step(theta, np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match=r"h: expected a real floating array, got dtype int64"):
        cell.point(theta, np.zeros((4, 3), dtype=np.int64), np.zeros((4, 2)))
    pt = cell.point(theta, np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"V: expected a 3-D array"):
        cell.state_jvp(pt, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"dtheta: expected shape"):
        cell.param_jvp(pt, np.zeros((1, cell.num_params + 1)))
    with pytest.raises(ValueError, match=r"W: expected finite values"):
        cell.state_vjp(pt, np.full((1, 4, 3), np.inf))


# ------------------------------------------- the checks catch wrong answers
def _gru_point():
    cell = kpref.GRU(2, 4)
    theta = cell.init_params(rng=3, g=1.5)
    rng = np.random.default_rng(0)
    return cell, theta, cell.point(theta, rng.standard_normal((3, 4)), rng.standard_normal((3, 2)))


def test_a_wrong_gru_adjoint_is_caught():
    """Dropping the reset-gate path from the adjoint only (c_r = 0) fails the dot test."""
    cell, theta, pt = _gru_point()
    c_r, c_z, c_n, d_n, u = pt.cache
    wrong = StepPoint(pt.theta, pt.h, pt.x, (np.zeros_like(c_r), c_z, c_n, d_n, u))
    shape = (2, 3, 4)
    with pytest.raises(AssertionError, match="dottest"):
        dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(wrong, W), shape, shape, rng=1)
    with pytest.raises(AssertionError, match="dottest"):
        dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(wrong, W),
                     (2, cell.num_params), shape, rng=1)


def test_a_wrong_gru_tangent_is_caught():
    """A tangent missing the direct u ⊙ v path (or the reset-gate path) misses the complex step by far more than 1e-12."""
    cell, theta, pt = _gru_point()
    c_r, c_z, c_n, d_n, u = pt.cache
    v = np.random.default_rng(1).standard_normal(pt.h.shape)
    cs = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, v)
    assert _rel(cell.state_jvp(pt, v[None])[0], cs) <= 1e-12
    for cache in ((c_r, c_z, c_n, d_n, np.zeros_like(u)), (np.zeros_like(c_r), c_z, c_n, d_n, u)):
        wrong = StepPoint(pt.theta, pt.h, pt.x, cache)
        assert _rel(cell.state_jvp(wrong, v[None])[0], cs) > 1e-6


def test_a_wrong_leaky_alpha_is_caught():
    """Products of a point built with another α disagree with the complex step of this cell."""
    cell, other = kpref.LeakyRNN(2, 4, alpha=0.3), kpref.LeakyRNN(2, 4, alpha=0.4)
    theta = cell.init_params(rng=1)
    rng = np.random.default_rng(2)
    pt = cell.point(theta, rng.standard_normal((3, 4)), rng.standard_normal((3, 2)))
    v, d = rng.standard_normal(pt.h.shape), rng.standard_normal(cell.num_params)
    cs_h = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, v)
    cs_th = complex_step(lambda th: cell.step(th, pt.h, pt.x, complex_step=True), theta, d)
    pt_other = other.point(theta, pt.h, pt.x)
    assert _rel(other.state_jvp(pt_other, v[None])[0], cs_h) > 1e-3
    assert _rel(other.param_jvp(pt_other, d[None])[0], cs_th) > 1e-3
    # and a point built by one cell is refused by the other (its cache holds another alpha)
    with pytest.raises(ValueError, match=r"pt: expected a StepPoint built by this cell"):
        other.state_jvp(pt, v[None])


@pytest.mark.parametrize("name", sorted(kpref.strategies.CELL_FACTORIES))
@pytest.mark.parametrize("bias", [True, False])
def test_fused_forward_sweep_equals_the_step_by_step_route_bit_for_bit(name, bias):
    """``Cell._run_prepared`` (declared hook; GRU and Elman fuse the forward sweep with their cache) gives the
    trajectory of ``_step`` and the cache of ``_prepare`` exactly: linearize (fused) and
    ``Linearization(..., z)`` (step-by-step cache) agree bit for bit, and so do their products."""
    rng = np.random.default_rng(3)
    cell = kpref.strategies.CELL_FACTORIES[name](3, 5, bias)
    theta = cell.init_params(rng, g=1.5)
    x = rng.standard_normal((4, 7, 3))
    h0 = rng.standard_normal((4, cell.state_size))
    z, cache = cell._run_prepared(theta, x, h0)
    z_ref, cache_ref = kpref.Cell._run_prepared(cell, theta, x, h0)      # the default: the sweep, then _prepare
    z_steps = kpref.Cell._sweep(cell, theta, x, h0)                        # the default sweep: _step at a time
    assert np.array_equal(z, z_ref) and np.array_equal(z, kpref.simulate(cell, theta, x, h0))
    assert np.array_equal(cell._sweep(theta, x, h0), z_steps) and np.array_equal(z, z_steps)
    if cell.analytic:   # the complex step goes through the same sweep
        thc = theta + 1e-20j * rng.standard_normal(theta.shape)
        assert np.array_equal(cell._sweep(thc, x.astype(complex), h0.astype(complex)),
                              kpref.Cell._sweep(cell, thc, x.astype(complex), h0.astype(complex)))
    assert len(cache) == len(cache_ref) and all(np.array_equal(a, b) for a, b in zip(cache, cache_ref))
    fused = kpref.linearize(cell, theta, x, h0)
    stepwise = kpref.Linearization(cell, theta, x, h0, z)
    X = rng.standard_normal((fused.size, 2))
    for op in ("P", "K", "NTK"):
        assert np.array_equal(getattr(fused, op).matmat(X), getattr(stepwise, op).matmat(X)), op
    e = rng.standard_normal(fused.shape)
    assert np.array_equal(fused.grad(e), stepwise.grad(e))


def test_a_wrong_fused_sweep_is_caught():
    """The check above fails on a fused sweep that differs from the steps (here: the cache of step 0 dropped)."""
    rng = np.random.default_rng(4)
    cell = kpref.GRU(3, 5)
    theta = cell.init_params(rng)
    x, h0 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5))
    z, cache = cell._run_prepared(theta, x, h0)
    _, cache_ref = kpref.Cell._run_prepared(cell, theta, x, h0)
    broken = tuple(np.concatenate([np.zeros_like(a[:2]), a[2:]]) for a in cache)
    assert not all(np.array_equal(a, b) for a, b in zip(broken, cache_ref))
    assert all(np.array_equal(a, b) for a, b in zip(cache, cache_ref))

"""The checkers of kpref.testing catch wrong answers (a check that cannot fail is a defect)."""

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

import kpref
from kpref.testing import complex_step, dottest, dottest_pair, richardson, symmetric_residual, taylor_test


def test_dottest_passes_a_matrix_and_its_transpose():
    A = np.random.default_rng(0).standard_normal((7, 5))
    assert dottest(A, rng=1) <= 1e-15


def test_dottest_catches_a_wrong_adjoint():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    wrong = A.copy()
    wrong[2, 3] += 1e-6  # a single perturbed entry in the "adjoint"
    with pytest.raises(AssertionError, match=r"<A u, w> = .* but <u, A\^H w> = .*threshold 1.0e-13"):
        dottest_pair(lambda u: A @ u, lambda w: wrong.T @ w, (6,), (6,), rng=2)


def test_dottest_returns_the_worst_residual_of_a_slightly_wrong_adjoint():
    A = np.diag([1.0, 2.0, 3.0])
    B = np.diag([1.0, 2.0, 3.0 + 1e-9])
    r = dottest_pair(lambda u: A @ u, lambda w: B @ w, (3,), (3,), rng=0, rtol=1.0)
    # the worst of the 8 pairs drawn from the same seed, by the formula: |1e-9 u₃ w₃| / (‖Au‖‖w‖ + ‖u‖‖Bw‖);
    # the numerator is a difference of O(1) inner products, exact to ~1e-16, i.e. 1e-7 of it
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal(3), rng.standard_normal(3)) for _ in range(8)]
    expected = max(abs((A @ u) @ w - u @ (B @ w)) / (np.linalg.norm(A @ u) * np.linalg.norm(w)
                                                     + np.linalg.norm(u) * np.linalg.norm(B @ w)) for u, w in pairs)
    assert r == pytest.approx(expected, rel=1e-6, abs=0)
    assert expected == pytest.approx(max(1e-9 * abs(u[2] * w[2]) / (np.linalg.norm(A @ u) * np.linalg.norm(w)
                                         + np.linalg.norm(u) * np.linalg.norm(B @ w)) for u, w in pairs), rel=1e-6, abs=0)


def test_taylor_test_rate_two_for_a_right_derivative():
    f = lambda x: np.sin(x) * np.exp(x)
    x = np.linspace(-1, 1, 5)
    dx = np.cos(np.arange(5.0))
    rates = taylor_test(f, x, dx, (np.cos(x) * np.exp(x) + np.sin(x) * np.exp(x)) * dx)
    assert np.sum(np.abs(rates - 2) < 0.1) >= 3


def test_taylor_test_says_derivative_wrong():
    f = lambda x: np.sin(x)
    x = np.linspace(-1, 1, 5)
    dx = np.ones(5)
    with pytest.raises(AssertionError, match="derivative wrong"):
        taylor_test(f, x, dx, 1.01 * np.cos(x) * dx)


def test_taylor_test_says_round_off():
    f = lambda x: x**2
    x = np.ones(3)
    with pytest.raises(AssertionError, match="round-off"):
        taylor_test(f, x, np.ones(3), 2 * x, h0=1e-9)


def test_taylor_test_linear_ok_accepts_an_exact_linear_map_and_still_catches_a_wrong_one():
    M = np.random.default_rng(0).standard_normal((4, 3))
    f = lambda x: M @ x + 1.0
    x, dx = np.ones(3), np.arange(3.0)
    with pytest.raises(AssertionError, match="round-off"):
        taylor_test(f, x, dx, M @ dx)  # no curvature: no rate to measure
    assert taylor_test(f, x, dx, M @ dx, linear_ok=True).size == 0
    with pytest.raises(AssertionError, match="derivative wrong"):
        taylor_test(f, x, dx, (1 + 1e-6) * (M @ dx), linear_ok=True)


def test_complex_step_is_exact_to_rounding():
    f = lambda x: np.exp(x) * np.tanh(x)
    x = np.array([0.3, -0.7])
    d = complex_step(f, x, np.ones(2))
    exact = np.exp(x) * np.tanh(x) + np.exp(x) / np.cosh(x) ** 2
    assert np.max(np.abs(d - exact)) <= 1e-15 * np.max(np.abs(exact)) * 4


def test_richardson_estimate_and_error():
    f = lambda x: np.abs(x) ** 3  # smooth away from 0
    x = np.array([0.5, 1.5])
    est, err = richardson(f, x, np.ones(2), h=0.1)
    exact = 3 * x**2
    # f is a cubic on [x − h, x + h]: D(h) = f′ + h² f‴/6 exactly, so the first extrapolation is exact and
    # only rounding remains, ≤ ~4 ε |f| / h_min = 4 · 2.2e-16 · 3.4 / 0.0125 ≈ 2.4e-13 (Σ|weights| ≤ 2)
    assert np.max(np.abs(est - exact)) <= 5e-13
    assert err <= 5e-13
    # a coarse, two-level table on a wiggly function: the error estimate is exactly |D₁₁ − D₁₀|
    # = |D(h/2) − D(h)| / 3, and it is large
    g = lambda x: np.sin(50 * x)
    est, err = richardson(g, x, np.ones(2), h=0.2, levels=2)
    D = lambda h: (g(x + h) - g(x - h)) / (2 * h)
    assert est == pytest.approx(D(0.1) + (D(0.1) - D(0.2)) / 3, rel=1e-14, abs=0)
    assert err == pytest.approx(np.linalg.norm(D(0.1) - D(0.2)) / 3, rel=1e-14, abs=0) and err > 1


# ---------------------------------------------------------------- magnitudes
@pytest.mark.parametrize("scale", [1e-300, 1e-283, 1e-160, 1.0, 1e160, 1e283, 1e300])
def test_dottest_pair_judges_every_magnitude(scale):
    """The residual is scale-free: no false failure at tiny A (the norms' squares underflowed to 0,
    residual inf) and no false pass at huge A (the squares overflowed to inf, residual 0)."""
    rng = np.random.default_rng(0)
    A = scale * rng.standard_normal((6, 5))
    # a correct adjoint: the residual is rounding, ~ n ε of the unit-vector inner products
    assert dottest_pair(lambda u: A @ u, lambda w: A.T @ w, (5,), (6,), rng=1) <= 1e-14
    wrong = A.copy()
    wrong[2, 3] *= 1 + 1e-6  # one entry off by a relative 1e-6: a residual ~1e-7, at every scale
    with pytest.raises(AssertionError, match="symmetric residual"):
        dottest_pair(lambda u: A @ u, lambda w: wrong.T @ w, (5,), (6,), rng=1)


def test_dottest_elman_relu_at_tiny_inputs_regression():
    """The false failure found by hypothesis: Elman(relu), inputs near 1e-282, J_θ's dot test."""
    cell = kpref.Elman(2, 3, "relu", bias=False)
    rng = np.random.default_rng(0)
    theta = cell.init_params(rng=0)
    x, h0 = 1e-282 * rng.standard_normal((2, 4, 2)), 1e-282 * rng.standard_normal((2, 3))
    lin = kpref.linearize(cell, theta, x, h0)
    for op in (lin.P, lin.J_theta, lin.K, lin.NTK, lin.P_inv):
        assert dottest(op, rng=1) <= 1e-13


def test_symmetric_residual_is_the_formula_at_moderate_scale():
    rng = np.random.default_rng(3)
    u, w, Au, Aw = (rng.standard_normal(4) for _ in range(4))
    expected = abs(Au @ w - u @ Aw) / (np.linalg.norm(Au) * np.linalg.norm(w) + np.linalg.norm(u) * np.linalg.norm(Aw))
    assert symmetric_residual(u, w, Au, Aw) == pytest.approx(expected, rel=1e-13, abs=0)
    assert symmetric_residual(u, w, 0 * Au, 0 * Aw) == 0.0
    # A u = 0 but Aᴴ w ≠ 0 is not an adjoint pair: residual |⟨û, b̂⟩|, not 0
    assert symmetric_residual(u, w, 0 * Au, Aw) == pytest.approx(abs(u @ Aw) / np.linalg.norm(u) / np.linalg.norm(Aw), rel=1e-14, abs=0)


def test_taylor_test_at_tiny_and_huge_scales():
    """Remainder norms are computed without under/overflow: rate 2 is seen at any scale of f."""
    x = np.linspace(-1, 1, 5)
    dx = np.cos(np.arange(5.0))
    for s in (1e-250, 1.0, 1e250):
        rates = taylor_test(lambda y: s * np.sin(y), x, dx, s * np.cos(x) * dx)
        assert np.all(np.abs(rates[-3:] - 2) <= 0.1)


# ---------------------------------------------------------------- refusals
def test_dottest_refuses_complex_operators():
    A = np.eye(3) + 1j * np.ones((3, 3))
    with pytest.raises(TypeError, match="op: .*complex"):
        dottest(A)
    with pytest.raises(TypeError, match="op: .*complex"):
        dottest(aslinearoperator(A))
    with pytest.raises(TypeError, match="forward: returned complex"):
        dottest_pair(lambda u: A @ u, lambda w: A.conj().T @ w, (3,), (3,), rng=0)
    with pytest.raises(TypeError, match="op: "):
        dottest(np.eye(3, dtype=int))


@pytest.mark.parametrize("rtol", [-1e-13, np.nan, "1e-13", True])
def test_dottest_refuses_a_meaningless_rtol(rtol):
    with pytest.raises((TypeError, ValueError), match="rtol: "):
        dottest(np.eye(3), rtol=rtol)


def test_dottest_refuses_wrong_shapes_and_non_finite_products():
    A = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"forward: returned shape \(2,\), expected \(3,\)"):
        dottest_pair(lambda u: u, lambda w: A.T @ w, (2,), (3,), rng=0)
    with pytest.raises(ValueError, match="adjoint: returned non-finite"):
        dottest_pair(lambda u: A @ u, lambda w: np.full(2, np.nan), (2,), (3,), rng=0)
    with pytest.raises(ValueError, match=r"in_shape\[0\]"):
        dottest_pair(lambda u: A @ u, lambda w: A.T @ w, (0,), (3,), rng=0)
    # a NaN at a later pair is refused too (it used to be skipped by the worst-residual tracking)
    calls = []

    def fwd(u):
        calls.append(1)
        return A @ u if len(calls) < 3 else np.full(3, np.nan)

    with pytest.raises(ValueError, match="forward: returned non-finite"):
        dottest_pair(fwd, lambda w: A.T @ w, (2,), (3,), rng=0, n_pairs=4)


def test_taylor_test_refuses_a_derivative_of_another_shape():
    f = lambda x: np.outer(x, x)
    x, dx = np.ones(3), np.arange(3.0)
    d = np.outer(dx, x) + np.outer(x, dx)
    assert taylor_test(f, x, dx, d).size  # the right shape passes
    with pytest.raises(ValueError, match=r"derivative: expected the shape of f\(x\), \(3, 3\), got shape \(9,\)"):
        taylor_test(f, x, dx, d.ravel())  # used to be reshaped silently
    with pytest.raises(ValueError, match="derivative: "):
        taylor_test(lambda x: np.sum(x**2), x, dx, np.array([2 * x @ dx]))
    with pytest.raises(ValueError, match="h0: "):
        taylor_test(f, x, dx, d, h0=0.0)
    with pytest.raises(ValueError, match="dx: expected a non-zero"):
        taylor_test(f, x, 0 * dx, 0 * d)
    with pytest.raises(ValueError, match="f: .*shape"):
        taylor_test(lambda y: np.outer(y, y) if y[1] == 1.0 else y, x, dx, d)


@pytest.mark.parametrize("h", [0.0, -1e-30, np.nan, np.inf, 1e-3])
def test_complex_step_refuses_a_step_it_cannot_use(h):
    with pytest.raises(ValueError, match="h: "):
        complex_step(np.sin, np.ones(2), np.ones(2), h=h)


def test_complex_step_refuses_a_non_analytic_f():
    x, dx = np.array([0.3, -0.7]), np.ones(2)
    with pytest.raises(TypeError, match="f: returned float64 values for complex input"):
        complex_step(np.abs, x, dx)  # abs of a complex number is real: the imaginary part is gone
    with pytest.raises(ValueError, match="f: the complex step is exactly 0 .* not analytic"):
        complex_step(lambda z: np.real(z) ** 2 + 0j, x, dx)  # Re: a derivative 2x·dx, complex step 0
    # an analytic f that is constant along dx is not refused: its derivative is 0
    assert not complex_step(lambda z: z[0] - z[1] + 0 * z, x, dx).any()


@pytest.mark.parametrize("h", [0.0, -0.1, np.nan])
def test_richardson_refuses_a_zero_or_bad_step(h):
    with pytest.raises(ValueError, match="h: "):
        richardson(np.sin, np.ones(2), np.ones(2), h=h)


def test_richardson_refuses_complex_and_non_finite_values():
    with pytest.raises(TypeError, match="f: .*complex"):
        richardson(lambda y: y + 0j, np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="f: .*non-finite"):
        richardson(lambda y: np.where(y > 1.0, np.inf, y), np.ones(2), np.ones(2))


def test_complex_step_and_richardson_keep_the_shape_of_f():
    x, dx = np.array([0.3, -0.7]), np.array([1.0, 2.0])
    d = complex_step(lambda z: np.sum(np.sin(z)), x, dx)
    assert d.shape == () and d == pytest.approx(np.cos(x) @ dx, rel=1e-15, abs=0)
    est, _ = richardson(lambda y: np.outer(y, y), x, dx)
    assert est.shape == (2, 2)


@pytest.mark.parametrize("floor", [-1e-12, np.nan, "0", True])
def test_taylor_test_refuses_a_meaningless_floor(floor):
    with pytest.raises((TypeError, ValueError), match="floor: "):
        taylor_test(np.sin, np.ones(2), np.ones(2), np.cos(np.ones(2)), floor=floor)


def test_dottest_fails_exactly_above_its_threshold():
    """The verdict is `residual ≤ rtol`: a residual just above rtol fails, at rtol passes (a 10× looser
    check survived mutation testing)."""
    A = np.diag([1.0, 2.0, 3.0])
    B = np.diag([1.0, 2.0, 3.0 + 1e-9])
    r = dottest_pair(lambda u: A @ u, lambda w: B @ w, (3,), (3,), rng=0, rtol=np.inf)
    assert dottest_pair(lambda u: A @ u, lambda w: B @ w, (3,), (3,), rng=0, rtol=r) == r
    with pytest.raises(AssertionError, match="symmetric residual"):
        dottest_pair(lambda u: A @ u, lambda w: B @ w, (3,), (3,), rng=0, rtol=0.999 * r)

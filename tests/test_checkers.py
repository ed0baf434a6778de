"""The checkers of kpref.testing catch wrong answers (a check that cannot fail is a defect)."""

import numpy as np
import pytest

from kpref.testing import complex_step, dottest, dottest_pair, richardson, taylor_test


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
    assert 1e-12 < r < 1e-9


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
    assert np.max(np.abs(est - exact)) < 1e-10
    assert err < 1e-8
    # a coarse, two-level table on a wiggly function reports a large error estimate
    g = lambda x: np.sin(50 * x)
    est, err = richardson(g, x, np.ones(2), h=0.2, levels=2)
    assert err > 1e-2

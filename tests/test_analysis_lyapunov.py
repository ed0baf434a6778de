"""Lyapunov exponents by repeated QR and the Kaplan–Yorke dimension.

Checks: a ``Linear`` cell (``A_t = W``) against ``log|eig(W)|``; the exact identity
``Σ_i λ_i = Σ_t log|det A_t| / (T·dt)`` on nonlinear and ODE cells; an independent
dense QR recursion on the state Jacobians (per unit time for ODE cells)."""

import numpy as np
import pytest

import kpref
from kpref.analysis import kaplan_yorke_dimension, lyapunov_spectrum


def _linear_lin(W, B=2, T=60, seed=0):
    H = W.shape[0]
    cell = kpref.Linear(input_size=1, hidden_size=H)
    params = cell.unflatten(cell.init_params(seed))
    params = {name: np.array(v) for name, v in params.items()}
    params["weight_hh"] = W
    theta = cell.flatten(params)
    x = np.random.default_rng(seed).standard_normal((B, T, 1))
    return kpref.linearize(cell, theta, x)


def test_linear_cell_with_symmetric_W_gives_log_abs_eigenvalues():
    rng = np.random.default_rng(0)
    d = np.array([1.3, -0.9, 0.5, 0.2])
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    lin = _linear_lin((Q * d) @ Q.T, T=80)
    expected = np.sort(np.log(np.abs(d)))[::-1]
    # the frame converges geometrically (gap ratios ≤ 0.69); after 40 transient steps ~ 0.69^40 ≈ 4e-7 of
    # the subspace error remains, and it enters the logs quadratically
    got = lyapunov_spectrum(lin, transient=40)
    assert np.allclose(got, expected, rtol=0, atol=1e-9)
    # without a transient the finite-time error is O(1/T): bounded by (log cond(initial frame)) / T
    assert np.allclose(lyapunov_spectrum(lin), expected, rtol=0, atol=np.log(1e3) / 80)


def test_linear_cell_with_non_normal_W():
    rng = np.random.default_rng(1)
    d = np.array([0.95, 0.6, -0.4])
    V = rng.standard_normal((3, 3)) + 2 * np.eye(3)
    lin = _linear_lin(V @ np.diag(d) @ np.linalg.inv(V), B=1, T=200)
    got = lyapunov_spectrum(lin, transient=100)
    assert np.allclose(got, np.log(np.abs(d)), rtol=0, atol=1e-8)


def test_complex_pair_has_equal_exponents_in_the_limit():
    r, phi = 0.8, 0.7
    W = r * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    W = np.block([[W, np.zeros((2, 1))], [np.zeros((1, 2)), np.array([[0.3]])]])
    lin = _linear_lin(W, B=1, T=50)
    got = lyapunov_spectrum(lin)
    # a rotation-scaling block is normal: every frame grows by exactly r per step
    assert np.allclose(got, [np.log(r), np.log(r), np.log(0.3)], rtol=0, atol=1e-13)


def _dense_qr_exponents(lin, k):
    """Independent reference: QR of dense A_t per trial, Python loops."""
    A = lin.state_jacobians()                  # (B, T, S, S)
    B, T, S = lin.shape
    out = np.zeros((B, k))
    for b in range(B):
        Q = np.eye(S)[:, :k]
        for t in range(T):
            Q, R = np.linalg.qr(A[b, t] @ Q)
            out[b] += np.log(np.abs(np.diag(R)))
    return -np.sort(-out / (T * lin.cell.dt), axis=1)


@pytest.mark.parametrize("make_cell", [
    lambda: kpref.GRU(input_size=2, hidden_size=5),
    lambda: kpref.Elman(input_size=2, hidden_size=5),
    lambda: kpref.RateODE(input_size=2, hidden_size=5, tau=0.5, dt=0.1, method="rk4"),
])
def test_against_dense_qr_and_the_determinant_identity(make_cell):
    cell = make_cell()
    rng = np.random.default_rng(2)
    theta = cell.init_params(rng, g=1.5) if isinstance(cell, kpref.RateODE) else cell.init_params(rng)
    lin = kpref.linearize(cell, theta, rng.standard_normal((3, 30, 2)))
    per_trial = lyapunov_spectrum(lin, per_trial=True)
    assert per_trial.shape == (3, 5)
    assert np.allclose(per_trial, _dense_qr_exponents(lin, 5), rtol=1e-12, atol=1e-12)
    assert np.allclose(lyapunov_spectrum(lin), per_trial.mean(axis=0), rtol=1e-15, atol=1e-15)
    # Σλ = Σ_t log|det A_t| / (T dt), exactly, per trial
    logdet = np.linalg.slogdet(lin.state_jacobians())[1].sum(axis=1) / (30 * cell.dt)
    assert np.allclose(per_trial.sum(axis=1), logdet, rtol=1e-12, atol=1e-12)
    # the k leading exponents do not depend on the directions not followed
    assert np.allclose(lyapunov_spectrum(lin, k=2, per_trial=True),
                       _dense_qr_exponents(lin, 2), rtol=1e-12, atol=1e-12)


def test_ode_exponents_are_per_unit_time():
    rng = np.random.default_rng(3)
    fine = kpref.RateODE(input_size=1, hidden_size=3, tau=1.0, dt=0.05, method="rk4")
    theta = fine.init_params(rng)
    x = np.zeros((1, 200, 1))
    lam = lyapunov_spectrum(kpref.linearize(fine, theta, x), transient=100)
    coarse = kpref.RateODE(input_size=1, hidden_size=3, tau=1.0, dt=0.1, method="rk4")
    lam_coarse = lyapunov_spectrum(kpref.linearize(coarse, theta, np.zeros((1, 100, 1))), transient=50)
    # the same flow over the same 10 time units (the state settles on its fixed point): per-unit-time
    # exponents agree to the integrator's error, per-step ones would differ by a factor 2
    assert np.allclose(lam, lam_coarse, rtol=1e-4, atol=1e-6)


def test_random_frame_is_seeded_and_per_trial_is_sorted():
    rng = np.random.default_rng(4)
    cell = kpref.GRU(input_size=2, hidden_size=4)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((2, 10, 2)))
    a = lyapunov_spectrum(lin, init="random", rng=5)
    b = lyapunov_spectrum(lin, init="random", rng=np.random.default_rng(5))
    assert np.array_equal(a, b)
    per = lyapunov_spectrum(lin, per_trial=True)
    assert np.all(np.diff(per, axis=1) <= 0)


def test_lyapunov_bad_input():
    rng = np.random.default_rng(6)
    cell = kpref.Elman(input_size=1, hidden_size=3)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((1, 4, 1)))
    with pytest.raises(ValueError, match="k: expected at most"):
        lyapunov_spectrum(lin, k=4)
    with pytest.raises(TypeError, match="k"):
        lyapunov_spectrum(lin, k=2.0)
    with pytest.raises(ValueError, match="transient"):
        lyapunov_spectrum(lin, transient=4)
    with pytest.raises(TypeError, match="per_trial"):
        lyapunov_spectrum(lin, per_trial=1)
    with pytest.raises(ValueError, match="rng"):
        lyapunov_spectrum(lin, rng=0)
    with pytest.raises(ValueError, match="init"):
        lyapunov_spectrum(lin, init="qr")
    with pytest.raises(TypeError, match="lin"):
        lyapunov_spectrum(lin.P)


# --------------------------------------------------------------------------------- Kaplan–Yorke


def test_kaplan_yorke_dimension():
    # Lorenz attractor (σ=10, ρ=28, β=8/3): exponents ≈ (0.9056, 0, −14.5723), D_KY ≈ 2.0621
    assert kaplan_yorke_dimension([0.9056, 0.0, -14.5723]) == pytest.approx(2 + 0.9056 / 14.5723, rel=1e-14)
    assert kaplan_yorke_dimension(np.array([-14.5723, 0.9056, 0.0])) == pytest.approx(2.0621, abs=1e-4)
    assert kaplan_yorke_dimension([-0.1, -0.5]) == 0.0
    assert kaplan_yorke_dimension([0.3, 0.1]) == 2.0
    assert kaplan_yorke_dimension([1.0, -0.5, -2.0]) == pytest.approx(2.25, rel=1e-14)
    assert kaplan_yorke_dimension([0.5, -np.inf]) == 1.0
    assert kaplan_yorke_dimension([0.0, -1.0]) == 1.0


def test_kaplan_yorke_bad_input():
    with pytest.raises(TypeError, match="exponents"):
        kaplan_yorke_dimension([1, -2])
    with pytest.raises(TypeError, match="exponents"):
        kaplan_yorke_dimension(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="exponents"):
        kaplan_yorke_dimension([np.nan, -1.0])
    with pytest.raises(ValueError, match="exponents"):
        kaplan_yorke_dimension([np.inf, -1.0])

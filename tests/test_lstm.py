"""LSTM (torch.nn.LSTMCell conventions): step, products, operators, readout, bad input.

torch itself is compared in validation/test_torch_ode_lstm.py; here the step
is held against an independent NumPy transcription of torch's documented
equations, the products against each other (dot tests) and against complex
steps, and the trajectory gradient against a complex step through the whole
unroll.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import kpref
from kpref.testing import complex_step, dottest, dottest_pair
from tests.helpers import rel as _rel


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _numpy_lstm_step(p, hc, x, H, bias=True):
    """torch.nn.LSTMCell's documented equations, gates [i, f, g, o]."""
    h, c = hc[:, :H], hc[:, H:]
    a = x @ p["weight_ih"].T + h @ p["weight_hh"].T
    if bias:
        a = a + p["bias_ih"] + p["bias_hh"]
    i, f, g, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sigmoid(a[:, 3 * H:])
    c2 = f * c + i * g
    return np.concatenate([o * np.tanh(c2), c2], axis=1)


def _setup(n, h, M, seed, bias=True, g=None):
    cell = kpref.LSTM(n, h, bias=bias)
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng, g=g)
    hc = rng.standard_normal((M, 2 * h))
    x = rng.standard_normal((M, n))
    return cell, theta, hc, x, rng


@pytest.mark.parametrize("bias", [True, False])
@given(n=st.integers(1, 3), h=st.integers(1, 4), M=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_step_matches_documented_equations(bias, n, h, M, seed):
    cell, theta, hc, x, _ = _setup(n, h, M, seed, bias)
    out = cell.step(theta, hc, x)
    ref = _numpy_lstm_step(cell.unflatten(theta), hc, x, h, bias)
    assert np.abs(out - ref).max() <= 1e-14 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("bias", [True, False])
@given(n=st.integers(1, 3), h=st.integers(1, 4), M=st.integers(1, 4), k=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_pairs_dot(bias, n, h, M, k, seed):
    cell, theta, hc, x, _ = _setup(n, h, M, seed, bias, g=1.5)
    pt = cell.point(theta, hc, x)
    shape = (k, M, 2 * h)
    dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(pt, W), shape, shape,
                 rng=seed, n_pairs=3, name="A")
    dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(pt, W),
                 (k, cell.num_params), shape, rng=seed, n_pairs=3, name="G")


@given(seed=st.integers(0, 2**31), bias=st.booleans())
def test_tangents_against_complex_step(seed, bias):
    cell, theta, hc, x, rng = _setup(3, 4, 5, seed, bias, g=1.2)
    pt = cell.point(theta, hc, x)
    v = rng.standard_normal(hc.shape)
    d = rng.standard_normal(cell.num_params)
    cs_state = complex_step(lambda h: cell.step(theta, h, x, complex_step=True), hc, v)
    cs_param = complex_step(lambda th: cell.step(th, hc, x, complex_step=True), theta, d)
    assert _rel(cell.state_jvp(pt, v[None])[0], cs_state) <= 1e-12
    assert _rel(cell.param_jvp(pt, d[None])[0], cs_param) <= 1e-12


def test_dense_jacobian_against_complex_step_columns():
    cell, theta, hc, x, _ = _setup(2, 3, 2, 9)
    pt = cell.point(theta, hc, x)
    jac = cell.state_jacobian(pt)
    for j in range(6):
        e = np.zeros_like(hc)
        e[:, j] = 1.0
        col = complex_step(lambda h: cell.step(theta, h, x, complex_step=True), hc, e)
        assert np.abs(jac[:, :, j] - col).max() <= 1e-14


def test_complex_step_catches_a_wrong_tangent(monkeypatch):
    """The complex-step check fails when the tangent drops the forget-gate term f ⊙ δc."""
    cell, theta, hc, x, rng = _setup(3, 4, 5, 0)
    pt = cell.point(theta, hc, x)
    v = rng.standard_normal(hc.shape)
    cs = complex_step(lambda h: cell.step(theta, h, x, complex_step=True), hc, v)
    v_no_c = v.copy()
    v_no_c[:, 4:] = 0.0
    wrong = cell.state_jvp(pt, v_no_c[None])[0]
    assert _rel(wrong, cs) > 1e-3


def test_operators_and_gradient_through_the_unroll():
    cell, theta, _, _, rng = _setup(2, 3, 1, 4, g=1.3)
    B, T = 2, 5
    x = rng.standard_normal((B, T, 2))
    h0 = 0.5 * rng.standard_normal((B, 6))
    lin = kpref.linearize(cell, theta, x, h0)
    for op in (lin.P, lin.J_theta, lin.NTK):
        assert dottest(op, rng=1, n_pairs=3) <= 1e-13
    # readout of h only: e is zero on the c entries, and the gradient matches a complex step of the loss
    w_out = rng.standard_normal((2, 3))
    target = rng.standard_normal((B, T, 2))
    loss = kpref.mse_loss(lin.z, target, w_out, cell=cell)
    assert np.all(loss.e[..., 3:] == 0.0)
    d = rng.standard_normal(cell.num_params)

    def loss_of(th):
        h, total = h0.astype(complex), 0.0
        for t in range(T):
            h = cell.step(th, h, x[:, t].astype(complex), complex_step=True)
            y = h[:, :3] @ w_out.T
            total = total + np.sum((y - target[:, t]) ** 2)
        return total / (B * T * 2)

    cs = complex_step(loss_of, theta, d)
    assert abs(np.dot(lin.grad(loss.e), d) - cs) <= 1e-12 * abs(cs)


def test_layout_and_attributes():
    cell = kpref.LSTM(3, 4)
    assert cell.state_size == 8 and cell.hidden_size == 4 and cell.output_size == 4
    assert dict(cell.param_shapes) == {"weight_ih": (16, 3), "weight_hh": (16, 4), "bias_ih": (16,),
                                       "bias_hh": (16,)}
    assert not cell.continuous and cell.dt == 1.0
    assert list(kpref.LSTM(3, 4, bias=False).param_shapes) == ["weight_ih", "weight_hh"]
    theta = cell.init_params(0)
    assert np.abs(theta).max() <= 0.5                      # U(-1/√H, 1/√H), torch's default
    t1 = cell.init_params(1, g=2.0)
    assert np.array_equal(t1, cell.init_params(1, g=2.0))
    assert np.abs(cell.unflatten(t1)["weight_hh"]).max() > 0.5   # the gain redraws weight_hh
    assert repr(cell) == "LSTM(input_size=3, hidden_size=4, bias=True)"


def test_bad_input():
    with pytest.raises(TypeError, match="bias: expected a bool"):
        kpref.LSTM(2, 3, bias="yes")
    with pytest.raises(ValueError, match="hidden_size: expected an integer >= 1, got 0"):
        kpref.LSTM(2, 0)
    with pytest.raises(TypeError, match="input_size: expected an integer"):
        kpref.LSTM(2.0, 3)
    cell = kpref.LSTM(2, 3)
    theta = cell.init_params(0)
    with pytest.raises(ValueError, match=r"h: expected shape \(\*, 6\) with S=6, got shape \(4, 3\)"):
        cell.step(theta, np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(TypeError, match="x: expected a real floating array, got complex"):
        cell.step(theta, np.zeros((4, 6)), np.zeros((4, 2), complex))
    with pytest.raises(ValueError, match="x: expected finite values"):
        cell.step(theta, np.zeros((4, 6)), np.full((4, 2), np.nan))


@pytest.mark.parametrize("bias", [True, False])
def test_kronecker_sites_reproduce_K(bias):
    """K = Σ_sites D (Gram ⊗ I) Dᵀ for the LSTM, whose D has nonzero h and c rows."""
    cell, theta, _, _, rng = _setup(2, 3, 1, 8, bias, g=1.4)
    x = rng.standard_normal((2, 4, 2))
    h0 = rng.standard_normal((2, 6))
    lin = kpref.linearize(cell, theta, x, h0)
    K = kpref.todense(lin.K)
    assert np.abs(kpref.todense(lin.K_kronecker) - K).max() <= 1e-13 * np.abs(K).max()
    sites = lin.kronecker_factors()
    assert [s.params for s in sites] == ([("weight_ih", "bias_ih"), ("weight_hh", "bias_hh")] if bias
                                         else [("weight_ih",), ("weight_hh",)])
    D = sites[0].D
    assert D.shape == (8, 6, 12)
    assert np.abs(D[:, :3]).max() > 0 and np.abs(D[:, 3:]).max() > 0   # h rows and c rows
    assert np.all(D[:, 3:, 9:] == 0.0)                                  # ∂c'/∂a_o = 0


def test_kronecker_check_catches_a_wrong_site(monkeypatch):
    """Dropping the c rows of D (treating the state as h only) breaks K = Σ D (Gram ⊗ I) Dᵀ."""
    cell, theta, _, _, rng = _setup(2, 3, 1, 8, g=1.4)
    x = rng.standard_normal((2, 4, 2))
    lin = kpref.linearize(cell, theta, x, rng.standard_normal((2, 6)))
    original = cell.weight_sites

    def h_rows_only(pt):
        out = []
        for names, act, D in original(pt):
            D = D.copy()
            D[:, 3:] = 0.0
            out.append((names, act, D))
        return out

    monkeypatch.setattr(cell, "weight_sites", h_rows_only)
    K = kpref.todense(lin.K)
    assert np.abs(kpref.todense(lin.K_kronecker) - K).max() > 1e-3 * np.abs(K).max()

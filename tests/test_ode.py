"""Continuous-time cells: RateODE, user VectorFields through ODECell, the continuous adjoint.

Layers (Diffrax-style):
* dot tests of the field-level pairs (jvp_z/vjp_z, jvp_params/vjp_params) and of
  the whole-step pairs (A, Aᵀ), (G, Gᵀ) for every method, and of P, J_θ;
* tangents against complex-step derivatives of ``step``;
* analytic answers: for a linear field the step Jacobian is the degree-``order``
  Taylor polynomial of ``exp(Δt A)``; Euler RateODE is LeakyRNN;
* the same results by two code paths: RateODE's numba field and a pure-NumPy
  user field of the same equations;
* the continuous adjoint's deviation from the exact discrete gradient falls at
  the method's order (1, 2, 4 ± 0.5) as dt halves;
* every checker is shown to catch a wrong answer.
"""

from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, strategies as st

import kpref
from kpref.testing import complex_step, continuous_adjoint_order, dottest, dottest_pair
from tests.helpers import rel as _rel

METHODS = ["euler", "midpoint", "rk4"]


# ---------------------------------------------------------------- user fields
class NumpyRate(kpref.VectorField):
    """The RateODE field in plain NumPy: f = (−z + W tanh z + U x + b)/τ."""

    recurrent_weights = ("weight_hh",)

    def __init__(self, n, h, tau=1.0):
        self.tau = tau
        self.param_shapes = OrderedDict(weight_hh=(h, h), weight_ih=(h, n), bias=(h,))

    def f(self, z, x, p):
        return (-z + np.tanh(z) @ p["weight_hh"].T + x @ p["weight_ih"].T + p["bias"]) / self.tau

    def jvp_z(self, z, x, p, v):
        return (-v + ((1 - np.tanh(z) ** 2) * v) @ p["weight_hh"].T) / self.tau

    def vjp_z(self, z, x, p, w):
        return (-w + (1 - np.tanh(z) ** 2) * (w @ p["weight_hh"])) / self.tau

    def jvp_params(self, z, x, p, d):
        return (np.tanh(z) @ d["weight_hh"].T + x @ d["weight_ih"].T + d["bias"]) / self.tau

    def vjp_params(self, z, x, p, w):
        u = w / self.tau
        return {"weight_hh": u.T @ np.tanh(z), "weight_ih": u.T @ x, "bias": u.sum(0)}


class LinearField(kpref.VectorField):
    """f = A z + U x (class-attribute param_shapes)."""

    param_shapes = OrderedDict(A=(3, 3), U=(3, 2))

    def f(self, z, x, p):
        return z @ p["A"].T + x @ p["U"].T

    def jvp_z(self, z, x, p, v):
        return v @ p["A"].T

    def vjp_z(self, z, x, p, w):
        return w @ p["A"]

    def jvp_params(self, z, x, p, d):
        return z @ d["A"].T + x @ d["U"].T

    def vjp_params(self, z, x, p, w):
        return {"A": w.T @ z, "U": w.T @ x}


def _problem(cell, B=3, T=5, seed=0, g=1.5):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng, g=g) if g is not None else cell.init_params(rng)
    x = rng.standard_normal((B, T, cell.input_size))
    h0 = 0.5 * rng.standard_normal((B, cell.state_size))
    return theta, x, h0


def _point(cell, seed=0, M=4):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng)
    h = rng.standard_normal((M, cell.state_size))
    x = rng.standard_normal((M, cell.input_size))
    return theta, cell.point(theta, h, x)


def _discrete_gradient(cell, theta, x, h0, e):
    """BPTT written out with the cell's own products: Σ_t G_tᵀ λ_t, λ_t = e_t + A_{t+1}ᵀ λ_{t+1}."""
    z = kpref.simulate(cell, theta, x, h0)
    B, T, S = z.shape
    lam, grad = np.zeros((B, S)), np.zeros(cell.num_params)
    for t in reversed(range(T)):
        pt = cell.point(theta, h0 if t == 0 else z[:, t - 1], x[:, t])
        lam = lam + e[:, t]
        grad += cell.param_vjp(pt, lam[None])[0]
        lam = cell.state_vjp(pt, lam[None])[0]
    return grad, z


# ------------------------------------------------------------- dot tests
@pytest.mark.parametrize("bias", [True, False])
@given(n=st.integers(1, 3), h=st.integers(1, 5), M=st.integers(1, 4), k=st.integers(1, 3),
       seed=st.integers(0, 2**31))
def test_rate_field_pairs_dot(bias, n, h, M, k, seed):
    """Field-level (stage-level) pairs of RateField's batched kernels."""
    cell = kpref.RateODE(n, h, tau=0.7, bias=bias)
    field = cell.field
    rng = np.random.default_rng(seed)
    params = cell.unflatten(cell.init_params(rng, g=1.2))
    z = rng.standard_normal((M, h))
    x = rng.standard_normal((M, n))
    cache = field.prepare_rows(z, x, params)
    dottest_pair(lambda V: field.jvp_z_block(z, x, params, cache, V),
                 lambda W: field.vjp_z_block(z, x, params, cache, W),
                 (k, M, h), (k, M, h), rng=rng, n_pairs=3, name="J")
    slices = cell.param_slices()

    def unpack(d):   # (k, p) → dict name → (k, *shape)
        return {name: d[:, sl].reshape((k,) + cell.param_shapes[name]) for name, sl in slices.items()}

    def pack(blocks):  # dict name → (k, *shape) → (k, p)
        return np.hstack([blocks[name].reshape(k, -1) for name in slices])
    dottest_pair(lambda d: field.jvp_params_block(z, x, params, cache, unpack(d)),
                 lambda W: pack(field.vjp_params_block(z, x, params, cache, W)),
                 (k, cell.num_params), (k, M, h), rng=rng, n_pairs=3, name="Phi")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bias", [True, False])
@given(n=st.integers(1, 3), h=st.integers(1, 5), M=st.integers(1, 4), k=st.integers(1, 3),
       seed=st.integers(0, 2**31), dt=st.floats(0.01, 0.5, allow_nan=False, allow_subnormal=False))
def test_step_pairs_dot(method, bias, n, h, M, k, seed, dt):
    """Whole-step (A, Aᵀ) and (G, Gᵀ): the stage tangents against their reversed transposes."""
    cell = kpref.RateODE(n, h, tau=0.8, dt=dt, method=method, bias=bias)
    theta, pt = _point(cell, seed, M)
    shape = (k, M, h)
    dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(pt, W), shape, shape,
                 rng=seed, n_pairs=3, name=f"{cell!r} A")
    dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(pt, W),
                 (k, cell.num_params), shape, rng=seed, n_pairs=3, name=f"{cell!r} G")


@pytest.mark.parametrize("method", METHODS)
def test_user_field_pairs_dot(method):
    """A NumPy user field: blocks of k > 1 go through tiled rows (z, v) and a loop over directions."""
    cell = kpref.ODECell(NumpyRate(2, 4, tau=0.9), 2, 4, dt=0.2, method=method)
    theta, pt = _point(cell, 3, 5)
    shape = (3, 5, 4)
    dottest_pair(lambda V: cell.state_jvp(pt, V), lambda W: cell.state_vjp(pt, W), shape, shape,
                 rng=1, n_pairs=4)
    dottest_pair(lambda d: cell.param_jvp(pt, d), lambda W: cell.param_vjp(pt, W),
                 (3, cell.num_params), shape, rng=2, n_pairs=4)


@pytest.mark.parametrize("method", METHODS)
def test_operators_dot(method):
    """P and J_θ of kpref.linearize on RateODE, both strategies."""
    cell = kpref.RateODE(2, 4, tau=1.0, dt=0.25, method=method)
    theta, x, h0 = _problem(cell)
    for strategy in ("matrix_free", "materialized"):
        lin = kpref.linearize(cell, theta, x, h0, strategy=strategy)
        assert dottest(lin.P, rng=0, n_pairs=4) <= 1e-13
        assert dottest(lin.J_theta, rng=1, n_pairs=4) <= 1e-13
        assert dottest(lin.NTK, rng=2, n_pairs=2) <= 1e-13


# ------------------------------------------------ tangents vs complex step
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["rate", "user"])
@given(seed=st.integers(0, 2**31))
def test_tangents_against_complex_step(method, kind, seed):
    if kind == "rate":
        cell = kpref.RateODE(3, 4, tau=0.6, dt=0.3, method=method)
    else:
        cell = kpref.ODECell(NumpyRate(3, 4, tau=0.6), 3, 4, dt=0.3, method=method, check=False)
    theta, pt = _point(cell, seed, 3)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(pt.h.shape)
    d = rng.standard_normal(cell.num_params)
    cs_state = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, v)
    cs_param = complex_step(lambda th: cell.step(th, pt.h, pt.x, complex_step=True), theta, d)
    assert _rel(cell.state_jvp(pt, v[None])[0], cs_state) <= 1e-12
    assert _rel(cell.param_jvp(pt, d[None])[0], cs_param) <= 1e-12


def test_complex_step_catches_a_wrong_stage_tangent(monkeypatch):
    """The complex-step check fails when one stage tangent is dropped."""
    cell = kpref.RateODE(3, 4, tau=0.6, dt=0.3, method="rk4")
    theta, pt = _point(cell, 0, 3)
    v = np.random.default_rng(0).standard_normal(pt.h.shape)
    cs = complex_step(lambda h: cell.step(theta, h, pt.x, complex_step=True), pt.h, v)
    original = cell.field.jvp_z_block
    calls = []

    def drop_third(*args):
        calls.append(1)
        out = original(*args)
        return 0.0 * out if len(calls) == 3 else out

    monkeypatch.setattr(cell.field, "jvp_z_block", drop_third)
    assert _rel(cell.state_jvp(pt, v[None])[0], cs) > 1e-6


# ------------------------------------------------------------ analytic
@pytest.mark.parametrize("method", METHODS)
def test_linear_field_jacobian_is_taylor_polynomial(method):
    """f = A z + U x: the step Jacobian is Σ_{n ≤ order} (Δt A)^n / n!, the input map likewise."""
    dt = 0.3
    cell = kpref.ODECell(LinearField(), 2, 3, dt=dt, method=method)
    rng = np.random.default_rng(4)
    theta = cell.init_params(rng)
    A = cell.unflatten(theta)["A"]
    h = rng.standard_normal((2, 3))
    x = rng.standard_normal((2, 2))
    pt = cell.point(theta, h, x)
    poly, term = np.eye(3), np.eye(3)
    for n in range(1, cell.order + 1):
        term = term @ (dt * A) / n
        poly = poly + term
    jac = cell.state_jacobian(pt)
    assert np.abs(jac - poly[None]).max() <= 1e-14
    # F(h) = poly h + Δt Σ_{n<order} (ΔtA)^n/(n+1)! U x
    U = cell.unflatten(theta)["U"]
    phi, term = np.eye(3), np.eye(3)
    for n in range(1, cell.order):
        term = term @ (dt * A) / (n + 1)
        phi = phi + term
    expected = h @ poly.T + dt * (x @ U.T) @ phi.T
    assert np.abs(cell.step(theta, h, x) - expected).max() <= 1e-14


def test_euler_rate_ode_is_leaky_rnn():
    for bias in (True, False):
        ode = kpref.RateODE(3, 5, tau=2.0, dt=0.5, method="euler", bias=bias)
        leaky = kpref.LeakyRNN(3, 5, alpha=0.25, bias=bias)
        assert ode.param_shapes == leaky.param_shapes
        theta, x, h0 = _problem(ode, B=2, T=6)
        z_ode = kpref.simulate(ode, theta, x, h0)
        z_leaky = kpref.simulate(leaky, theta, x, h0)
        assert np.abs(z_ode - z_leaky).max() <= 4e-15 * max(1.0, np.abs(z_leaky).max())
        rng = np.random.default_rng(1)
        pt_o = ode.point(theta, h0, x[:, 0])
        pt_l = leaky.point(theta, h0, x[:, 0])
        V = rng.standard_normal((2, 2, 5))
        d = rng.standard_normal((2, ode.num_params))
        for a, b in [(ode.state_jvp(pt_o, V), leaky.state_jvp(pt_l, V)),
                     (ode.state_vjp(pt_o, V), leaky.state_vjp(pt_l, V)),
                     (ode.param_jvp(pt_o, d), leaky.param_jvp(pt_l, d)),
                     (ode.param_vjp(pt_o, V), leaky.param_vjp(pt_l, V))]:
            assert np.abs(a - b).max() <= 4e-15 * max(1.0, np.abs(b).max())


# ------------------------------------------- two code paths, one answer
@pytest.mark.parametrize("method", METHODS)
def test_user_numpy_field_equals_rate_ode(method):
    rate = kpref.RateODE(2, 4, tau=0.9, dt=0.2, method=method)
    user = kpref.ODECell(NumpyRate(2, 4, tau=0.9), 2, 4, dt=0.2, method=method)
    theta, x, h0 = _problem(rate)
    z = kpref.simulate(rate, theta, x, h0)
    assert _rel(kpref.simulate(user, theta, x, h0), z) <= 1e-14
    rng = np.random.default_rng(2)
    h, xx = z[:, 1], x[:, 2]
    pr, pu = rate.point(theta, h, xx), user.point(theta, h, xx)
    V = rng.standard_normal((3,) + h.shape)
    d = rng.standard_normal((3, rate.num_params))
    assert _rel(user.state_jvp(pu, V), rate.state_jvp(pr, V)) <= 1e-13
    assert _rel(user.state_vjp(pu, V), rate.state_vjp(pr, V)) <= 1e-13
    assert _rel(user.param_jvp(pu, d), rate.param_jvp(pr, d)) <= 1e-13
    assert _rel(user.param_vjp(pu, V), rate.param_vjp(pr, V)) <= 1e-13
    assert _rel(user.state_jacobian(pu), rate.state_jacobian(pr)) <= 1e-13
    e = rng.standard_normal(z.shape)
    assert _rel(user.continuous_adjoint_gradient(theta, x, h0, z, e),
                rate.continuous_adjoint_gradient(theta, x, h0, z, e)) <= 1e-13


@pytest.mark.parametrize("method", METHODS)
def test_linearize_gradients(method):
    """lin.grad (discrete) is BPTT by the cell's products; adjoint='continuous' calls the continuous adjoint."""
    cell = kpref.RateODE(2, 4, tau=1.0, dt=0.2, method=method)
    theta, x, h0 = _problem(cell)
    e = np.random.default_rng(5).standard_normal((3, 5, 4))
    g_disc, z = _discrete_gradient(cell, theta, x, h0, e)
    lin = kpref.linearize(cell, theta, x, h0)
    assert _rel(lin.grad(e), g_disc) <= 1e-13
    lin_c = kpref.linearize(cell, theta, x, h0, adjoint="continuous")
    g_cont = lin_c.grad(e)
    assert np.array_equal(g_cont, cell.continuous_adjoint_gradient(theta, x, h0, z, e))
    # An approximation of the same gradient, not the same numbers: its deviation is O(dt^order). Both are
    # computed to rounding (~T ε κ ≈ 1e-14 here), so the deviation must be far above that (1e-11), and it
    # must fall by 2^order (order ± 0.5 in the exponent, as the order tests) when dt halves on the same
    # continuous problem (input held, loads at the original sample times).
    order, (dev, dev_half) = continuous_adjoint_order(cell, theta, x, h0, e, levels=(1, 2))
    assert dev == pytest.approx(_rel(g_cont, g_disc), rel=1e-9, abs=0) and dev > 1e-11  # the same two gradients
    assert abs(np.log2(dev / dev_half) - cell.order) <= 0.5, (dev, dev_half)


def test_discrete_gradient_against_complex_step():
    """The discrete gradient is the derivative of Σ ⟨e, z(θ)⟩ (complex step through every stage)."""
    cell = kpref.RateODE(2, 3, tau=0.7, dt=0.3, method="rk4")
    theta, x, h0 = _problem(cell, B=2, T=4)
    e = np.random.default_rng(6).standard_normal((2, 4, 3))
    d = np.random.default_rng(7).standard_normal(cell.num_params)

    def loss(th):
        h, total = h0.astype(complex), 0.0
        for t in range(x.shape[1]):
            h = cell.step(th, h, x[:, t].astype(complex), complex_step=True)
            total = total + np.sum(e[:, t] * h)
        return total

    cs = complex_step(loss, theta, d)
    g = kpref.linearize(cell, theta, x, h0).grad(e)
    assert abs(np.dot(g, d) - cs) <= 1e-12 * abs(cs)


# ------------------------------------------------ continuous adjoint order
def _order_of_continuous_adjoint(make_cell, levels=(2, 4, 8), dt0=0.4, adjoint="continuous"):
    """Fitted slope of log‖g_cont − g_disc‖ against log dt, dt = dt0/r, x repeated r times.

    The loads stay at the original sample times (e_ref[:, r(t+1)−1] = e[:, t],
    zero elsewhere), so every refinement represents the same continuous loss.
    """
    rng = np.random.default_rng(11)
    B, T = 2, 4
    probe = make_cell(dt0)
    theta = probe.init_params(np.random.default_rng(0), g=1.5)
    x = rng.standard_normal((B, T, probe.input_size))
    h0 = rng.standard_normal((B, probe.state_size))
    e = rng.standard_normal((B, T, probe.state_size))
    dts, diffs = [], []
    for r in levels:
        cell = make_cell(dt0 / r)
        xr = np.repeat(x, r, axis=1)
        er = np.zeros((B, T * r, cell.state_size))
        er[:, r - 1::r] = e
        g_disc, z = _discrete_gradient(cell, theta, xr, h0, er)
        g_cont = (cell.continuous_adjoint_gradient(theta, xr, h0, z, er) if adjoint == "continuous"
                  else kpref.linearize(cell, theta, xr, h0, adjoint=adjoint).grad(er))
        dts.append(dt0 / r)
        diffs.append(np.linalg.norm(g_cont - g_disc) / np.linalg.norm(g_disc))
    slope = np.polyfit(np.log(dts), np.log(diffs), 1)[0]
    return slope, diffs


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_continuous_adjoint_order(method, order):
    slope, diffs = _order_of_continuous_adjoint(
        lambda dt: kpref.RateODE(2, 3, tau=1.0, dt=dt, method=method))
    assert abs(slope - order) <= 0.5, (slope, diffs)
    assert diffs[-1] > 1e-12    # far above round-off: the slope is measured, not noise


def test_continuous_adjoint_order_user_field():
    slope, _ = _order_of_continuous_adjoint(
        lambda dt: kpref.ODECell(NumpyRate(2, 3), 2, 3, dt=dt, method="rk4", check=False))
    assert abs(slope - 4) <= 0.5


def test_order_check_catches_a_wrong_stage_state():
    """Evaluating the c = 1/2 stages at the step's start instead of its middle breaks RK4's order."""
    class StartNotMiddle(kpref.ode.ContinuousAdjoint):
        def midstep_state(self, cell, params, z_start, x_t):
            return z_start
    slope, _ = _order_of_continuous_adjoint(lambda dt: kpref.RateODE(2, 3, tau=1.0, dt=dt, method="rk4"),
                                            adjoint=StartNotMiddle())
    assert abs(slope - 4) > 0.5


# ------------------------------------------------------- field checking
class _Broken(NumpyRate):
    def __init__(self, which):
        super().__init__(2, 3)
        self.which = which

    def jvp_z(self, z, x, p, v):
        out = super().jvp_z(z, x, p, v)
        return 1.001 * out if self.which == "jvp_z_both" else out

    def vjp_z(self, z, x, p, w):
        out = super().vjp_z(z, x, p, w)
        if self.which == "vjp_z":
            return out + 1e-3 * w
        return 1.001 * out if self.which == "jvp_z_both" else out

    def jvp_params(self, z, x, p, d):
        out = super().jvp_params(z, x, p, d)
        return out - 0.5 * d["bias"] if self.which == "jvp_params_both" else out

    def vjp_params(self, z, x, p, w):
        out = super().vjp_params(z, x, p, w)
        if self.which == "vjp_params":
            out["weight_ih"] = out["weight_ih"].T.copy().reshape(out["weight_ih"].shape) * 1.01
        if self.which == "jvp_params_both":
            out["bias"] = out["bias"] - 0.5 * w.sum(0)
        return out


@pytest.mark.parametrize("which,blamed", [
    ("vjp_z", "vjp_z is not the adjoint of"),
    ("jvp_z_both", "jvp_z is inconsistent with"),
    ("vjp_params", "vjp_params is not the adjoint of"),
    ("jvp_params_both", "jvp_params is inconsistent with"),
])
def test_check_field_names_the_inconsistent_method(which, blamed):
    with pytest.raises(ValueError, match=blamed):
        kpref.ODECell(_Broken(which), 2, 3, dt=0.1, method="rk4")
    cell = kpref.ODECell(_Broken(which), 2, 3, dt=0.1, method="rk4", check=False)
    with pytest.raises(ValueError, match=blamed):
        cell.check_field(rng=5)


def test_check_field_reports_residuals_deterministically():
    cell = kpref.ODECell(NumpyRate(2, 3), 2, 3, dt=0.1, method="midpoint", check=False)
    report = cell.check_field(rng=3)
    assert set(report) == {"f", "jvp_z", "vjp_z", "jvp_params", "vjp_params"}
    assert report["vjp_z"] <= 1e-14 and report["vjp_params"] <= 1e-14
    assert report["jvp_z"] <= 1e-8 and report["jvp_params"] <= 1e-8
    assert cell.check_field(rng=3) == report
    assert kpref.RateODE(2, 3).check_field(rng=3)["vjp_z"] <= 1e-14


# ------------------------------------------------------------ bad input
class _ReturnsWrong(NumpyRate):
    def __init__(self, method, kind):
        super().__init__(2, 3)
        self.bad_method, self.kind = method, kind

    def _spoil(self, name, out):
        if name != self.bad_method:
            return out
        if self.kind == "shape":
            return out[:, :-1]
        if self.kind == "nan":
            out = np.array(out, dtype=float)
            out[0, 0] = np.nan
            return out
        if self.kind == "int":
            return np.zeros(out.shape, dtype=int)
        if self.kind == "complex":
            return out + 0j
        return None

    def f(self, z, x, p):
        return self._spoil("f", super().f(z, x, p))

    def jvp_z(self, z, x, p, v):
        return self._spoil("jvp_z", super().jvp_z(z, x, p, v))

    def vjp_z(self, z, x, p, w):
        return self._spoil("vjp_z", super().vjp_z(z, x, p, w))

    def jvp_params(self, z, x, p, d):
        return self._spoil("jvp_params", super().jvp_params(z, x, p, d))


@pytest.mark.parametrize("method", ["f", "jvp_z", "vjp_z", "jvp_params"])
def test_wrong_return_shape_names_method_and_shapes(method):
    cell = kpref.ODECell(_ReturnsWrong(method, "shape"), 2, 3, dt=0.1, method="rk4", check=False)
    with pytest.raises(ValueError, match=rf"_ReturnsWrong\.{method}: returned an array of shape \(\d+, 2\), "
                                         rf"expected shape \(\d+, 3\)"):
        cell.check_field(rng=0)


@pytest.mark.parametrize("kind,exc,text", [
    ("nan", ValueError, "non-finite"),
    ("int", TypeError, "real floating"),
    ("complex", TypeError, "complex"),
    ("none", TypeError, "None"),
])
def test_wrong_return_values(kind, exc, text):
    cell = kpref.ODECell(_ReturnsWrong("vjp_z", kind), 2, 3, dt=0.1, method="euler", check=False)
    theta, pt = _point(cell, 0, 2)
    with pytest.raises(exc, match=rf"_ReturnsWrong\.vjp_z.*{text}"):
        cell.state_vjp(pt, np.ones((1, 2, 3)))
    # during simulation too
    cell = kpref.ODECell(_ReturnsWrong("f", kind), 2, 3, dt=0.1, method="euler", check=False)
    with pytest.raises(exc, match=rf"_ReturnsWrong\.f"):
        kpref.simulate(cell, theta, np.zeros((1, 2, 2)))


def test_vjp_params_wrong_names_and_shapes():
    class Missing(NumpyRate):
        def vjp_params(self, z, x, p, w):
            out = super().vjp_params(z, x, p, w)
            del out["bias"]
            return out

    class Shape(NumpyRate):
        def vjp_params(self, z, x, p, w):
            out = super().vjp_params(z, x, p, w)
            out["weight_hh"] = out["weight_hh"][:, :1]
            return out

    class NotDict(NumpyRate):
        def vjp_params(self, z, x, p, w):
            return [1.0]

    with pytest.raises(ValueError, match=r"Missing\.vjp_params.*missing \['bias'\]"):
        kpref.ODECell(Missing(2, 3), 2, 3, dt=0.1, method="euler")
    with pytest.raises(ValueError, match=r"Shape\.vjp_params\['weight_hh'\]: returned an array of shape \(3, 1\), "
                                         r"expected shape \(3, 3\)"):
        kpref.ODECell(Shape(2, 3), 2, 3, dt=0.1, method="euler")
    with pytest.raises(TypeError, match=r"NotDict\.vjp_params: expected a dict"):
        kpref.ODECell(NotDict(2, 3), 2, 3, dt=0.1, method="euler")


def test_user_methods_cannot_write_to_their_arguments():
    class Writes(NumpyRate):
        def jvp_z(self, z, x, p, v):
            v *= 2.0
            return super().jvp_z(z, x, p, v)

    class WritesParams(NumpyRate):
        def f(self, z, x, p):
            p["bias"][0] = 1.0
            return super().f(z, x, p)

    with pytest.raises(ValueError, match="read-only"):
        kpref.ODECell(Writes(2, 3), 2, 3, dt=0.1, method="euler")
    with pytest.raises(ValueError, match="read-only"):
        kpref.ODECell(WritesParams(2, 3), 2, 3, dt=0.1, method="euler")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"dt: expected a finite number > 0, got 0.0"):
        kpref.RateODE(2, 3, dt=0.0)
    with pytest.raises(ValueError, match=r"dt: expected a finite number > 0, got -0.1"):
        kpref.ODECell(NumpyRate(2, 3), 2, 3, dt=-0.1, method="euler")
    with pytest.raises(ValueError, match=r"tau: expected a finite number > 0, got -1.0"):
        kpref.RateODE(2, 3, tau=-1.0)
    with pytest.raises(ValueError, match=r"tau: expected a finite number > 0, got 0.0"):
        kpref.RateODE(2, 3, tau=0.0)
    with pytest.raises(ValueError, match=r"method: expected one of 'euler', 'midpoint', 'rk4', got 'rk45'"):
        kpref.RateODE(2, 3, method="rk45")
    with pytest.raises(ValueError, match=r"method: expected one of"):
        kpref.ODECell(NumpyRate(2, 3), 2, 3, 0.1, "heun")
    with pytest.raises(TypeError, match=r"bias: expected a bool"):
        kpref.RateODE(2, 3, bias=1)
    with pytest.raises(TypeError, match=r"field: expected an instance of a kpref.VectorField subclass, got dict"):
        kpref.ODECell({}, 2, 3, 0.1, "euler")

    class NoVjp(kpref.VectorField):
        param_shapes = {"A": (3, 3)}

        def f(self, z, x, p):
            return z

        jvp_z = vjp_z = jvp_params = f

    with pytest.raises(TypeError, match=r"NoVjp does not implement vjp_params"):
        kpref.ODECell(NoVjp(), 2, 3, 0.1, "euler")

    class NoShapes(NumpyRate):
        param_shapes = None

        def __init__(self):
            pass

    with pytest.raises(TypeError, match=r"NoShapes\.param_shapes: expected an ordered mapping"):
        kpref.ODECell(NoShapes(), 2, 3, 0.1, "euler")

    class BadShape(LinearField):
        param_shapes = {"A": (3, 0)}

    with pytest.raises(ValueError, match=r"BadShape\.param_shapes\['A'\]: expected a shape tuple of positive ints"):
        kpref.ODECell(BadShape(), 2, 3, 0.1, "euler")
    with pytest.raises(ValueError, match=r"g: LinearField declares no recurrent_weights"):
        kpref.ODECell(LinearField(), 2, 3, 0.1, "euler").init_params(0, g=1.0)
    with pytest.raises(ValueError, match=r"output_size: expected an integer <= state_size=3, got 4"):
        kpref.ODECell(LinearField(), 2, 3, 0.1, "euler", output_size=4)


def test_continuous_adjoint_bad_input():
    cell = kpref.RateODE(2, 3, dt=0.1, method="rk4")
    theta, x, h0 = _problem(cell, B=2, T=3)
    z = kpref.simulate(cell, theta, x, h0)
    with pytest.raises(ValueError, match=r"e: expected shape"):
        cell.continuous_adjoint_gradient(theta, x, h0, z, np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"z: expected finite values"):
        cell.continuous_adjoint_gradient(theta, x, h0, np.full_like(z, np.inf), np.zeros_like(z))
    with pytest.raises(ValueError, match=r"adjoint: 'continuous' needs an ODE cell"):
        kpref.linearize(kpref.Elman(2, 3), kpref.Elman(2, 3).init_params(0), x, adjoint="continuous")


def test_attributes_and_layout():
    cell = kpref.RateODE(2, 3, tau=2.0, dt=0.5, method="midpoint")
    assert cell.continuous and cell.dt == 0.5 and cell.order == 2 and cell.alpha == 0.25
    assert list(cell.param_shapes) == ["weight_hh", "weight_ih", "bias"]
    assert cell.state_size == cell.hidden_size == cell.output_size == 3
    assert list(kpref.RateODE(2, 3, bias=False).param_shapes) == ["weight_hh", "weight_ih"]
    assert "RateODE(" in repr(cell) and "midpoint" in repr(cell)
    user = kpref.ODECell(LinearField(), 2, 3, 0.1, "rk4", output_size=2)
    assert user.output_size == 2 and user.num_params == 15 and user.order == 4
    t1, t2 = cell.init_params(7, g=1.3), cell.init_params(7, g=1.3)
    assert np.array_equal(t1, t2)


def test_kronecker_factors_refused_for_ode_cells():
    """Parameters enter every stage of an ODE step: no weight sites, and kronecker_factors says so."""
    for cell in (kpref.RateODE(2, 3, dt=0.1, method="rk4"), kpref.ODECell(LinearField(), 2, 3, 0.1, "euler")):
        theta, x, h0 = _problem(cell, B=2, T=3, g=None)
        lin = kpref.linearize(cell, theta, x, h0)
        with pytest.raises(NotImplementedError, match=rf"kronecker_factors: {type(cell).__name__} "):
            lin.kronecker_factors()
        with pytest.raises(NotImplementedError, match=type(cell).__name__):
            lin.K_kronecker

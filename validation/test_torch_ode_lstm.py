"""LSTM and RateODE against PyTorch autograd, float64, one step and whole unrolls.

* ``kpref.LSTM`` against ``torch.nn.LSTMCell`` (called through
  ``torch.func.functional_call`` with kpref's parameters): ``simulate`` to
  1e-12 relative, and the four step products ``A v``, ``Aᵀ w``, ``G δθ``,
  ``Σ_rows Gᵀ w`` against ``torch.func.jvp``/``vjp`` of the cell to 1e-10.
* ``kpref.RateODE`` for Euler, midpoint and RK4 against the same integrator
  written out in torch below (independently of :mod:`kpref.ode._ode`): ``simulate``
  and the four step products to 1e-10 relative (norm-wise).
* the exact discrete gradient ``lin.grad`` against torch's backpropagation
  through the unrolled integrator, and the continuous adjoint's deviation from
  it (a sanity bound: it is an O(dt^order) approximation, not the same numbers).

Relative errors are ``‖kpref − torch‖ / ‖torch‖``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.func import functional_call, jvp, vjp  # noqa: E402

import kpref  # noqa: E402
from tests.helpers import rel as _rel

DT = torch.float64
METHODS = ["euler", "midpoint", "rk4"]


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=DT)


# ----------------------------------------------------------- torch steps
def torch_lstm_step(cell):
    """``step(params, hc, x)`` through ``torch.nn.LSTMCell``; state ``[h, c]``."""
    H = cell.hidden_size
    module = torch.nn.LSTMCell(cell.input_size, H, bias=cell.bias, dtype=DT)

    def step(params, hc, x):
        h2, c2 = functional_call(module, params, (x, (hc[:, :H], hc[:, H:])))
        return torch.cat([h2, c2], dim=1)

    return step


def torch_rate_step(cell):
    """One step of Euler / midpoint / RK4 of ``dz/ds = (−z + W tanh z + U x + b)/τ``, written out."""
    tau, dt, method, bias = cell.tau, cell.dt, cell.method, cell.bias

    def f(p, z, x):
        a = -z + torch.tanh(z) @ p["weight_hh"].T + x @ p["weight_ih"].T
        return (a + p["bias"] if bias else a) / tau

    def step(p, h, x):
        if method == "euler":
            return h + dt * f(p, h, x)
        if method == "midpoint":
            return h + dt * f(p, h + 0.5 * dt * f(p, h, x), x)
        k1 = f(p, h, x)
        k2 = f(p, h + 0.5 * dt * k1, x)
        k3 = f(p, h + 0.5 * dt * k2, x)
        k4 = f(p, h + dt * k3, x)
        return h + dt * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0

    return step


def _param_dict(cell, theta_t):
    return {name: theta_t[sl].reshape(cell.param_shapes[name]) for name, sl in cell.param_slices().items()}


def _unroll(step, cell, theta_t, x_t, h0_t):
    params = _param_dict(cell, theta_t)
    h, out = h0_t, []
    for t in range(x_t.shape[1]):
        h = step(params, h, x_t[:, t])
        out.append(h)
    return torch.stack(out, dim=1)


def _cells():
    out = [(f"lstm-bias={b}", kpref.LSTM(3, 4, bias=b), torch_lstm_step) for b in (True, False)]
    for m in METHODS:
        for b in (True, False):
            out.append((f"rate-{m}-bias={b}", kpref.RateODE(3, 4, tau=0.7, dt=0.3, method=m, bias=b),
                        torch_rate_step))
    return out


CELLS = _cells()
IDS = [c[0] for c in CELLS]


def _problem(cell, seed=0, B=3, T=6):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng, g=1.5)
    x = rng.standard_normal((B, T, cell.input_size))
    h0 = 0.5 * rng.standard_normal((B, cell.state_size))
    return theta, x, h0, rng


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("name,cell,make_step", CELLS, ids=IDS)
def test_simulate_matches_torch_unroll(name, cell, make_step):
    theta, x, h0, _ = _problem(cell)
    with torch.no_grad():
        ref = _unroll(make_step(cell), cell, _t(theta), _t(x), _t(h0)).numpy()
    err = _rel(kpref.simulate(cell, theta, x, h0), ref)
    assert err <= 1e-12, err


@pytest.mark.parametrize("name,cell,make_step", CELLS, ids=IDS)
def test_step_products_match_torch_func(name, cell, make_step):
    """A v, Aᵀ w, G δθ and Σ_rows Gᵀ w at M rows, for a block of k = 2 vectors, against jvp/vjp."""
    theta, x, h0, rng = _problem(cell, seed=1)
    M, S, k = 5, cell.state_size, 2
    h = rng.standard_normal((M, S))
    xr = rng.standard_normal((M, cell.input_size))
    V = rng.standard_normal((k, M, S))
    W = rng.standard_normal((k, M, S))
    D = rng.standard_normal((k, cell.num_params))
    pt = cell.point(theta, h, xr)
    step = make_step(cell)
    th, ht, xt = _t(theta), _t(h), _t(xr)
    params = _param_dict(cell, th)

    def of_h(hh):
        return step(params, hh, xt)

    def of_theta(tt):
        return step(_param_dict(cell, tt), ht, xt)

    _, pull_h = vjp(of_h, ht)
    _, pull_theta = vjp(of_theta, th)
    for j in range(k):
        ref = {
            "A v": jvp(of_h, (ht,), (_t(V[j]),))[1].numpy(),
            "A^T w": pull_h(_t(W[j]))[0].numpy(),
            "G dtheta": jvp(of_theta, (th,), (_t(D[j]),))[1].numpy(),
            "G^T w": pull_theta(_t(W[j]))[0].numpy(),
        }
        got = {
            "A v": cell.state_jvp(pt, V)[j],
            "A^T w": cell.state_vjp(pt, W)[j],
            "G dtheta": cell.param_jvp(pt, D)[j],
            "G^T w": cell.param_vjp(pt, W)[j],
        }
        for key in ref:
            err = _rel(got[key], ref[key])
            assert err <= 1e-10, (key, err)


@pytest.mark.parametrize("method", METHODS)
def test_discrete_gradient_is_torch_backprop_and_continuous_is_close(method):
    """lin.grad = torch's BPTT through the unrolled integrator; the continuous adjoint is O(dt^order) away."""
    cell = kpref.RateODE(3, 4, tau=1.0, dt=0.1, method=method)
    theta, x, h0, rng = _problem(cell, seed=2, T=8)
    e = rng.standard_normal((3, 8, 4))
    step = torch_rate_step(cell)
    _, pull = vjp(lambda tt: _unroll(step, cell, tt, _t(x), _t(h0)), _t(theta))
    ref = pull(_t(e))[0].numpy()
    g_disc = kpref.linearize(cell, theta, x, h0).grad(e)
    assert _rel(g_disc, ref) <= 1e-10
    g_cont = kpref.linearize(cell, theta, x, h0, adjoint="continuous").grad(e)
    bound = {"euler": 0.2, "midpoint": 2e-2, "rk4": 1e-4}[method]
    assert 0.0 < _rel(g_cont, ref) <= bound


def test_torch_comparison_catches_a_wrong_gate_order():
    """Reading torch's gate rows as [i, g, f, o] instead of [i, f, g, o] is caught by the simulate check."""
    cell = kpref.LSTM(3, 4)
    theta, x, h0, _ = _problem(cell)
    H = cell.hidden_size
    swapped = cell.params_to_torch(theta)
    for key in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        blocks = swapped[key].reshape(4, H, -1)
        swapped[key] = blocks[[0, 2, 1, 3]].reshape(swapped[key].shape)
    with torch.no_grad():
        ref = _unroll(torch_lstm_step(cell), cell, _t(cell.flatten(swapped)), _t(x), _t(h0)).numpy()
    assert _rel(kpref.simulate(cell, theta, x, h0), ref) > 1e-3

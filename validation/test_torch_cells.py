"""Every built-in cell and its trajectory operators against PyTorch, float64.

1. ``kpref.simulate`` of Elman (tanh, relu), GRU and LSTM against
   ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell`` unrolled, and against the
   sequence modules ``torch.nn.RNN``/``GRU``/``LSTM`` (``batch_first``) loaded
   with ``cell.params_to_torch(theta, suffix="_l0")``: ≤ 1e-12 relative,
   with a nonzero ``h0``, with and without bias.
2. For Elman (tanh), GRU, LSTM, LeakyRNN, Linear and RateODE (each method):
   ``P q``, ``P* w``, ``J_θ δθ``, ``J_θᵀ w`` and ``lin.grad(e)`` of
   :func:`kpref.linearize` against ``torch.func.jvp``/``vjp`` of a float64
   torch unroll, ≤ 1e-10 relative. In torch:

   * ``P q``: the jvp in ``q`` at ``q = 0`` of the trajectory of
     ``h_t = F(h_{t-1}, x_t) + q_t`` (its tangent is ``v_t = A_t v_{t-1} + q_t``);
     ``P* w`` the vjp of the same map;
   * ``J_θ``: jvp/vjp in ``θ`` of ``F(h_{t-1}, x_t; θ)`` on all (trial, step)
     rows at once, ``h_{t-1}`` taken from the *detached* trajectory (the
     immediate Jacobian ``G_t`` of SPEC §3);
   * ``grad(e)``: the vjp in ``θ`` of the whole trajectory (backpropagation
     through time).

The torch steps below are written here (Elman/GRU/LSTM through the torch
cells themselves via ``functional_call``; LeakyRNN, Linear and the RateODE
integrators written out), independently of kpref's kernels. Relative errors are
norm-wise: ``‖kpref − torch‖ / ‖torch‖``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.func import functional_call, jvp, vjp  # noqa: E402

import kpref  # noqa: E402
from tests.helpers import rel as _rel

DT = torch.float64


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=DT)


# ------------------------------------------------------------ torch steps
def torch_step(cell):
    """``step(params, h, x) -> h'`` in torch, rows batched, params keyed by kpref names."""
    N, H = cell.input_size, cell.hidden_size
    if isinstance(cell, kpref.Elman):
        module = torch.nn.RNNCell(N, H, bias=cell.bias, nonlinearity=cell.nonlinearity, dtype=DT)
        return lambda p, h, x: functional_call(module, p, (x, h))
    if isinstance(cell, kpref.GRU):
        module = torch.nn.GRUCell(N, H, bias=cell.bias, dtype=DT)
        return lambda p, h, x: functional_call(module, p, (x, h))
    if isinstance(cell, kpref.LSTM):
        module = torch.nn.LSTMCell(N, H, bias=cell.bias, dtype=DT)

        def lstm(p, hc, x):
            h2, c2 = functional_call(module, p, (x, (hc[:, :H], hc[:, H:])))
            return torch.cat([h2, c2], dim=1)
        return lstm

    def affine(p, phi_h, x):
        a = phi_h @ p["weight_hh"].T + x @ p["weight_ih"].T
        return a + p["bias"] if "bias" in p else a

    if isinstance(cell, kpref.LeakyRNN):
        alpha = cell.alpha
        return lambda p, h, x: (1.0 - alpha) * h + alpha * affine(p, torch.tanh(h), x)
    if isinstance(cell, kpref.Linear):
        return lambda p, h, x: affine(p, h, x)
    if isinstance(cell, kpref.RateODE):
        tau, dt, method = cell.tau, cell.dt, cell.method

        def f(p, z, x):
            return (affine(p, torch.tanh(z), x) - z) / tau

        def rate(p, h, x):
            if method == "euler":
                return h + dt * f(p, h, x)
            if method == "midpoint":
                return h + dt * f(p, h + 0.5 * dt * f(p, h, x), x)
            k1 = f(p, h, x)
            k2 = f(p, h + 0.5 * dt * k1, x)
            k3 = f(p, h + 0.5 * dt * k2, x)
            k4 = f(p, h + dt * k3, x)
            return h + dt * (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0
        return rate
    raise NotImplementedError(repr(cell))


class TorchUnroll:
    """The trajectory operators of ``(cell, theta, x, h0)`` by torch.func (see the module notes)."""

    def __init__(self, cell, theta, x, h0):
        self.cell = cell
        self.step = torch_step(cell)
        self.theta, self.x, self.h0 = _t(theta), _t(x), _t(h0)
        B, T, _ = x.shape
        self.shape = (B, T, cell.state_size)
        with torch.no_grad():
            z = self.trajectory(self.theta, torch.zeros(self.shape, dtype=DT))
        h_prev = torch.cat([self.h0[:, None], z[:, :-1]], dim=1).detach()
        self.h_rows = h_prev.reshape(B * T, -1)
        self.x_rows = self.x.reshape(B * T, -1)
        self.z = z.numpy()

    def params(self, theta):
        return {n: theta[sl].reshape(self.cell.param_shapes[n]) for n, sl in self.cell.param_slices().items()}

    def trajectory(self, theta, q):
        p, h, out = self.params(theta), self.h0, []
        for t in range(self.shape[1]):
            h = self.step(p, h, self.x[:, t]) + q[:, t]
            out.append(h)
        return torch.stack(out, dim=1)

    def immediate(self, theta):
        return self.step(self.params(theta), self.h_rows, self.x_rows).reshape(self.shape)

    def P(self, q):
        zero = torch.zeros(self.shape, dtype=DT)
        return jvp(lambda qq: self.trajectory(self.theta, qq), (zero,), (_t(q),))[1].numpy()

    def P_adjoint(self, w):
        _, pull = vjp(lambda qq: self.trajectory(self.theta, qq), torch.zeros(self.shape, dtype=DT))
        return pull(_t(w))[0].numpy()

    def J(self, d):
        return jvp(self.immediate, (self.theta,), (_t(d),))[1].numpy()

    def J_adjoint(self, w):
        return vjp(self.immediate, self.theta)[1](_t(w))[0].numpy()

    def grad(self, e):
        zero = torch.zeros(self.shape, dtype=DT)
        return vjp(lambda th: self.trajectory(th, zero), self.theta)[1](_t(e))[0].numpy()


def _problem(cell, seed, B=3, T=5):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng, g=1.3)
    x = rng.standard_normal((B, T, cell.input_size))
    h0 = 0.5 * rng.standard_normal((B, cell.state_size))
    return theta, x, h0, rng


# --------------------------------------------- 1. simulate vs torch.nn
TORCH_CELLS = [
    ("elman-tanh", lambda b: kpref.Elman(3, 4, "tanh", bias=b)),
    ("elman-relu", lambda b: kpref.Elman(3, 4, "relu", bias=b)),
    ("gru", lambda b: kpref.GRU(3, 4, bias=b)),
    ("lstm", lambda b: kpref.LSTM(3, 4, bias=b)),
]


def _sequence_module(cell):
    N, H = cell.input_size, cell.hidden_size
    if isinstance(cell, kpref.Elman):
        module = torch.nn.RNN(N, H, nonlinearity=cell.nonlinearity, bias=cell.bias, batch_first=True)
    elif isinstance(cell, kpref.GRU):
        module = torch.nn.GRU(N, H, bias=cell.bias, batch_first=True)
    else:
        module = torch.nn.LSTM(N, H, bias=cell.bias, batch_first=True)
    return module.to(DT)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name,make", TORCH_CELLS, ids=[c[0] for c in TORCH_CELLS])
def test_simulate_matches_torch_cells_and_sequence_modules(name, make, bias):
    cell = make(bias)
    theta, x, h0, _ = _problem(cell, seed=3, T=7)
    z = kpref.simulate(cell, theta, x, h0)
    H = cell.hidden_size
    # the torch cell unrolled, parameters loaded by name (no suffix)
    torch_cell = {kpref.Elman: torch.nn.RNNCell, kpref.GRU: torch.nn.GRUCell, kpref.LSTM: torch.nn.LSTMCell}
    kwargs = {"nonlinearity": cell.nonlinearity} if isinstance(cell, kpref.Elman) else {}
    module = torch_cell[type(cell)](3, H, bias=bias, **kwargs).to(DT)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cell.params_to_torch(theta).items()})
    with torch.no_grad():
        h, out = _t(h0), []
        for t in range(x.shape[1]):
            if isinstance(cell, kpref.LSTM):
                h = torch.cat(module(_t(x[:, t]), (h[:, :H], h[:, H:])), dim=1)
            else:
                h = module(_t(x[:, t]), h)
            out.append(h)
        ref_cell = torch.stack(out, dim=1).numpy()
    assert _rel(z, ref_cell) <= 1e-12
    # the sequence module (one layer, batch_first), loaded with the '_l0' suffix
    seq = _sequence_module(cell)
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in cell.params_to_torch(theta, suffix="_l0").items()})
    with torch.no_grad():
        if isinstance(cell, kpref.LSTM):
            y, (h_n, c_n) = seq(_t(x), (_t(h0[None, :, :H]), _t(h0[None, :, H:])))
            assert _rel(z[:, -1, H:], c_n[0].numpy()) <= 1e-12     # the cell state is only returned at the end
        else:
            y, h_n = seq(_t(x), _t(h0[None]))
    assert _rel(z[..., :H], y.numpy()) <= 1e-12
    assert _rel(z[:, -1, :H], h_n[0].numpy()) <= 1e-12


def test_sequence_comparison_catches_swapped_gru_blocks():
    """Loading GRU rows [z; r; n] instead of torch's [r; z; n] is caught (the check can fail)."""
    cell = kpref.GRU(3, 4)
    theta, x, h0, _ = _problem(cell, seed=3, T=7)
    sd = cell.params_to_torch(theta, suffix="_l0")
    for k in sd:
        sd[k] = sd[k].reshape(3, 4, -1)[[1, 0, 2]].reshape(sd[k].shape)
    seq = _sequence_module(cell)
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    with torch.no_grad():
        y, _ = seq(_t(x), _t(h0[None]))
    assert _rel(kpref.simulate(cell, theta, x, h0), y.numpy()) > 1e-3


# ----------------------------------------------- 2. operators vs torch.func
OPERATOR_CELLS = [
    ("elman-tanh", lambda: kpref.Elman(3, 4, "tanh")),
    ("gru", lambda: kpref.GRU(3, 4)),
    ("lstm", lambda: kpref.LSTM(3, 4)),
    ("leaky", lambda: kpref.LeakyRNN(3, 4, alpha=0.3)),
    ("linear", lambda: kpref.Linear(3, 4)),
    ("linear-nobias", lambda: kpref.Linear(3, 4, bias=False)),
] + [(f"rate-{m}", (lambda m=m: kpref.RateODE(3, 4, tau=0.8, dt=0.25, method=m))) for m in ("euler", "midpoint", "rk4")]


@pytest.mark.parametrize("name,make", OPERATOR_CELLS, ids=[c[0] for c in OPERATOR_CELLS])
def test_operators_match_torch_func(name, make):
    cell = make()
    theta, x, h0, rng = _problem(cell, seed=4)
    if isinstance(cell, kpref.Linear):
        theta = cell.init_params(rng, g=0.9)      # keep the linear recurrence from growing
    lin = kpref.linearize(cell, theta, x, h0)
    ref = TorchUnroll(cell, theta, x, h0)
    assert _rel(lin.z, ref.z) <= 1e-12
    shape = lin.shape
    q, w, e = (rng.standard_normal(shape) for _ in range(3))
    d = rng.standard_normal(cell.num_params)
    errors = {
        "P q": _rel(lin.P.matvec(q.ravel()), ref.P(q).ravel()),
        "P* w": _rel(lin.P.rmatvec(w.ravel()), ref.P_adjoint(w).ravel()),
        "J_theta d": _rel(lin.J_theta.matvec(d), ref.J(d).ravel()),
        "J_theta^T w": _rel(lin.J_theta.rmatvec(w.ravel()), ref.J_adjoint(w)),
        "grad(e)": _rel(lin.grad(e), ref.grad(e)),
    }
    assert max(errors.values()) <= 1e-10, errors


def test_operator_comparison_catches_a_non_immediate_J():
    """Comparing J_θ with the *total* sensitivity P J_θ (h_{t-1} not held fixed) fails: the check is sharp."""
    cell = kpref.GRU(3, 4)
    theta, x, h0, rng = _problem(cell, seed=4)
    lin = kpref.linearize(cell, theta, x, h0)
    ref = TorchUnroll(cell, theta, x, h0)
    d = rng.standard_normal(cell.num_params)
    total = jvp(lambda th: ref.trajectory(th, torch.zeros(ref.shape, dtype=DT)), (ref.theta,), (_t(d),))[1]
    assert _rel(lin.J_theta.matvec(d), total.numpy().ravel()) > 1e-3
    assert _rel(lin.P.matvec(lin.J_theta.matvec(d)), total.numpy().ravel()) <= 1e-10

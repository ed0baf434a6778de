r"""The rate network ODE ``dz/ds = (−z + W tanh(z) + U x + b)/τ`` as a kpref cell.

:class:`RateODE` is an :class:`~kpref.ode.ODECell` whose field is the
numba-batched :class:`RateField`; it shares the integrator code (stages,
their tangents and adjoints, the continuous adjoint) with every user field.

Notes
-----
Field (per row; ``W = weight_hh`` (H, H), ``U = weight_ih`` (H, N),
``b = bias`` (H), ``τ > 0``)::

    f(z) = (−z + W tanh(z) + U x + b) / τ

With ``d = 1 − tanh²(z)``:

Field state tangent / adjoint::

    J v  = (−v + W (d ⊙ v)) / τ
    Jᵀ w = (−w + d ⊙ (Wᵀ w)) / τ

Field parameter tangent / adjoint (``u = w / τ``)::

    Φ δθ = (δW tanh(z) + δU x + δb) / τ
    δW = Σ_m u_m tanh(z_m)ᵀ,   δU = Σ_m u_m x_mᵀ,   δb = Σ_m u_m

The stage equations of Euler, midpoint and RK4 built on these are in
:mod:`kpref.ode._stepper`. Euler with ``dt/τ = α`` gives
``h' = h + α (−h + W tanh(h) + U x + b) = (1 − α) h + α (W tanh(h) + U x + b)``,
which is :class:`kpref.LeakyRNN` with the same parameters (equal to rounding).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._checks import check_bool, check_positive_float, check_positive_int, check_size_memory
from .._jit import njit
from ..cells._leaky import _tanh_prepare
from ._field import VectorField
from ._ode import ODECell

__all__ = ["RateField", "RateODE"]


@njit
def _rate_f(w_hh, w_ih, b, tau, z, x):
    R, H = z.shape
    a = np.dot(np.tanh(z), w_hh.T) + np.dot(x, w_ih.T)
    out = np.empty_like(a)
    for m in range(R):
        for i in range(H):
            out[m, i] = (a[m, i] + b[i] - z[m, i]) / tau
    return out


@njit
def _rate_jvp_z(w_hh, d, tau, V):
    k, R, H = V.shape
    g = np.empty((k * R, H))
    for j in range(k):
        for m in range(R):
            for i in range(H):
                g[j * R + m, i] = d[m, i] * V[j, m, i]
    Y = np.dot(g, w_hh.T)                                  # W (d ⊙ v), all k·R vectors in one GEMM
    out = np.empty((k, R, H))
    for j in range(k):
        for m in range(R):
            for i in range(H):
                out[j, m, i] = (Y[j * R + m, i] - V[j, m, i]) / tau
    return out


@njit
def _rate_vjp_z(w_hh, d, tau, W):
    k, R, H = W.shape
    Y = np.dot(W.reshape((k * R, H)), w_hh)                # transposes: W (d ⊙ v)  (the W part)
    out = np.empty((k, R, H))
    for j in range(k):
        for m in range(R):
            for i in range(H):
                # transposes: (−v + W (d ⊙ v)) / τ  (d ⊙ and −v parts)
                out[j, m, i] = (d[m, i] * Y[j * R + m, i] - W[j, m, i]) / tau
    return out


@njit
def _rate_jvp_params(tz, x, dw_hh, dw_ih, db, tau):
    k = dw_hh.shape[0]
    R, H = tz.shape
    out = np.empty((k, R, H))
    for j in range(k):
        a = np.dot(tz, dw_hh[j].T) + np.dot(x, dw_ih[j].T)
        for m in range(R):
            for i in range(H):
                out[j, m, i] = (a[m, i] + db[j, i]) / tau
    return out


@njit
def _rate_vjp_params(tz, x, W, tau):
    k, R, H = W.shape
    N = x.shape[1]
    dw_hh = np.empty((k, H, H))
    dw_ih = np.empty((k, H, N))
    db = np.zeros((k, H))
    u = np.empty((R, H))
    for j in range(k):
        for m in range(R):
            for i in range(H):
                u[m, i] = W[j, m, i] / tau                 # transposes: (…) / τ
                db[j, i] += u[m, i]                        # transposes: + δb
        dw_hh[j] = np.dot(u.T, tz)                         # transposes: δW tanh(z)
        dw_ih[j] = np.dot(u.T, x)                          # transposes: δU x
    return dw_hh, dw_ih, db


class RateField(VectorField):
    """``f(z) = (−z + W tanh(z) + U x + b)/τ`` with numba-batched products.

    Parameters ``weight_hh`` (H, H), ``weight_ih`` (H, N) and, with
    ``bias=True``, ``bias`` (H). Equations in :mod:`kpref.ode._rate`.
    """

    recurrent_weights = ("weight_hh",)
    analytic = True

    def __init__(self, input_size, hidden_size, tau=1.0, bias=True):
        N = check_positive_int("input_size", input_size)
        H = check_positive_int("hidden_size", hidden_size)
        # the parameters alone must fit, as for a cell (a RateODE built on this field checks them again)
        check_size_memory(f"input_size={N}, hidden_size={H}", 8 * (H * H + H * N + H),
                          what=f"the parameters of RateField (p={H * H + H * N + H})")
        self.tau = check_positive_float("tau", tau)
        bias = check_bool("bias", bias)
        self.bias = bool(bias)
        shapes = OrderedDict(weight_hh=(H, H), weight_ih=(H, N))
        if self.bias:
            shapes["bias"] = (H,)
        self.param_shapes = shapes

    def _weights(self, params):
        w_hh = np.ascontiguousarray(params["weight_hh"])
        b = params["bias"] if self.bias else np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
        return w_hh, np.ascontiguousarray(params["weight_ih"]), np.ascontiguousarray(b)

    def _direction_block(self, dparams, k, H):
        db = dparams["bias"] if self.bias else np.zeros((k, H))
        return (np.ascontiguousarray(dparams["weight_hh"], dtype=np.float64),
                np.ascontiguousarray(dparams["weight_ih"], dtype=np.float64),
                np.ascontiguousarray(db, dtype=np.float64))

    # ---- block hooks (what ODECell calls)
    def prepare_rows(self, z, x, params):
        return _tanh_prepare(np.ascontiguousarray(z))   # (tanh z, d = 1 − tanh² z)

    def f_rows(self, z, x, params):
        w_hh, w_ih, b = self._weights(params)
        dtype = np.result_type(z, x, w_hh)
        return _rate_f(*(np.ascontiguousarray(a, dtype=dtype) for a in (w_hh, w_ih, b, )), self.tau,
                       np.ascontiguousarray(z, dtype=dtype), np.ascontiguousarray(x, dtype=dtype))

    def jvp_z_block(self, z, x, params, cache, V):
        return _rate_jvp_z(self._weights(params)[0], cache[1], self.tau, np.ascontiguousarray(V))

    def vjp_z_block(self, z, x, params, cache, W):
        return _rate_vjp_z(self._weights(params)[0], cache[1], self.tau, np.ascontiguousarray(W))

    def jvp_params_block(self, z, x, params, cache, dparams):
        k = dparams["weight_hh"].shape[0]
        return _rate_jvp_params(cache[0], np.ascontiguousarray(x), *self._direction_block(dparams, k, z.shape[1]),
                                self.tau)

    def vjp_params_block(self, z, x, params, cache, W):
        dw_hh, dw_ih, db = _rate_vjp_params(cache[0], np.ascontiguousarray(x), np.ascontiguousarray(W), self.tau)
        out = OrderedDict(weight_hh=dw_hh, weight_ih=dw_ih)
        if self.bias:
            out["bias"] = db
        return out

    # ---- the public VectorField methods (one direction), through the same kernels
    def f(self, z, x, params):
        return self.f_rows(np.asarray(z), np.asarray(x), params)

    def jvp_z(self, z, x, params, v):
        return self.jvp_z_block(z, x, params, self.prepare_rows(z, x, params), np.asarray(v)[None])[0]

    def vjp_z(self, z, x, params, w):
        return self.vjp_z_block(z, x, params, self.prepare_rows(z, x, params), np.asarray(w)[None])[0]

    def jvp_params(self, z, x, params, dparams):
        block = {name: np.asarray(d)[None] for name, d in dparams.items()}
        return self.jvp_params_block(z, x, params, self.prepare_rows(z, x, params), block)[0]

    def vjp_params(self, z, x, params, w):
        got = self.vjp_params_block(z, x, params, self.prepare_rows(z, x, params), np.asarray(w)[None])
        return OrderedDict((name, g[0]) for name, g in got.items())


class RateODE(ODECell):
    """Rate network ``dz/ds = (−z + W tanh(z) + U x + b)/τ``, one integrator step per input sample.

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H`` (the state size is ``H``).
    tau : float, default 1.0
        Time constant (> 0).
    dt : float, default 0.1
        Integrator step (> 0): the time one input sample lasts.
    method : {'euler', 'midpoint', 'rk4'}, default 'euler'
    bias : bool, default True
        ``False`` removes ``bias``.

    Notes
    -----
    Parameters as :class:`kpref.LeakyRNN`: ``weight_hh`` (H, H),
    ``weight_ih`` (H, N), ``bias`` (H). ``F`` is one whole integrator step
    with the exact discrete tangent and adjoint (stage equations in
    :mod:`kpref.ode._stepper`, field derivatives in :mod:`kpref.ode._rate`). With
    ``method='euler'`` and ``dt/τ = α`` the cell is ``LeakyRNN(alpha=α)``.
    The continuous adjoint is ``linearize(..., adjoint='continuous')``
    (:class:`~kpref.ode.ContinuousAdjoint`).
    """

    def __init__(self, input_size, hidden_size, tau=1.0, dt=0.1, method="euler", bias=True):
        field = RateField(input_size, hidden_size, tau, bias)
        super().__init__(field, input_size, hidden_size, dt, method, check=False)
        self.tau = field.tau
        self.bias = field.bias

    @property
    def alpha(self):
        """``dt / τ``: the leak of the equivalent Euler step."""
        return self.dt / self.tau

    def __repr__(self):
        return (f"RateODE(input_size={self.input_size}, hidden_size={self.hidden_size}, tau={self.tau}, "
                f"dt={self.dt}, method={self.method!r}, bias={self.bias})")

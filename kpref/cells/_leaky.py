r"""Leaky tanh RNN and linear RNN cells with hand-derived tangents and adjoints.

Notes
-----
Symbols as in SPEC §2–3, per row ``m``; ``W = weight_hh`` (H, H),
``U = weight_ih`` (H, N), ``b = bias`` (H), ``α ∈ (0, 1]``, ``φ = tanh``.

LeakyRNN
~~~~~~~~
Forward step::

    h' = (1 − α) h + α (W φ(h) + U x + b)

With ``d = φ'(h) = 1 − tanh²(h)`` (computed once per row):

State tangent (``A v``)::

    A v = (1 − α) v + α W (d ⊙ v)

State adjoint (``Aᵀ w``)::

    Aᵀ w = (1 − α) w + α d ⊙ (Wᵀ w)

Parameter tangent (``G δθ``, ``h`` fixed)::

    G δθ = α (δW φ(h) + δU x + δb)

Parameter adjoint (``Σ_rows Gᵀ w``, with ``g = α w``)::

    δW = Σ_m g_m φ(h_m)ᵀ,   δU = Σ_m g_m x_mᵀ,   δb = Σ_m g_m

Dense Jacobian: ``A = (1 − α) I + α W diag(d)``.

With ``α = 1`` the leak term is skipped (it is exactly zero), so
``LeakyRNN(alpha=1)`` computes ``h' = W tanh(h) + U x + b``, operation for
operation.

Linear
~~~~~~
Forward step, tangents and adjoints (the above with ``α = 1`` and ``φ`` the
identity)::

    h'   = W h + U x + b
    A v  = W v,          Aᵀ w = Wᵀ w
    G δθ = δW h + δU x + δb
    δW = Σ_m w_m h_mᵀ,   δU = Σ_m w_m x_mᵀ,   δb = Σ_m w_m

Dense Jacobian: ``A = W`` at every row, exactly.

Weight sites (K's Kronecker form, SPEC §3): ``W`` reads ``φ(h)`` (Linear:
``h``) and ``(U, b)`` reads ``[x, 1]``; both feed ``h'`` through
``D = α I`` (Linear: ``I``).

Initialization: every parameter ``U(−1/√H, 1/√H)`` (the rule of
:meth:`kpref.Cell.init_params`); ``init_params(g=...)`` redraws ``W``
i.i.d. ``N(0, g²/H)``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ._cell import Cell
from .._checks import check_bool, check_positive_float
from .._jit import njit

__all__ = ["LeakyRNN", "Linear"]


# ---------------------------------------------------------------- kernels
# ``phi`` is the site activity of W: tanh(h) for LeakyRNN, h itself for Linear.

@njit
def _affine_step(w_hh, w_ih, b, h, phi, x, alpha):
    """h' = (1 − α) h + α (W φ + U x + b); the leak is skipped when α = 1. Real or complex."""
    M, H = h.shape
    a = np.dot(phi, w_hh.T) + np.dot(x, w_ih.T)
    out = np.empty_like(a)
    if alpha == 1.0:
        for m in range(M):
            for i in range(H):
                out[m, i] = a[m, i] + b[i]
    else:
        for m in range(M):
            for i in range(H):
                out[m, i] = (1.0 - alpha) * h[m, i] + alpha * (a[m, i] + b[i])
    return out


@njit
def _tanh_prepare(h):
    """φ(h) = tanh(h) and d = 1 − tanh²(h)."""
    t = np.tanh(h)
    return t, 1.0 - t * t


@njit
def _leaky_state_jvp(w_hh, d, V, alpha):
    k, M, H = V.shape
    dv = np.empty((k * M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                dv[j * M + m, i] = d[m, i] * V[j, m, i]
    # A v = (1 − α) v + α W (d ⊙ v), all k·M vectors in one GEMM
    Y = np.dot(dv, w_hh.T)
    out = np.empty((k, M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                out[j, m, i] = (1.0 - alpha) * V[j, m, i] + alpha * Y[j * M + m, i]
    return out


@njit
def _leaky_state_vjp(w_hh, d, W, alpha):
    k, M, H = W.shape
    # transposes: W (d ⊙ v), one GEMM
    Y = np.dot(W.reshape((k * M, H)), w_hh)
    out = np.empty((k, M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                # transposes: A v = (1 − α) v + α W (d ⊙ v)
                out[j, m, i] = (1.0 - alpha) * W[j, m, i] + alpha * (d[m, i] * Y[j * M + m, i])
    return out


@njit
def _linear_state_jvp(w_hh, V):
    k, M, H = V.shape
    # A v = W v, all k·M vectors in one GEMM
    return np.dot(V.reshape((k * M, H)), w_hh.T).reshape((k, M, H))


@njit
def _linear_state_vjp(w_hh, W):
    k, M, H = W.shape
    # transposes: W v
    return np.dot(W.reshape((k * M, H)), w_hh).reshape((k, M, H))


@njit
def _affine_param_jvp(phi, x, dw_hh, dw_ih, db, alpha):
    k = dw_hh.shape[0]
    M, H = phi.shape
    out = np.empty((k, M, H))
    for j in range(k):
        a = np.dot(phi, dw_hh[j].T) + np.dot(x, dw_ih[j].T)
        for m in range(M):
            for i in range(H):
                # G δθ = α (δW φ + δU x + δb)  (α = 1: no multiplication)
                s = a[m, i] + db[j, i]
                out[j, m, i] = s if alpha == 1.0 else alpha * s
    return out


@njit
def _affine_param_vjp(phi, x, W, alpha):
    k, M, H = W.shape
    N = x.shape[1]
    dw_hh = np.empty((k, H, H))
    dw_ih = np.empty((k, H, N))
    db = np.zeros((k, H))
    g = np.empty((M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                w = W[j, m, i]
                g[m, i] = w if alpha == 1.0 else alpha * w   # transposes: α (...)
                db[j, i] += g[m, i]                          # transposes: + δb
        dw_hh[j] = np.dot(g.T, phi)                          # transposes: δW φ
        dw_ih[j] = np.dot(g.T, x)                            # transposes: δU x
    return dw_hh, dw_ih, db


# ---------------------------------------------------------------- cells

class _AffineCell(Cell):
    """Shared layout of LeakyRNN and Linear: ``weight_hh`` (H, H), ``weight_ih`` (H, N), ``bias`` (H)."""

    analytic = True
    has_weight_sites = True
    has_unit_weight_sites = True

    def __init__(self, input_size, hidden_size, bias):
        bias = check_bool("bias", bias)
        self.bias = bool(bias)
        shapes = OrderedDict(weight_hh=(hidden_size, hidden_size), weight_ih=(hidden_size, input_size))
        if self.bias:
            shapes["bias"] = (hidden_size,)
        super().__init__(input_size, hidden_size, hidden_size, shapes)

    def _weights(self, theta):
        p = self._views(theta)
        b = p["bias"] if self.bias else np.zeros(self.hidden_size, dtype=theta.dtype)
        return (np.ascontiguousarray(p["weight_hh"]), np.ascontiguousarray(p["weight_ih"]),
                np.ascontiguousarray(b))

    def _param_block(self, dtheta):
        blk = self._unpack_block(dtheta)
        db = blk["bias"] if self.bias else np.zeros((dtheta.shape[0], self.hidden_size))
        return blk["weight_hh"], blk["weight_ih"], db

    def _pack_param_adjoint(self, dw_hh, dw_ih, db):
        blocks = {"weight_hh": dw_hh, "weight_ih": dw_ih}
        if self.bias:
            blocks["bias"] = db
        return self._pack_block(blocks, dw_hh.shape[0])

    def _affine_sites(self, pt, activity_hh, scale, unit=False):
        M, H = pt.h.shape
        if unit:     # per unit (_unit_weight_sites): d (M, 1, 1, H)
            D = np.full((M, 1, 1, H), float(scale))
        else:
            D = np.zeros((M, H, H))
            idx = np.arange(H)
            D[:, idx, idx] = scale
        if self.bias:
            return [(("weight_hh",), activity_hh, D),
                    (("weight_ih", "bias"), np.hstack([pt.x, np.ones((M, 1))]), D)]
        return [(("weight_hh",), activity_hh, D), (("weight_ih",), pt.x.copy(), D)]

    def _unit_weight_sites(self, pt):
        """:meth:`_weight_sites` per unit: ``D = scale · I``, so ``d`` (M, 1, 1, H) is ``scale`` everywhere."""
        return self._weight_sites(pt, unit=True)


class LeakyRNN(_AffineCell):
    """Leaky tanh RNN, ``h' = (1 − α) h + α (W tanh(h) + U x + b)``.

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H``.
    alpha : float
        Leak ``α`` in ``(0, 1]`` (``α = dt/τ`` of the rate ODE's Euler step).
    bias : bool
        ``False`` removes ``bias``.

    Notes
    -----
    Parameters, in the order of the flat vector: ``weight_hh`` ``W`` (H, H),
    ``weight_ih`` ``U`` (H, N), ``bias`` ``b`` (H). The equations of the step
    and of its tangents and adjoints are in the module docstring of
    :mod:`kpref.cells._leaky`.
    """

    def __init__(self, input_size, hidden_size, alpha=1.0, bias=True):
        self.alpha = check_positive_float("alpha", alpha, upper=1.0)
        super().__init__(input_size, hidden_size, bias)

    def _step(self, theta, h, x):
        h = np.ascontiguousarray(h)
        w_hh, w_ih, b = self._weights(theta)
        return _affine_step(w_hh, w_ih, b, h, np.tanh(h), np.ascontiguousarray(x), self.alpha)

    def _prepare(self, theta, h, x):
        return _tanh_prepare(np.ascontiguousarray(h))   # (φ(h), d)

    def _state_jvp(self, pt, V):
        return _leaky_state_jvp(self._view(pt.theta, "weight_hh"), pt.cache[1], np.ascontiguousarray(V), self.alpha)

    def _state_vjp(self, pt, W):
        return _leaky_state_vjp(self._view(pt.theta, "weight_hh"), pt.cache[1], np.ascontiguousarray(W), self.alpha)

    def _param_jvp(self, pt, dtheta):
        return _affine_param_jvp(pt.cache[0], np.ascontiguousarray(pt.x), *self._param_block(dtheta), self.alpha)

    def _param_vjp(self, pt, W):
        return self._pack_param_adjoint(*_affine_param_vjp(pt.cache[0], np.ascontiguousarray(pt.x),
                                                           np.ascontiguousarray(W), self.alpha))

    def _state_jacobian(self, pt):
        H = self.hidden_size
        A = self.alpha * (self._view(pt.theta, "weight_hh")[None, :, :] * pt.cache[1][:, None, :])
        idx = np.arange(H)
        A[:, idx, idx] += 1.0 - self.alpha
        return A

    def _weight_sites(self, pt, unit=False):
        """Weight sites ``(names, activity, D)`` of K's Kronecker form: ``W`` reads ``tanh(h)``, ``(U, b)`` reads ``[x, 1]``, ``D = α I``."""
        return self._affine_sites(pt, pt.cache[0].copy(), self.alpha, unit)

    def __repr__(self):
        return (f"LeakyRNN(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"alpha={self.alpha!r}, bias={self.bias})")


class Linear(_AffineCell):
    """Linear RNN, ``h' = W h + U x + b``.

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H``.
    bias : bool
        ``False`` removes ``bias``.

    Notes
    -----
    Parameters, in the order of the flat vector: ``weight_hh`` ``W`` (H, H),
    ``weight_ih`` ``U`` (H, N), ``bias`` ``b`` (H). ``A = W`` at every row
    (exactly), so ``P``'s blocks are powers of ``W``. Equations in the module
    docstring of :mod:`kpref.cells._leaky`.
    """

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__(input_size, hidden_size, bias)

    def _step(self, theta, h, x):
        h = np.ascontiguousarray(h)
        return _affine_step(*self._weights(theta), h, h, np.ascontiguousarray(x), 1.0)

    def _prepare(self, theta, h, x):
        return ()   # the products need only h, x and θ

    def _state_jvp(self, pt, V):
        return _linear_state_jvp(self._view(pt.theta, "weight_hh"), np.ascontiguousarray(V))

    def _state_vjp(self, pt, W):
        return _linear_state_vjp(self._view(pt.theta, "weight_hh"), np.ascontiguousarray(W))

    def _param_jvp(self, pt, dtheta):
        return _affine_param_jvp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x),
                                 *self._param_block(dtheta), 1.0)

    def _param_vjp(self, pt, W):
        return self._pack_param_adjoint(*_affine_param_vjp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x),
                                                           np.ascontiguousarray(W), 1.0))

    def _state_jacobian(self, pt):
        w = self._view(pt.theta, "weight_hh")
        return np.ascontiguousarray(np.broadcast_to(w, (pt.num_rows,) + w.shape))

    def _weight_sites(self, pt, unit=False):
        """Weight sites ``(names, activity, D)`` of K's Kronecker form: ``W`` reads ``h``, ``(U, b)`` reads ``[x, 1]``, ``D = I``."""
        return self._affine_sites(pt, pt.h.copy(), 1.0, unit)

    def __repr__(self):
        return f"Linear(input_size={self.input_size}, hidden_size={self.hidden_size}, bias={self.bias})"

r"""Elman cell (``torch.nn.RNNCell``) with hand-derived tangents and adjoints.

Notes
-----
Symbols as in SPEC §2–3; rows ``m`` (trials, or (trial, step) pairs) are
independent, so every equation is per row. ``φ`` is tanh or ReLU.

Forward step::

    a  = W_ih x + b_ih + W_hh h + b_hh          (pre-activation)
    h' = φ(a)

Let ``d = φ'(a)`` (tanh: ``1 - h'²``; ReLU: ``1`` if ``a > 0`` else ``0``,
torch's convention at 0). Then

State tangent (``A v``)::

    A v = d ⊙ (W_hh v)

State adjoint (``Aᵀ w``)::

    Aᵀ w = W_hhᵀ (d ⊙ w)

Parameter tangent (``G δθ``, ``h`` fixed)::

    G δθ = d ⊙ (δW_ih x + δb_ih + δW_hh h + δb_hh)

Parameter adjoint (``Gᵀ w`` summed over rows, with ``g = d ⊙ w``)::

    δW_ih = Σ_m g_m x_mᵀ,   δW_hh = Σ_m g_m h_mᵀ,   δb_ih = δb_hh = Σ_m g_m

Dense Jacobian: ``A = diag(d) W_hh``.

Weight sites (K's Kronecker form, SPEC §3): ``(W_ih, b_ih)`` reads ``[x, 1]``
and ``(W_hh, b_hh)`` reads ``[h, 1]``; both feed the pre-activation ``a``, so
``D = ∂F/∂a = diag(d)`` for both.
"""

from __future__ import annotations

import numpy as np

from ._cell import TorchConventionCell
from .._checks import check_choice
from .._jit import njit

__all__ = ["Elman"]

_TANH, _RELU = 0, 1


# The forward step and its cache are NumPy expressions on whole (M, H) arrays: tanh runs in NumPy's vectorized
# loop (≈ 2.5 ns an entry against ≈ 40 ns for a scalar call in a numba loop). It is applied to a fresh
# C-contiguous array on every path (step, prepare, fused sweep), so the three agree bit for bit.
def _elman_preactivation(w_ihT, w_hhT, b_ih, b_hh, h, x):
    """``a = W_ih x + W_hh h + b_ih + b_hh`` (M, H), contiguous, from C-contiguous ``W_ihᵀ``, ``W_hhᵀ`` (one
    layout on every path; a GEMM with a contiguous right factor is faster here)."""
    a = x @ w_ihT + h @ w_hhT           # a new array of the promoted type (complex step)
    a += b_ih
    a += b_hh
    return a


def _elman_activate(a, act, out):
    """``h' = φ(a)`` written into ``out`` (which may be ``a``)."""
    if act == _TANH:
        return np.tanh(a, out=out)
    np.copyto(out, np.where(a.real > 0.0, a, 0.0 * a))     # ReLU as torch: 0 at and below 0 (0·a keeps a complex step's type)
    return out


def _elman_derivative(a, h_next, act, out):
    """``d = φ'(a)`` into ``out``: ``1 − h'²`` (tanh), ``[a > 0]`` (ReLU)."""
    if act == _TANH:
        np.multiply(h_next, h_next, out=out)
        np.subtract(1.0, out, out=out)
    else:
        np.greater(a.real, 0.0, out=out, casting="unsafe")


def _elman_step(w_ihT, w_hhT, b_ih, b_hh, h, x, act):
    a = _elman_preactivation(w_ihT, w_hhT, b_ih, b_hh, h, x)
    return _elman_activate(a, act, a)


def _elman_prepare(w_ihT, w_hhT, b_ih, b_hh, h, x, act):
    a = _elman_preactivation(w_ihT, w_hhT, b_ih, b_hh, h, x)
    d = np.empty_like(a)
    _elman_derivative(a, _elman_activate(a, act, np.empty_like(a)), act, d)
    return d


def _elman_sweep(w_ihT, w_hhT, b_ih, b_hh, h0, xs, act, z, d=None):
    """The forward sweep, and with ``d`` its cache in the same pass: ``xs`` (T, B, N), ``z`` (T, B, H) out
    (float64, or complex128 in complex-step use), ``d`` None or (T·B, H) out at rows ``t·B + b``; the
    expressions of :func:`_elman_step` and :func:`_elman_prepare` on each step's ``B`` rows, so both equal theirs
    bit for bit; the weights are transposed once for the sweep."""
    T, B, _ = xs.shape
    for t in range(T):
        h = h0 if t == 0 else z[t - 1]
        a = _elman_preactivation(w_ihT, w_hhT, b_ih, b_hh, h, xs[t])
        _elman_activate(a, act, z[t])
        if d is not None:
            _elman_derivative(a, z[t], act, d[t * B:(t + 1) * B])


@njit
def _elman_state_jvp(w_hh, d, V):
    k, M, H = V.shape
    # A v = d ⊙ (W_hh v), all k·M vectors in one GEMM
    Y = np.dot(V.reshape((k * M, H)), w_hh.T)
    out = np.empty((k, M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                out[j, m, i] = d[m, i] * Y[j * M + m, i]
    return out


@njit
def _elman_state_vjp(w_hh, d, W):
    k, M, H = W.shape
    g = np.empty((k * M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                g[j * M + m, i] = d[m, i] * W[j, m, i]   # transposes: out = d ⊙ (...)
    # transposes: W_hh v
    return np.dot(g, w_hh).reshape((k, M, H))


@njit
def _elman_param_jvp(h, x, d, dw_ih, dw_hh, db_ih, db_hh):
    k = dw_ih.shape[0]
    M, H = h.shape
    out = np.empty((k, M, H))
    for j in range(k):
        a = np.dot(x, dw_ih[j].T) + np.dot(h, dw_hh[j].T)
        for m in range(M):
            for i in range(H):
                out[j, m, i] = d[m, i] * (a[m, i] + db_ih[j, i] + db_hh[j, i])
    return out


@njit
def _elman_param_vjp(h, x, d, W):
    k, M, H = W.shape
    N = x.shape[1]
    dw_ih = np.empty((k, H, N))
    dw_hh = np.empty((k, H, H))
    db = np.zeros((k, H))
    g = np.empty((M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                g[m, i] = d[m, i] * W[j, m, i]       # transposes: out = d ⊙ (...)
                db[j, i] += g[m, i]                  # transposes: + δb_ih + δb_hh
        dw_ih[j] = np.dot(g.T, x)                    # transposes: δW_ih x
        dw_hh[j] = np.dot(g.T, h)                    # transposes: δW_hh h
    return dw_ih, dw_hh, db


class Elman(TorchConventionCell):
    """Elman RNN cell, ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)`` (``torch.nn.RNNCell``).

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H``.
    nonlinearity : {'tanh', 'relu'}
    bias : bool
        ``False`` removes ``bias_ih`` and ``bias_hh``.

    The equations of the step and of its tangents and adjoints are in the
    module docstring of :mod:`kpref.cells._elman`.
    """

    has_weight_sites = True
    has_unit_weight_sites = True

    @property
    def analytic(self):
        """``True`` for tanh; ReLU is piecewise linear (no complex step)."""
        return self.nonlinearity == "tanh"

    def __init__(self, input_size, hidden_size, nonlinearity="tanh", bias=True):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__(input_size, hidden_size, bias)
        self._act = _TANH if self.nonlinearity == "tanh" else _RELU

    def _step(self, theta, h, x):
        return _elman_step(*self._transposed_weights(theta), h, x, self._act)

    def _prepare(self, theta, h, x):
        return (_elman_prepare(*self._transposed_weights(theta), h, x, self._act),)

    def _sweep(self, theta, x, h0, d=None):
        B, T, _ = x.shape
        zt = np.empty((T, B, self.hidden_size), dtype=np.result_type(theta, x, h0))
        _elman_sweep(*self._transposed_weights(theta), np.ascontiguousarray(h0),
                     np.ascontiguousarray(x.transpose(1, 0, 2)), self._act, zt, d)
        return np.ascontiguousarray(zt.transpose(1, 0, 2))

    def _run_prepared(self, theta, x, h0):
        B, T, _ = x.shape
        d = np.empty((T * B, self.hidden_size))
        return self._sweep(theta, x, h0, d), (d,)

    def _state_jvp(self, pt, V):
        return _elman_state_jvp(self._view(pt.theta, "weight_hh"), pt.cache[0], np.ascontiguousarray(V))

    def _state_vjp(self, pt, W):
        return _elman_state_vjp(self._view(pt.theta, "weight_hh"), pt.cache[0], np.ascontiguousarray(W))

    def _param_jvp(self, pt, dtheta):
        k = dtheta.shape[0]
        blk = self._unpack_block(dtheta)
        zero = np.zeros((k, self.hidden_size))
        return _elman_param_jvp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x), pt.cache[0],
                                blk["weight_ih"], blk["weight_hh"],
                                blk.get("bias_ih", zero), blk.get("bias_hh", zero))

    def _param_vjp(self, pt, W):
        k = W.shape[0]
        dw_ih, dw_hh, db = _elman_param_vjp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x),
                                            pt.cache[0], np.ascontiguousarray(W))
        blocks = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            blocks["bias_ih"] = db
            blocks["bias_hh"] = db
        return self._pack_block(blocks, k)

    def _weight_sites(self, pt):
        """Weight sites ``(names, activity, D)`` of K's Kronecker form (see the module notes)."""
        M, H = pt.h.shape
        D = np.zeros((M, H, H))
        D[:, np.arange(H), np.arange(H)] = pt.cache[0]
        ones = np.ones((M, 1))
        if self.bias:
            return [(("weight_ih", "bias_ih"), np.hstack([pt.x, ones]), D),
                    (("weight_hh", "bias_hh"), np.hstack([pt.h, ones]), D)]
        return [(("weight_ih",), pt.x.copy(), D), (("weight_hh",), pt.h.copy(), D)]

    def _unit_weight_sites(self, pt):
        """:meth:`_weight_sites` per unit: ``d`` (M, 1, 1, H) = ``φ'(pre-activation)`` for both sites."""
        d = pt.cache[0][:, None, None, :]
        return self._unit_sites_from(pt, d.copy(), d.copy())

    def _state_jacobian(self, pt):
        w_hh = self._view(pt.theta, "weight_hh")
        return pt.cache[0][:, :, None] * w_hh[None, :, :]

    def __repr__(self):
        return (f"Elman(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"nonlinearity={self.nonlinearity!r}, bias={self.bias})")


r"""GRU cell (``torch.nn.GRUCell``) with hand-derived tangents and adjoints.

Notes
-----
Symbols as in SPEC §2–3; rows ``m`` (trials, or (trial, step) pairs) are
independent, so every equation is per row. ``σ`` is the logistic function,
``⊙`` the elementwise product. The gate blocks of ``weight_ih`` (3H, N),
``weight_hh`` (3H, H), ``bias_ih`` and ``bias_hh`` (3H) are stacked
``[r; z; n]`` as in torch; ``W_hr``, ``W_hz``, ``W_hn`` are the three H×H
blocks of ``W_hh`` (likewise ``W_ir``, ``b_ir``, …).

Forward step::

    gi = W_ih x + b_ih,   gh = W_hh h + b_hh          (3H each: [·_r; ·_z; ·_n])
    r  = σ(gi_r + gh_r)
    u  = σ(gi_z + gh_z)                               (torch's "z", the update gate)
    n  = tanh(gi_n + r ⊙ gh_n)
    h' = (1 − u) ⊙ n + u ⊙ h

State tangent (``A v``; ``gi`` does not depend on ``h``)::

    δgh = W_hh v                                      (one GEMM, all three blocks)
    δr  = r(1 − r) ⊙ δgh_r
    δu  = u(1 − u) ⊙ δgh_z
    δn  = (1 − n²) ⊙ (r ⊙ δgh_n + δr ⊙ gh_n)
    A v = (1 − u) ⊙ δn + (h − n) ⊙ δu + u ⊙ v

State adjoint (``Aᵀ w``)::

    n̄   = (1 − u) ⊙ w,      ū = (h − n) ⊙ w
    ān  = (1 − n²) ⊙ n̄                                (cotangent of n's pre-activation)
    r̄   = gh_n ⊙ ān
    ḡh  = [r(1 − r) ⊙ r̄;  u(1 − u) ⊙ ū;  r ⊙ ān]
    Aᵀ w = W_hhᵀ ḡh + u ⊙ w                           (one GEMM)

Parameter tangent (``G δθ``, ``h`` fixed)::

    δgi = δW_ih x + δb_ih,   δgh = δW_hh h + δb_hh
    δr  = r(1 − r) ⊙ (δgi_r + δgh_r)
    δu  = u(1 − u) ⊙ (δgi_z + δgh_z)
    δn  = (1 − n²) ⊙ (δgi_n + r ⊙ δgh_n + δr ⊙ gh_n)
    G δθ = (1 − u) ⊙ δn + (h − n) ⊙ δu

Parameter adjoint (``Σ_rows Gᵀ w``; ``ān``, ``r̄``, ``ū`` as in the state
adjoint)::

    ḡi = [r(1 − r) ⊙ r̄;  u(1 − u) ⊙ ū;  ān]
    ḡh = [r(1 − r) ⊙ r̄;  u(1 − u) ⊙ ū;  r ⊙ ān]
    δW_ih = Σ_m ḡi_m x_mᵀ,  δb_ih = Σ_m ḡi_m,  δW_hh = Σ_m ḡh_m h_mᵀ,  δb_hh = Σ_m ḡh_m

What the products use (the cache of :meth:`GRU.point`, per row, (M, H) each):
the chain rule above collapses into five coefficients, the derivatives of
``h'`` with respect to the pre-activations::

    c_r = ∂h'/∂gi_r = ∂h'/∂gh_r = (1 − u)(1 − n²) gh_n r(1 − r)
    c_z = ∂h'/∂gi_z = ∂h'/∂gh_z = (h − n) u(1 − u)
    d_n = ∂h'/∂gi_n             = (1 − u)(1 − n²)
    c_n = ∂h'/∂gh_n             = (1 − u)(1 − n²) r
    u   = ∂h'/∂h  (direct path)

so that ``A v = c_r ⊙ δgh_r + c_z ⊙ δgh_z + c_n ⊙ δgh_n + u ⊙ v`` and
``Aᵀ w = W_hhᵀ [c_r ⊙ w; c_z ⊙ w; c_n ⊙ w] + u ⊙ w``, and likewise for the
parameter products (``ḡi = [c_r; c_z; d_n] ⊙ w``, ``ḡh = [c_r; c_z; c_n] ⊙ w``).
The kernels implement these collapsed forms; they are the equations above
with the products of scalar factors taken once per row.

Dense Jacobian: ``A = diag(c_r) W_hr + diag(c_z) W_hz + diag(c_n) W_hn + diag(u)``.

Weight sites (K's Kronecker form, SPEC §3): ``(W_ih, b_ih)`` reads ``[x, 1]``
with ``D = ∂h'/∂gi = [diag(c_r), diag(c_z), diag(d_n)]`` (H × 3H), and
``(W_hh, b_hh)`` reads ``[h, 1]`` with ``D = ∂h'/∂gh = [diag(c_r), diag(c_z),
diag(c_n)]``.

Initialization: ``init_params(g=...)`` redraws the whole ``weight_hh`` i.i.d.
``N(0, g²/H)``, i.e. each of its three H×H gate blocks ``W_hr``, ``W_hz``,
``W_hn`` independently with that law; everything else keeps torch's
``U(−1/√H, 1/√H)``.
"""

from __future__ import annotations

import numpy as np

from ._cell import TorchConventionCell
from .._jit import njit

__all__ = ["GRU"]


# The forward step and its cache: numba loops for the arithmetic, NumPy's vectorized loops for the gates' exp
# and tanh (≈ 2 ns an entry, against ≈ 40 ns for a scalar call inside a numba loop: most of a GRU sweep's time
# before). Each transcendental is applied to a fresh C-contiguous (M, ·) array on every path (step, prepare,
# fused sweep), so one loop computes it everywhere and the three paths agree bit for bit. The kernels compile for
# float64 and complex128 (complex step).
def _gru_preactivations(w_ihT, w_hhT, b_ih, b_hh, h, x):
    """``gi = x W_ihᵀ + b_ih`` and ``gh = h W_hhᵀ + b_hh``, (M, 3H) each, from C-contiguous ``W_ihᵀ``, ``W_hhᵀ``
    (one layout on every path; a GEMM with a contiguous right factor is ≈ 20 % faster here)."""
    return x @ w_ihT + b_ih, h @ w_hhT + b_hh          # new arrays of the promoted type (complex step)


@njit
def _gru_negated_rz(gi, gh, H, out):
    """``out = −[gi_r + gh_r, gi_z + gh_z]`` (M, 2H)."""
    for m in range(gi.shape[0]):
        for i in range(2 * H):
            out[m, i] = -(gi[m, i] + gh[m, i])


@njit
def _gru_logistic_n(e, gi, gh, H, n):
    """``e ← σ = 1 / (1 + e)`` (``e`` holds ``exp(−a)``: ``[r, u]``), ``n ← gi_n + r ⊙ gh_n`` (before its tanh)."""
    for m in range(e.shape[0]):
        for i in range(2 * H):
            e[m, i] = 1.0 / (1.0 + e[m, i])
        for i in range(H):
            n[m, i] = gi[m, 2 * H + i] + e[m, i] * gh[m, 2 * H + i]


@njit
def _gru_next_kernel(ru, n, h, H, out):
    """``out = h' = (1 − u) ⊙ n + u ⊙ h``."""
    for m in range(n.shape[0]):
        for i in range(H):
            u = ru[m, H + i]
            out[m, i] = (1.0 - u) * n[m, i] + u * h[m, i]


@njit
def _gru_coefficient_kernel(ru, gh, n, h, H, c_r, c_z, c_n, d_n, uu):
    """``(c_r, c_z, c_n, d_n, u)`` of the module notes into the five (M, H) outputs."""
    for m in range(n.shape[0]):
        for i in range(H):
            r, u, gh_n, nn = ru[m, i], ru[m, H + i], gh[m, 2 * H + i], n[m, i]
            dn = (1.0 - u) * (1.0 - nn * nn)
            c_r[m, i] = dn * gh_n * r * (1.0 - r)
            c_z[m, i] = (h[m, i] - nn) * u * (1.0 - u)
            c_n[m, i] = dn * r
            d_n[m, i] = dn
            uu[m, i] = u


def _gru_gates(gi, gh, H):
    """``(ru, n)``: the gates ``[r, u]`` (M, 2H) and ``n`` (M, H) from the pre-activations (module notes), the
    one place they are evaluated; ``r = σ(gi_r + gh_r)``, ``u = σ(gi_z + gh_z)``, ``n = tanh(gi_n + r ⊙ gh_n)``."""
    dtype = np.result_type(gi, gh)
    ru = np.empty((gi.shape[0], 2 * H), dtype=dtype)
    n = np.empty((gi.shape[0], H), dtype=dtype)
    _gru_negated_rz(gi, gh, H, ru)
    np.exp(ru, out=ru)
    _gru_logistic_n(ru, gi, gh, H, n)
    np.tanh(n, out=n)
    return ru, n


def _gru_step(w_ihT, w_hhT, b_ih, b_hh, h, x):
    """F for float64 or complex128 arrays (complex step)."""
    H = h.shape[1]
    gi, gh = _gru_preactivations(w_ihT, w_hhT, b_ih, b_hh, h, x)
    ru, n = _gru_gates(gi, gh, H)
    out = np.empty(h.shape, dtype=np.result_type(n, h))
    _gru_next_kernel(ru, n, h, H, out)
    return out


def _gru_prepare(w_ihT, w_hhT, b_ih, b_hh, h, x):
    """The five (M, H) coefficients c_r, c_z, c_n, d_n, u of the module notes."""
    H = h.shape[1]
    gi, gh = _gru_preactivations(w_ihT, w_hhT, b_ih, b_hh, h, x)
    ru, n = _gru_gates(gi, gh, H)
    out = tuple(np.empty(h.shape, dtype=np.result_type(n, h)) for _ in range(5))
    _gru_coefficient_kernel(ru, gh, n, h, H, *out)
    return out


def _gru_sweep(w_ihT, w_hhT, b_ih, b_hh, h0, xs, z, cache=None):
    """The forward sweep, and with ``cache`` its cache in the same pass: each gate once per row.

    ``xs`` (T, B, N), ``z`` (T, B, H) out (time major; float64, or complex128
    in complex-step use), ``cache`` None or the five (T·B, H) float64 outputs
    ``(c_r, c_z, c_n, d_n, u)`` at rows ``t·B + b``. Step ``t`` runs
    :func:`_gru_step`'s and :func:`_gru_prepare`'s computations on the step's
    ``B`` rows, in the same order and on arrays of the same layout, so ``z``
    equals the sweep of ``_gru_step`` and the cache equals ``_gru_prepare``
    step by step, bit for bit; the weights are transposed once for the sweep.
    """
    T, B, _ = xs.shape
    H = h0.shape[1]
    for t in range(T):
        h = h0 if t == 0 else z[t - 1]
        gi, gh = _gru_preactivations(w_ihT, w_hhT, b_ih, b_hh, h, xs[t])
        ru, n = _gru_gates(gi, gh, H)
        _gru_next_kernel(ru, n, h, H, z[t])
        if cache is not None:
            rows = slice(t * B, (t + 1) * B)
            _gru_coefficient_kernel(ru, gh, n, h, H, *(c[rows] for c in cache))


@njit
def _gru_state_jvp(w_hh, c_r, c_z, c_n, u, V):
    k, M, H = V.shape
    # δgh = W_hh v for all k·M vectors and all three gate blocks: one GEMM
    Y = np.dot(V.reshape((k * M, H)), w_hh.T)
    out = np.empty((k, M, H))
    for j in range(k):
        for m in range(M):
            q = j * M + m
            for i in range(H):
                # A v = c_r δgh_r + c_z δgh_z + c_n δgh_n + u v
                out[j, m, i] = (c_r[m, i] * Y[q, i] + c_z[m, i] * Y[q, H + i]
                                + c_n[m, i] * Y[q, 2 * H + i] + u[m, i] * V[j, m, i])
    return out


@njit
def _gru_state_vjp(w_hh, c_r, c_z, c_n, u, W):
    k, M, H = W.shape
    g = np.empty((k * M, 3 * H))
    for j in range(k):
        for m in range(M):
            q = j * M + m
            for i in range(H):
                w = W[j, m, i]
                g[q, i] = c_r[m, i] * w          # transposes: c_r δgh_r
                g[q, H + i] = c_z[m, i] * w      # transposes: c_z δgh_z
                g[q, 2 * H + i] = c_n[m, i] * w  # transposes: c_n δgh_n
    # transposes: δgh = W_hh v (one GEMM)
    out = np.dot(g, w_hh).reshape((k, M, H))
    for j in range(k):
        for m in range(M):
            for i in range(H):
                out[j, m, i] += u[m, i] * W[j, m, i]   # transposes: + u v
    return out


@njit
def _gru_param_jvp(h, x, c_r, c_z, c_n, d_n, dw_ih, dw_hh, db_ih, db_hh, ai, ah):
    k = dw_ih.shape[0]
    M, H = h.shape
    out = np.empty((k, M, H))
    for j in range(k):                 # ai, ah: (M, 3H) scratch
        np.dot(x, dw_ih[j].T, ai)      # δW_ih x
        np.dot(h, dw_hh[j].T, ah)      # δW_hh h
        for m in range(M):
            for i in range(H):
                dgi_r = ai[m, i] + db_ih[j, i]
                dgi_z = ai[m, H + i] + db_ih[j, H + i]
                dgi_n = ai[m, 2 * H + i] + db_ih[j, 2 * H + i]
                dgh_r = ah[m, i] + db_hh[j, i]
                dgh_z = ah[m, H + i] + db_hh[j, H + i]
                dgh_n = ah[m, 2 * H + i] + db_hh[j, 2 * H + i]
                # G δθ = c_r (δgi_r + δgh_r) + c_z (δgi_z + δgh_z) + d_n δgi_n + c_n δgh_n
                out[j, m, i] = (c_r[m, i] * (dgi_r + dgh_r) + c_z[m, i] * (dgi_z + dgh_z)
                                + d_n[m, i] * dgi_n + c_n[m, i] * dgh_n)
    return out


@njit
def _gru_param_cotangents(c_r, c_z, c_n, d_n, w, gh, gn, db_ih, db_hh):
    """For one cotangent ``w`` (M, H): ``gh = ḡh`` (M, 3H), ``gn = ḡi_n`` (M, H) (``ḡi_r = ḡh_r``, ``ḡi_z = ḡh_z``),
    and the bias cotangents, summed over the rows in order."""
    M, H = w.shape
    for m in range(M):
        for i in range(H):
            a_r = c_r[m, i] * w[m, i]            # transposes: c_r (δgi_r + δgh_r)
            a_z = c_z[m, i] * w[m, i]            # transposes: c_z (δgi_z + δgh_z)
            a_n = c_n[m, i] * w[m, i]            # transposes: c_n δgh_n
            g_n = d_n[m, i] * w[m, i]            # transposes: d_n δgi_n
            gh[m, i] = a_r
            gh[m, H + i] = a_z
            gh[m, 2 * H + i] = a_n
            gn[m, i] = g_n
            db_hh[i] += a_r                      # transposes: δgh = ... + δb_hh
            db_hh[H + i] += a_z
            db_hh[2 * H + i] += a_n
            db_ih[2 * H + i] += g_n              # transposes: δgi = ... + δb_ih
    for i in range(2 * H):
        db_ih[i] = db_hh[i]                      # ḡi_r = ḡh_r, ḡi_z = ḡh_z


def _gru_param_vjp(h, x, c_r, c_z, c_n, d_n, W, gh, gn):
    """``Σ_rows Gᵀ w`` for each of the ``k`` cotangents ``W`` (k, M, H): the four blocks (module notes).

    ``gh`` (M, 3H) and ``gn`` (M, H) are scratch. The weight cotangents are
    two GEMMs per vector (BLAS through NumPy, which takes the column blocks of
    ``gh`` in place); ``ḡi``'s ``r`` and ``z`` blocks are ``ḡh``'s.
    """
    k, M, H = W.shape
    N = x.shape[1]
    dw_ih = np.empty((k, 3 * H, N))
    dw_hh = np.empty((k, 3 * H, H))
    db_ih = np.zeros((k, 3 * H))
    db_hh = np.zeros((k, 3 * H))
    for j in range(k):
        _gru_param_cotangents(c_r, c_z, c_n, d_n, W[j], gh, gn, db_ih[j], db_hh[j])
        np.matmul(gh.T, h, out=dw_hh[j])                         # transposes: δW_hh h
        np.matmul(gh[:, :2 * H].T, x, out=dw_ih[j, :2 * H])      # transposes: δW_ih x (r, z blocks: ḡi = ḡh)
        np.matmul(gn.T, x, out=dw_ih[j, 2 * H:])                 # transposes: δW_ih x (n block)
    return dw_ih, dw_hh, db_ih, db_hh


class GRU(TorchConventionCell):
    """GRU cell, ``h' = (1 − u) ⊙ n + u ⊙ h`` (``torch.nn.GRUCell``).

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H``.
    bias : bool
        ``False`` removes ``bias_ih`` and ``bias_hh``.

    Notes
    -----
    Parameters, in the order of the flat vector: ``weight_ih`` (3H, N),
    ``weight_hh`` (3H, H), ``bias_ih`` (3H), ``bias_hh`` (3H), gate rows
    ``[r; z; n]`` as in torch. ``init_params(g=...)`` redraws the three
    H×H blocks of ``weight_hh`` i.i.d. ``N(0, g²/H)``. The equations of the
    step and of its tangents and adjoints are in the module docstring of
    :mod:`kpref.cells._gru`.
    """

    gate_names = ("r", "z", "n")
    analytic = True
    has_weight_sites = True
    has_unit_weight_sites = True

    def _step(self, theta, h, x):
        return _gru_step(*self._transposed_weights(theta), np.ascontiguousarray(h), np.ascontiguousarray(x))

    def _prepare(self, theta, h, x):
        return _gru_prepare(*self._transposed_weights(theta), np.ascontiguousarray(h), np.ascontiguousarray(x))

    def _sweep(self, theta, x, h0, cache=None):
        B, T, _ = x.shape
        zt = np.empty((T, B, self.hidden_size), dtype=np.result_type(theta, x, h0))
        _gru_sweep(*self._transposed_weights(theta), np.ascontiguousarray(h0),
                   np.ascontiguousarray(x.transpose(1, 0, 2)), zt, cache)
        return np.ascontiguousarray(zt.transpose(1, 0, 2))

    def _run_prepared(self, theta, x, h0):
        B, T, _ = x.shape
        cache = tuple(np.empty((T * B, self.hidden_size)) for _ in range(5))
        return self._sweep(theta, x, h0, cache), cache

    def _state_jvp(self, pt, V):
        c_r, c_z, c_n, _, u = pt.cache
        return _gru_state_jvp(self._view(pt.theta, "weight_hh"), c_r, c_z, c_n, u, np.ascontiguousarray(V))

    def _state_vjp(self, pt, W):
        c_r, c_z, c_n, _, u = pt.cache
        return _gru_state_vjp(self._view(pt.theta, "weight_hh"), c_r, c_z, c_n, u, np.ascontiguousarray(W))

    def _param_jvp(self, pt, dtheta):
        k = dtheta.shape[0]
        blk = self._unpack_block(dtheta)
        zero = np.zeros((k, 3 * self.hidden_size))
        c_r, c_z, c_n, d_n, _ = pt.cache
        shape = (pt.num_rows, 3 * self.hidden_size)
        return _gru_param_jvp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x), c_r, c_z, c_n, d_n,
                              blk["weight_ih"], blk["weight_hh"],
                              blk.get("bias_ih", zero), blk.get("bias_hh", zero),
                              pt.scratch("a_ih", shape), pt.scratch("a_hh", shape))

    def _param_vjp(self, pt, W):
        k = W.shape[0]
        H = self.hidden_size
        c_r, c_z, c_n, d_n, _ = pt.cache
        shape = (pt.num_rows, 3 * self.hidden_size)
        dw_ih, dw_hh, db_ih, db_hh = _gru_param_vjp(np.ascontiguousarray(pt.h), np.ascontiguousarray(pt.x),
                                                    c_r, c_z, c_n, d_n, np.ascontiguousarray(W),
                                                    pt.scratch("a_hh", shape), pt.scratch("g_n", (pt.num_rows, H)))
        blocks = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            blocks["bias_ih"] = db_ih
            blocks["bias_hh"] = db_hh
        return self._pack_block(blocks, k)

    def _state_jacobian(self, pt):
        c_r, c_z, c_n, _, u = pt.cache
        H = self.hidden_size
        w = self._view(pt.theta, "weight_hh")
        A = (c_r[:, :, None] * w[None, :H] + c_z[:, :, None] * w[None, H:2 * H]
             + c_n[:, :, None] * w[None, 2 * H:])
        idx = np.arange(H)
        A[:, idx, idx] += u
        return A

    def _weight_sites(self, pt):
        """Weight sites ``(names, activity, D)`` of K's Kronecker form (see the module notes).

        ``D`` is (M, H, 3H): ``∂h'/∂gi`` for ``(weight_ih, bias_ih)`` reading
        ``[x, 1]`` and ``∂h'/∂gh`` for ``(weight_hh, bias_hh)`` reading ``[h, 1]``.
        """
        c_r, c_z, c_n, d_n, _ = pt.cache
        M, H = pt.h.shape
        idx = np.arange(H)
        D_ih = np.zeros((M, H, 3 * H))
        D_ih[:, idx, idx] = c_r
        D_ih[:, idx, H + idx] = c_z
        D_hh = D_ih.copy()
        D_ih[:, idx, 2 * H + idx] = d_n
        D_hh[:, idx, 2 * H + idx] = c_n
        if self.bias:
            ones = np.ones((M, 1))
            return [(("weight_ih", "bias_ih"), np.hstack([pt.x, ones]), D_ih),
                    (("weight_hh", "bias_hh"), np.hstack([pt.h, ones]), D_hh)]
        return [(("weight_ih",), pt.x.copy(), D_ih), (("weight_hh",), pt.h.copy(), D_hh)]

    def _unit_weight_sites(self, pt):
        """:meth:`_weight_sites` per unit: ``d`` (M, 1, 3, H) = ``[c_r, c_z, d_n]`` (ih) and ``[c_r, c_z, c_n]`` (hh)."""
        c_r, c_z, c_n, d_n, _ = pt.cache
        d_ih = np.stack([c_r, c_z, d_n], axis=1)[:, None]
        d_hh = np.stack([c_r, c_z, c_n], axis=1)[:, None]
        return self._unit_sites_from(pt, d_ih, d_hh)

    def __repr__(self):
        return f"GRU(input_size={self.input_size}, hidden_size={self.hidden_size}, bias={self.bias})"

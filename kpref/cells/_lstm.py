r"""LSTM cell (``torch.nn.LSTMCell``) with hand-derived tangents and adjoints.

Notes
-----
State ``[h, c]`` (size ``2H``); readouts use ``h`` (the first ``H``
entries). Symbols as in SPEC §2–3, per row; ``σ`` the logistic function.

Forward step (gate rows ``[i; f; g; o]`` as in torch)::

    a  = W_ih x + b_ih + W_hh h + b_hh             (4H pre-activations)
    i = σ(a_i),  f = σ(a_f),  g = tanh(a_g),  o = σ(a_o)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

With ``τ = tanh(c')`` and the gate derivatives ``i(1−i)``, ``f(1−f)``,
``1−g²``, ``o(1−o)``:

State tangent (``A [δh; δc]``)::

    δa  = W_hh δh
    δi = i(1−i) δa_i,  δf = f(1−f) δa_f,  δg = (1−g²) δa_g,  δo = o(1−o) δa_o
    δc' = δf ⊙ c + f ⊙ δc + δi ⊙ g + i ⊙ δg
    δh' = δo ⊙ τ + o ⊙ (1−τ²) ⊙ δc'

State adjoint (``Aᵀ [h̄'; c̄']``)::

    ĉ  = c̄' + h̄' ⊙ o ⊙ (1−τ²)                    (total cotangent of c')
    ō = h̄' ⊙ τ,  ī = ĉ ⊙ g,  ḡ = ĉ ⊙ i,  f̄ = ĉ ⊙ c
    ā = [i(1−i) ī;  f(1−f) f̄;  (1−g²) ḡ;  o(1−o) ō]
    h̄ = W_hhᵀ ā,   c̄ = ĉ ⊙ f

Parameter tangent (``G δθ``; ``h``, ``c`` fixed)::

    δa  = δW_ih x + δb_ih + δW_hh h + δb_hh
    then as the state tangent with δc = 0.

Parameter adjoint (``Σ_rows Gᵀ w``, ``ā`` as in the state adjoint)::

    δW_ih = Σ_m ā_m x_mᵀ,  δW_hh = Σ_m ā_m h_mᵀ,  δb_ih = δb_hh = Σ_m ā_m

Weight sites (K's Kronecker form, SPEC §3): ``(W_ih, b_ih)`` reads ``[x, 1]``
and ``(W_hh, b_hh)`` reads ``[h, 1]``; both feed ``a``, so both have
``D = ∂[h'; c']/∂a`` (2H × 4H per row, nonzero in the h and the c rows).
"""

from __future__ import annotations

import numpy as np

from ._cell import TorchConventionCell
from .._jit import njit

__all__ = ["LSTM"]


@njit
def _lstm_step(w_ih, w_hh, b_ih, b_hh, hc, x):
    M = hc.shape[0]
    H = w_hh.shape[1]
    h = np.ascontiguousarray(hc[:, :H])
    a = np.dot(x, w_ih.T) + np.dot(h, w_hh.T)
    out = np.empty((M, 2 * H), dtype=a.dtype)
    for m in range(M):
        for u in range(H):
            ai = a[m, u] + b_ih[u] + b_hh[u]
            af = a[m, H + u] + b_ih[H + u] + b_hh[H + u]
            ag = a[m, 2 * H + u] + b_ih[2 * H + u] + b_hh[2 * H + u]
            ao = a[m, 3 * H + u] + b_ih[3 * H + u] + b_hh[3 * H + u]
            i = 1.0 / (1.0 + np.exp(-ai))
            f = 1.0 / (1.0 + np.exp(-af))
            g = np.tanh(ag)
            o = 1.0 / (1.0 + np.exp(-ao))
            c_new = f * hc[m, H + u] + i * g
            out[m, u] = o * np.tanh(c_new)
            out[m, H + u] = c_new
    return out


@njit
def _lstm_prepare(w_ih, w_hh, b_ih, b_hh, hc, x):
    """Gate activations ``act`` (M, 4H) = [i, f, g, o] and ``tc = tanh(c')`` (M, H)."""
    M = hc.shape[0]
    H = w_hh.shape[1]
    h = np.ascontiguousarray(hc[:, :H])
    a = np.dot(x, w_ih.T) + np.dot(h, w_hh.T)
    act = np.empty((M, 4 * H))
    tc = np.empty((M, H))
    for m in range(M):
        for u in range(H):
            for q in range(4):
                s = a[m, q * H + u] + b_ih[q * H + u] + b_hh[q * H + u]
                if q == 2:
                    act[m, q * H + u] = np.tanh(s)
                else:
                    act[m, q * H + u] = 1.0 / (1.0 + np.exp(-s))
            c_new = act[m, H + u] * hc[m, H + u] + act[m, u] * act[m, 2 * H + u]
            tc[m, u] = np.tanh(c_new)
    return act, tc


@njit
def _lstm_tangent_tail(act, tc, c, da, row0, dc_prev, out, j, M, H):
    """Shared end of both tangents: gate derivatives, δc', δh' for vector j (rows row0 … of ``da``)."""
    for m in range(M):
        r = row0 + m
        for u in range(H):
            i = act[m, u]
            f = act[m, H + u]
            g = act[m, 2 * H + u]
            o = act[m, 3 * H + u]
            di = i * (1.0 - i) * da[r, u]
            df = f * (1.0 - f) * da[r, H + u]
            dg = (1.0 - g * g) * da[r, 2 * H + u]
            do = o * (1.0 - o) * da[r, 3 * H + u]
            dc = df * c[m, u] + f * dc_prev[m, u] + di * g + i * dg
            t = tc[m, u]
            out[j, m, u] = do * t + o * (1.0 - t * t) * dc
            out[j, m, H + u] = dc


@njit
def _lstm_state_jvp(w_hh, act, tc, c, V):
    k, M, S = V.shape
    H = S // 2
    vh = np.empty((k * M, H))
    for j in range(k):
        for m in range(M):
            for u in range(H):
                vh[j * M + m, u] = V[j, m, u]
    da = np.dot(vh, w_hh.T)                                # δa = W_hh δh, all k·M vectors in one GEMM
    out = np.empty((k, M, S))
    for j in range(k):
        _lstm_tangent_tail(act, tc, c, da, j * M, np.ascontiguousarray(V[j, :, H:]), out, j, M, H)
    return out


@njit
def _lstm_gate_adjoint(act, tc, c, W, abar, cbar, k, M, H):
    """ā (k·M, 4H) and c̄ (k, M, H) from the cotangents ``W = [h̄'; c̄']``."""
    for j in range(k):
        for m in range(M):
            r = j * M + m
            for u in range(H):
                i = act[m, u]
                f = act[m, H + u]
                g = act[m, 2 * H + u]
                o = act[m, 3 * H + u]
                t = tc[m, u]
                hb = W[j, m, u]
                # transposes: δh' = δo τ + o (1−τ²) δc';  δc' (the state's c-part output)
                cb = W[j, m, H + u] + hb * o * (1.0 - t * t)
                ob = hb * t                                # transposes: δh' = δo ⊙ τ + …
                ib = cb * g                                # transposes: δc' = … + δi ⊙ g
                gb = cb * i                                # transposes: δc' = … + i ⊙ δg
                fb = cb * c[m, u]                          # transposes: δc' = δf ⊙ c + …
                cbar[j, m, u] = cb * f                     # transposes: δc' = … + f ⊙ δc
                abar[r, u] = i * (1.0 - i) * ib            # transposes: δi = i(1−i) δa_i
                abar[r, H + u] = f * (1.0 - f) * fb        # transposes: δf = f(1−f) δa_f
                abar[r, 2 * H + u] = (1.0 - g * g) * gb    # transposes: δg = (1−g²) δa_g
                abar[r, 3 * H + u] = o * (1.0 - o) * ob    # transposes: δo = o(1−o) δa_o


@njit
def _lstm_state_vjp(w_hh, act, tc, c, W):
    k, M, S = W.shape
    H = S // 2
    abar = np.empty((k * M, 4 * H))
    cbar = np.empty((k, M, H))
    _lstm_gate_adjoint(act, tc, c, W, abar, cbar, k, M, H)
    hbar = np.dot(abar, w_hh)                              # transposes: δa = W_hh δh
    out = np.empty((k, M, S))
    for j in range(k):
        for m in range(M):
            for u in range(H):
                out[j, m, u] = hbar[j * M + m, u]
                out[j, m, H + u] = cbar[j, m, u]
    return out


@njit
def _lstm_param_jvp(h, x, act, tc, c, dw_ih, dw_hh, db_ih, db_hh):
    k = dw_ih.shape[0]
    M, H = h.shape
    out = np.empty((k, M, 2 * H))
    da = np.empty((M, 4 * H))
    zero = np.zeros((M, H))
    for j in range(k):
        a = np.dot(x, dw_ih[j].T) + np.dot(h, dw_hh[j].T)
        for m in range(M):
            for q in range(4 * H):
                da[m, q] = a[m, q] + db_ih[j, q] + db_hh[j, q]
        _lstm_tangent_tail(act, tc, c, da, 0, zero, out, j, M, H)   # δc = 0: h, c fixed
    return out


@njit
def _lstm_param_vjp(h, x, act, tc, c, W):
    k, M, S = W.shape
    H = S // 2
    N = x.shape[1]
    abar = np.empty((k * M, 4 * H))
    cbar = np.empty((k, M, H))
    _lstm_gate_adjoint(act, tc, c, W, abar, cbar, k, M, H)
    dw_ih = np.empty((k, 4 * H, N))
    dw_hh = np.empty((k, 4 * H, H))
    db = np.zeros((k, 4 * H))
    for j in range(k):
        aj = abar[j * M:(j + 1) * M]
        dw_ih[j] = np.dot(aj.T, x)                         # transposes: δW_ih x
        dw_hh[j] = np.dot(aj.T, h)                         # transposes: δW_hh h
        for m in range(M):
            for q in range(4 * H):
                db[j, q] += aj[m, q]                       # transposes: + δb_ih + δb_hh
    return dw_ih, dw_hh, db


class LSTM(TorchConventionCell):
    """LSTM cell with ``torch.nn.LSTMCell`` conventions; state ``[h, c]`` of size ``2 * hidden_size``.

    Parameters
    ----------
    input_size, hidden_size : int
        ``N`` and ``H``.
    bias : bool
        ``False`` removes ``bias_ih`` and ``bias_hh``.

    Notes
    -----
    Parameters ``weight_ih`` (4H, N), ``weight_hh`` (4H, H), ``bias_ih`` (4H),
    ``bias_hh`` (4H), gate rows ``[i; f; g; o]``. ``output_size`` is
    ``hidden_size``: readouts read ``h``. The step, its tangents and adjoints
    are written out in :mod:`kpref.cells._lstm`. ``init_params(g=...)`` redraws all
    four ``H×H`` blocks of ``weight_hh``.
    """

    gate_names = ("i", "f", "g", "o")
    state_blocks = 2
    analytic = True
    has_weight_sites = True
    has_unit_weight_sites = True

    @property
    def state_parts(self):
        """``(('h', H), ('c', H))``: the state is ``[h, c]``."""
        return (("h", self.hidden_size), ("c", self.hidden_size))

    def _step(self, theta, h, x):
        return _lstm_step(*self._weights(theta), h, x)

    def _prepare(self, theta, h, x):
        act, tc = _lstm_prepare(*self._weights(theta), h, x)
        return act, tc

    def _prev_c(self, pt):
        return np.ascontiguousarray(pt.h[:, self.hidden_size:])

    def _state_jvp(self, pt, V):
        act, tc = pt.cache
        return _lstm_state_jvp(self._view(pt.theta, "weight_hh"), act, tc, self._prev_c(pt), np.ascontiguousarray(V))

    def _state_vjp(self, pt, W):
        act, tc = pt.cache
        return _lstm_state_vjp(self._view(pt.theta, "weight_hh"), act, tc, self._prev_c(pt), np.ascontiguousarray(W))

    def _param_jvp(self, pt, dtheta):
        act, tc = pt.cache
        k = dtheta.shape[0]
        blk = self._unpack_block(dtheta)
        zero = np.zeros((k, 4 * self.hidden_size))
        return _lstm_param_jvp(np.ascontiguousarray(pt.h[:, :self.hidden_size]), np.ascontiguousarray(pt.x),
                               act, tc, self._prev_c(pt), blk["weight_ih"], blk["weight_hh"],
                               blk.get("bias_ih", zero), blk.get("bias_hh", zero))

    def _param_vjp(self, pt, W):
        act, tc = pt.cache
        k = W.shape[0]
        dw_ih, dw_hh, db = _lstm_param_vjp(np.ascontiguousarray(pt.h[:, :self.hidden_size]),
                                           np.ascontiguousarray(pt.x), act, tc, self._prev_c(pt),
                                           np.ascontiguousarray(W))
        blocks = {"weight_ih": dw_ih, "weight_hh": dw_hh}
        if self.bias:
            blocks["bias_ih"] = db
            blocks["bias_hh"] = db
        return self._pack_block(blocks, k)

    def _weight_sites(self, pt):
        """Weight sites ``(names, activity, D)`` of K's Kronecker form (see the module notes).

        ``(weight_ih, bias_ih)`` reads ``[x, 1]`` and ``(weight_hh, bias_hh)``
        reads ``[h, 1]`` (``h`` the first ``H`` state entries); both feed the
        pre-activation ``a`` (4H), so both have the same ``D = ∂[h'; c']/∂a``
        of shape (M, 2H, 4H): diagonal blocks ``∂c'/∂a_i = i(1−i) g``,
        ``∂c'/∂a_f = f(1−f) c``, ``∂c'/∂a_g = i(1−g²)``, ``∂c'/∂a_o = 0``,
        ``∂h'/∂a_o = o(1−o) tanh(c')`` and ``∂h'/∂a_q = o(1−tanh²(c')) ∂c'/∂a_q``
        for ``q ∈ {i, f, g}``.
        """
        act, tc = pt.cache
        M = pt.h.shape[0]
        H = self.hidden_size
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        c = pt.h[:, H:]
        dc = (i * (1.0 - i) * g, f * (1.0 - f) * c, i * (1.0 - g * g))   # ∂c'/∂a_{i,f,g}
        dh_dc = o * (1.0 - tc * tc)
        idx = np.arange(H)
        D = np.zeros((M, 2 * H, 4 * H))
        for q, d in enumerate(dc):
            D[:, H + idx, q * H + idx] = d
            D[:, idx, q * H + idx] = dh_dc * d
        D[:, idx, 3 * H + idx] = o * (1.0 - o) * tc
        h = pt.h[:, :H]
        if self.bias:
            ones = np.ones((M, 1))
            return [(("weight_ih", "bias_ih"), np.hstack([pt.x, ones]), D),
                    (("weight_hh", "bias_hh"), np.hstack([h, ones]), D)]
        return [(("weight_ih",), pt.x.copy(), D), (("weight_hh",), np.ascontiguousarray(h), D)]

    def _unit_weight_sites(self, pt):
        """:meth:`_weight_sites` per unit: ``d`` (M, 2, 4, H), part ``h`` (0) and ``c`` (1), gates i, f, g, o."""
        act, tc = pt.cache
        M = pt.h.shape[0]
        H = self.hidden_size
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        c = pt.h[:, H:]
        dh_dc = o * (1.0 - tc * tc)
        d = np.zeros((M, 2, 4, H))
        for q, dq in enumerate((i * (1.0 - i) * g, f * (1.0 - f) * c, i * (1.0 - g * g))):   # ∂c'/∂a_{i,f,g}
            d[:, 1, q] = dq
            d[:, 0, q] = dh_dc * dq
        d[:, 0, 3] = o * (1.0 - o) * tc
        return self._unit_sites_from(pt, d, d.copy())

    def __repr__(self):
        return f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, bias={self.bias})"

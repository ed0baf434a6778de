r"""``K = J_θ J_θᵀ`` through the per-unit weight sites: a few large GEMMs per block of columns.

Notes
-----
A cell declaring ``has_unit_weight_sites`` gives, through its hook
``Cell._unit_weight_sites`` on the step point (rows ``m = t·B + b``), one
``(names, a_s, d_s)`` per weight site ``s``: the activity ``a_s`` (M × c_s,
with a ones column for a bias) and ``d_s[m, p, q, u] = ∂F_{p,u}/∂(pre-activation
of gate q of unit u)`` (M × P × G_s × H; the state is ``P`` parts of ``H``
units, state entry ``p·H + u``). The weight row of gate ``q`` of unit ``u``
at site ``s`` reads ``a_s`` and feeds unit ``u`` only (derivation in
:mod:`kpref.analysis._unit_blocks`). Index those parameters
``φ_s[c, q, u]`` (row ``q·H + u``, column ``c`` of the site's stacked
``[W, b]``): ``φ`` is ``θ`` reordered, ``φ = Π θ`` with ``Π`` a permutation,
as the sites cover every parameter once (the Kronecker form
``K = Σ_s D_s (a_s a_sᵀ ⊗ I) D_sᵀ`` of :meth:`kpref.Linearization.kronecker_factors`).

Tangent (``J_φ δφ``, per row ``m``)::

    (J_φ δφ)[m, p, u] = Σ_s Σ_q d_s[m, p, q, u] · Σ_c a_s[m, c] δφ_s[c, q, u]

Adjoint (``J_φᵀ w``)::

    y_s[m, q, u]       = Σ_p d_s[m, p, q, u] w[m, p, u]
    (J_φᵀ w)_s[c, q, u] = Σ_m a_s[m, c] y_s[m, q, u]

Then ``J_θ = J_φ Π`` and ``K = J_θ J_θᵀ = J_φ Π Πᵀ J_φᵀ = J_φ J_φᵀ``. For a
block of ``k`` columns ``w_j`` and every unit at once, a site costs two GEMMs,
``Z = a_sᵀ Y`` ((c × M)(M × k·G·H)) and ``R = a_s Z``, with the gather
``Y[m, j, q, u] = Σ_p d_s[m,p,q,u] w_j[m,p,u]`` and the scatter
``(K w_j)[m, p, u] += Σ_q d_s[m,p,q,u] R[m, j, q, u]`` (numba, one pass
each). The flops equal those of ``J_θ``/``J_θᵀ`` (``4 M c G H`` per column and
site); what is gained is that every flop is in two large GEMMs per site
instead of per-column kernels with the elementwise chain rule between them.
Gates whose ``d`` are equal are merged into one GEMM reading the
concatenated activities of their sites (exact: the Gram of the concatenation
is the sum of the Grams): Elman, LeakyRNN and LSTM become one site reading
``[a_ih, a_hh]``, GRU's ``r`` and ``z`` one site of two gates reading
``[x, 1, h, 1]`` (its two ``n`` gates keep their own sites).
"""

from __future__ import annotations

import threading

import numpy as np

from .._checks import check_memory
from .._jit import njit

__all__ = ["UnitSiteProduct"]

#: Bytes of the scratch (``Y``, ``Z``, ``R``) of one chunk of columns (at most; see :meth:`UnitSiteProduct._chunk`).
#: A GRU column at H=256, B=20, T=90 takes 23.7 MB: 96 MiB holds the default Lanczos block of 3 in
#: one chunk (measured 32.4 against 35.6 ms/column for chunks of 2 + 1, loaded machine).
_SCRATCH_BYTES = 96 * 1024**2


@njit
def _unit_gather(d, W, Y):
    """``Y[m, j, q, u] = Σ_p d[m, p, q, u] W[j, m, p, u]`` (the adjoint's first step: y_s).

    transposes: ``out[j, m, p, u] += Σ_q d[m, p, q, u] R[m, j, q, u]`` (:func:`_unit_scatter_add`)
    """
    M, P, G, H = d.shape
    k = W.shape[0]
    for m in range(M):
        for j in range(k):
            for q in range(G):
                for u in range(H):
                    Y[m, j, q, u] = d[m, 0, q, u] * W[j, m, 0, u]
                for p in range(1, P):
                    for u in range(H):
                        Y[m, j, q, u] += d[m, p, q, u] * W[j, m, p, u]


@njit
def _unit_scatter_add(d, R, out):
    """``out[j, m, p, u] += Σ_q d[m, p, q, u] R[m, j, q, u]`` (the tangent's last step)."""
    M, P, G, H = d.shape
    k = out.shape[0]
    for m in range(M):
        for j in range(k):
            for p in range(P):
                for q in range(G):
                    for u in range(H):
                        out[j, m, p, u] += d[m, p, q, u] * R[m, j, q, u]


def _merge_gates(sites):
    """Regroup the gates of the sites: gates with equal ``d`` share one GEMM reading their sites' activities.

    ``K = Σ_s Σ_q D_sq a_s a_sᵀ D_sq`` (``D_sq = diag(d_s[:, :, q, :])``): the
    gates ``(s, q)`` with one ``d`` sum to ``D (Σ_s a_s a_sᵀ) D = D ā āᵀ D`` with
    ``ā = [a_s]`` over those sites; gates whose sets of sites agree form one
    site of several gates. GRU: ``r`` and ``z`` read ``[x, 1, h, 1]``, ``n``
    of each site its own; Elman, LeakyRNN, LSTM: one site reading ``[a_ih, a_hh]``.
    """
    groups = []                              # [d of one gate (M, P, H), [site indices]]
    for s, (_, _, d) in enumerate(sites):
        for q in range(d.shape[2]):
            dq = d[:, :, q]
            for g in groups:
                if np.array_equal(g[0], dq):
                    g[1].append(s)
                    break
            else:
                groups.append([dq, [s]])
    by_sites = {}                            # site indices → d of their gates
    for dq, members in groups:
        by_sites.setdefault(tuple(members), []).append(dq)
    return [(sum((sites[s][0] for s in members), ()), np.hstack([sites[s][1] for s in members]),
             np.stack(ds, axis=2)) for members, ds in by_sites.items()]


class UnitSiteProduct:
    """``K W = J_φ J_φᵀ W`` for blocks ``W`` (k, M, P, H) in the step point's row order (module notes).

    Parameters
    ----------
    sites : list of (names, activity (M, c), d (M, P, G, H))
        From ``cell._unit_weight_sites(point)``; copied (read-only), gates
        with equal ``d`` merged (:func:`_merge_gates`).
    memory_limit : int
        Bytes the site arrays may take (checked before copying); a product
        works on chunks of columns whose scratch takes at most
        ``min(96 MiB, memory_limit / 4)`` (at least one column, itself checked).
    """

    def __init__(self, sites, memory_limit, name="cell"):
        sites = list(sites)
        need = sum(8 * (np.size(a) + np.size(d)) for _, a, d in sites)
        check_memory(f"K through the unit weight sites of {name}", need, memory_limit)
        merged = _merge_gates([(tuple(names), np.asarray(a, dtype=np.float64), np.asarray(d, dtype=np.float64))
                               for names, a, d in sites])
        self.sites = []
        for names, a, d in merged:
            a, d = np.array(a, order="C"), np.array(d, order="C")      # own copies, never the hook's arrays
            a.flags.writeable = False
            d.flags.writeable = False
            self.sites.append((names, a, d))
        self.rows, self.parts, _, self.units = self.sites[0][2].shape
        self._local = threading.local()
        self.memory_limit = memory_limit

    def _chunk(self):
        """Columns per chunk: their scratch (``Y``, ``Z``, ``R``) within ``min(96 MiB, memory_limit / 4)``."""
        per_column = max(8 * d.shape[2] * self.units * (2 * self.rows + a.shape[1]) for _, a, d in self.sites)
        check_memory("K through the unit weight sites (the scratch of one column)", per_column, self.memory_limit)
        return max(1, min(_SCRATCH_BYTES, self.memory_limit // 4) // per_column)

    def _scratch(self, name, shape):
        """A reusable work array of ``shape`` (contents undefined), one per thread: products may run concurrently."""
        size = int(np.prod(shape))
        buf = getattr(self._local, name, None)
        if buf is None or buf.size < size:
            buf = np.empty(size)
            setattr(self._local, name, buf)
        return buf[:size].reshape(shape)

    def apply(self, W):
        """``K W`` for ``W`` (k, M, P, H) contiguous → (k, M, P, H), a fresh array."""
        k = W.shape[0]
        M, H = self.rows, self.units
        out = np.zeros(W.shape)
        step = self._chunk()
        for j0 in range(0, k, step):
            Wj = W[j0:j0 + step]
            oj = out[j0:j0 + step]
            kj = Wj.shape[0]
            for _, a, d in self.sites:
                G = d.shape[2]
                cols = kj * G * H
                # J_φᵀ w (adjoint):
                Y = self._scratch("Y", (M, kj, G, H))
                # transposes: (J_φ δφ)[m, p, u] += Σ_q d_s[m, p, q, u] r[m, q, u]
                _unit_gather(d, Wj, Y)
                Z = self._scratch("Z", (a.shape[1], cols))
                # transposes: r[m, q, u] = Σ_c a_s[m, c] δφ_s[c, q, u]
                np.matmul(a.T, Y.reshape(M, cols), out=Z)
                # J_φ δφ (tangent) with δφ = J_φᵀ w:
                R = self._scratch("R", (M, cols))
                np.matmul(a, Z, out=R)                             # r[m, q, u] = Σ_c a_s[m, c] δφ_s[c, q, u]
                _unit_scatter_add(d, R.reshape(M, kj, G, H), oj)   # += Σ_q d_s[m, p, q, u] r[m, q, u]
        return out

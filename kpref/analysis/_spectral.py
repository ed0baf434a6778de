r"""Spectra and spectral summaries of operators (SPEC §6).

Notes
-----
Definitions (``σ_i`` the singular values of ``A``, ``λ_i`` the eigenvalues of a
symmetric ``M``):

* participation ratio of a PSD ``M``: ``PR(M) = (tr M)² / tr(M²) = (Σλ)² / Σλ²``;
* effective rank of any ``A``: ``PR(AAᵀ) = (Σσ²)² / Σσ⁴ = ‖A‖_F⁴ / ‖AᵀA‖_F²``;
* variance rank ``r_q(A)``: the smallest ``k`` with ``Σ_{i≤k} σ_i² ≥ q Σ σ_i²``.

*Dense* (exact) methods materialize the operator in column blocks (memory
checked first, limit ``memory_limit``) and call LAPACK: ``eigvalsh`` for a
symmetric operator (refused if ``‖M − Mᵀ‖_F > 1e-8 ‖M‖_F``; its symmetric
part is used), ``svd`` otherwise.

*Lanczos* (``spectrum``/``singular_values`` with ``k`` given and the operator
too large for the dense route, or ``method='lanczos'``) is a thick-restart
block Lanczos method (a block Krylov–Schur iteration) written here, because a
kpref operator applies a whole block of vectors in one sweep over time: every
product is ``op.matmat`` on ``b`` vectors (default ``b = min(max(⌈k/10⌉, 3), 32)``:
at k = 20 on the NTK of a GRU (H=64, B=8, T=60), measured in one run, b = 1,
2, 3, 4, 6 took 96, 110, 122, 132, 152 columns (and time in about that
ratio); fewer columns with smaller blocks, but a block of ``b`` finds the
copies of an eigenvalue of multiplicity up to ``b`` directly and more only
through rounding, so 3: triple eigenvalues (tested) are found; see
validation/benchmarks/bench_kblocks.py).

1. ``P₀`` = orth(Gaussian ``n × b``). Repeat: append the pending block ``P``
   to the basis ``V``; compute ``AP``; orthogonalize it against the blocks
   it couples to in exact arithmetic (the previous and the current block,
   and after a restart the kept Ritz vectors), then once more against all of
   ``V`` (one reorthogonalization pass: full reorthogonalization with two
   passes over the basis) — the coefficients fill the projected matrix
   ``H = VᵀAV`` — and orthonormalize the rest into the next pending block,
   ``AP − V C = P_next R``, by Cholesky QR twice (rank-deficient or
   ill-conditioned blocks, e.g. an invariant subspace found, go through an
   SVD and their null directions are replaced by random ones).
   ``orthogonalization='cgs2'`` is the earlier route (two full passes, SVD).
2. Rayleigh–Ritz: ``H Y = Y Θ`` on the active (unlocked) part of the basis. The relation ``A V = V H + P_next R E_lastᵀ``
   gives each Ritz pair's residual norm, ``‖R Y[last block, i]‖``, for free.
3. When the ``k`` wanted residuals are below ``tol · max|θ|`` the *true*
   residuals ``‖A u − θ u‖`` are checked, with ``A u = (A V) y`` from the
   products already computed (``A V`` is kept beside ``V`` and updated at
   each restart: no further product, and no reliance on the orthogonality
   of ``V`` or on the Lanczos relation). Otherwise, when the basis is full
   (``max_basis`` columns), restart with the best ``keep`` Ritz vectors (the
   relation keeps its form: ``A U = U Θ + P Bᵀ``). With locking (default of
   ``'local+1'``), the wanted Ritz pairs whose residual is below the
   threshold are locked at the restart: they stay first in the basis, every
   new block is still orthogonalized against them, but their coupling to
   new blocks (their residual, ``≤ tol · max|θ|``) is set to zero and they
   leave the Rayleigh–Ritz problem and the local pass.

For a symmetric ``A`` each returned ``θ_i`` lies within ``‖A u_i − θ_i u_i‖``
(``≤ tol · max|θ|``) of an eigenvalue of ``A``. ``singular_values`` runs the
same iteration on the Gram operator of the smaller side (``AᵀA`` or ``AAᵀ``,
two products per vector) and returns ``√θ``. ``method='arpack'`` calls
SciPy's ``eigsh``/``svds`` instead (one product per ARPACK step, no blocks;
a single-vector Krylov method finds the copies of a multiple eigenvalue only
through rounding and may return another eigenvalue in their place, whereas
block Lanczos with ``block_size`` at least the multiplicity finds them all).

The randomized participation ratio and effective rank estimate their
numerator and denominator traces independently (estimators and their errors
in :mod:`kpref.analysis._traces`): ``PR``: ``tr M`` directly and ``tr(M²) = ‖M‖_F²`` in
Gram form ``C = M``; effective rank: ``tr(AᵀA)`` in Gram form ``C = A`` and
``tr((AᵀA)²) = ‖AᵀA‖_F²`` in Gram form ``C = AᵀA``. The error estimate of the
ratio ``a²/b`` is ``(a²/b)·√((2 e_a/a)² + (e_b/b)²)`` (first order,
independent parts).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh, svds

from .._checks import (as_generator, check_choice, check_memory, check_memory_limit, check_positive_float,
                       check_positive_int, check_size_memory)
from ..operators._input import as_operator, materialize, probe_symmetric, symmetric_part_checked
from ._traces import TraceTarget, check_method, direct_target, estimate, gram_target, hutch_plus_plus, rademacher
from ._unit_blocks import BlockDiagonalOperator, structure_of

__all__ = [
    "spectrum",
    "singular_values",
    "participation_ratio",
    "effective_rank",
    "variance_rank",
    "block_lanczos",
    "LanczosResult",
    "DENSE_MAX_SIZE",
]

#: ``method='auto'`` materializes operators of at most this dimension (the smaller side for SVD).
DENSE_MAX_SIZE = 2000
#: Relative size of the most negative eigenvalue tolerated in a "PSD" operator (rounding).
PSD_TOLERANCE = 1e-8
_WHICH = ("LA", "SA", "LM")


# ------------------------------------------------------------------------ block Lanczos


class LanczosResult(NamedTuple):
    """Result of :func:`block_lanczos`."""

    values: np.ndarray         # (k,) ordered by ``which``
    vectors: np.ndarray        # (n, k) orthonormal Ritz vectors
    residual_norms: np.ndarray  # (k,) true ‖A u − θ u‖
    n_products: int            # columns pushed through the operator
    n_restarts: int
    n_locked: int = 0          # Ritz pairs locked (deflated) at restarts


def _order(theta, which):
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


def _orthonormal_block(W, V, b, rng, drop):
    """``W = P R`` with ``P`` (n, b) orthonormal and ⊥ ``V``; directions below ``drop`` replaced by random ones (SVD)."""
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    r = int(np.sum(s > drop))
    P = np.empty((W.shape[0], b))
    R = np.zeros((b, b))
    P[:, :r] = U[:, :r]
    R[:r] = s[:r, None] * Vt[:r]
    if r < b:
        X = rng.standard_normal((W.shape[0], b - r))
        for _ in range(2):
            X -= V @ (V.T @ X)
            X -= P[:, :r] @ (P[:, :r].T @ X)
        P[:, r:], _ = np.linalg.qr(X)
    return P, R


#: CholQR2 is used while the block's condition number is below this (its loss of orthogonality is
#: O(ε·cond²) after one pass and O(ε) after the second for cond ≲ ε^{-1/2}; Yamamoto et al. 2015).
_CHOLQR_MAX_COND = 1e6


def _cholqr2_rows(Wt, Vb, b, rng, drop):
    """``W = P R`` by Cholesky QR twice for a block held as rows (``Wt = Wᵀ``, (b, n)); returns ``(Pᵀ, R)``.

    BLAS-3: two ``b × b`` Grams ``Wᵀ W`` and two triangular products
    ``Pᵀ = R⁻ᵀ Wᵀ``. The Gram gives the singular values of ``W``: a
    rank-deficient or ill-conditioned block (an invariant subspace found,
    ``σ_min ≤ drop`` or ``σ_max/σ_min > 1e6``) takes :func:`_orthonormal_block`
    instead (the basis ``Vb`` as rows) — the same result (an orthonormal
    ``P ⊥ V`` and ``R``), computed by SVD.
    """
    G = Wt @ Wt.T
    G = 0.5 * (G + G.T)
    ev = np.linalg.eigvalsh(G)
    smin, smax = np.sqrt(max(ev[0], 0.0)), np.sqrt(max(ev[-1], 0.0))
    if smin <= drop or smax > _CHOLQR_MAX_COND * smin:
        P, R = _orthonormal_block(Wt.T, Vb.T, b, rng, drop)
        return np.ascontiguousarray(P.T), R
    R1 = np.linalg.cholesky(G).T                         # G = R1ᵀ R1, R1 upper
    Qt = np.linalg.inv(R1).T @ Wt                        # Qᵀ = R1⁻ᵀ Wᵀ
    G2 = Qt @ Qt.T
    R2 = np.linalg.cholesky(0.5 * (G2 + G2.T)).T
    return np.linalg.inv(R2).T @ Qt, R2 @ R1


def _orthogonal_to_rounding(C2, norms):
    """Whether the block is already orthogonal to the basis to rounding: ``|Vᵀw_j| ≤ 64 ε √(m) ‖w_j‖`` for every column.

    ``C2 = Vᵀ W`` (m, b), ``norms`` the ``‖w_j‖``. The reorthogonalization
    pass subtracts ``V (VᵀW)``; when every coefficient
    is at the level of the rounding of the pass itself (``ε √m`` relative,
    with a margin of 64) the subtraction cannot improve orthogonality
    ("twice is enough", Kahan–Parlett: reorthogonalize only when needed) and
    its second read of the basis is skipped. Coefficients grow as Ritz
    values converge and after deflation (locked couplings ≤ tol): the pass
    is then applied.
    """
    bound = 64.0 * np.finfo(float).eps * np.sqrt(C2.shape[0]) * np.asarray(norms)
    return bool(np.all(np.abs(C2) <= bound[None, :]))


def _default_block_size(k):
    """``min(max(⌈k/10⌉, 3), 32)``: 3 for k ≤ 30 (module notes); ``min(max(⌈k/2⌉, 4), 32)`` before issue 17."""
    return min(max(-(-k // 10), 3), 32)


def block_lanczos(matmat, n, k, which="LA", *, block_size=None, max_basis=None, tol=1e-10,
                  max_restarts=500, rng=None, memory_limit=None, orthogonalization="local+1", locking=None):
    """Thick-restart block Lanczos for ``k`` extreme eigenpairs of a symmetric operator.

    Parameters
    ----------
    matmat : callable
        ``X (n, b) -> A X`` for the symmetric ``A``.
    n, k : int
    which : {'LA', 'SA', 'LM'}
        Largest algebraic, smallest algebraic, largest magnitude.
    block_size : int, optional
        ``b``; default ``min(max(⌈k/10⌉, 3), 32)`` (before issue 17:
        ``min(max(⌈k/2⌉, 4), 32)``). Block Lanczos finds every copy of an
        eigenvalue of multiplicity up to ``b`` directly; higher multiplicities
        only through rounding, slowly: pass a larger ``block_size`` for a
        spectrum known to have them.
    max_basis : int, optional
        Basis columns before a restart; default ``max(k + 3b, 4k)`` (at most
        ``n − b``, at least ``k + 2b``; ``6k`` before issue 17). Each step
        reads the basis once or twice, so a smaller basis is cheaper per
        column: on the NTK of a GRU (H=256, B=2, T=90, k=20, b=3) ``4k`` and
        ``6k`` needed the same 185 columns, ``3k`` 191, with the
        non-product time down by about a quarter at ``4k`` (loaded machine,
        one run; validation/benchmarks/bench_kblocks.py).
    tol : float
        Relative residual ``‖A u − θ u‖ ≤ tol · max|θ|`` required of each pair
        (at least 1e-14: rounding).
    max_restarts : int
    rng : None, int or Generator
        Starting block.
    memory_limit : int, optional
        Bytes the basis (``n × max_basis``) may take.
    orthogonalization : {'local+1', 'cgs2'}
        ``'local+1'`` (default): the new block ``A P`` is orthogonalized
        against the blocks it couples to in exact arithmetic (the previous
        and current blocks; after a restart, the kept Ritz vectors too), then
        once against the whole basis (one reorthogonalization pass: two
        passes over the basis instead of four), and orthonormalized by
        Cholesky QR twice (BLAS-3); ``A V`` is kept beside the basis (twice
        the memory) so the final true residuals need no product. The basis,
        ``A V`` and the pending block are stored as rows (one basis vector
        per contiguous row): each pass over the basis reads whole rows,
        about twice as fast at the paper's size as the column layout.
        ``'cgs2'``: the route before issue 17 — two full classical
        Gram–Schmidt passes and an SVD of the block, and one more product
        of the ``k`` Ritz vectors for the true residuals.
        Both give the same Ritz values to the tolerance.
    locking : bool, optional
        Lock (deflate) converged Ritz pairs at each restart (default: on with
        ``'local+1'``, off with ``'cgs2'``, which is then exactly the route
        before issue 17). A locked pair ``(θ, u)`` stays in the basis and
        every new block is still orthogonalized against it, but it leaves the
        Rayleigh–Ritz problem and the first (local) pass: its coupling to the
        next block, which equals its residual (``uᵀ A P = r_uᵀ`` with
        ``‖r_u‖ ≤ tol · max|θ|``), is set to zero, a perturbation of ``A``
        within the tolerance. The returned pairs' true residuals are checked
        as without locking.

    Returns
    -------
    LanczosResult
        The algorithm is in the notes of :mod:`kpref.analysis._spectral`.
    """
    memory_limit = check_memory_limit(memory_limit)
    rng = as_generator(rng)
    check_choice("orthogonalization", orthogonalization, ("local+1", "cgs2"))
    if locking is None:
        locking = orthogonalization == "local+1"
    elif not isinstance(locking, (bool, np.bool_)):
        raise TypeError(f"locking: expected None or a bool, got {locking!r} ({type(locking).__name__})")
    n = check_positive_int("n", n)
    if not callable(matmat):
        raise TypeError(f"matmat: expected a callable X (n, b) -> A X, got {type(matmat).__name__}")
    check_choice("which", which, _WHICH)
    tol = check_positive_float("tol", tol)
    if tol < 1e-14:
        raise ValueError(f"tol: expected at least 1e-14 (rounding limits the residual), got {tol}")
    k = check_positive_int("k", k)
    b = _default_block_size(k) if block_size is None else check_positive_int("block_size", block_size)
    user_basis = max_basis is not None
    if max_basis is None:
        max_basis = min(max(k + 3 * b, 4 * k), n - b)
    else:
        max_basis = check_positive_int("max_basis", max_basis)
    max_restarts = check_positive_int("max_restarts", max_restarts, minimum=0)
    max_basis = max(max_basis, k + 2 * b)
    if max_basis + b > n:
        culprit = "max_basis" if user_basis and k + 3 * b <= n else "k"   # k alone would have fitted
        raise ValueError(
            f"{culprit}: block Lanczos with k={k}, block_size={b}, max_basis={max_basis} needs an operator of "
            f"dimension above {max_basis + b}, got {n}; use method='dense'"
        )
    stored = 2 if orthogonalization == "local+1" else 1
    check_memory("block Lanczos basis (and its products)", 8 * n * (stored * max_basis + 2 * b), memory_limit)

    def product(X):
        Y = np.asarray(matmat(X))
        if Y.shape != X.shape or Y.dtype.kind != "f":
            raise ValueError(f"matmat: expected a real float block of shape {X.shape}, got "
                             f"{Y.dtype} of shape {Y.shape}")
        Y = np.asarray(Y, dtype=np.float64)
        if not np.isfinite(Y).all():
            raise ValueError(f"matmat: expected a finite product, got {int((~np.isfinite(Y)).sum())} "
                             "non-finite values")
        return Y

    probe_products = probe_symmetric("matmat", product, n, what="block Lanczos")
    keep = min(max_basis - b, max(k, (max_basis - b + k) // 2))
    if orthogonalization == "local+1":
        return _lanczos_rows(product, n, k, which, b, max_basis, keep, tol, max_restarts, rng, locking,
                             probe_products)
    return _lanczos_cgs2(product, n, k, which, b, max_basis, keep, tol, max_restarts, rng, locking,
                         probe_products)


def _no_convergence(restarts, products, residuals, threshold):
    return RuntimeError(
        f"block Lanczos: no convergence after {restarts} restarts and {products} products; "
        f"residuals {np.array2string(residuals, precision=2)} against the threshold "
        f"{threshold:.2e} (tol · max|θ|); raise max_restarts, max_basis or block_size, or use "
        "method='dense'"
    )


def _lanczos_rows(product, n, k, which, b, max_basis, keep, tol, max_restarts, rng, locking, products):
    """The default route (``'local+1'``) with the basis stored as rows: ``V[j]`` is basis vector ``j``.

    The same iteration as the module notes (and as :func:`_lanczos_cgs2` apart
    from the orthogonalization), laid out for memory traffic: every pass over
    the basis reads whole contiguous rows (``V[:m] @ Wᵀ`` and ``Cᵀ @ V[:m]``,
    measured about twice as fast at n = 460 800 as the column layout's
    ``V[:, :m]ᵀ W``, whose rows of ``max_basis`` floats are read in part),
    the new block is one contiguous write, and the pending block ``W``,
    ``A P`` and the Ritz vectors are (b, n) rows too. Column norms come from
    row dot products (no temporary ``n × b`` square).
    """
    V = np.empty((max_basis, n))
    AV = np.empty((max_basis, n))          # A V, kept from the products: A U = Yᵀ (A V) needs no further product
    H = np.zeros((max_basis, max_basis))
    P0, _ = _orthonormal_block(rng.standard_normal((n, b)), V[:0].T, b, rng, 0.0)
    Pt = np.ascontiguousarray(P0.T)
    m = 0
    nl = 0                   # locked (converged, deflated) Ritz vectors: V[:nl], H[:nl, :nl] = diag(θ)
    local = 0                # first basis row A P couples to in exact arithmetic
    restarts = 0
    scale = 0.0
    while True:
        APt = np.ascontiguousarray(product(np.ascontiguousarray(Pt.T)).T)
        products += b
        V[m:m + b] = Pt
        AV[m:m + b] = APt
        Vb = V[:m + b]
        Vl = V[local:m + b]
        C = np.zeros((m + b, b))
        C[local:] = Vl @ APt.T                # the recurrence's own coefficients
        Wt = APt - C[local:].T @ Vl
        C2 = Vb @ Wt.T                        # one reorthogonalization pass against the whole basis
        if not _orthogonal_to_rounding(C2, _row_norms(Wt)):
            Wt -= C2.T @ Vb
        C += C2
        C[:nl] = 0.0                          # deflation: a locked vector's coupling is its residual (≤ tol·scale)
        local = m
        _append_block(H, C, m, b)
        m += b
        theta, Y = _rayleigh_ritz(H, nl, m, which)
        scale = max(scale, float(np.abs(theta).max()), float(_row_norms(APt).max()))
        Pt, R = _cholqr2_rows(Wt, Vb, b, rng, 1e-13 * max(scale, np.finfo(float).tiny))
        threshold = tol * scale
        estimated, cand, cand_res, sel = _candidates(H, nl, theta, Y, R, k, which)
        if sel.size == k and np.all(cand_res[sel] <= threshold):
            is_locked = sel < nl
            Ut = np.empty((k, n))
            AUt = np.empty((k, n))
            Ut[is_locked] = V[sel[is_locked]]
            AUt[is_locked] = AV[sel[is_locked]]
            Ut[~is_locked] = Y[:, sel[~is_locked] - nl].T @ V[nl:m]
            AUt[~is_locked] = Y[:, sel[~is_locked] - nl].T @ AV[nl:m]
            AUt -= cand[sel][:, None] * Ut
            true_res = _row_norms(AUt)
            if np.all(true_res <= threshold) or scale == 0.0:
                return LanczosResult(cand[sel].copy(), np.ascontiguousarray(Ut.T), true_res, products, restarts, nl)
        if m + b > max_basis:
            if restarts >= max_restarts:
                raise _no_convergence(restarts, products, cand_res[sel], threshold)
            cols, n_lock = _restart_columns(sel, nl, estimated, threshold, theta.size, keep, locking)
            _rotate_rows(V, nl, m, Y[:, cols])
            _rotate_rows(AV, nl, m, Y[:, cols])
            m = _restart_H(H, nl, theta, cols)
            nl += n_lock
            local = nl           # the next block couples to every kept active Ritz vector (locked: deflated)
            restarts += 1


#: Columns of the basis rotated at a time at a restart (the temporary is ``keep × _ROTATE_CHUNK`` floats).
_ROTATE_CHUNK = 8192


def _rotate_rows(V, lo, hi, Y):
    """``V[lo:lo + c] = Yᵀ V[lo:hi]`` (Y (hi − lo, c), c ≤ hi − lo) in place, a slice of columns at a time.

    Each slice of columns is read whole before it is written, so the
    overlap of the rows read and written is harmless; the temporary is one
    slice (not ``c × n`` fresh floats, whose first touch costs as much as
    the GEMM at the paper's size).
    """
    c = Y.shape[1]
    for j in range(0, V.shape[1], _ROTATE_CHUNK):
        V[lo:lo + c, j:j + _ROTATE_CHUNK] = Y.T @ V[lo:hi, j:j + _ROTATE_CHUNK]


def _row_norms(X):
    """Euclidean norms of the rows of ``X`` (one pass, no temporary of ``X``'s size)."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def _rayleigh_ritz(H, nl, m, which):
    """Ritz values and vectors of the active (unlocked) part ``H[nl:m, nl:m]``, ordered by ``which``."""
    theta, Y = np.linalg.eigh(H[nl:m, nl:m])
    order = _order(theta, which)
    return theta[order], Y[:, order]


def _candidates(H, nl, theta, Y, R, k, which):
    """Every active pair's estimated residual ``‖R Y[last block, i]‖``, and the ``k`` candidates.

    The candidates are the locked pairs (converged, residual taken as 0) and
    the active Ritz pairs; ``sel`` indexes the ``k`` first by ``which`` in
    ``cand`` (values) and ``cand_res`` (residuals).
    """
    estimated = np.linalg.norm(R @ Y[Y.shape[0] - R.shape[1]:], axis=0)
    cand = np.concatenate([np.diag(H)[:nl], theta])
    cand_res = np.concatenate([np.zeros(nl), estimated])
    return estimated, cand, cand_res, _order(cand, which)[:k]


def _append_block(H, C, m, b):
    """Write the new block's coefficients ``C`` (m + b, b) into the projected matrix ``H``."""
    H[:m, m:m + b] = C[:m]
    H[m:m + b, :m] = C[:m].T
    H[m:m + b, m:m + b] = 0.5 * (C[m:] + C[m:].T)


def _restart_columns(sel, nl, estimated, threshold, n_theta, keep, locking):
    """Active Ritz vectors kept at a restart and how many of them lock.

    With ``locking``, the wanted active pairs (among the ``k`` selected
    ``sel``) whose estimated residual is below ``threshold`` lock; they come
    first, then the best others, ``keep`` vectors in all (locked ones included).
    """
    wanted = sel[sel >= nl] - nl          # active pairs among the k candidates
    lock = [int(j) for j in wanted if estimated[j] <= threshold] if locking else []
    rest = [j for j in range(n_theta) if j not in set(lock)][:keep - nl - len(lock)]
    return lock + rest, len(lock)


def _restart_H(H, nl, theta, cols):
    """Set ``H`` after a restart (diagonal: the locked values, then the kept Ritz values); returns its new size."""
    d = np.concatenate([np.diag(H)[:nl], theta[cols]])
    H[:] = 0.0
    H[np.arange(d.size), np.arange(d.size)] = d
    return d.size


def _lanczos_cgs2(product, n, k, which, b, max_basis, keep, tol, max_restarts, rng, locking, products):
    """The route before issue 17 (``'cgs2'``): basis as columns, two full classical Gram–Schmidt passes and an
    SVD per block, one more product of the ``k`` Ritz vectors for the true residuals."""
    V = np.empty((n, max_basis))
    H = np.zeros((max_basis, max_basis))
    P, _ = _orthonormal_block(rng.standard_normal((n, b)), V[:, :0], b, rng, 0.0)
    m = 0
    nl = 0                   # locked (converged, deflated) Ritz vectors: V[:, :nl], H[:nl, :nl] = diag(θ)
    restarts = 0
    scale = 0.0
    while True:
        AP = product(P)
        products += b
        V[:, m:m + b] = P
        Vb = V[:, :m + b]
        C = Vb.T @ AP                      # first full pass of classical Gram–Schmidt
        W = AP - Vb @ C
        C2 = Vb.T @ W                      # second full pass
        W -= Vb @ C2
        C += C2
        C[:nl] = 0.0                       # deflation: a locked vector's coupling is its residual (≤ tol·scale)
        _append_block(H, C, m, b)
        m += b
        theta, Y = _rayleigh_ritz(H, nl, m, which)
        scale = max(scale, float(np.abs(theta).max()), float(np.linalg.norm(AP, axis=0).max()))
        P, R = _orthonormal_block(W, Vb, b, rng, 1e-13 * max(scale, np.finfo(float).tiny))
        threshold = tol * scale
        estimated, cand, cand_res, sel = _candidates(H, nl, theta, Y, R, k, which)
        if sel.size == k and np.all(cand_res[sel] <= threshold):
            U = np.empty((n, k))
            is_locked = sel < nl
            U[:, is_locked] = V[:, sel[is_locked]]
            U[:, ~is_locked] = V[:, nl:m] @ Y[:, sel[~is_locked] - nl]
            AU = product(U)                # one more product for the true residuals
            products += k
            true_res = np.linalg.norm(AU - U * cand[sel], axis=0)
            if np.all(true_res <= threshold) or scale == 0.0:
                return LanczosResult(cand[sel].copy(), U, true_res, products, restarts, nl)
        if m + b > max_basis:
            if restarts >= max_restarts:
                raise _no_convergence(restarts, products, cand_res[sel], threshold)
            cols, n_lock = _restart_columns(sel, nl, estimated, threshold, theta.size, keep, locking)
            V[:, nl:nl + len(cols)] = V[:, nl:m] @ Y[:, cols]
            m = _restart_H(H, nl, theta, cols)
            nl += n_lock
            restarts += 1


# ------------------------------------------------------------------------------ helpers


def _check_k(k, n):
    if k is None:
        return None
    k = check_positive_int("k", k)
    if k > n:
        raise ValueError(f"k: expected at most the operator's dimension {n}, got {k}")
    return k


def _check_iterative_options(tol, block_size, max_basis, rng):
    """Check the Lanczos/ARPACK options whatever the route (a dense call must not accept a bad tol or rng)."""
    check_positive_float("tol", tol)
    if block_size is not None:
        check_positive_int("block_size", block_size)
    if max_basis is not None:
        check_positive_int("max_basis", max_basis)
    if not isinstance(rng, np.random.Generator):
        as_generator(rng)          # validates None / seed; a Generator is used as given (its state untouched)


def _scipy_operator(n_out, n_in, matmat):
    return LinearOperator((n_out, n_in), matvec=lambda x: matmat(np.reshape(x, (-1, 1)))[:, 0],
                          matmat=matmat, dtype=np.float64)


def _dense_symmetric(chk, memory_limit):
    return symmetric_part_checked(chk.name, materialize(chk, memory_limit))


def _block_eigenvalues(chk, k, which, required=False, memory_limit=None):
    """Eigenvalues through per-unit blocks (``K`` or a block-diagonal reduction), or ``None`` without them."""
    if isinstance(chk.op, BlockDiagonalOperator):
        lam = np.concatenate([np.linalg.eigvalsh(b) for b in chk.op.blocks])
        lam = lam[_order(lam, which)]
        return lam if k is None else lam[:k].copy()
    kb = structure_of(chk.op, required=required, name=chk.name, memory_limit=memory_limit)
    return None if kb is None else kb.eigenvalues(k, which)


def _block_structure(chk, method, memory_limit):
    """The K blocks behind ``chk`` for an exact method, else ``None``."""
    return structure_of(chk.op, memory_limit=memory_limit) if method == "exact" else None


# ------------------------------------------------------------------------------- public


def spectrum(op, k=None, which="LA", *, method="auto", tol=1e-10, block_size=None, max_basis=None,
             rng=None, memory_limit=None):
    """Eigenvalues of a symmetric operator: all (dense) or ``k`` extreme ones.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix (square, symmetric)
    k : int, optional
        Number of eigenvalues; ``None`` returns all of them (dense).
    which : {'LA', 'SA', 'LM'}
        Largest algebraic (default), smallest algebraic, largest magnitude;
        also the order of the result (first = most extreme).
    method : {'auto', 'blocks', 'dense', 'lanczos', 'arpack'}
        ``'auto'``: exact through the per-unit blocks when ``op`` is a
        linearization's ``K`` whose cell has them (or a partial trace of one:
        :mod:`kpref.analysis._unit_blocks`), at any size and for any ``k``;
        otherwise dense when ``k`` is ``None`` or the dimension is at most
        :data:`DENSE_MAX_SIZE` (2000), block Lanczos otherwise. ``'blocks'``
        requires the block route (raises, naming the cell, without it).
    tol : float
        Lanczos/ARPACK relative residual tolerance (eigenvalues within
        ``tol · max|λ|``).
    block_size, max_basis : int, optional
        Lanczos block size and basis size (see :func:`block_lanczos`).
    rng : None, int or Generator
        Lanczos/ARPACK starting vectors.
    memory_limit : int, optional
        Bytes a dense copy (or the Lanczos basis) may take.

    Returns
    -------
    (k,) or (n,) float64 array, ordered by ``which``
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op, square=True)
    n = chk.shape[0]
    check_choice("which", which, _WHICH)
    _check_iterative_options(tol, block_size, max_basis, rng)
    check_choice("method", method, ("auto", "blocks", "dense", "lanczos", "arpack"))
    k = _check_k(k, n)
    if method in ("auto", "blocks"):
        lam = _block_eigenvalues(chk, k, which, required=method == "blocks", memory_limit=memory_limit)
        if lam is not None:
            return lam
        method = "dense" if (k is None or n <= DENSE_MAX_SIZE) else "lanczos"
    if k is None and method != "dense":
        raise ValueError(f"k: expected an integer with method={method!r} (all eigenvalues need method='dense')")
    if method == "dense":
        lam = np.linalg.eigvalsh(_dense_symmetric(chk, memory_limit))
        lam = lam[_order(lam, which)]
        return lam if k is None else lam[:k].copy()
    probe_symmetric("op", chk.matmat, n, what=f"spectrum(method={method!r})")
    if method == "lanczos":
        return block_lanczos(chk.matmat, n, k, which, block_size=block_size, max_basis=max_basis, tol=tol,
                             rng=rng, memory_limit=memory_limit).values
    if k >= n:   # ARPACK needs k < n (SciPy would raise its own TypeError, or fall back to dense with a warning)
        raise ValueError(f"k: method='arpack' needs k < n = {n}, got {k}; use method='dense' for all eigenvalues")
    gen = as_generator(rng)
    lam = eigsh(_scipy_operator(n, n, chk.matmat), k=k, which=which, tol=tol, v0=gen.standard_normal(n),
                return_eigenvectors=False)
    return lam[_order(lam, which)]


def singular_values(op, k=None, *, method="auto", tol=1e-10, block_size=None, max_basis=None, rng=None,
                    memory_limit=None):
    """Singular values of an operator, descending: all (dense SVD) or the ``k`` largest.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
    k : int, optional
        ``None`` returns all ``min(n_out, n_in)`` of them.
    method : {'auto', 'blocks', 'dense', 'lanczos', 'arpack'}
        ``'auto'``: exact through the per-unit blocks for a linearization's
        ``K`` that has them (``σ = |λ|``; see :func:`spectrum`), else dense
        when ``k`` is ``None`` or the smaller dimension is at most
        :data:`DENSE_MAX_SIZE`; ``'lanczos'``: block Lanczos on the Gram
        operator of the smaller side (``σ² = θ``; relative accuracy of ``σ_i``
        about ``tol · σ_max² / (2 σ_i²)``); ``'arpack'``: ``scipy.sparse.linalg.svds``.
    tol, block_size, max_basis, rng, memory_limit
        As in :func:`spectrum`.
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op)
    n_out, n_in = chk.shape
    small = min(n_out, n_in)
    _check_iterative_options(tol, block_size, max_basis, rng)
    check_choice("method", method, ("auto", "blocks", "dense", "lanczos", "arpack"))
    k = _check_k(k, small)
    if method in ("auto", "blocks"):
        lam = _block_eigenvalues(chk, None, "LM", required=method == "blocks", memory_limit=memory_limit)
        if lam is not None:      # symmetric: σ = |λ|
            s = np.sort(np.abs(lam))[::-1]
            return s if k is None else s[:k].copy()
        method = "dense" if (k is None or small <= DENSE_MAX_SIZE) else "lanczos"
    if k is None and method != "dense":
        raise ValueError(f"k: expected an integer with method={method!r} (all singular values need method='dense')")
    if method == "dense":
        s = np.linalg.svd(materialize(chk, memory_limit), compute_uv=False)
        return s if k is None else s[:k].copy()
    if method == "lanczos":
        gram = chk.gram_matmat if n_in <= n_out else (lambda X: chk.matmat(chk.rmatmat(X)))
        lam = block_lanczos(gram, small, k, "LA", block_size=block_size, max_basis=max_basis, tol=tol, rng=rng,
                            memory_limit=memory_limit).values
        return np.sqrt(np.maximum(lam, 0.0))
    if k >= small:   # svds needs k < min(shape) (SciPy's own message names no argument of ours)
        raise ValueError(f"k: method='arpack' needs k < min(op.shape) = {small}, got {k}; use method='dense'")
    gen = as_generator(rng)
    lin = LinearOperator((n_out, n_in), matvec=lambda x: chk.matmat(np.reshape(x, (-1, 1)))[:, 0],
                         rmatvec=lambda x: chk.rmatmat(np.reshape(x, (-1, 1)))[:, 0],
                         matmat=chk.matmat, rmatmat=chk.rmatmat, dtype=np.float64)
    s = svds(lin, k=k, tol=tol, v0=gen.standard_normal(small), return_singular_vectors=False)
    return np.sort(s)[::-1].copy()


def _ratio_with_error(a, ea, b, eb, return_error):
    value = a * a / b
    err = abs(value) * np.sqrt((2.0 * ea / a) ** 2 + (eb / b) ** 2) if a != 0 else float("nan")
    return (float(value), float(err)) if return_error else float(value)


def participation_ratio(op, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """Participation ratio ``PR(M) = (tr M)² / tr(M²)`` of a symmetric PSD operator.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix (square, symmetric PSD)
    method : {'exact', 'hutchinson', 'hutch++', 'xtrace'}
        ``'exact'`` materializes ``op`` and uses its eigenvalues (and refuses
        a non-symmetric operator or one with an eigenvalue below
        ``−1e-8 · max|λ|``); for a linearization's ``K`` with per-unit
        blocks it is ``(tr K)²/‖K‖_F²`` through them, at any size; the randomized methods estimate ``tr M`` and
        ``tr(M²)`` with ``n_probes`` products each (module notes).
    n_probes, rng, return_error, memory_limit
        As in :func:`kpref.analysis.trace`.

    Returns
    -------
    float in [1, rank M] (exact), or (float, float) with ``return_error``
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op, square=True)
    n_probes, gen = check_method(method, n_probes, rng)
    kb = _block_structure(chk, method, memory_limit)
    if kb is not None:       # (tr K)² / ‖K‖_F², no eigenvalues needed
        value = kb.trace() ** 2 / kb.frobenius_sq()
        return (value, 0.0) if return_error else value
    if method == "exact":
        lam = np.linalg.eigvalsh(_dense_symmetric(chk, memory_limit))
        top = np.abs(lam).max()
        if top == 0.0:
            raise ValueError("op: the participation ratio of the zero operator is undefined (0/0)")
        if lam[0] < -PSD_TOLERANCE * top:
            raise ValueError(
                f"op: expected a positive semidefinite operator, got eigenvalue {lam[0]:.3e} "
                f"(largest magnitude {top:.3e}); for any operator A use effective_rank(A) = PR(AAᵀ)"
            )
        value = float(lam.sum() ** 2 / np.sum(lam * lam))
        return (value, 0.0) if return_error else value
    probe_symmetric("op", chk.matmat, chk.shape[0], psd=True, what=f"participation_ratio(method={method!r})")
    tr = estimate(method, direct_target(chk), n_probes, gen)
    sq = estimate(method, TraceTarget(chk.shape[0], factor=chk.matmat, factor_adjoint=chk.rmatmat), n_probes, gen)
    if sq.value <= 0.0:
        raise ValueError(f"op: the estimate of tr(M²) is {sq.value!r}; the participation ratio is undefined")
    return _ratio_with_error(tr.value, tr.error, sq.value, sq.error, return_error)


def effective_rank(op, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """Effective rank ``PR(AAᵀ) = (Σσ²)² / Σσ⁴ = ‖A‖_F⁴ / ‖AᵀA‖_F²`` of any operator.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
    method : {'exact', 'hutchinson', 'hutch++', 'xtrace'}
        ``'exact'``: dense SVD (for a linearization's ``K`` with per-unit
        blocks: the blocks' spectra, at any size). Randomized: ``tr(AᵀA)`` (Gram form, ``C = A``)
        and ``tr((AᵀA)²)`` (Gram form, ``C = AᵀA``) with ``n_probes`` products
        of each ``M`` (module notes); ``op`` must provide ``rmatmat``. With
        ``'hutch++'`` both estimates use one sketch ``S``: ``AᵀA S``, then
        ``(AᵀA)² S = AᵀA (AᵀA S)`` (``⅓ n_probes`` fewer products with ``AᵀA``;
        each estimate is still Hutch++ of its own target).
    n_probes, rng, return_error, memory_limit
        As in :func:`kpref.analysis.trace`.

    Returns
    -------
    float in [1, rank A] (exact), or (float, float) with ``return_error``

    Examples
    --------
    >>> import numpy as np
    >>> from kpref.analysis import effective_rank
    >>> effective_rank(np.diag([1.0, 1.0, 0.0]))
    2.0
    >>> round(effective_rank(np.diag([2.0, 1.0])), 4)      # (4 + 1)² / (16 + 1)
    1.4706
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op)
    n_probes, gen = check_method(method, n_probes, rng)
    kb = _block_structure(chk, method, memory_limit)
    if kb is not None:       # σ² = λ²: Σλ² and Σλ⁴ from the blocks
        s2, s4 = kb.power_sums()
        value = s2 * s2 / s4
        return (value, 0.0) if return_error else value
    if method == "exact":
        s2 = np.linalg.svd(materialize(chk, memory_limit), compute_uv=False) ** 2
        if s2[0] == 0.0:
            raise ValueError("op: the effective rank of the zero operator is undefined (0/0)")
        value = float(s2.sum() ** 2 / np.sum(s2 * s2))
        return (value, 0.0) if return_error else value
    fro_target = gram_target(chk)
    gram4_target = TraceTarget(chk.shape[1], factor=chk.gram_matmat, factor_adjoint=chk.gram_matmat)
    if method == "hutch++":
        # One Rademacher S for both sketches: fro's is AᵀA S, and (AᵀA)² S = AᵀA (AᵀA S) is gram4's, so the
        # second costs two products a column instead of four (n_probes/3·2 fewer products of A in all). Each
        # estimate is distributed exactly as Hutch++ with its own S; given S (on which the error estimates are
        # conditioned) their residual terms use independent vectors, so the ratio's error propagation holds.
        check_size_memory(f"n_probes={n_probes}", 3 * 8 * chk.shape[1] * n_probes, what="the probe blocks")
        S = rademacher(gen, chk.shape[1], n_probes // 3)
        sketch = chk.gram_matmat(S)
        fro = hutch_plus_plus(fro_target, n_probes, gen, sketch=sketch)
        gram4 = hutch_plus_plus(gram4_target, n_probes, gen, sketch=chk.gram_matmat(sketch))
    else:
        fro = estimate(method, fro_target, n_probes, gen)
        gram4 = estimate(method, gram4_target, n_probes, gen)
    if gram4.value <= 0.0:
        raise ValueError(f"op: the estimate of ‖AᵀA‖_F² is {gram4.value!r}; the effective rank is undefined")
    return _ratio_with_error(fro.value, fro.error, gram4.value, gram4.error, return_error)


def variance_rank(op, q=0.95, *, memory_limit=None):
    """Variance rank ``r_q(A)``: the smallest ``k`` with ``Σ_{i≤k} σ_i² ≥ q Σ_i σ_i²``.

    Dense SVD; for a linearization's ``K`` with per-unit blocks, the blocks' spectra.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
    q : float in (0, 1]
        Fraction of ``‖A‖_F²`` to capture (default 0.95). ``q = 1`` counts
        every nonzero singular value, rounding included.
    memory_limit : int, optional
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op)
    q = check_positive_float("q", q, upper=1.0)
    kb = structure_of(chk.op, memory_limit=memory_limit)
    if kb is not None:
        s2 = np.sort(kb.eigenvalues() ** 2)[::-1]
    else:
        s2 = np.linalg.svd(materialize(chk, memory_limit), compute_uv=False) ** 2
    if s2[0] == 0.0:
        raise ValueError("op: the variance rank of the zero operator is undefined")
    cum = np.cumsum(s2)
    return int(np.searchsorted(cum, q * cum[-1], side="left") + 1)

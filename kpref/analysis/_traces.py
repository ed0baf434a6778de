r"""Traces of operators, exact and randomized (SPEC §6): ``trace``, ``frobenius_norm``, ``alignment``.

Notes
-----
*Exact* (the default everywhere) streams the identity through the operator in
column blocks: ``tr A = Σ_j (A e_j)_j``, ``‖A‖_F² = Σ_j ‖A e_j‖²`` and
``tr(AᵀB) = Σ_j ⟨A e_j, B e_j⟩``; ``n`` products, the memory of one block,
rounding error only (the error estimate returned with ``return_error=True``
is ``0.0``).

The randomized estimators spend a budget of ``n_probes`` products with the
matrix ``M`` whose trace they estimate (``M = A`` for ``trace``;
``M = AᵀA`` for ``frobenius_norm``; ``M = AᵀB`` for ``alignment``). All
test vectors are Rademacher (entries ±1, so ``E ωωᵀ = I`` and ``‖ω‖² = n``).

Girard–Hutchinson (``'hutchinson'``), ``n_probes`` test vectors::

    t = (1/s) Σ_i ω_iᵀ M ω_i,      Var t = 2 (‖M_s‖_F² − Σ_j M_jj²) / s,

``M_s = (M + Mᵀ)/2``; error estimate: the sample standard deviation of the
``ω_iᵀ M ω_i`` over ``√s``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1): ``s = ⌊n_probes/3⌋``
sketch vectors ``S``, ``Q = orth(M S)`` (a blocked tall-skinny QR, backward stable as
Householder's), ``g = n_probes − 2s`` Hutchinson vectors ``G`` on the complement::

    t = tr(QᵀMQ) + (1/g) Σ_i ω_iᵀ (I−QQᵀ) M (I−QQᵀ) ω_i,

unbiased for any ``M`` since ``tr M = tr(QᵀMQ) + tr((I−QQᵀ)M(I−QQᵀ))``. Given
``Q`` the variance is Hutchinson's for ``R = (I−QQᵀ)M(I−QQᵀ)``; error
estimate: the sample standard deviation of the residual terms over ``√g``.
For PSD ``M`` the relative error is ``O(1/n_probes)`` instead of Hutchinson's
``O(1/√n_probes)``.

XTrace (Epperly, Tropp & Webber 2024, Algorithm 1.2 — the basic exchangeable
estimator; the paper's "improved" rescaling of the test vectors is derived for
vectors uniform on the sphere of radius ``√n`` and is not used with Rademacher
vectors, as in the authors' own code): ``m = ⌊n_probes/2⌋`` test
vectors ``Ω``, ``Y = MΩ = QR``; for each ``i`` the basis ``Q_i`` of ``Y``
without column ``i`` and the Hutch++ estimate built from it and ``ω_i``::

    t_i = tr(Q_iᵀ M Q_i) + ω_iᵀ (I−Q_iQ_iᵀ) M (I−Q_iQ_iᵀ) ω_i,    t = mean_i t_i,

computed without re-factorizing: ``Q_iQ_iᵀ = Q (I − s_i s_iᵀ) Qᵀ`` with
``s_i`` the normalized ``i``-th column of ``R⁻ᵀ``. Error estimate (the
paper's): the standard deviation of the ``t_i`` over ``√m``. When ``MΩ`` is
numerically rank deficient (``σ_min/σ_max < 1e-10``) every ``Q_i`` already
spans the numerical range of ``M`` and every ``t_i`` equals ``tr(QᵀMQ)`` over
that range: that value is returned, with error estimate ``0.0``.

Gram forms ``M = CᵀC`` (Frobenius norms, effective ranks) never form ``M``
for a quadratic form: ``ωᵀ M ω = ‖Cω‖²`` and ``tr(QᵀMQ) = ‖CQ‖_F²``, so only
the sketches ``MS`` cost two products.

The estimate of a ratio (``alignment``; the participation ratio and
effective rank of :mod:`kpref.analysis._spectral`) carries the first-order (delta
method) propagation of the errors of its parts; with ``'hutchinson'``
``alignment`` shares its test vectors between ``tr(AᵀB)``, ``‖A‖_F²`` and
``‖B‖_F²`` and propagates their sample covariance.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from .._checks import as_generator, check_choice, check_memory_limit, check_positive_int, check_size_memory
from .._jit import njit
from ..operators._input import CheckedOperator, as_operator, column_blocks, identity_block, stream_block_size
from ._unit_blocks import structure_of

__all__ = ["trace", "frobenius_norm", "alignment", "TraceEstimate", "RANDOMIZED_METHODS"]

METHODS = ("exact", "hutchinson", "hutch++", "xtrace")
RANDOMIZED_METHODS = METHODS[1:]
DEFAULT_N_PROBES = 100
_MIN_PROBES = {"hutchinson": 2, "hutch++": 4, "xtrace": 4}
#: σ_min/σ_max of the XTrace sketch below which it is treated as rank deficient.
_XTRACE_RANK_RTOL = 1e-10


class TraceEstimate(NamedTuple):
    """A trace estimate: ``value``, ``error`` (one standard error), ``samples`` and products spent."""

    value: float
    error: float
    samples: np.ndarray
    n_products: int


class TraceTarget:
    """The matrix ``M`` of a trace estimate: ``M`` given by its product, or ``M = CᵀC``.

    Parameters
    ----------
    dim : int
        ``M`` is ``dim × dim``.
    matmat : callable, optional
        ``X (dim, k) -> M X``.
    factor, factor_adjoint : callable, optional
        ``X -> C X`` and ``Y -> Cᵀ Y`` for the Gram form ``M = CᵀC``.
    """

    def __init__(self, dim, matmat=None, factor=None, factor_adjoint=None):
        dim = check_positive_int("dim", dim)
        # one probe vector of length dim must fit: a larger M cannot be probed at all
        check_size_memory(f"dim={dim}", 8 * dim, what="one probe vector")
        for arg, fn in (("matmat", matmat), ("factor", factor), ("factor_adjoint", factor_adjoint)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{arg}: expected a callable X (n, k) -> (n, k) or None, got {type(fn).__name__}")
        gram = factor is not None or factor_adjoint is not None
        if gram and (factor is None or factor_adjoint is None):
            missing = "factor_adjoint" if factor_adjoint is None else "factor"
            raise TypeError(f"{missing}: expected a callable (the Gram form M = CᵀC needs factor and "
                            "factor_adjoint), got None")
        if gram == (matmat is not None):
            raise TypeError("matmat: expected exactly one form of M, matmat (M given by its product) or "
                            f"factor/factor_adjoint (M = CᵀC), got {'both' if gram else 'neither'}")
        self.dim = dim
        self._matmat = matmat
        self.factor = factor
        self.factor_adjoint = factor_adjoint
        self.is_gram = gram

    def apply(self, X):
        if self.is_gram:
            return self.factor_adjoint(self.factor(X))
        return self._matmat(X)


def rademacher(rng, n, k):
    """``n × k`` Rademacher test vectors (entries ±1, float64).

    ``rng``: ``None``, an int seed or a ``numpy.random.Generator``; ``n``, ``k``:
    positive ints whose block (and its int64 draw) fits the default memory limit.
    """
    rng = as_generator(rng)
    n = check_positive_int("n", n)
    k = check_positive_int("k", k)
    check_size_memory(f"n={n}, k={k}", 2 * 8 * n * k, what="the test vectors (and their int64 draw)")
    return _rademacher(rng, n, k)


def _rademacher(rng, n, k):
    """:func:`rademacher` on checked arguments (the estimators' inner use).

    The draw is ``rng.integers(0, 2, size=(n, k))`` (int64: the stream of
    every kpref version so far); ``2·bit − 1`` is exact, written in one pass
    by a kernel instead of three array passes (the same ±1 values, bitwise).
    """
    bits = rng.integers(0, 2, size=(n, k))
    out = np.empty((n, k))
    _signs_into(bits.reshape(-1), out.reshape(-1))
    return out


@njit
def _signs_into(bits, out):
    """``out[i] = 2·bits[i] − 1`` (bits in {0, 1}; exact in float64)."""
    for i in range(bits.size):
        out[i] = 2.0 * bits[i] - 1.0


#: Rows per block of :func:`_orthonormal_basis` (a block of ``k ≤ 100`` columns stays in the L2 cache).
_TSQR_ROWS = 512


def _orthonormal_basis(Y):
    """``Q`` with orthonormal columns spanning ``range(Y)`` (``Y`` (n, k)): the Q of a Householder QR.

    Tall-skinny QR (TSQR): ``Y``'s rows in blocks ``Y_j = Q_j R_j`` (LAPACK,
    one batched call), then ``[R_1; …; R_m] = Q' R`` and ``Q = diag(Q_j) Q'``.
    It is a QR of ``Y`` by orthogonal transformations (backward stable as
    Householder's, Demmel et al. 2012); its columns may differ from
    ``numpy.linalg.qr(Y)``'s by signs and, where ``Y`` is ill-conditioned,
    by rounding amplified by ``cond(Y)`` (two backward-stable QRs of one ``Y``).
    Hutch++ uses only ``QQᵀ`` and ``tr(QᵀMQ)``, which are invariant to the
    signs. Faster than one LAPACK QR for ``n ≫ k``: ``dgeqrf`` with ``k``
    below its block size runs column by column over all ``n`` rows
    (memory-bound BLAS-2), the blocks here stay in cache.
    """
    n, k = Y.shape
    rows = max(_TSQR_ROWS, 4 * k)
    m = n // rows
    if m < 4:
        return np.linalg.qr(Y)[0]
    head = Y[:m * rows].reshape(m, rows, k)
    Q1, R1 = np.linalg.qr(head)                       # (m, rows, k), (m, k, k)
    stacked = [R1.reshape(m * k, k)]
    tail = Y[m * rows:]
    if tail.shape[0]:
        Qt, Rt = np.linalg.qr(tail)                   # (r, min(r, k)), (min(r, k), k)
        stacked.append(Rt)
    Q2 = np.linalg.qr(np.concatenate(stacked))[0]     # (m·k + min(r, k), k)
    Q = np.empty((n, Q2.shape[1]))
    np.matmul(Q1, Q2[:m * k].reshape(m, k, -1), out=Q[:m * rows].reshape(m, rows, -1))
    if tail.shape[0]:
        np.matmul(Qt, Q2[m * k:], out=Q[m * rows:])
    return Q


def _mean_and_error(samples):
    n = samples.size
    err = float(np.std(samples, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(np.mean(samples)), err


def _check_estimator(method, target, n_probes, rng):
    """Check a public estimator's arguments; return ``(n_probes, generator)``.

    ``target`` must be a :class:`TraceTarget`, ``n_probes`` an int of at least
    the method's minimum (its sample variance needs two samples), ``rng``
    ``None``, a seed or a Generator; the probe blocks (about three
    ``dim × n_probes`` blocks) are memory-checked before any draw.
    """
    if not isinstance(target, TraceTarget):
        raise TypeError(f"target: expected a kpref.analysis.TraceTarget (or direct_target(chk) / gram_target(chk)), "
                        f"got {type(target).__name__}")
    n_probes = check_positive_int("n_probes", n_probes, minimum=_MIN_PROBES[method])
    gen = as_generator(rng)
    check_size_memory(f"n_probes={n_probes}", 3 * 8 * target.dim * n_probes, what="the probe blocks")
    return n_probes, gen


def hutchinson(target, n_probes, rng):
    """Girard–Hutchinson with ``n_probes`` Rademacher vectors (module notes)."""
    n_probes, rng = _check_estimator("hutchinson", target, n_probes, rng)
    W = _rademacher(rng, target.dim, n_probes)
    if target.is_gram:
        samples = np.einsum("ij,ij->j", *(2 * (target.factor(W),)))
    else:
        samples = np.einsum("ij,ij->j", W, target.apply(W))
    value, err = _mean_and_error(samples)
    return TraceEstimate(value, err, samples, n_probes)


def hutch_plus_plus(target, n_probes, rng, *, return_basis=False, sketch=None):
    """Hutch++ with a budget of ``n_probes`` products with ``M`` (module notes).

    ``sketch``: optionally ``M S`` (dim × ⌊n_probes/3⌋) for Rademacher ``S``
    the caller drew (and ``rng`` then draws only the residual vectors), so
    that two estimates can share one ``S`` (:func:`kpref.analysis.effective_rank`:
    ``(AᵀA)² S = AᵀA (AᵀA S)``). Each estimate is then distributed exactly as
    without it; given ``S``, their residual terms are independent.
    """
    n_probes, rng = _check_estimator("hutch++", target, n_probes, rng)
    s = n_probes // 3
    g = n_probes - 2 * s
    if sketch is None:
        sketch = target.apply(_rademacher(rng, target.dim, s))
    elif not (isinstance(sketch, np.ndarray) and sketch.dtype == np.float64 and sketch.shape == (target.dim, s)):
        raise TypeError(f"sketch: expected a float64 array M S of shape ({target.dim}, {s}), got "
                        f"{getattr(sketch, 'dtype', type(sketch).__name__)} of shape {getattr(sketch, 'shape', None)}")
    elif not np.all(np.isfinite(sketch)):
        raise ValueError("sketch: expected finite values, got NaN or inf")
    Q = _orthonormal_basis(sketch)
    if target.is_gram:
        CQ = target.factor(Q)
        sketch_trace = float(np.sum(CQ * CQ))
    else:
        sketch_trace = float(np.einsum("ij,ij->", Q, target.apply(Q)))
    G = _rademacher(rng, target.dim, g)
    G -= Q @ (Q.T @ G)                                  # G_perp = (I − QQᵀ) G, in place
    if target.is_gram:
        samples = np.einsum("ij,ij->j", *(2 * (target.factor(G),)))
    else:
        samples = np.einsum("ij,ij->j", G, target.apply(G))
    mean, err = _mean_and_error(samples)
    est = TraceEstimate(sketch_trace + mean, err, sketch_trace + samples, n_probes)
    return (est, Q) if return_basis else est


def xtrace(target, n_probes, rng):
    """XTrace (exchangeable Hutch++) with a budget of ``n_probes`` products with ``M`` (module notes)."""
    n_probes, rng = _check_estimator("xtrace", target, n_probes, rng)
    m = n_probes // 2
    W = _rademacher(rng, target.dim, m)
    if target.is_gram:
        CW = target.factor(W)
        Y = target.factor_adjoint(CW)
    else:
        Y = target.apply(W)
    Q, R = np.linalg.qr(Y)
    sv = np.linalg.svd(R, compute_uv=False)
    if R.shape[0] < m or sv[-1] <= _XTRACE_RANK_RTOL * sv[0]:
        # Rank deficient sketch: every leave-one-out basis spans the numerical range of M.
        if sv[0] == 0.0:
            return TraceEstimate(0.0, 0.0, np.zeros(m), n_probes)
        U, sy, _ = np.linalg.svd(Y, full_matrices=False)
        Qr = U[:, : int(np.sum(sy > _XTRACE_RANK_RTOL * sy[0]))]
        if target.is_gram:
            CQ = target.factor(Qr)
            value = float(np.sum(CQ * CQ))
        else:
            value = float(np.einsum("ij,ij->", Qr, target.apply(Qr)))
        return TraceEstimate(value, 0.0, np.full(m, value), m + Qr.shape[1])
    # S = R^{-T} with normalized columns: s_i ⊥ R e_j for j ≠ i
    R_inv, info = scipy.linalg.lapack.dtrtri(R, lower=0)   # (LAPACK directly: solve_triangular's overhead
    if info != 0:                                            #  dominates at this size)
        raise np.linalg.LinAlgError(f"xtrace: the sketch's R factor is singular (dtrtri info={info})")
    S = np.ascontiguousarray(R_inv.T)
    S /= np.linalg.norm(S, axis=0)
    if target.is_gram:
        CQ = target.factor(Q)
        H = CQ.T @ CQ
    else:
        Z = target.apply(Q)
        H = Q.T @ Z
    # tr(Q_iᵀ M Q_i) = tr(QᵀMQ) − s_iᵀ (QᵀMQ) s_i
    sketch_traces = np.trace(H) - np.einsum("ji,jk,ki->i", S, H, S)
    # u_i = (I − Q_iQ_iᵀ) ω_i = ω_i − Q d_i,  d_i = Qᵀω_i − s_i (s_iᵀ Qᵀ ω_i)
    QtW = Q.T @ W
    D = QtW - S * np.einsum("ji,ji->i", S, QtW)
    if target.is_gram:
        CU = CW - CQ @ D
        residual_terms = np.einsum("ij,ij->j", CU, CU)
    else:
        U = W - Q @ D
        MU = Y - Z @ D
        residual_terms = np.einsum("ij,ij->j", U, MU)
    samples = sketch_traces + residual_terms
    value, err = _mean_and_error(samples)
    return TraceEstimate(value, err, samples, n_probes)


ESTIMATORS = {"hutchinson": hutchinson, "hutch++": hutch_plus_plus, "xtrace": xtrace}


def check_method(method, n_probes, rng, methods=METHODS):
    """Validate ``method``/``n_probes``/``rng``; return ``(n_probes, generator)`` (``None``\\ s for exact)."""
    check_choice("method", method, methods)
    if method == "exact":
        if n_probes is not None:
            raise ValueError(f"n_probes: expected None with method='exact' (it uses no probes), got {n_probes!r}")
        if rng is not None:
            raise ValueError("rng: expected None with method='exact' (it draws no random numbers), "
                             f"got {type(rng).__name__}")
        return None, None
    n_probes = DEFAULT_N_PROBES if n_probes is None else n_probes
    n_probes = check_positive_int("n_probes", n_probes, minimum=_MIN_PROBES.get(method, 2))
    return n_probes, as_generator(rng)


def estimate(method, target, n_probes, rng):
    """Run the randomized estimator ``method`` on ``target`` (its probe blocks memory-checked first)."""
    return ESTIMATORS[method](target, n_probes, rng)


def _check_checked_operator(chk, square=False):
    if not isinstance(chk, CheckedOperator):
        raise TypeError(f"chk: expected a kpref.operators.CheckedOperator (wrap an operator with "
                        f"kpref.operators.as_operator(name, op)), got {type(chk).__name__}")
    if square and not chk.is_square:
        raise ValueError(f"chk: expected a square operator (M = A), got shape {chk.shape}")


def direct_target(chk):
    """``M = A`` for a square :class:`CheckedOperator`."""
    _check_checked_operator(chk, square=True)
    return TraceTarget(chk.shape[1], matmat=chk.matmat)


def gram_target(chk):
    """``M = AᵀA`` (probes in A's input space) for a :class:`CheckedOperator`."""
    _check_checked_operator(chk)
    return TraceTarget(chk.shape[1], factor=chk.matmat, factor_adjoint=chk.rmatmat)


def _result(value, error, return_error):
    return (float(value), float(error)) if return_error else float(value)


def _exact_stream(ops, memory_limit, reduce_block):
    """Stream identity blocks through every operator in ``ops`` (same input size); accumulate ``reduce_block``."""
    n_in = ops[0].shape[1]
    n_out = max(op.shape[0] for op in ops)
    block = stream_block_size(n_out, n_in, memory_limit, copies=len(ops) + 1)
    totals = None
    for start, stop in column_blocks(n_in, block):
        E = identity_block(n_in, start, stop)
        parts = reduce_block(start, stop, *(op.matmat(E) for op in ops))
        totals = parts if totals is None else tuple(a + b for a, b in zip(totals, parts))
    return totals


# ----------------------------------------------------------------------------------- public


def trace(op, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """Trace of a square operator, exact or randomized.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix (square)
    method : {'exact', 'hutchinson', 'hutch++', 'xtrace'}
        ``'exact'`` (default) streams the identity through ``op`` (``n``
        products), or, for a linearization's ``K`` with per-unit blocks, sums
        them (:mod:`kpref.analysis._unit_blocks`, any size); the others spend ``n_probes`` products (module notes of
        :mod:`kpref.analysis._traces`).
    n_probes : int, optional
        Budget of products for a randomized method (default 100; at least 2
        for Hutchinson, 4 for Hutch++ and XTrace). Must be ``None`` for
        ``'exact'``.
    rng : None, int or numpy.random.Generator
        Source of the test vectors (randomized methods only).
    return_error : bool
        Also return the method's error estimate (one standard error; ``0.0``
        for ``'exact'``).
    memory_limit : int, optional
        Bytes a streamed block may take.

    Returns
    -------
    float, or (float, float) with ``return_error``

    Examples
    --------
    >>> import numpy as np
    >>> from kpref.analysis import trace
    >>> A = np.diag([3.0, 2.0, 1.0])
    >>> trace(A)
    6.0
    >>> value, err = trace(A, 'xtrace', n_probes=8, rng=0, return_error=True)
    >>> round(value, 12), err          # 4 sketch vectors exceed the rank 3: exact
    (6.0, 0.0)
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op, square=True)
    n_probes, gen = check_method(method, n_probes, rng)
    kb = structure_of(chk.op, memory_limit=memory_limit) if method == "exact" else None
    if kb is not None:
        return _result(kb.trace(), 0.0, return_error)
    if method == "exact":
        (value,) = _exact_stream([chk], memory_limit,
                                 lambda a, b, Y: (float(np.trace(Y[a:b])),))
        return _result(value, 0.0, return_error)
    est = estimate(method, direct_target(chk), n_probes, gen)
    return _result(est.value, est.error, return_error)


def frobenius_norm(op, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """Frobenius norm ``‖A‖_F = √tr(AᵀA)``, exact or randomized.

    Parameters are those of :func:`trace`; ``op`` may be rectangular. The
    randomized methods estimate ``tr(AᵀA)`` in its Gram form (``ωᵀAᵀAω =
    ‖Aω‖²``; Hutch++ and XTrace sketch with ``AᵀA``, two products) and return
    its square root; the error estimate is propagated to first order,
    ``err(‖A‖_F) = err(‖A‖_F²) / (2‖A‖_F)``.
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op)
    n_probes, gen = check_method(method, n_probes, rng)
    kb = structure_of(chk.op, memory_limit=memory_limit) if method == "exact" else None
    if kb is not None:
        return _result(np.sqrt(kb.frobenius_sq()), 0.0, return_error)
    if method == "exact":
        (sq,) = _exact_stream([chk], memory_limit, lambda a, b, Y: (float(np.sum(Y * Y)),))
        return _result(np.sqrt(sq), 0.0, return_error)
    est = estimate(method, gram_target(chk), n_probes, gen)
    value = np.sqrt(max(est.value, 0.0))
    err = est.error / (2.0 * value) if value > 0 else (np.sqrt(est.error) if est.error > 0 else 0.0)
    return _result(value, err, return_error)


def _cosine(x, y, z, name_a="A", name_b="B"):
    if y <= 0.0:
        raise ValueError(f"{name_a}: the alignment needs ‖{name_a}‖_F > 0, got ‖{name_a}‖_F² = {y!r}")
    if z <= 0.0:
        raise ValueError(f"{name_b}: the alignment needs ‖{name_b}‖_F > 0, got ‖{name_b}‖_F² = {z!r}")
    return x / np.sqrt(y * z)


def alignment(A, B, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """Alignment ``cos(A, B) = tr(AᵀB) / (‖A‖_F ‖B‖_F)`` (SPEC §6), exact or randomized.

    Parameters
    ----------
    A, B : LinearOperator, 2-D float array or sparse matrix, same shape
    method, n_probes, rng, return_error, memory_limit
        As in :func:`trace`. ``'hutchinson'`` draws ``n_probes`` test
        vectors ``ω`` and uses each for all three quantities,
        ``(Aω)ᵀ(Bω)``, ``‖Aω‖²`` and ``‖Bω‖²`` (a ratio estimator: exactly 1
        for ``A = B``); its error estimate is the delta method on their
        sample covariance. ``'hutch++'`` and ``'xtrace'`` estimate
        ``tr(AᵀB)`` (``M = AᵀB``), ``‖A‖_F²`` and ``‖B‖_F²`` with ``n_probes``
        products each, independently, and propagate the three errors.
        ``'exact'`` of two linearizations' ``K`` with per-unit blocks of the
        same layout (e.g. one cell at two checkpoints, or a sub-task's ``K``)
        sums ``Σ_u ⟨K_u, K'_u⟩_F`` through the blocks, at any size.

    Returns
    -------
    float in [-1, 1] (exact), or (float, float) with ``return_error``
    """
    memory_limit = check_memory_limit(memory_limit)
    a = as_operator("A", A)
    b = as_operator("B", B)
    if a.shape != b.shape:
        raise ValueError(f"B: expected the shape of A, {a.shape}, got {b.shape}")
    n_probes, gen = check_method(method, n_probes, rng)
    ka = structure_of(a.op, memory_limit=memory_limit) if method == "exact" else None
    kb = structure_of(b.op, memory_limit=memory_limit) if ka is not None else None
    if kb is not None and kb.shape == ka.shape and kb.units == ka.units:
        return _result(_cosine(ka.inner(kb), ka.frobenius_sq(), kb.frobenius_sq()), 0.0, return_error)
    if method == "exact":
        x, y, z = _exact_stream(
            [a, b], memory_limit,
            lambda s, e, YA, YB: (float(np.sum(YA * YB)), float(np.sum(YA * YA)), float(np.sum(YB * YB))))
        return _result(_cosine(x, y, z), 0.0, return_error)
    if method == "hutchinson":
        W = _rademacher(gen, a.shape[1], n_probes)
        AW, BW = a.matmat(W), b.matmat(W)
        samples = np.stack([np.einsum("ij,ij->j", AW, BW), np.einsum("ij,ij->j", AW, AW),
                            np.einsum("ij,ij->j", BW, BW)])
        x, y, z = samples.mean(axis=1)
        cos = _cosine(x, y, z)
        grad = np.array([1.0 / np.sqrt(y * z), -0.5 * cos / y, -0.5 * cos / z])
        cov = np.cov(samples, ddof=1)
        err = float(np.sqrt(max(grad @ cov @ grad, 0.0) / n_probes))
        return _result(cos, err, return_error)
    cross = estimate(method, TraceTarget(a.shape[1], matmat=lambda X: a.rmatmat(b.matmat(X))), n_probes, gen)
    na = estimate(method, gram_target(a), n_probes, gen)
    nb = estimate(method, gram_target(b), n_probes, gen)
    x, y, z = cross.value, na.value, nb.value
    cos = _cosine(x, y, z)
    err = float(np.sqrt((cross.error / np.sqrt(y * z)) ** 2 + (0.5 * cos * na.error / y) ** 2
                        + (0.5 * cos * nb.error / z) ** 2))
    return _result(cos, err, return_error)

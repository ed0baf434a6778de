r"""Eigenfunctions: eigenpairs and singular triplets shaped like trajectories (issue 16).

Notes
-----
:func:`eigenpairs` returns ``k`` extreme eigenpairs ``A u_i = λ_i u_i`` of a
symmetric operator (``K``, ``P P*``, the ``NTK``, a partial trace or marginal
sum of one of them, a reduced Gram of :func:`kpref.analysis.reduced_gram`);
:func:`singular_triplets` returns ``A v_i = σ_i u_i``, ``Aᵀ u_i = σ_i v_i`` of
any operator (``P``, ``J_θ``). Vectors come back reshaped, vector index first:
``(k, B, T, S)`` for an operator on trajectory space (``shape=lin.shape``),
``(k, *kept_shape)`` for a reduction (read from the operator's
``kept_shape``), ``(k, n)`` otherwise.

*Residuals* are recomputed from one more product with the operator, whatever
the method: ``‖A u_i − λ_i u_i‖`` for eigenpairs and
``√(‖A v_i − σ_i u_i‖² + ‖Aᵀ u_i − σ_i v_i‖²)`` for triplets.

*Sign convention* (eigenvectors are defined up to sign): each ``u_i`` is
flipped so that its entry of largest magnitude (the first such entry in
C order) is positive; for triplets the flip is decided on ``u_i`` and applied
to ``v_i`` too, so ``A v_i = σ_i u_i`` still holds.

*Methods* are a registry (:data:`EIGEN_METHODS`): ``'dense'`` (LAPACK on the
materialized operator, memory checked first) and ``'lanczos'`` (thick-restart
block Lanczos of :mod:`kpref.analysis._spectral`; for triplets, on the Gram
operator of the smaller side, ``u = A v / σ``). ``method='auto'`` is dense up
to :data:`kpref.analysis._spectral.DENSE_MAX_SIZE` and Lanczos above. Another
route (e.g. a structured product for ``K``) plugs in with
:func:`register_eigen_method`.
"""

from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np

from .._checks import as_generator, check_choice, check_positive_float, check_positive_int
from ..operators._input import as_operator, materialize, symmetric_part_checked
from ._spectral import DENSE_MAX_SIZE, _WHICH, _check_k, _order, block_lanczos

__all__ = ["EigenPairs", "SingularTriplets", "eigenpairs", "singular_triplets", "register_eigen_method",
           "EIGEN_METHODS"]


class EigenPairs(NamedTuple):
    """``values`` (k,), ``vectors`` (k, *shape), ``residuals`` (k,) and the ``method`` used."""

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    method: str


class SingularTriplets(NamedTuple):
    """``values`` (k,) descending, ``left`` (k, *out_shape), ``right`` (k, *in_shape), ``residuals``, ``method``."""

    values: np.ndarray
    left: np.ndarray
    right: np.ndarray
    residuals: np.ndarray
    method: str


def _eig_dense(chk, k, which, tol, rng, memory_limit):
    lam, U = np.linalg.eigh(symmetric_part_checked(chk.name, materialize(chk, memory_limit)))
    order = _order(lam, which)[:k]
    return lam[order], U[:, order]


def _eig_lanczos(chk, k, which, tol, rng, memory_limit):
    res = block_lanczos(chk.matmat, chk.shape[0], k, which, tol=tol, rng=rng, memory_limit=memory_limit)
    return res.values, res.vectors


#: name → ``fn(chk, k, which, tol, rng, memory_limit) -> (values (k,), vectors (n, k))`` for eigenpairs.
EIGEN_METHODS = {"dense": _eig_dense, "lanczos": _eig_lanczos}


def register_eigen_method(name, fn):
    """Add an eigenpair route ``fn(chk, k, which, tol, rng, memory_limit) -> (values, vectors (n, k))``.

    The residuals and the sign convention are applied by :func:`eigenpairs`
    to whatever the route returns, so a wrong route shows in ``residuals``.
    """
    if not isinstance(name, str) or not name or name in ("auto",) or name in EIGEN_METHODS:
        raise ValueError(f"name: expected a new method name, got {name!r} (taken: {sorted(EIGEN_METHODS)})")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable, got {type(fn).__name__}")
    EIGEN_METHODS[name] = fn


def _vector_shape(op, shape, n, name="shape"):
    if shape is None:
        shape = getattr(op, "kept_shape", None)
        if shape is None:
            return (n,)
    if not isinstance(shape, (tuple, list)) or not shape:
        raise TypeError(f"{name}: expected a tuple of positive integers such as (B, T, S), got {shape!r}")
    shape = tuple(check_positive_int(f"{name}[{i}]", s) for i, s in enumerate(shape))
    if prod(shape) != n:
        raise ValueError(f"{name}: expected sizes whose product is the operator's dimension {n}, got {shape}")
    return shape


def _fix_signs(U):
    """Flip columns of ``U`` (n, k) so the first entry of largest magnitude is positive; returns the signs."""
    idx = np.argmax(np.abs(U), axis=0)
    signs = np.where(U[idx, np.arange(U.shape[1])] < 0, -1.0, 1.0)
    return signs


def eigenpairs(op, k=None, *, shape=None, which="LA", method="auto", tol=1e-10, rng=None, memory_limit=None):
    """``k`` extreme eigenpairs of a symmetric operator, vectors shaped like trajectories (module notes).

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix (square, symmetric)
    k : int, optional
        Number of pairs; ``None``: all (dense only).
    shape : tuple of int, optional
        Shape of one vector, e.g. ``lin.shape``; default ``op.kept_shape``
        for a reduction, else ``(n,)``.
    which : {'LA', 'SA', 'LM'}
    method : {'auto', 'dense', 'lanczos'} or a registered name
    tol, rng, memory_limit
        As in :func:`kpref.analysis.spectrum`.

    Returns
    -------
    EigenPairs
        ``values`` ordered by ``which``; ``vectors[i]`` has ``shape``.
    """
    chk = as_operator("op", op, square=True)
    n = chk.shape[0]
    vshape = _vector_shape(op, shape, n)
    check_choice("which", which, _WHICH)
    check_choice("method", method, ("auto",) + tuple(EIGEN_METHODS))
    tol = check_positive_float("tol", tol)
    rng = as_generator(rng)     # checked on every route (the dense one draws nothing)
    if method == "auto":
        method = "dense" if (k is None or n <= DENSE_MAX_SIZE) else "lanczos"
    if k is None and method != "dense":
        raise ValueError(f"k: expected an integer with method={method!r} (all pairs need method='dense')")
    k = n if k is None else _check_k(k, n)
    values, U = EIGEN_METHODS[method](chk, k, which, tol, rng, memory_limit)
    values = np.array(values, dtype=np.float64)
    U = np.array(U, dtype=np.float64)
    if U.shape != (n, k) or values.shape != (k,):
        raise ValueError(f"method: route {method!r} returned values {values.shape} and vectors {U.shape}, "
                         f"expected ({k},) and ({n}, {k})")
    U *= _fix_signs(U)
    residuals = np.linalg.norm(chk.matmat(U) - U * values, axis=0)
    vectors = np.ascontiguousarray(U.T).reshape((k,) + vshape)
    return EigenPairs(values, vectors, residuals, method)


def singular_triplets(op, k=None, *, in_shape=None, out_shape=None, method="auto", tol=1e-10, rng=None,
                      memory_limit=None):
    """The ``k`` largest singular triplets ``A v = σ u``, ``Aᵀ u = σ v`` (module notes).

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
    k : int, optional
        ``None``: all ``min(n_out, n_in)`` (dense only).
    in_shape, out_shape : tuple of int, optional
        Shapes of ``v`` and ``u`` (default ``op.kept_shape`` or flat).
    method : {'auto', 'dense', 'lanczos'}
    tol, rng, memory_limit
        As in :func:`kpref.analysis.singular_values`.

    Returns
    -------
    SingularTriplets
    """
    chk = as_operator("op", op)
    n_out, n_in = chk.shape
    small = min(n_out, n_in)
    oshape = _vector_shape(op, out_shape, n_out, "out_shape")
    ishape = _vector_shape(op, in_shape, n_in, "in_shape")
    check_choice("method", method, ("auto", "dense", "lanczos"))
    tol = check_positive_float("tol", tol)
    rng = as_generator(rng)     # checked on every route (the dense one draws nothing)
    if method == "auto":
        method = "dense" if (k is None or small <= DENSE_MAX_SIZE) else "lanczos"
    if k is None and method != "dense":
        raise ValueError(f"k: expected an integer with method={method!r} (all triplets need method='dense')")
    k = small if k is None else _check_k(k, small)
    if method == "dense":
        Uf, s, Vt = np.linalg.svd(materialize(chk, memory_limit), full_matrices=False)
        s, U, V = s[:k].copy(), Uf[:, :k].copy(), Vt[:k].T.copy()
    else:
        # Lanczos on the Gram operator of the smaller side; the other side's vectors are A v / σ (or Aᵀ u / σ)
        right = n_in <= n_out
        gram = chk.gram_matmat if right else (lambda X: chk.matmat(chk.rmatmat(X)))
        other = chk.matmat if right else chk.rmatmat
        res = block_lanczos(gram, small, k, "LA", tol=tol, rng=rng, memory_limit=memory_limit)
        s = np.sqrt(np.maximum(res.values, 0.0))
        Y = other(res.vectors)
        W = np.divide(Y, s, out=np.zeros_like(Y), where=s > 0)
        (V, U) = (res.vectors, W) if right else (W, res.vectors)
    signs = _fix_signs(U)
    U, V = U * signs, V * signs
    r1 = chk.matmat(V) - U * s
    r2 = chk.rmatmat(U) - V * s
    residuals = np.sqrt(np.sum(r1 * r1, axis=0) + np.sum(r2 * r2, axis=0))
    left = np.ascontiguousarray(U.T).reshape((k,) + oshape)
    right = np.ascontiguousarray(V.T).reshape((k,) + ishape)
    return SingularTriplets(s, left, right, residuals, method)

"""Operators as inputs to :mod:`kpref.analysis`: checking, block products, dense copies.

Every analysis function accepts a ``scipy.sparse.linalg.LinearOperator``, a
2-D float ndarray or a SciPy sparse matrix, and wraps it in a
:class:`CheckedOperator`:

* real floating operators only (complex, integer and object operators are
  refused with a ``TypeError`` naming the argument);
* products are taken a block at a time (``matmat``/``rmatmat``, never a
  Python loop over columns) and come back as C-contiguous float64 arrays of
  the right shape; a non-finite product is refused with a ``ValueError``
  naming the operator and the product (a NaN in an estimate is a diagnosis
  nobody can use);
* exact methods either *stream* the identity through the operator in column
  blocks (``trace``, ``frobenius_norm``, ``alignment``: ``n`` products,
  memory of one block) or *materialize* it (spectra, ranks: memory checked
  first with :func:`kpref._checks.check_memory`, limit overridable with
  ``memory_limit=``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._checks import as_real_array, check_memory, DEFAULT_MEMORY_LIMIT, readonly_copy
from .._identity import column_blocks, identity_block, identity_columns

__all__ = [
    "CheckedOperator",
    "as_operator",
    "column_blocks",
    "stream_block_size",
    "materialize",
    "symmetric_part_checked",
    "probe_symmetric",
]

#: Working memory, in bytes, one streamed column block may take (smaller if ``memory_limit`` is).
_STREAM_BLOCK_BYTES = 64 * 1024**2

#: Relative asymmetry ``‖M − Mᵀ‖_F / ‖M‖_F`` above which a dense operator is refused as non-symmetric.
SYMMETRY_TOLERANCE = 1e-8


class CheckedOperator:
    """A real ``LinearOperator`` whose block products are checked float64 arrays.

    Attributes
    ----------
    name : str
        The argument's name (used in every message).
    op : LinearOperator
        The wrapped operator.
    shape : (int, int)
    """

    def __init__(self, name, op):
        # public (kpref.operators.CheckedOperator): a hand-built one is checked as as_operator checks a
        # LinearOperator; arrays and sparse matrices go through as_operator, which wraps them first
        if not isinstance(name, str):
            raise TypeError(f"name: expected the argument's name (a string), got {type(name).__name__}")
        if not isinstance(op, LinearOperator):
            raise TypeError(f"{name} (op): expected a scipy.sparse.linalg.LinearOperator (wrap an array or sparse "
                            f"matrix with kpref.operators.as_operator), got {type(op).__name__}")
        dtype = np.dtype(op.dtype) if op.dtype is not None else None
        if dtype is None or dtype.kind != "f":
            raise TypeError(f"{name} (op): expected a real floating LinearOperator, got dtype {dtype}")
        if min(op.shape) < 1:
            raise ValueError(f"{name} (op): expected a non-empty operator, got shape {op.shape}")
        self.name = name
        self.op = op
        self.shape = tuple(int(s) for s in op.shape)

    def _checked(self, Y, rows, cols, what):
        Y = np.asarray(Y)
        if Y.dtype.kind == "c":
            raise TypeError(f"{self.name}: {what} returned complex values; expected a real operator")
        if Y.ndim == 1 and cols == 1:
            Y = Y.reshape(-1, 1)
        if Y.shape != (rows, cols):
            raise ValueError(f"{self.name}: {what} returned shape {Y.shape}, expected {(rows, cols)}")
        Y = np.ascontiguousarray(Y, dtype=np.float64)
        if not np.isfinite(Y).all():
            raise ValueError(
                f"{self.name}: {what} returned {int((~np.isfinite(Y)).sum())} non-finite values; "
                "expected a finite product (check the operator's inputs)"
            )
        return Y

    def matmat(self, X):
        """``op @ X`` for a block ``X`` (n_in, k) → (n_out, k)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        return self._checked(self.op.matmat(X), self.shape[0], X.shape[1], "matmat")

    def rmatmat(self, X):
        """``opᵀ @ X`` for a block ``X`` (n_out, k) → (n_in, k)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        try:
            Y = self.op.rmatmat(X)
        except (NotImplementedError, TypeError) as exc:
            # SciPy raises NotImplementedError, or calls a missing (None) rmatvec: "'NoneType' object is not callable"
            if isinstance(exc, TypeError) and "NoneType" not in str(exc):
                raise
            raise TypeError(
                f"{self.name}: this analysis needs the adjoint product (rmatmat/rmatvec), "
                f"which {type(self.op).__name__} does not define"
            ) from exc
        return self._checked(Y, self.shape[1], X.shape[1], "rmatmat")

    def gram_matmat(self, X):
        """``opᵀ op X`` (n_in, k) → (n_in, k)."""
        return self.rmatmat(self.matmat(X))

    @property
    def is_square(self):
        return self.shape[0] == self.shape[1]


def as_operator(name, op, *, square=False, snapshot=False):
    """Check ``op`` and wrap it as a :class:`CheckedOperator`.

    Parameters
    ----------
    name : str
        Argument name for messages.
    op : LinearOperator, 2-D float ndarray or SciPy sparse matrix
    square : bool
        Require a square operator.
    snapshot : bool
        Copy a dense array (read-only) instead of wrapping the caller's
        memory: for operators kpref returns, which must not change when the
        caller later changes its array (a sparse matrix is always copied).
    """
    from ._linearization import Linearization  # here: _linearization imports this module

    if isinstance(op, Linearization):
        raise TypeError(
            f"{name}: expected a LinearOperator, got a {type(op).__name__}; pass one of its operators, "
            f"e.g. {name}=lin.K, lin.P or lin.NTK"
        )
    if isinstance(op, LinearOperator):
        dtype = np.dtype(op.dtype) if op.dtype is not None else None
        if dtype is None or dtype.kind != "f":
            raise TypeError(f"{name}: expected a real floating LinearOperator, got dtype {dtype}")
        lin_op = op
    elif scipy.sparse.issparse(op):
        if op.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D sparse matrix, got {op.ndim}-D")
        if op.dtype.kind != "f":
            raise TypeError(f"{name}: expected a real floating sparse matrix, got dtype {op.dtype}")
        if not np.isfinite(op.data).all():
            raise ValueError(f"{name}: expected finite values, got non-finite entries in the sparse matrix")
        lin_op = aslinearoperator(op.astype(np.float64))
    elif isinstance(op, (np.ndarray, list, tuple)) or hasattr(op, "__array__"):
        arr = as_real_array(name, op, (None, None), ("rows", "columns"))
        if snapshot:
            arr = readonly_copy(arr)
        lin_op = aslinearoperator(arr)
    else:
        raise TypeError(
            f"{name}: expected a scipy.sparse.linalg.LinearOperator, a 2-D float array or a sparse matrix, "
            f"got {type(op).__name__}"
        )
    if min(lin_op.shape) < 1:
        raise ValueError(f"{name}: expected a non-empty operator, got shape {lin_op.shape}")
    if square and lin_op.shape[0] != lin_op.shape[1]:
        raise ValueError(f"{name}: expected a square operator, got shape {lin_op.shape}")
    return CheckedOperator(name, lin_op)


def stream_block_size(n_rows, n_cols, memory_limit=None, *, copies=2):
    """Columns per streamed block: ``copies`` blocks of ``n_rows`` floats within the working budget."""
    limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
    budget = min(_STREAM_BLOCK_BYTES, limit)
    per_column = 8 * n_rows * copies
    check_memory("a streamed column block", per_column, limit)
    return int(max(1, min(n_cols, budget // per_column)))


def materialize(chk, memory_limit=None, *, what=None):
    """Dense copy of a :class:`CheckedOperator` (memory checked first), built in column blocks."""
    n, m = chk.shape
    check_memory(what or f"materializing {chk.name}", 8 * n * m, memory_limit)
    dense = getattr(chk.op, "A", None)
    if isinstance(dense, np.ndarray) and dense.shape == (n, m):  # aslinearoperator(ndarray)
        return np.array(dense, dtype=np.float64, order="C")
    return identity_columns(chk.matmat, n, m, stream_block_size(n, m, memory_limit, copies=1))


def symmetric_part_checked(name, M, tolerance=SYMMETRY_TOLERANCE):
    """``(M + Mᵀ)/2`` after checking that ``M`` is symmetric to ``tolerance`` (relative, Frobenius)."""
    scale = np.linalg.norm(M)
    asym = np.linalg.norm(M - M.T)
    if asym > tolerance * scale:
        raise ValueError(
            f"{name}: expected a symmetric operator, got relative asymmetry ‖M − Mᵀ‖_F/‖M‖_F = "
            f"{asym / scale:.3e} (threshold {tolerance:.0e}); for a non-symmetric operator use "
            "singular_values / effective_rank"
        )
    return 0.5 * (M + M.T)


#: Number of probe vectors of :func:`probe_symmetric`, and the fixed seed that draws them (a fixed
#: probe leaves the caller's random stream untouched and makes the refusal reproducible).
_PROBE_VECTORS = 8
_PROBE_SEED = 0x6B707266


def probe_symmetric(name, matmat, n, *, psd=False, tolerance=SYMMETRY_TOLERANCE, what="this method"):
    """Refuse a non-symmetric (or, with ``psd``, indefinite) operator from a few products, without a dense copy.

    With ``U`` (n, m) orthonormal Gaussian (m = min(n, 8), fixed seed) and
    ``C = Uᵀ A U``: a symmetric ``A`` gives a symmetric ``C`` up to rounding
    (``‖C − Cᵀ‖_F ≲ n ε ‖A U‖_F``), while for a non-symmetric ``A``,
    ``C − Cᵀ = Uᵀ(A − Aᵀ)U`` is non-zero with probability one. ``C`` is
    refused when ``‖C − Cᵀ‖_F > tolerance · ‖A U‖_F`` (the dense routes'
    1e-8). With ``psd``, an eigenvalue of ``(C + Cᵀ)/2`` below
    ``−tolerance · ‖A U‖_F`` proves ``A`` is not PSD (``uᵀAu < 0``) and is
    refused too; a PSD ``A`` is never refused, an indefinite one is caught
    when its negative part is visible in a random 8-dimensional subspace
    (a certificate only the dense eigenvalues can give). Cost: ``m`` products
    (returned).
    """
    m = min(n, _PROBE_VECTORS)
    U, _ = np.linalg.qr(np.random.default_rng(_PROBE_SEED).standard_normal((n, m)))
    AU = np.asarray(matmat(U), dtype=np.float64)
    C = U.T @ AU
    scale = float(np.linalg.norm(AU))
    asym = float(np.linalg.norm(C - C.T))
    if not np.isfinite(scale) or asym > tolerance * scale:
        raise ValueError(
            f"{name}: expected a symmetric operator ({what} assumes one), got u_iᵀ A u_j ≠ u_jᵀ A u_i on "
            f"random probes: relative asymmetry {asym / scale if scale else float('inf'):.3e} (threshold "
            f"{tolerance:.0e}); for a non-symmetric operator use singular_values / effective_rank"
        )
    if psd:
        low = float(np.linalg.eigvalsh(0.5 * (C + C.T))[0])
        if low < -tolerance * scale:
            raise ValueError(
                f"{name}: expected a positive semidefinite operator ({what} assumes one), got a direction "
                f"u with uᵀAu/‖u‖² = {low:.3e} < 0 (scale {scale:.3e}); for any operator A use "
                "effective_rank(A) = PR(AAᵀ)"
            )
    return m

"""LinearOperator plumbing: checked flat vectors, native blocks, named adjoint pairs.

Vectors crossing the ``LinearOperator`` boundary are flat and 1-D (or blocks
``(n, k)``), as SciPy expects; trajectory vectors are flattened in C order
over ``(b, t, s)``. Each operator here

* passes ``dtype=np.float64`` to SciPy (no probing matvec),
* implements ``_matmat``/``_rmatmat`` natively (one sweep for a block),
* returns its named partner from ``_adjoint`` (``P.H`` is ``P*``, and
  ``P*.H`` is ``P`` again),
* checks every input: a vector of the wrong length, a complex or non-finite
  vector is refused with a message naming the operator.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .._checks import as_real_array, check_memory
from .._identity import identity_columns

__all__ = ["NamedOperator", "todense"]


class NamedOperator(LinearOperator):
    """A real ``LinearOperator`` defined by block functions ``matmat`` and ``rmatmat``.

    Parameters
    ----------
    name : str
        Used in messages and ``repr`` (e.g. ``"P"``).
    shape : (int, int)
    matmat : callable
        ``X (n_in, k) -> (n_out, k)``, float64, already-checked input.
    rmatmat : callable
        The adjoint block product ``Y (n_out, k) -> (n_in, k)``.
    adjoint_name : str
        Name of the adjoint operator (e.g. ``"P*"``); equal to ``name`` for a
        symmetric operator, in which case ``.H`` is the operator itself.
    unit_blocks : callable, optional
        Declared structure: ``unit_blocks()`` returns the operator's per-unit
        blocks (:class:`kpref.analysis.KBlocks`) or raises
        ``NotImplementedError`` naming the cell. Set on a linearization's
        ``K``; ``None`` (no structure declared) everywhere else.
    """

    def __init__(self, name, shape, matmat, rmatmat, adjoint_name=None, *, partner=None, unit_blocks=None):
        super().__init__(dtype=np.float64, shape=shape)
        self.unit_blocks = unit_blocks
        self.name = name
        self._mm = matmat
        self._rmm = rmatmat
        self.adjoint_name = name if adjoint_name is None else adjoint_name
        self._partner = partner

    # -- checks at the boundary (SciPy only says "dimension mismatch")
    def _check_in(self, x, n, what):
        arr = np.asarray(x)
        if arr.ndim not in (1, 2) or arr.shape[0] != n:
            raise ValueError(
                f"{self.name}.{what}: expected a vector of length {n} (or a block of shape ({n}, k)), "
                f"got shape {arr.shape}"
            )
        return as_real_array(f"{self.name}.{what} input", arr)

    def matvec(self, x):
        return super().matvec(self._check_in(x, self.shape[1], "matvec"))

    def rmatvec(self, x):
        return super().rmatvec(self._check_in(x, self.shape[0], "rmatvec"))

    def matmat(self, X):
        X = self._check_in(X, self.shape[1], "matmat")
        if X.ndim != 2:
            raise ValueError(f"{self.name}.matmat: expected a 2-D block, got shape {X.shape}")
        return super().matmat(X)

    def rmatmat(self, X):
        X = self._check_in(X, self.shape[0], "rmatmat")
        if X.ndim != 2:
            raise ValueError(f"{self.name}.rmatmat: expected a 2-D block, got shape {X.shape}")
        return super().rmatmat(X)

    # -- SciPy hooks
    def _matmat(self, X):
        return self._mm(np.asarray(X, dtype=np.float64))

    def _matvec(self, x):
        return self._mm(np.asarray(x, dtype=np.float64).reshape(-1, 1)).ravel()

    def _rmatmat(self, X):
        return self._rmm(np.asarray(X, dtype=np.float64))

    def _rmatvec(self, x):
        return self._rmm(np.asarray(x, dtype=np.float64).reshape(-1, 1)).ravel()

    def _adjoint(self):
        if self.adjoint_name == self.name:
            return self
        if self._partner is None:
            self._partner = NamedOperator(
                self.adjoint_name, (self.shape[1], self.shape[0]), self._rmm, self._mm, self.name, partner=self
            )
        return self._partner

    def __repr__(self):
        return f"<{self.shape[0]}x{self.shape[1]} kpref operator {self.name} (float64)>"


def todense(op, memory_limit=None, *, block=256):
    """Materialize a ``LinearOperator`` as a dense float64 array, checking memory first.

    Parameters
    ----------
    op : LinearOperator or ndarray
    memory_limit : int, optional
        Bytes the dense result may take (default
        :data:`kpref._checks.DEFAULT_MEMORY_LIMIT`, 2 GiB). Above it a
        ``MemoryError`` states the figure.
    block : int
        Columns pushed through ``op.matmat`` at a time (blocks, not a column loop).
    """
    if isinstance(op, np.ndarray):
        return as_real_array("op", op, (None, None))
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op: expected a scipy.sparse.linalg.LinearOperator or ndarray, got {type(op).__name__}")
    n, m = op.shape
    check_memory(f"todense({getattr(op, 'name', type(op).__name__)})", 8 * n * m, memory_limit)
    return identity_columns(op.matmat, n, m, block)

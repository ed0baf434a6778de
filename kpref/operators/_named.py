"""LinearOperator plumbing: checked flat vectors, native blocks, named adjoint pairs.

Vectors crossing the ``LinearOperator`` boundary are flat and 1-D (or blocks
``(n, k)``), as SciPy expects; trajectory vectors are flattened in C order
over ``(b, t, s)``. Each operator here

* passes ``dtype=np.float64`` to SciPy (no probing matvec),
* implements ``_matmat``/``_rmatmat`` natively (one sweep for a block),
* returns its named partner from ``_adjoint`` (``P.H`` is ``P*``, and
  ``P*.H`` is ``P`` again),
* checks every input: a vector of the wrong length, a complex or non-finite
  vector is refused with a message naming the operator;
* checks every output: a product that overflows to inf/NaN from finite input
  raises ``FloatingPointError`` naming the operator (never returned silently);
* applies the same checks however it is derived: ``.H``, ``.T`` and
  ``.transpose()`` return the named partner (a real operator's transpose is
  its adjoint), itself a checked operator; ``op @ x``, ``op.dot(x)``,
  ``op(x)`` and SciPy's sums/products of operators go through the checked
  ``matvec``/``matmat``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.linalg import LinearOperator

from .._checks import as_real_array, check_callable, check_finite_result, check_memory, check_positive_int
from .._identity import identity_columns

__all__ = ["CheckedInputOperator", "NamedOperator", "todense"]


class CheckedInputOperator(LinearOperator):
    """A real float64 ``LinearOperator`` whose every entry point checks its input and output.

    Subclasses implement ``_matmat``/``_rmatmat`` (and may override
    ``_adjoint``); the public ``matvec``, ``rmatvec``, ``matmat``,
    ``rmatmat`` (and so ``dot``, ``@``, ``*``, ``__call__``) refuse a block
    of the wrong length, complex, integer, object or non-finite data with a
    message naming the operator, and refuse a non-finite product
    (``FloatingPointError``). ``.T``/``.transpose()`` is ``.H`` (real).
    """

    name = "operator"

    def _check_in(self, x, n, what):
        if scipy.sparse.issparse(x):
            raise TypeError(f"{self.name}.{what}: expected a dense float64 array, got {type(x).__name__}")
        arr = np.asarray(x)
        if arr.ndim not in (1, 2) or arr.shape[0] != n:
            raise ValueError(
                f"{self.name}.{what}: expected a vector of length {n} (or a block of shape ({n}, k)), "
                f"got shape {arr.shape}"
            )
        return as_real_array(f"{self.name}.{what} input", arr)

    def _check_out(self, Y, what):
        return check_finite_result(f"{self.name}.{what}", Y,
                                   "the operator's products overflowed (check the trajectory's scale)")

    def matvec(self, x):
        x = self._check_in(x, self.shape[1], "matvec")
        return self._check_out(super().matvec(x), "matvec")

    def rmatvec(self, x):
        x = self._check_in(x, self.shape[0], "rmatvec")
        return self._check_out(super().rmatvec(x), "rmatvec")

    def matmat(self, X):
        X = self._check_in(X, self.shape[1], "matmat")
        if X.ndim != 2:
            raise ValueError(f"{self.name}.matmat: expected a 2-D block, got shape {X.shape}")
        return self._check_out(super().matmat(X), "matmat")

    def rmatmat(self, X):
        X = self._check_in(X, self.shape[0], "rmatmat")
        if X.ndim != 2:
            raise ValueError(f"{self.name}.rmatmat: expected a 2-D block, got shape {X.shape}")
        return self._check_out(super().rmatmat(X), "rmatmat")

    def _transpose(self):
        # real operator: the transpose is the adjoint (a checked operator), never SciPy's
        # _TransposedLinearOperator, which calls the unchecked _rmatvec directly
        return self._adjoint()


class NamedOperator(CheckedInputOperator):
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
        if not isinstance(name, str):
            raise TypeError(f"name: expected a string, got {name!r} ({type(name).__name__})")
        if adjoint_name is not None and not isinstance(adjoint_name, str):
            raise TypeError(f"adjoint_name: expected None or a string, got {adjoint_name!r}")
        if not isinstance(shape, (tuple, list)) or len(shape) != 2:
            raise TypeError(f"shape: expected a pair of positive integers (n_out, n_in), got {shape!r}")
        shape = tuple(check_positive_int(f"shape[{i}]", s) for i, s in enumerate(shape))
        check_callable("matmat", matmat, "a callable X (n_in, k) -> (n_out, k)")
        check_callable("rmatmat", rmatmat, "a callable Y (n_out, k) -> (n_in, k)")
        if unit_blocks is not None:
            check_callable("unit_blocks", unit_blocks, "None or a callable returning KBlocks")
        super().__init__(dtype=np.float64, shape=shape)
        self.unit_blocks = unit_blocks
        self.name = name
        self._mm = matmat
        self._rmm = rmatmat
        self.adjoint_name = name if adjoint_name is None else adjoint_name
        self._partner = partner

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
    op : LinearOperator, 2-D float ndarray or SciPy sparse matrix
        Real floating only: a complex, integer or object operator is refused
        (``TypeError``), and so is a non-finite product (``ValueError``).
    memory_limit : int, optional
        Bytes the dense result may take (default
        :data:`kpref._checks.DEFAULT_MEMORY_LIMIT`, 2 GiB). Above it a
        ``MemoryError`` states the figure.
    block : int >= 1
        Columns pushed through ``op.matmat`` at a time (blocks, not a column loop).

    Returns
    -------
    (n, m) float64 array, a fresh copy (never a view of ``op``'s data).
    """
    from ._input import as_operator   # _input builds on this module

    block = check_positive_int("block", block)
    chk = as_operator("op", op)
    n, m = chk.shape
    check_memory(f"todense({getattr(chk.op, 'name', type(op).__name__)})", 8 * n * m, memory_limit)
    return identity_columns(chk.matmat, n, m, block)

r"""The KPFlow package's definitions, named and kept beside kpref's own (issue 16).

Notes
-----
kpref's definitions (SPEC §5–6) are unchanged; the functions here compute the
numbers of the KPFlow reference package and papers under their own names, so
the two can be set side by side.

**Reduced Gram over kept axes.** For an operator ``A`` whose rows are indexed
by ``(b, t, s)`` (shape ``(B, T, S)``) and a set of *kept* axes ``k`` (the
other axes ``c`` are reduced), :func:`reduced_gram` is the
``n_k × n_k`` PSD matrix

* ``reduction='partial_trace'`` (kpref):
  ``D[i, j] = Σ_c (A Aᵀ)[(i, c), (j, c)] = tr_c(A Aᵀ)``;
* ``reduction='marginal'`` (the package's "partial trace"):
  ``D[i, j] = Σ_{c, c'} (A Aᵀ)[(i, c), (j, c')] = Σ_col S[i, col] S[j, col]``
  with ``S[i, col] = Σ_c A[(i, c), col]``.

The package averages (``partial_avg``) where this sums; every quantity below
is invariant to that scale.

**Effective dimension** (the package's ``effdim(keep_dims)``):
``PR(D) = (tr D)² / tr(D²)`` — :func:`kpref.analysis.effective_dimension`
with ``reduction='marginal'`` for one kept axis. The package computes it as
``n_k · cos(D, I)²``, the same number.

**Operator effective rank** (the package's ``svd(keep_dims)`` followed by
``effective_rank(·, 0.95)``): the singular values of ``A`` over the kept axes
are ``σ_i = √λ_i(D)``, and the rank is the smallest ``r`` with
``Σ_{i≤r} σ_i² ≥ q Σ_i σ_i²`` (``q = 0.95``), i.e. the variance rank of
SPEC §6 applied to the eigenvalues ``λ`` of ``D``. With every axis kept,
``D = A Aᵀ`` and it is :func:`kpref.analysis.variance_rank` of ``A``.

**Misdirection** (the package's ``op_alignment(NTK, P P*)``): the alignment
``cos(NTK, P P*) = tr(NTK P P*) / (‖NTK‖_F ‖P P*‖_F)`` (SPEC §6) of the
hidden-state NTK ``P K P*`` with ``P P*``, the operator the NTK would be if
``K`` were the identity. It is 1 when ``K`` does not bend the directions that
``P`` favours and falls as ``K`` misdirects the gradient flow.
"""

from __future__ import annotations

from math import prod

import numpy as np

from .._checks import as_real_array, check_choice, check_memory, check_memory_limit, check_positive_float
from ..operators._input import as_operator, column_blocks, identity_block, stream_block_size
from ..operators._named import NamedOperator
from ._partial_trace import _axis_index, _check_shape
from ._spectral import variance_rank
from ._traces import alignment

__all__ = ["REDUCTIONS", "kept_axes", "reduced_gram", "gram_variance_rank", "operator_effective_rank", "pp_star",
           "misdirection"]

#: The two reductions of ``A Aᵀ`` over the other axes.
REDUCTIONS = ("partial_trace", "marginal")


def kept_axes(keep, ndim, name="keep"):
    """Sorted tuple of kept axis indices from a name/int or a sequence of them (not every axis)."""
    items = keep if isinstance(keep, (tuple, list)) else (keep,)
    if len(items) == 0:
        raise ValueError(f"{name}: expected at least one axis, got an empty sequence")
    idx = tuple(sorted(_axis_index(a, ndim, name) for a in items))
    if len(set(idx)) != len(idx):
        raise ValueError(f"{name}: expected distinct axes, got {keep!r}")
    return idx


def _kept_rows(Y, shape, keep, cols, reduction):
    """Block ``Y`` (n, cols) → rows ``R`` (n_kept, ·) with ``D += R Rᵀ`` (module notes)."""
    nd = len(shape)
    other = tuple(i for i in range(nd) if i not in keep)
    n_kept = prod(shape[i] for i in keep)
    Yp = np.transpose(Y.reshape(shape + (cols,)), keep + other + (nd,))
    Yp = np.ascontiguousarray(Yp).reshape(n_kept, -1, cols)
    if reduction == "marginal":
        return Yp.sum(axis=1)
    return Yp.reshape(n_kept, -1)


def reduced_gram(op, shape, keep, reduction="partial_trace", *, memory_limit=None):
    """The reduced Gram ``D`` of ``A`` over the kept axes (module notes), dense ``(n_kept, n_kept)``.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
        ``A`` with ``prod(shape)`` rows (any number of columns).
    shape : tuple of int
        Layout of the rows, e.g. ``(B, T, S)``.
    keep : axis or sequence of axes ('batch', 'time', 'hidden' or ints)
        The kept axes (C-order flattened in increasing axis order).
    reduction : {'partial_trace', 'marginal'}
    memory_limit : int, optional
        Bytes a streamed block may take.

    Exact: streams the identity through ``A`` in column blocks (``n_in``
    products).
    """
    chk = as_operator("op", op)
    shape = _check_shape(shape, chk.shape[0])
    keep = kept_axes(keep, len(shape))
    check_choice("reduction", reduction, REDUCTIONS)
    memory_limit = check_memory_limit(memory_limit)
    n_kept = prod(shape[i] for i in keep)
    n_out, n_in = chk.shape
    check_memory("reduced_gram", 8 * n_kept * n_kept, memory_limit)     # the dense D
    D = np.zeros((n_kept, n_kept))
    block = stream_block_size(n_out, n_in, memory_limit, copies=3)
    for start, stop in column_blocks(n_in, block):
        R = _kept_rows(chk.matmat(identity_block(n_in, start, stop)), shape, keep, stop - start, reduction)
        D += R @ R.T
    return 0.5 * (D + D.T)


def operator_effective_rank(op, shape=None, keep=None, q=0.95, reduction="partial_trace", *, memory_limit=None):
    """The KPFlow "operator effective rank": the ``q``-variance rank of ``A`` over the kept axes.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
    shape : tuple of int, optional
        Layout of the rows; needed with ``keep``.
    keep : axis or sequence of axes, optional
        ``None`` keeps every axis: ``variance_rank(A, q)``.
    q : float in (0, 1]
        Fraction of ``Σσ² = tr D`` to capture (default 0.95, the package's).
    reduction : {'partial_trace', 'marginal'}
        The package reduces with the marginal sum.

    Returns
    -------
    int
        The smallest ``r`` with ``Σ_{i≤r} λ_i(D) ≥ q tr D`` (module notes).
    """
    q = check_positive_float("q", q, upper=1.0)
    memory_limit = check_memory_limit(memory_limit)
    if keep is None:
        if shape is not None:
            _check_shape(shape, as_operator("op", op).shape[0])
        return variance_rank(op, q, memory_limit=memory_limit)
    if shape is None:
        raise ValueError("shape: expected the row layout (e.g. (B, T, S)) with keep, got None")
    return gram_variance_rank(reduced_gram(op, shape, keep, reduction, memory_limit=memory_limit), q, name="op")


def gram_variance_rank(D, q=0.95, *, name="D"):
    """The ``q``-variance rank of the eigenvalues of a small dense symmetric PSD matrix ``D`` (a reduced Gram).

    The smallest ``r`` with ``Σ_{i≤r} λ_i(D) ≥ q tr D`` (eigenvalues in decreasing order; rounding below
    zero clipped, ``D`` being PSD by construction). This is :func:`operator_effective_rank` once ``D``
    is formed; the zero matrix is refused (``ValueError`` naming ``name``).
    """
    q = check_positive_float("q", q, upper=1.0)
    D = as_real_array(name, D, (None, None))
    if D.shape[0] != D.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {D.shape}")
    lam = np.clip(np.linalg.eigvalsh(D)[::-1], 0.0, None)
    if lam[0] == 0.0:
        raise ValueError(f"{name}: the operator effective rank of the zero operator is undefined")
    cum = np.cumsum(lam)
    return int(np.searchsorted(cum, q * cum[-1], side="left") + 1)


def pp_star(lin):
    """``P P*`` of a linearization as a checked operator (``name == "P P*"``, self-adjoint)."""
    if not all(hasattr(lin, a) for a in ("P", "size")):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    P = lin.P

    def mm(X):
        return P.matmat(P.H.matmat(X))

    return NamedOperator("P P*", (lin.size, lin.size), mm, mm)


def misdirection(lin, method="exact", n_probes=None, rng=None, *, return_error=False, memory_limit=None):
    """The KPFlow misdirection ``cos(NTK, P P*)`` of a linearization (module notes).

    Parameters
    ----------
    lin : Linearization
    method, n_probes, rng, return_error, memory_limit
        As in :func:`kpref.analysis.alignment` (the package uses Hutch++ with
        30 probes; ``'exact'`` streams ``n`` products of each operator).

    Returns
    -------
    float in [-1, 1] (exact; in [0, 1] since both are PSD), or (float, float)
    """
    PP = pp_star(lin)
    return alignment(lin.NTK, PP, method, n_probes, rng, return_error=return_error, memory_limit=memory_limit)

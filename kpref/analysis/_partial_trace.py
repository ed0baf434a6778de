r"""Partial traces, marginal sums and effective dimensions over the axes of trajectory space (SPEC §5–6).

Notes
-----
An operator ``M`` on ``R^{B×T×H}`` (flattened in C order over ``(b, t, h)``)
has the kernel ``M[(b,t,i), (b',t',j)]``. For a traced axis ``a`` of size
``n_a`` let ``E_i`` embed the remaining axes at index ``i`` of ``a``
(``E_i v`` is ``v`` placed in the slice ``a = i``, zero elsewhere). Then

* partial trace: ``tr_a M = Σ_i E_iᵀ M E_i``, e.g.
  ``(tr_batch M)[(t,i),(t',j)] = Σ_b M[(b,t,i),(b,t',j)]`` — the diagonal in ``a``;
* marginal sum: ``Σ_a M = (Σ_i E_i)ᵀ M (Σ_j E_j)``, e.g.
  ``Σ_b Σ_b' M[(b,t,i),(b',t',j)]`` — every pair of indices of ``a``.

The reference KPFlow package calls the marginal sum its "partial trace". The
two agree when ``M`` is block diagonal in ``a`` (``P`` is, in batch: trials do
not interact) and differ otherwise (``K`` is not: a parameter change couples
all trials). ``reduction='mean'`` divides either by ``n_a``. Several axes may
be traced at once (``axis=('batch', 'time')``).

Both are returned as ``LinearOperator``\ s on the remaining axes, applied
matrix-free with native blocks: a block of ``k`` vectors costs

* partial trace: one product of ``M`` with ``n_a · k`` vectors (the blocks
  ``E_i V`` for every ``i`` of the traced axes, in chunks of bounded memory);
* marginal sum: one product of ``M`` with ``k`` vectors (``V`` repeated along
  ``a``).

Example — the batch partial trace and marginal sum of ``K`` and ``P`` of a
small Elman network (``B = 3`` trials); for ``P`` they agree, for ``K`` they
do not:

>>> import numpy as np, kpref
>>> from kpref.analysis import partial_trace, marginal_sum
>>> cell = kpref.Elman(input_size=2, hidden_size=3)
>>> rng = np.random.default_rng(0)
>>> lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((3, 4, 2)))
>>> def gap(M):
...     pt = kpref.todense(partial_trace(M, lin.shape, 'batch'))
...     ms = kpref.todense(marginal_sum(M, lin.shape, 'batch'))
...     return float(np.linalg.norm(pt - ms) / np.linalg.norm(pt))
>>> gap(lin.P) < 1e-15
True
>>> round(gap(lin.K), 2)
1.6

Effective dimension along an axis (the KPFlow papers' "effective dimension in
space / in time"): for an operator ``A`` whose rows are indexed by
``(b, t, h)``, the participation ratio of ``D_a = tr_{other axes}(A Aᵀ)``,
an ``n_a × n_a`` PSD matrix with ``D_a[i, j] = Σ_{c, col} A[(i,c), col] A[(j,c), col]``
(``c`` the other two axes)::

    dim_a(A) = (tr D_a)² / tr(D_a²),     tr D_a = ‖A‖_F² for every a.

``method='exact'`` streams the identity through ``A`` in column blocks and
accumulates ``D_a`` for every axis at once (``n_in`` products).
``method='hutchinson'`` uses ``s = n_probes`` Rademacher vectors ``ω_k`` and
``Y_k = A ω_k`` reshaped to ``(n_a, ·)``: ``D_k = Y_k Y_kᵀ`` has ``E D_k = D_a``,
so ``tr D_a ≈ mean_k tr D_k`` and ``tr(D_a²) ≈ Σ_{k≠l} ⟨D_k, D_l⟩ / (s(s−1))``
(a U-statistic: unbiased, unlike ``tr(D̄²)``); their ratio is consistent,
with bias ``O(1/s)``. Error estimate: the jackknife over the probes.
"""

from __future__ import annotations

import numbers
from math import prod

import numpy as np

from .._checks import (DEFAULT_MEMORY_LIMIT, as_generator, check_choice, check_memory, check_memory_limit,
                       check_positive_int, check_size_memory)
from ..operators import Linearization
from ..operators._input import as_operator, column_blocks, identity_block, stream_block_size
from ..operators._named import CheckedInputOperator
from ._traces import rademacher
from ._unit_blocks import structure_of

__all__ = [
    "partial_trace",
    "marginal_sum",
    "AxisReducedOperator",
    "effective_dimension",
    "effective_dimensions",
    "AXIS_NAMES",
]

AXIS_NAMES = ("batch", "time", "hidden")
_WORK_BYTES = 256 * 1024**2


def _check_shape(shape, n=None, name="shape"):
    if not isinstance(shape, (tuple, list)) or len(shape) == 0:
        raise TypeError(f"{name}: expected a tuple of positive integers such as (B, T, H), got {shape!r}")
    shape = tuple(check_positive_int(f"{name}[{i}]", s) for i, s in enumerate(shape))
    if n is not None and prod(shape) != n:
        raise ValueError(f"{name}: expected sizes whose product is the operator's dimension {n}, "
                         f"got {shape} (product {prod(shape)})")
    return shape


def _axis_index(axis, ndim, name="axis"):
    if isinstance(axis, str):
        if ndim != 3:
            raise ValueError(f"{name}: axis names {AXIS_NAMES} need a 3-D shape (B, T, H); "
                             f"use an integer axis for a {ndim}-D shape")
        check_choice(name, axis, AXIS_NAMES)
        return AXIS_NAMES.index(axis)
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: expected 'batch', 'time', 'hidden' or an integer axis, got {axis!r}")
    if not 0 <= axis < ndim:
        raise ValueError(f"{name}: expected an axis in [0, {ndim}), got {axis}")
    return int(axis)


def _axes(axis, ndim):
    if isinstance(axis, (tuple, list)):
        if len(axis) == 0:
            raise ValueError("axis: expected at least one axis, got an empty sequence")
        idx = [_axis_index(a, ndim) for a in axis]
        if len(set(idx)) != len(idx):
            raise ValueError(f"axis: expected distinct axes, got {axis!r}")
        if len(idx) == ndim:
            raise ValueError(f"axis: tracing every axis leaves nothing; expected at most {ndim - 1} axes, got {axis!r}")
        return tuple(sorted(idx))
    return (_axis_index(axis, ndim),)


class AxisReducedOperator(CheckedInputOperator):
    """The partial trace or marginal sum of an operator over some axes (module notes).

    Attributes
    ----------
    name : str
        E.g. ``"partial_trace(K, batch)"``.
    full_shape : tuple
        Shape of the original space, e.g. ``(B, T, H)``.
    traced_axes, kept_axes : tuple of int
    kept_shape : tuple
        Shape of the space this operator acts on (vectors flattened in C order).
    kind : {'partial_trace', 'marginal_sum'}
    reduction : {'sum', 'mean'}
    """

    def __init__(self, chk, full_shape, traced_axes, kind, reduction, memory_limit, *, transposed=False,
                 partner=None):
        self.chk = chk
        self.full_shape = full_shape
        self.traced_axes = traced_axes
        self.kept_axes = tuple(i for i in range(len(full_shape)) if i not in traced_axes)
        self.kept_shape = tuple(full_shape[i] for i in self.kept_axes)
        self.kind = kind
        self.reduction = reduction
        self.memory_limit = check_memory_limit(memory_limit)
        self.transposed = transposed
        self._partner = partner
        self._perm = traced_axes + self.kept_axes
        self._inv_perm = tuple(int(i) for i in np.argsort(self._perm))
        self._traced_shape = tuple(full_shape[i] for i in traced_axes)
        self._n_traced = prod(self._traced_shape)
        self._n_kept = prod(self.kept_shape)
        self._n_full = prod(full_shape)
        names = [AXIS_NAMES[i] if len(full_shape) == 3 else str(i) for i in traced_axes]
        base = getattr(chk.op, "name", chk.name)
        self.name = f"{kind}({base}{'ᵀ' if transposed else ''}, {', '.join(names)})"
        super().__init__(dtype=np.float64, shape=(self._n_kept, self._n_kept))

    # layout: internal blocks are (n_traced, n_kept, cols) in the permuted order
    def _to_full(self, Z):
        cols = Z.shape[-1]
        X = Z.reshape(self._traced_shape + self.kept_shape + (cols,))
        X = np.transpose(X, self._inv_perm + (len(self.full_shape),))
        return np.ascontiguousarray(X).reshape(self._n_full, cols)

    def _from_full(self, Y):
        cols = Y.shape[-1]
        Y = Y.reshape(self.full_shape + (cols,))
        Y = np.transpose(Y, self._perm + (len(self.full_shape),))
        return Y.reshape(self._n_traced, self._n_kept, cols)

    def _product(self, X):
        return self.chk.rmatmat(X) if self.transposed else self.chk.matmat(X)

    def _apply(self, V):
        V = np.asarray(V, dtype=np.float64)
        k = V.shape[1]
        if self.kind == "marginal_sum":
            Z = np.broadcast_to(V, (self._n_traced, self._n_kept, k))
            out = self._from_full(self._product(self._to_full(Z))).sum(axis=0)
        else:
            per_index = 16 * self._n_full * k   # the embedded block and its product
            check_memory(f"{self.name}: one traced index of a block of {k} vectors", per_index, self.memory_limit)
            chunk = int(max(1, min(self._n_traced, min(_WORK_BYTES, self.memory_limit) // per_index)))
            out = np.zeros((self._n_kept, k))
            for start, stop in column_blocks(self._n_traced, chunk):
                c = stop - start
                idx = np.arange(start, stop)
                Z = np.zeros((self._n_traced, self._n_kept, c, k))
                Z[idx, :, np.arange(c), :] = V
                Y = self._from_full(self._product(self._to_full(Z.reshape(self._n_traced, self._n_kept, c * k))))
                out += Y.reshape(self._n_traced, self._n_kept, c, k)[idx, :, np.arange(c), :].sum(axis=0)
        if self.reduction == "mean":
            out /= self._n_traced
        return out

    def _matmat(self, X):
        return self._apply(X)

    def _matvec(self, x):
        return self._apply(np.reshape(x, (-1, 1)))[:, 0]

    def _adjoint(self):
        if self._partner is None:
            self._partner = AxisReducedOperator(self.chk, self.full_shape, self.traced_axes, self.kind,
                                                self.reduction, self.memory_limit,
                                                transposed=not self.transposed, partner=self)
        return self._partner

    def _rmatmat(self, X):
        return self._adjoint()._apply(X)

    def _rmatvec(self, x):
        return self._adjoint()._apply(np.reshape(x, (-1, 1)))[:, 0]

    def __repr__(self):
        return f"<{self.shape[0]}x{self.shape[1]} {self.name}, reduction={self.reduction!r} (float64)>"


def _reduced(kind, op, shape, axis, reduction, memory_limit):
    chk = as_operator("op", op, square=True, snapshot=True)   # the result must not alias a caller's array
    shape = _check_shape(shape, chk.shape[0])
    axes = _axes(axis, len(shape))
    check_choice("reduction", reduction, ("sum", "mean"))
    kb = structure_of(chk.op, memory_limit=memory_limit)
    if kb is not None and shape == kb.shape:
        return kb.reduced(axes, kind, reduction)
    return AxisReducedOperator(chk, shape, axes, kind, reduction, memory_limit)


def partial_trace(op, shape, axis, reduction="sum", *, memory_limit=None):
    """Partial trace ``tr_a M = Σ_i E_iᵀ M E_i`` over ``axis`` (SPEC §5), as a ``LinearOperator``.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
        Square, of dimension ``prod(shape)``.
    shape : tuple of int
        ``(B, T, H)`` (or any shape; axis names need three axes).
    axis : {'batch', 'time', 'hidden'}, int, or a sequence of them
        The traced axis (axes).
    reduction : {'sum', 'mean'}
        ``'mean'`` divides by the size of the traced axes.
    memory_limit : int, optional
        Bytes the embedded blocks of one traced index may take.

    Returns
    -------
    AxisReducedOperator or BlockDiagonalOperator
        On the remaining axes (``.kept_shape``), C-order flattened; its ``.H``
        is the partial trace of ``opᵀ``. For a linearization's ``K`` with
        per-unit blocks (and ``shape == lin.shape``) the result is computed
        at once through them (:mod:`kpref.analysis._unit_blocks`): block
        diagonal over units while ``hidden`` is kept, dense otherwise. Cost per block of ``k`` vectors: one
        product of ``op`` with ``n_a · k`` vectors. See the module notes for
        the difference from :func:`marginal_sum`.
    """
    memory_limit = check_memory_limit(memory_limit)
    return _reduced("partial_trace", op, shape, axis, reduction, memory_limit)


def marginal_sum(op, shape, axis, reduction="sum", *, memory_limit=None):
    """Marginal sum ``(Σ_i E_i)ᵀ M (Σ_j E_j)`` over ``axis`` (SPEC §5; KPFlow's "partial trace").

    Parameters and result as in :func:`partial_trace`; cost per block of
    ``k`` vectors: one product of ``op`` with ``k`` vectors.

    Examples
    --------
    The two reductions agree for an operator block diagonal in the traced
    axis (``P`` in batch: trials do not interact) and disagree otherwise
    (``K``: a parameter change moves every trial). Over the batch of two
    trials, for the kernel ``[[M_00, M_01], [M_10, M_11]]`` (blocks indexed
    by trial), the partial trace is ``M_00 + M_11`` and the marginal sum
    ``M_00 + M_01 + M_10 + M_11``:

    >>> import numpy as np, kpref
    >>> from kpref.analysis import marginal_sum, partial_trace
    >>> cell = kpref.Elman(input_size=1, hidden_size=2)
    >>> lin = kpref.linearize(cell, cell.init_params(0), np.ones((2, 3, 1)))   # two identical trials
    >>> K = kpref.todense(lin.K).reshape(2, 6, 2, 6)
    >>> ms = kpref.todense(marginal_sum(lin.K, lin.shape, 'batch'))
    >>> pt = kpref.todense(partial_trace(lin.K, lin.shape, 'batch'))
    >>> bool(np.allclose(ms, K.sum(axis=(0, 2))) and np.allclose(pt, K[0, :, 0] + K[1, :, 1]))
    True
    >>> bool(np.allclose(ms, 2 * pt))     # identical trials: M_01 = M_00, so the sum is twice the trace
    True
    """
    memory_limit = check_memory_limit(memory_limit)
    return _reduced("marginal_sum", op, shape, axis, reduction, memory_limit)


# -------------------------------------------------------------------- effective dimension


def _axis_rows(Y, a, n_a, cols, dim_reduction):
    """Rows of the axis-``a`` Gram of a block ``Y`` (shape + (cols,)): ``D_a += R Rᵀ``.

    ``'partial_trace'``: ``R = Y`` with axis ``a`` first and every other index
    (the other axes and the columns) flattened, so ``R Rᵀ`` sums over them on
    the diagonal; ``'marginal'``: the other axes summed first,
    ``R[i, col] = Σ_c Y[(i, c), col]``, so ``R Rᵀ`` is the marginal sum of
    ``Y Yᵀ`` over them (every pair ``c, c'``)."""
    Ya = np.moveaxis(Y, a, 0)
    if dim_reduction == "marginal":
        return Ya.reshape(n_a, -1, cols).sum(axis=1)
    return Ya.reshape(n_a, -1)


def _axis_grams_exact(chk, shape, axes, memory_limit, dim_reduction="partial_trace"):
    """``D_a`` (partial trace or marginal sum of ``A Aᵀ`` over the other axes) for each axis in ``axes``,
    by streaming identity blocks through ``A``."""
    n_out, n_in = chk.shape
    D = {a: np.zeros((shape[a], shape[a])) for a in axes}
    block = stream_block_size(n_out, n_in, memory_limit, copies=3)
    for start, stop in column_blocks(n_in, block):
        Y = chk.matmat(identity_block(n_in, start, stop)).reshape(shape + (stop - start,))
        for a in axes:
            R = _axis_rows(Y, a, shape[a], stop - start, dim_reduction)
            D[a] += R @ R.T
    return D


def _pr_of_gram(D):
    tr = float(np.trace(D))
    if tr == 0.0:
        raise ValueError("op: the effective dimension of the zero operator is undefined (0/0)")
    return tr * tr / float(np.sum(D * D))


def _axis_dims_hutchinson(chk, shape, axes, n_probes, rng, dim_reduction="partial_trace"):
    """Effective dimensions per axis from ``n_probes`` probes (U-statistic) with jackknife errors."""
    s = n_probes
    check_size_memory(f"n_probes={n_probes}", 3 * 8 * max(chk.shape) * s, what="the probe blocks")
    Y = chk.matmat(rademacher(rng, chk.shape[1], s))
    # one copy with the probes first, (s, *shape); each axis is then a view (lead, n_a, trail) per probe
    Yt = np.ascontiguousarray(np.moveaxis(Y.reshape(shape + (s,)), len(shape), 0))
    del Y
    trace_k = np.einsum("ki,ki->k", *(2 * (Yt.reshape(s, -1),)))     # tr D_k = ‖Aω_k‖², the same for every axis
    out = {}
    for a in axes:
        lead, n_a, trail = prod(shape[:a]), shape[a], prod(shape[a + 1:])
        V = Yt.reshape(s, lead, n_a, trail)
        if dim_reduction == "marginal":
            y = V.sum(axis=(1, 3))                  # y_k[i] = Σ_c (Aω_k)[(i, c)]: E y_k y_kᵀ = D_a (marginal)
            a_k = np.einsum("ki,ki->k", y, y)       # tr D_k
            Dk = y[:, :, None] * y[:, None, :]
        else:
            a_k = trace_k
            # D_k[i, j] = Σ_{l, c} V[k, l, i, c] V[k, l, j, c]: BLAS on views, no copy of Y per axis
            if trail == 1:
                W = V.reshape(s, lead, n_a)
                Dk = np.matmul(W.transpose(0, 2, 1), W)
            elif lead == 1:
                W = V.reshape(s, n_a, trail)
                Dk = np.matmul(W, W.transpose(0, 2, 1))
            else:
                Dk = np.matmul(V, V.transpose(0, 1, 3, 2)).sum(axis=1)
        Dk = Dk.reshape(s, -1)                                         # D_k = Y_k Y_kᵀ, (s, n_a²)
        G = Dk @ Dk.T                                                  # G_kl = ⟨D_k, D_l⟩
        off_total = G.sum() - np.trace(G)
        row_off = G.sum(axis=1) - np.diag(G)           # Σ_{l≠j} G_jl
        a_all = a_k.sum() / s
        b_all = off_total / (s * (s - 1))
        if b_all <= 0.0 or a_all == 0.0:
            raise ValueError(f"op: the probe estimate of tr(D²) along axis {a} is {b_all!r}; "
                             "the effective dimension is undefined (zero operator?)")
        value = a_all * a_all / b_all
        a_loo = (a_k.sum() - a_k) / (s - 1)
        b_loo = (off_total - 2.0 * row_off) / ((s - 1) * (s - 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            loo = a_loo * a_loo / b_loo
        err = float(np.sqrt((s - 1) / s * np.sum((loo - loo.mean()) ** 2)))
        out[a] = (float(value), err)
    return out


#: The reductions of ``A Aᵀ`` over the other axes that :func:`effective_dimension` offers.
DIM_REDUCTIONS = ("partial_trace", "marginal")


def _axis_dimensions(chk, shape, axes, method, n_probes, rng, memory_limit, dim_reduction="partial_trace"):
    kb = structure_of(chk.op, memory_limit=memory_limit) if method == "exact" and dim_reduction == "partial_trace" else None
    if kb is not None and shape == kb.shape:      # D_a = tr_{others}(K²) through K² = ⊕_u K_u²
        D = kb.axis_grams(axes)
        return {a: (_pr_of_gram(D[a]), 0.0) for a in axes}
    if method == "exact":
        D = _axis_grams_exact(chk, shape, axes, memory_limit, dim_reduction)
        return {a: (_pr_of_gram(D[a]), 0.0) for a in axes}
    return _axis_dims_hutchinson(chk, shape, axes, n_probes, rng, dim_reduction)


def _check_dim_method(method, n_probes, rng):
    check_choice("method", method, ("exact", "hutchinson"))
    if method == "exact":
        if n_probes is not None or rng is not None:
            raise ValueError("n_probes, rng: expected None with method='exact' (it uses no probes), "
                             f"got n_probes={n_probes!r}, rng={type(rng).__name__}")
        return None, None
    n_probes = check_positive_int("n_probes", 100 if n_probes is None else n_probes, minimum=3)
    return n_probes, as_generator(rng)


def effective_dimension(op, shape, axis, method="exact", n_probes=None, rng=None, *, return_error=False,
                        memory_limit=None, reduction="partial_trace"):
    """Effective dimension of ``op`` along one axis: ``PR(tr_{other axes}(A Aᵀ))`` (module notes).

    With ``reduction='marginal'``: the KPFlow package's ``effdim``, the
    participation ratio of the *marginal sum* of ``A Aᵀ`` over the other axes,
    ``PR(Σ_{others} A Aᵀ)`` with
    ``D_a[i, j] = Σ_col (Σ_c A[(i,c), col]) (Σ_c' A[(j,c'), col])`` — a
    different number whenever ``A Aᵀ`` couples the other axes (``K`` over
    batch: a GRU's ``K`` gives about 2.0 with the partial trace and 1.2 with
    the marginal sum). The two agree when ``A Aᵀ`` is block diagonal in the
    other axes. Hutchinson uses ``y_k = Σ_c (Aω_k)[(·, c)]``, ``E y_k y_kᵀ = D_a``,
    with the same U-statistic and jackknife.

    Parameters
    ----------
    op : LinearOperator, 2-D float array or sparse matrix
        ``A``, with ``prod(shape)`` rows (any number of columns).
    shape : tuple of int
        ``(B, T, H)``: the layout of the rows.
    axis : {'batch', 'time', 'hidden'} or int
    method : {'exact', 'hutchinson'}
        ``'exact'`` streams the identity (``n_in`` products), or, for a
        linearization's ``K`` with per-unit blocks, uses ``K² = ⊕_u K_u²``;
        ``'hutchinson'`` uses ``n_probes`` products (default 100, at least 3).
    n_probes, rng, return_error, memory_limit
        As in :func:`kpref.analysis.trace` (the error is the jackknife's).
    reduction : {'partial_trace', 'marginal'}
        How ``A Aᵀ`` is reduced over the other axes: kpref's partial trace
        (default) or KPFlow's marginal sum (above).

    Returns
    -------
    float in [1, n_a] (exact), or (float, float) with ``return_error``
    """
    memory_limit = check_memory_limit(memory_limit)
    chk = as_operator("op", op)
    shape = _check_shape(shape, chk.shape[0])
    a = _axis_index(axis, len(shape))
    n_probes, gen = _check_dim_method(method, n_probes, rng)
    check_choice("reduction", reduction, DIM_REDUCTIONS)
    value, err = _axis_dimensions(chk, shape, (a,), method, n_probes, gen, memory_limit, reduction)[a]
    return (value, err) if return_error else value


def effective_dimensions(lin, operators=("K", "P", "NTK"), axes=AXIS_NAMES, method="exact", n_probes=None,
                         rng=None, *, return_error=False, memory_limit=None, reduction="partial_trace"):
    """Effective dimensions of ``K``, ``P`` and the ``NTK`` of a linearization along each axis.

    Parameters
    ----------
    lin : Linearization
        From :func:`kpref.linearize`; its ``shape`` ``(B, T, S)`` lays out
        the rows.
    operators : sequence of {'K', 'P', 'NTK', 'P_inv'}
    axes : sequence of {'batch', 'time', 'hidden'}
    method, n_probes, rng, return_error, memory_limit, reduction
        As in :func:`effective_dimension`; each operator is applied to one set
        of probes (or one stream of identity blocks) shared by all axes.

    Returns
    -------
    dict
        ``{operator: {axis: value}}`` (``(value, error)`` with ``return_error``),
        e.g. ``dims['K']['time']`` is the "effective dimension in time" of ``K``.
    """
    memory_limit = check_memory_limit(memory_limit)
    if not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    shape = tuple(lin.shape)
    if isinstance(operators, str) or isinstance(axes, str):   # (before the sequence check: a clearer message)
        raise TypeError("operators, axes: expected sequences of names, e.g. ('K', 'P') and ('time',), got a string")
    for label, seq in (("operators", operators), ("axes", axes)):
        if not isinstance(seq, (tuple, list)) or len(seq) == 0:
            raise TypeError(f"{label}: expected a non-empty sequence of names, got {seq!r}")
    for name in operators:
        check_choice("operators", name, ("K", "P", "NTK", "P_inv"))
    axis_idx = tuple(_axis_index(a, 3, "axes") for a in axes)
    n_probes, gen = _check_dim_method(method, n_probes, rng)
    check_choice("reduction", reduction, DIM_REDUCTIONS)
    result = {}
    for name in operators:
        chk = as_operator(f"lin.{name}", getattr(lin, name))
        dims = _axis_dimensions(chk, shape, axis_idx, method, n_probes, gen, memory_limit, reduction)
        result[name] = {AXIS_NAMES[a]: (dims[a] if return_error else dims[a][0]) for a in axis_idx}
    return result

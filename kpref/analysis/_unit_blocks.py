r"""K's per-unit blocks: exact analyses of ``K`` at any size (SPEC §3, §5–6).

Notes
-----
*Derivation from the Kronecker core.* :meth:`kpref.Linearization.kronecker_factors`
gives ``K = Σ_s D_s (Gram_s ⊗ I_{o_s}) D_sᵀ`` over the weight sites ``s``
(activity ``a_s``, with a ones column for a bias, ``Gram_s = a_s a_sᵀ`` over the
``n = B·T`` rows ``i = b·T + t``, ``D_s = ∂F/∂(pre-activation)`` of shape
``S × o_s`` per row). Entrywise::

    K[(i,σ),(j,σ')] = Σ_s Gram_s[i,j] Σ_r D_s[i,σ,r] D_s[j,σ',r].

*Unit layout* (declared by ``cell.state_parts``): the state is ``P`` parts
of ``H`` entries each (``h``; LSTM ``h`` and ``c``), entry ``σ = p·H + u``
belongs to unit ``u``; a site's ``o_s = G_s·H`` pre-activation rows are
stacked by gate, row ``r = q·H + u`` belongs to unit ``u`` (its weight row
reads ``a_s`` and feeds unit ``u`` only).

*The structure.* If ``D_s[i, p·H+u, q·H+u'] = 0`` whenever ``u ≠ u'`` (declared by a cell
with ``has_unit_weight_sites``, which gives ``d_s`` directly through
the hook ``Cell._unit_weight_sites``; otherwise checked exactly, on every row
of the dense ``D_s``, and the cell refused by name), then with
``d_s[i,p,q,u] = D_s[i, p·H+u, q·H+u]``::

    K[(i,p,u),(j,p',u')] = δ_{uu'} K_u[(i,p),(j,p')],
    K_u[(i,p),(j,p')]   = Σ_s Gram_s[i,j] Σ_q d_s[i,p,q,u] d_s[j,p',q,u]
                        = (F_u F_uᵀ)[(i,p),(j,p')],
    F_u[(i,p),(s,q,c)]  = d_s[i,p,q,u] · a_s[i,c].

So the cross-unit entries of ``K`` are exactly zero and ``K`` is the direct sum
of ``H`` blocks ``K_u`` of size ``n·P`` (LSTM: ``2·B·T``, coupling ``h_u`` and
``c_u``). ``F_u`` is ``J_θ`` restricted to the rows of unit ``u`` and to the
parameters of unit ``u``'s weight rows (``f = Σ_s G_s·dim a_s`` of them, the
unit's fan-in: GRU ``3(N+1) + 3(H+1)``), so ``M_u = F_uᵀF_u`` is the unit's block
of ``J_θᵀJ_θ`` and has the nonzero eigenvalues of ``K_u``. A block is held in
the smaller of the two forms: ``'fan_in'`` (``M_u``, ``f × f``; ``K_u`` adds
``n·P − f`` zero eigenvalues) or ``'trajectory'`` (``K_u``, assembled as the
Hadamard sum ``Σ_s Gram_s ⊙ (E_s E_sᵀ)``, ``E_s = d_s[:, :, :, u]``).

*What follows* (``λ`` eigenvalues of ``K``, all exact up to rounding):

* spectrum: the union of the blocks' spectra (LAPACK per block);
* ``tr K = Σ_s Σ_i ‖a_{s,i}‖² Σ_{p,q,u} d_s[i,p,q,u]²``;
* ``⟨K, K'⟩_F = Σ_u Σ_{i,j,p,p'} K_u[(i,p),(j,p')] K'_u[(i,p),(j,p')]`` for two
  operators with the same layout (a numba kernel over ``i ≥ j``, cost
  ``H·n²·P²·Σ_s G_s``, no block stored), hence ``‖K‖_F`` and alignments;
* participation ratio ``(tr K)²/‖K‖_F²``; effective rank ``(Σλ²)²/Σλ⁴`` and
  variance rank from the spectrum;
* partial traces and marginal sums over any axes: per unit from ``K_u``'s
  entries; the result is block diagonal over units while ``hidden`` is kept;
* effective dimensions: ``K² = ⊕_u K_u²`` with ``K_u² = L_u R_uᵀ``
  (``L = R = K_u``, the Gram route, any form; or ``L = F_u, R = F_u M_u`` in
  fan-in form, no Gram): :meth:`KBlocks.axis_grams`;
* the fan-in blocks ``M_u`` of all units at once from Khatri–Rao products of
  the activities (``M_u[(s,q,c),(s2,q2,c2)] = Σ_i a_s[i,c] a_s2[i,c2] ·
  Σ_p d_s[i,p,q,u] d_s2[i,p,q2,u]``, one BLAS-3 product per site pair and
  group of units, ``F_u`` never formed): :meth:`KBlocks._map_blocks`;
* eigenvectors: from a block's eigenpair ``(λ, y)``, ``F_u y / √λ`` (fan-in
  form) or ``y`` itself, placed on unit ``u``'s entries of ``(B, T, S)``.

Cells without the structure: ODE cells and user vector fields (θ enters every
integrator stage: no single Kronecker core), cells whose sites couple units.
:func:`unit_blocks` refuses them, naming the cell; the analyses then use
``lin.K`` matrix-free.
"""

from __future__ import annotations

import copy
import queue
from math import prod
from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator

from .._checks import (DEFAULT_MEMORY_LIMIT, as_real_array, check_choice, check_memory, check_memory_limit,
                       check_positive_int)
from .._jit import njit
from ..operators._named import CheckedInputOperator, NamedOperator

__all__ = ["unit_blocks", "KBlocks", "UnitSite", "BlockDiagonalOperator", "structure_of"]

#: Bytes of the dense ``D`` of one chunk of steps while the blocks are built.
_CHUNK_BYTES = 32 * 1024**2
#: Units whose trajectory blocks :meth:`KBlocks.axis_grams` writes in one kernel call (sharing each Gram row
#: while it is in cache), memory limit permitting.
_TRAJECTORY_GROUP = 4
_AXES = ("batch", "time", "hidden")


class UnitSite(NamedTuple):
    """One weight site in per-unit form (rows ``i = b·T + t``)."""

    params: tuple
    activity: np.ndarray   # (n, a): the site's input activity (ones column for a bias)
    d: np.ndarray          # (n, P, G, H): d[i, p, q, u] = D[i, p·H + u, q·H + u]


# --------------------------------------------------------------------------- kernels


@njit
def _unit_entries(G, d, i, j, p, p2, out):
    """``out[u] = K_u[(i,p),(j,p2)] = Σ_s G[s,i,j] Σ_q d[s,i,p,q,u] d[s,j,p2,q,u]`` for every unit ``u``."""
    for u in range(out.size):
        out[u] = 0.0
    for s in range(d.shape[0]):
        g = G[s, i, j]
        for q in range(d.shape[3]):
            a = d[s, i, p, q]
            b = d[s, j, p2, q]
            for u in range(out.size):
                out[u] += g * a[u] * b[u]


@njit
def _inner_kernel(GA, dA, GB, dB, same):
    """``Σ_u ⟨K_u^A, K_u^B⟩_F`` from stacked Grams (s, n, n) and d (s, n, P, G, H) (module notes).

    Loops ``i ≥ j`` (weight 2 off the diagonal); the innermost loops run over
    the units ``u`` (contiguous), accumulating per unit and per row ``i``.
    """
    n, P, H = dA.shape[1], dA.shape[2], dA.shape[4]
    ka = np.empty(H)
    kb = np.empty(H)
    acc = np.empty(H)
    total = 0.0
    for i in range(n):
        for u in range(H):
            acc[u] = 0.0
        for j in range(i + 1):
            w = 1.0 if i == j else 2.0
            for p in range(P):
                for p2 in range(P):
                    _unit_entries(GA, dA, i, j, p, p2, ka)
                    if not same:
                        _unit_entries(GB, dB, i, j, p, p2, kb)
                    for u in range(H):
                        acc[u] += w * ka[u] * (ka[u] if same else kb[u])
        row = 0.0
        for u in range(H):
            row += acc[u]
        total += row
    return total


@njit(nogil=True)
def _unit_trajectory_rows(G, ET, T, time_major, out):
    """``K_u`` of a group of units into ``out`` (g, n·P, n·P) from the stacked Grams ``G`` (s, n, n) and ``ET`` (g, s, Gq, P, n).

    ``out[v, r(i,p), j·P + p2] = Σ_s Σ_q (ET[v,s,q,p,i]·ET[v,s,q,p2,j])·G[s,i,j] = K_u[(i,p),(j,p2)]``
    for the group's ``v``-th unit ``u``, with ``ET[v,s,q,p,i] = d_s[i,p,q,u]`` (module notes),
    rows ``r(i,p) = i·P + p``, or ``((t·B + b)·P + p)`` with ``time_major`` (``i = b·T + t``).
    The innermost loop runs over ``j`` on contiguous rows of ``G`` and ``ET``; the
    terms are added in the order ``s, q`` for every entry (no reassociation), so
    an entry does not depend on the group. The units of a group share each row
    ``G[s, i]`` while it is in cache: the Grams (``(B·T)²`` floats per site) are
    read once per group instead of once per unit.
    """
    U, S, Q, P, n = ET.shape
    B = n // T
    active = np.empty(Q, dtype=np.int64)
    for i in range(n):
        b = i // T
        t = i - b * T
        for p in range(P):
            r = (t * B + b) * P + p if time_major else i * P + p
            for v in range(U):
                row = out[v, r]
                for x in range(row.size):
                    row[x] = 0.0
                for s in range(S):
                    g = G[s, i]
                    na = 0
                    for q in range(Q):
                        if ET[v, s, q, p, i] != 0.0:     # a padded or inactive gate adds exact zeros
                            active[na] = q
                            na += 1
                    if P == 1 and 2 <= na <= 3:
                        # contiguous row, the gates' terms added in order q in one pass over it
                        # (the same operations as one pass per gate, with fewer loads and stores of the row)
                        q0, q1 = active[0], active[1]
                        c0, c1 = ET[v, s, q0, 0, i], ET[v, s, q1, 0, i]
                        e0, e1 = ET[v, s, q0, 0], ET[v, s, q1, 0]
                        if na == 2:
                            for j in range(n):
                                row[j] = (row[j] + (c0 * e0[j]) * g[j]) + (c1 * e1[j]) * g[j]
                        else:
                            q2 = active[2]
                            c2, e2 = ET[v, s, q2, 0, i], ET[v, s, q2, 0]
                            for j in range(n):
                                row[j] = ((row[j] + (c0 * e0[j]) * g[j]) + (c1 * e1[j]) * g[j]) \
                                    + (c2 * e2[j]) * g[j]
                        continue
                    for k in range(na):
                        q = active[k]
                        c = ET[v, s, q, p, i]
                        if P == 1:            # contiguous row: the loop vectorizes
                            e = ET[v, s, q, 0]
                            for j in range(n):
                                row[j] += (c * e[j]) * g[j]
                            continue
                        for p2 in range(P):
                            e = ET[v, s, q, p2]
                            for j in range(n):
                                row[j * P + p2] += (c * e[j]) * g[j]


@njit
def _khatri_rao_rows(A, A2, upper, out):
    """``out[i, k] = A[i, c_k]·A2[i, c2_k]`` over the pairs ``(c, c2)`` in ``c``-major order: ``c ≤ c2``
    with ``upper`` (then ``A2`` is ``A``), else all of them (:meth:`KBlocks._kr_products`; one product
    per entry, rows written contiguously)."""
    for i in range(A.shape[0]):
        row = out[i]
        k = 0
        for c in range(A.shape[1]):
            x = A[i, c]
            for c2 in range(c if upper else 0, A2.shape[1]):
                row[k] = x * A2[i, c2]
                k += 1


@njit
def _place_pair_block(packed, upper, a, a2, r0, c0, mirror, M):
    """Write one gate pair's block of ``M`` from its Khatri–Rao product row ``packed`` (:meth:`KBlocks._kr_group`).

    ``upper`` (a site with itself): ``packed`` holds the ``c ≤ c2`` entries in
    ``c``-major order of a symmetric ``a × a`` block ``X``; ``M[r0:r0+a, c0:c0+a] = X``
    and, with ``mirror`` (two different gates), ``M[c0:c0+a, r0:r0+a] = X`` too.
    Otherwise ``packed`` is the ``a × a2`` block ``X`` in row-major order:
    ``M[r0:r0+a, c0:c0+a2] = X`` and ``M[c0:c0+a2, r0:r0+a] = Xᵀ``. Copies only.
    """
    k = 0
    if upper:
        for c in range(a):
            for c2 in range(c, a):
                v = packed[k]
                k += 1
                M[r0 + c, c0 + c2] = v
                M[r0 + c2, c0 + c] = v
                if mirror:
                    M[c0 + c, r0 + c2] = v
                    M[c0 + c2, r0 + c] = v
    else:
        for c in range(a):
            for c2 in range(a2):
                v = packed[k]
                k += 1
                M[r0 + c, c0 + c2] = v
                M[c0 + c2, r0 + c] = v


@njit
def _any_nonzero(x):
    """Whether a flat float array has a nonzero entry (stops at the first; one pass, no temporaries)."""
    for v in x:
        if v != 0.0:
            return True
    return False


# ------------------------------------------------------------------------------ build


def _unit_layout(cell):
    """``(U, P)``: the units and the parts of the state, from ``cell.state_parts`` (every part has ``U`` entries)."""
    name = type(cell).__name__
    parts = tuple(cell.state_parts)
    sizes = {int(size) for _, size in parts}
    if len(sizes) != 1:
        raise NotImplementedError(
            f"unit_blocks: {name}'s state parts {parts} do not all have the same number of units; K has no "
            "per-unit block structure here, use lin.K")
    return sizes.pop(), len(parts)


def _reduced_axes(axes):
    """``axes`` of :meth:`KBlocks.reduced`: a non-empty tuple or list of distinct axis indices of (B, T, S),
    not all three."""
    if not isinstance(axes, (tuple, list)) or len(axes) == 0:
        raise TypeError(f"axes: expected a non-empty tuple of axis indices of (B, T, S), got {axes!r}")
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"axes: expected integer axis indices in [0, 3), got {axes!r}")
        if not 0 <= a < 3:
            raise ValueError(f"axes: expected axis indices in [0, 3), got {axes!r}")
    if len(set(int(a) for a in axes)) != len(axes):
        raise ValueError(f"axes: expected distinct axes, got {axes!r}")
    if len(axes) == 3:
        raise ValueError(f"axes: reducing every axis leaves nothing; expected at most 2 axes, got {axes!r}")
    return tuple(sorted(int(a) for a in axes))


def unit_blocks(lin, memory_limit=None):
    """K's per-unit blocks from the Kronecker core of ``lin`` (derivation in the module notes).

    The unit layout is ``cell.state_parts``: ``P`` parts of ``U`` entries each
    (state entry ``p·U + u``). A cell declaring ``has_unit_weight_sites``
    gives its sites' ``d`` directly (the hook ``Cell._unit_weight_sites``,
    ``B·T·P·G·U`` floats per site): the dense ``D`` (``B·T·S·G·U`` floats per
    site, 2.8 GB per GRU site at H=256, B=20, T=90) is never formed. A cell
    declaring only ``has_weight_sites`` goes through the dense ``D`` of
    :meth:`kpref.Linearization.kronecker_factors`, a chunk of steps at a time,
    and every entry coupling two units is checked to be exactly zero.

    Parameters
    ----------
    lin : kpref.Linearization
    memory_limit : int, optional
        Bytes the site arrays, the Grams (``n²`` floats per site) and each
        dense block may take (default: ``lin.memory_limit``).

    Returns
    -------
    KBlocks

    Raises
    ------
    NotImplementedError
        Naming the cell, when ``K`` has no per-unit block structure (no weight
        sites, state parts of unequal sizes, a site not made of whole gates,
        or a ``D`` with an entry coupling two units).
    MemoryError
        When the site arrays exceed the memory limit (checked before allocating).
    """
    for attr in ("shape", "cell", "kronecker_factors", "point"):
        if not hasattr(lin, attr):
            raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    limit = lin.memory_limit if memory_limit is None else check_memory_limit(memory_limit)
    cell = lin.cell
    name = type(cell).__name__
    B, T, S = lin.shape
    U, P = _unit_layout(cell)
    if U * P != S:
        raise NotImplementedError(
            f"unit_blocks: {name}'s state parts {tuple(cell.state_parts)} cover {U * P} entries, not the state "
            f"size {S}; use lin.K")
    if cell.has_unit_weight_sites:
        sites = _sites_from_unit_form(lin, U, P, limit)
    else:
        sites = _sites_from_dense_D(lin, U, P, limit)
    return KBlocks((B, T, S), U, sites, cell_name=name, memory_limit=limit)


def _allocate_sites(first, n_rows, B, T, P, U, limit, name):
    """Checked, preallocated ``(activity (B, T, a), d (B, T, P, G, U))`` per site from one step's shapes."""
    need = sum(8 * n_rows * (act.shape[1] + P * G * U) for _, act, G in first)
    check_memory(f"unit_blocks: the per-unit site arrays of {name} ({len(first)} sites, B·T = {n_rows} rows)",
                 need, limit)
    return [(np.empty((B, T, act.shape[1])), np.empty((B, T, P, G, U))) for _, act, G in first]


def _step_chunk(per_step_bytes, T):
    return int(max(1, min(T, _CHUNK_BYTES // max(per_step_bytes, 1))))


def _sites_from_unit_form(lin, U, P, limit):
    """Sites from the hook ``cell._unit_weight_sites`` on the linearization's step point, rows reordered to ``b·T + t``."""
    cell = lin.cell
    name = type(cell).__name__
    B, T, _ = lin.shape
    first = cell._unit_weight_sites(lin.point.rows(0, B))    # declared hook; lin's point is checked
    for names, act, d in first:
        if np.ndim(act) != 2 or np.shape(act)[0] != B or np.ndim(d) != 4 or np.shape(d)[0] != B \
                or np.shape(d)[1] != P or np.shape(d)[3] != U:
            raise ValueError(
                f"unit_blocks: {name}._unit_weight_sites returned activity {np.shape(act)} and d {np.shape(d)} for "
                f"site {names}; expected (M, a) and (M, {P}, G, {U}) with M = {B} rows")
    shapes = [(names, act, np.shape(d)[2]) for names, act, d in first]
    out = _allocate_sites(shapes, B * T, B, T, P, U, limit, name)
    per_step = sum(8 * B * (act.shape[1] + P * G * U) for _, act, G in shapes)
    chunk = _step_chunk(per_step, T)
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        sites = first if t1 == 1 else cell._unit_weight_sites(lin.point.rows(t0 * B, t1 * B))
        m = t1 - t0
        for (acts, ds), (_, act, d) in zip(out, sites):     # point rows (t, b) → (b, t)
            acts[:, t0:t1] = np.asarray(act).reshape(m, B, -1).transpose(1, 0, 2)
            ds[:, t0:t1] = np.asarray(d).reshape(m, B, P, -1, U).transpose(1, 0, 2, 3, 4)
    n = B * T
    return [UnitSite(tuple(names), a.reshape(n, -1), d.reshape(n, P, -1, U))
            for (names, _, _), (a, d) in zip(shapes, out)]


def _sites_from_dense_D(lin, U, P, limit):
    """Sites from the dense ``D`` of ``lin.kronecker_factors``, a chunk of steps at a time, cross-unit zeros checked."""
    cell = lin.cell
    name = type(cell).__name__
    B, T, _ = lin.shape
    try:
        first = lin.kronecker_factors(limit, steps=(0, 1))
    except NotImplementedError as exc:
        raise NotImplementedError(
            f"unit_blocks: {name} has no per-unit block structure of K (it declares no weight sites: "
            f"{exc}); use lin.K") from exc
    for site in first:
        if site.D.shape[2] % U:
            raise NotImplementedError(
                f"unit_blocks: {name}'s site {site.params} has {site.D.shape[2]} pre-activation rows, not a whole "
                f"number of gates of {U} units; K has no per-unit block structure here, use lin.K")
    shapes = [(site.params, site.activity, site.D.shape[2] // U) for site in first]
    out = _allocate_sites(shapes, B * T, B, T, P, U, limit, name)
    # one step at a time once a step's D is large (its rows then need no reordering: no copy)
    chunk = _step_chunk(sum(8 * site.D.size for site in first), T)
    idx = np.arange(U)
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        sites = first if t0 == 0 and t1 == 1 else lin.kronecker_factors(limit, steps=(t0, t1))
        m = B * (t1 - t0)
        for (acts, ds), site in zip(out, sites):
            D = site.D
            G = D.shape[2] // U
            D5 = D.reshape(m, P, U, G, U)
            e = D5[:, :, idx, :, idx]          # (U, m, P, G): the unit-diagonal part
            D5[:, :, idx, :, idx] = 0.0        # (D is kronecker_factors' own fresh array)
            if _any_nonzero(D.reshape(-1)):    # an entry coupling two units
                worst = np.abs(D5)
                r, p, u, q, u2 = np.unravel_index(int(np.argmax(worst)), worst.shape)
                raise NotImplementedError(
                    f"unit_blocks: {name}'s site {site.params} couples units: ∂F/∂(pre-activation) at row "
                    f"(trial {r // (t1 - t0)}, step {t0 + r % (t1 - t0)}) has entry {worst.max():.3e} from "
                    f"gate {q} of unit {u2} to state part {p} of unit {u}; K has no per-unit block structure, "
                    "use lin.K")
            ds[:, t0:t1] = e.transpose(1, 2, 3, 0).reshape(B, t1 - t0, P, G, U)
            acts[:, t0:t1] = site.activity.reshape(B, t1 - t0, -1)
    n = B * T
    return [UnitSite(tuple(names), a.reshape(n, -1), d.reshape(n, P, -1, U))
            for (names, _, _), (a, d) in zip(shapes, out)]


# ---------------------------------------------------------------------------- KBlocks


class KBlocks:
    """``K = ⊕_u K_u``: the per-unit blocks of a linearization's ``K`` (module notes).

    Build with :func:`unit_blocks` (or ``lin.K_blocks()``), or from sites
    directly (``KBlocks(shape, H, sites)``, e.g. to test a checker).

    Attributes
    ----------
    shape : (B, T, S)
    units : int
        ``H``, the number of blocks.
    parts : int
        ``P = S / H`` state entries per unit (LSTM: 2).
    fan_in : int
        ``f = Σ_s G_s · dim a_s``, the parameters of one unit.
    form : {'fan_in', 'trajectory'}
        The smaller of ``f`` and ``n·P``: blocks are ``M_u = F_uᵀF_u`` or ``K_u``.
    block_size : int
        ``min(f, n·P)``.
    sites : list of UnitSite
    cell_name : str
    workers : int
        Threads for the per-block factorizations (default 1; settable).
    """

    def __init__(self, shape, units, sites, *, cell_name="cell", memory_limit=None):
        B, T, S = (int(v) for v in shape)
        self.shape = (B, T, S)
        self.size = B * T * S
        self.units = int(units)
        if S % self.units:
            raise ValueError(f"units: expected a divisor of S={S}, got {units}")
        self.parts = S // self.units
        self.cell_name = cell_name
        self.memory_limit = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
        n = B * T
        if not sites:
            raise ValueError("sites: expected at least one weight site, got none")
        for s in sites:
            if s.activity.ndim != 2 or s.activity.shape[0] != n:
                raise ValueError(f"sites: activity of {s.params} has shape {s.activity.shape}, expected ({n}, a)")
            if s.d.ndim != 4 or s.d.shape[0] != n or s.d.shape[1] != self.parts or s.d.shape[3] != self.units:
                raise ValueError(f"sites: d of {s.params} has shape {s.d.shape}, "
                                 f"expected ({n}, {self.parts}, G, {self.units})")
        self.sites = [UnitSite(tuple(s.params), np.array(s.activity, dtype=np.float64),
                               np.array(s.d, dtype=np.float64)) for s in sites]
        self.fan_in = sum(s.d.shape[2] * s.activity.shape[1] for s in self.sites)
        self.rows = n * self.parts
        self.form = "fan_in" if self.fan_in <= self.rows else "trajectory"
        self.block_size = min(self.fan_in, self.rows)
        self._grams = None
        self._dstack = None
        self._eig = None
        self.workers = 1

    def __repr__(self):
        B, T, S = self.shape
        return (f"KBlocks({self.cell_name}, B={B}, T={T}, S={S}: {self.units} blocks in {self.form!r} form "
                f"of size {self.block_size})")

    # ------------------------------------------------------------ pieces
    def _gram_bytes(self):
        n = self.shape[0] * self.shape[1]
        return 0 if self._grams is not None else 8 * n * n * len(self.sites)

    def _check_grams(self, what, extra=0):
        """Refuse, naming the sizes, when the Grams (``(B·T)²`` floats per site) and ``extra`` bytes exceed the limit."""
        B, T, _ = self.shape
        need = self._gram_bytes() + extra
        if need > self.memory_limit:
            raise MemoryError(
                f"{what}: needs the activity Grams of {len(self.sites)} sites, (B·T)² = ({B}·{T})² = {(B * T) ** 2} "
                f"floats each ({self._gram_bytes() / 1024**2:.1f} MiB), plus {extra / 1024**2:.1f} MiB of blocks: "
                f"{need / 1024**2:.1f} MiB above the memory_limit of {self.memory_limit / 1024**2:.1f} MiB; pass a "
                "larger memory_limit (bytes), or use fewer trials/steps")

    def grams(self):
        """``Gram_s = a_s a_sᵀ`` of every site, stacked (s, n, n) (memory checked; cached)."""
        if self._grams is None:
            self._check_grams("KBlocks.grams")
            self._grams = np.stack([s.activity @ s.activity.T for s in self.sites])
        return self._grams

    def _stacked_d_bytes(self):
        G = max(s.d.shape[2] for s in self.sites)
        return 0 if self._dstack is not None else 8 * len(self.sites) * self.rows * G * self.units

    def _stacked_d(self):
        """Every site's ``d`` zero-padded to the largest gate count, stacked (s, n, P, G, H) (cached)."""
        if self._dstack is None:
            G = max(s.d.shape[2] for s in self.sites)
            n = self.shape[0] * self.shape[1]
            out = np.zeros((len(self.sites), n, self.parts, G, self.units))
            for k, s in enumerate(self.sites):
                out[k, :, :, :s.d.shape[2]] = s.d
            self._dstack = out
        return self._dstack

    @staticmethod
    def _unit_ET(D, u0, u1):
        """``ET[v, s, q, p, i] = d_s[i, p, q, u0 + v]`` of the units ``u0 ≤ u < u1``, contiguous (the kernel's layout)."""
        return np.ascontiguousarray(D[:, :, :, :, u0:u1].transpose(4, 0, 3, 2, 1))

    def with_memory_limit(self, memory_limit):
        """The same blocks (shared arrays and caches so far) under another memory limit."""
        memory_limit = check_memory_limit(memory_limit)
        other = copy.copy(self)
        other.memory_limit = memory_limit
        return other

    def _check_unit(self, u):
        if isinstance(u, (bool, np.bool_)) or not isinstance(u, (int, np.integer)) or not 0 <= u < self.units:
            raise ValueError(f"u: expected a unit index in [0, {self.units}), got {u!r}")
        return int(u)

    def factor(self, u):
        """``F_u`` (n·P, f): rows ``(i, p)``, columns ``(site, gate, activity entry)``; ``K_u = F_u F_uᵀ``."""
        u = self._check_unit(u)
        check_memory("KBlocks.factor", 8 * self.rows * self.fan_in, self.memory_limit)
        n = self.shape[0] * self.shape[1]
        F = np.empty((n, self.parts, self.fan_in))
        c0 = 0
        for s in self.sites:
            G, a = s.d.shape[2], s.activity.shape[1]
            view = F[:, :, c0:c0 + G * a]
            view.shape = (n, self.parts, G, a)     # a view (setting .shape never copies; raises instead)
            np.multiply(s.d[:, :, :, u, None], s.activity[:, None, None, :], out=view)
            c0 += G * a
        return F.reshape(self.rows, self.fan_in)

    def trajectory_block(self, u):
        """``K_u`` (n·P, n·P), rows ``(i, p)`` with ``i = b·T + t``: ``Σ_s Gram_s ⊙ (E_s E_sᵀ)`` (numba kernel).

        Entry ``((i,p),(j,p2))`` is ``Σ_s Σ_q (d_s[i,p,q,u]·d_s[j,p2,q,u])·Gram_s[i,j]``
        summed in the order ``s, q``: the same floating-point operations for
        ``(j,p2),(i,p)``, so the block is exactly symmetric.
        """
        u = self._check_unit(u)
        self._check_grams("KBlocks.trajectory_block", 8 * self.rows ** 2 + self._stacked_d_bytes())
        out = np.empty((1, self.rows, self.rows))
        _unit_trajectory_rows(self.grams(), self._unit_ET(self._stacked_d(), u, u + 1), self.shape[1], False, out)
        return out[0]

    def block(self, u):
        """Block ``u`` in :attr:`form`: ``M_u = F_uᵀF_u`` (fan-in) or ``K_u`` (trajectory)."""
        if self.form == "trajectory":
            return self.trajectory_block(u)
        check_memory("KBlocks.block", 8 * self.fan_in ** 2, self.memory_limit)
        F = self.factor(u)
        return F.T @ F

    # ------------------------------------------------------------ fan-in blocks by Khatri–Rao products
    def _kr_plan(self):
        """The site pairs ``(s, s2)``, ``s ≤ s2``, of :meth:`_map_blocks`: gate pairs, activity-column pairs, offsets."""
        offsets, off = [], 0
        for site in self.sites:
            offsets.append(off)
            off += site.d.shape[2] * site.activity.shape[1]
        plan = []
        for s, site in enumerate(self.sites):
            for s2 in range(s, len(self.sites)):
                a, a2 = site.activity.shape[1], self.sites[s2].activity.shape[1]
                G, G2 = site.d.shape[2], self.sites[s2].d.shape[2]
                upper = s == s2   # (c, c2) with c ≤ c2 only: the blocks are symmetric in the activity pair
                if upper:
                    gates = [(q, q2) for q in range(G) for q2 in range(q, G)]
                    width = a * (a + 1) // 2
                else:
                    gates = [(q, q2) for q in range(G) for q2 in range(G2)]
                    width = a * a2
                plan.append((s, s2, gates, width, upper, offsets[s], offsets[s2], a, a2))
        return plan

    def _kr_bytes(self, plan):
        """``(Z bytes, bytes per unit of the products)`` of :meth:`_map_blocks`."""
        n = self.shape[0] * self.shape[1]
        z = sum(8 * n * p[3] for p in plan)
        per_unit = sum(8 * (len(p[2]) * p[3] + len(p[2]) * n) for p in plan)
        return z, per_unit

    def _kr_products(self, plan):
        """``Z[i, k] = a_s[i, c_k] · a_s2[i, c2_k]`` of every site pair (built in column chunks, no temporaries of its size)."""
        n = self.shape[0] * self.shape[1]
        out = []
        for s, s2, _, width, upper, *_ in plan:
            Z = np.empty((n, width))
            _khatri_rao_rows(self.sites[s].activity, self.sites[s2].activity, upper, Z)
            out.append(Z)
        return out

    def _map_blocks(self, fn):
        r"""``[fn(M_u) for u in units]`` with the blocks in :attr:`form` (unit order, whatever :attr:`workers`).

        *Fan-in form, by Khatri–Rao products.* Entry ``((s,q,c),(s2,q2,c2))`` of ``M_u = F_uᵀF_u`` is::

            M_u[(s,q,c),(s2,q2,c2)] = Σ_i Z_{s,s2}[i,(c,c2)] · V_{s,s2}[i,(q,q2,u)],
            Z_{s,s2}[i,(c,c2)] = a_s[i,c] · a_s2[i,c2],      V_{s,s2}[i,(q,q2,u)] = Σ_p d_s[i,p,q,u] d_s2[i,p,q2,u],

        so the blocks of every unit of a group come from one product
        ``Vᵀ Z`` per site pair (BLAS-3, shared ``Z``), with ``F_u`` never
        formed. For ``s = s2`` the entry is symmetric in ``(c, c2)`` (and the
        same for ``(q, q2)`` and ``(q2, q)``), so only ``c ≤ c2`` and ``q ≤ q2``
        are computed: ``n·a(a+1)/2·G(G+1)/2`` multiply-adds against
        ``n·(G·a)²/2`` for the symmetric product ``F_uᵀF_u`` (GRU's recurrent
        site, G = 3: two thirds), and the products run at GEMM speed. Each
        entry is a sum over the ``n`` rows by BLAS (backward stable,
        relative error ``O(n·ε)`` of ``Σ_i |Z V|``), and every block is
        exactly symmetric. Used when ``Z`` (``n·Σ_{pairs} a·a2`` floats,
        about half of it for ``s = s2``) and a group's products fit the
        memory limit; otherwise, and in trajectory form, block by block
        (:meth:`block`).
        """
        workers = check_positive_int("workers", self.workers)
        if self.form == "fan_in":
            plan = self._kr_plan()
            z_bytes, per_unit = self._kr_bytes(plan)
            f = self.fan_in
            groups = max(workers, -(-self.units * per_unit // (64 * 1024**2)))
            groups = min(self.units, -(-groups // workers) * workers)
            size = -(-self.units // groups)
            need = z_bytes + workers * (size * per_unit + 8 * 3 * f * f)
            if need <= self.memory_limit:
                Zs = self._kr_products(plan)
                starts = list(range(0, self.units, size))
                parts = self._map_list(lambda u0: self._kr_group(plan, Zs, u0, min(self.units, u0 + size), fn), starts)
                return [r for part in parts for r in part]
        check_memory("KBlocks.block", 8 * self.block_size ** 2 * 3 * workers, self.memory_limit)
        return self._map_units(lambda u: fn(self.block(u)))

    def _kr_group(self, plan, Zs, u0, u1, fn):
        """``[fn(M_u) for u in range(u0, u1)]`` from one product ``Vᵀ Z`` per site pair (:meth:`_map_blocks`)."""
        n = self.shape[0] * self.shape[1]
        g = u1 - u0
        products = []
        for (s, s2, gates, *_), Z in zip(plan, Zs):
            d, d2 = self.sites[s].d, self.sites[s2].d
            VT = np.empty((len(gates), g, n))
            for k, (q, q2) in enumerate(gates):
                np.einsum("ipu,ipu->ui", d[:, :, q, u0:u1], d2[:, :, q2, u0:u1], out=VT[k])
            products.append((VT.reshape(len(gates) * g, n) @ Z).reshape(len(gates), g, -1))
        out = []
        M = np.empty((self.fan_in, self.fan_in))
        for j in range(g):
            for (s, s2, gates, _, upper, o, o2, a, a2), RT in zip(plan, products):
                for k, (q, q2) in enumerate(gates):
                    _place_pair_block(RT[k, j], upper, a, a2, o + q * a, o2 + q2 * a2, q != q2, M)
            out.append(fn(M))
        return out

    # ------------------------------------------------------------ spectra
    def _map_units(self, fn):
        """``[fn(u) for u in units]``, on :attr:`workers` threads when above 1 (BLAS/LAPACK release the GIL)."""
        return self._map_list(fn, range(self.units))

    def _map_list(self, fn, items):
        """``[fn(x) for x in items]`` in order, on :attr:`workers` threads when above 1."""
        workers = check_positive_int("workers", self.workers)
        if workers == 1:
            return [fn(x) for x in items]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(fn, items))

    def block_eigenvalues(self):
        """Eigenvalues of every block, ascending, (H, block_size) (cached).

        With ``workers > 1`` the blocks are formed and factorized by that many
        threads (LAPACK releases the GIL; run with one BLAS thread,
        e.g. ``OPENBLAS_NUM_THREADS=1``, or the threads oversubscribe the cores).
        """
        if self._eig is None:
            self._eig = np.stack(self._map_blocks(np.linalg.eigvalsh))
        return self._eig

    def eigenvalues(self, k=None, which="LA"):
        """Eigenvalues of ``K`` ordered by ``which`` ('LA', 'SA', 'LM'): all ``B·T·S`` or the ``k`` first."""
        check_choice("which", which, ("LA", "SA", "LM"))
        if k is not None:
            k = check_positive_int("k", k)
            if k > self.size:
                raise ValueError(f"k: expected at most B·T·S = {self.size}, got {k}")
        n_zero = self.units * (self.rows - self.block_size)
        if k is not None and which == "LA" and self._eig is None and k < self.block_size:
            m = self.block_size
            tops = self._map_blocks(lambda X: scipy.linalg.eigh(X, eigvals_only=True,
                                                                subset_by_index=[m - k, m - 1], driver="evr"))
            lam = np.concatenate(tops + [np.zeros(min(k, n_zero))])
        else:
            lam = np.concatenate([self.block_eigenvalues().ravel(), np.zeros(n_zero)])
        if which == "LA":
            order = np.argsort(-lam, kind="stable")
        elif which == "SA":
            order = np.argsort(lam, kind="stable")
        else:
            order = np.argsort(-np.abs(lam), kind="stable")
        lam = lam[order]
        return lam.copy() if k is None else lam[:k].copy()

    def power_sums(self):
        r"""``(Σλ², Σλ⁴)`` of ``K`` from the blocks, without eigenvalues (cached spectrum if any).

        *Derivation.* ``K = ⊕_u K_u`` with ``K_u = F_u F_uᵀ`` (``m × m``,
        ``m = n·P`` rows) and ``M_u = F_uᵀ F_u`` (``f × f``, ``f`` the fan-in);
        ``K_u`` and ``M_u`` have the same nonzero eigenvalues ``λ``. Let ``X_u``
        be the smaller of the two (:attr:`form`), symmetric PSD. Then::

            Σλ² = Σ_u tr(X_u²) = Σ_u ‖X_u‖_F²,
            Σλ⁴ = Σ_u tr(X_u⁴) = Σ_u ‖X_u²‖_F²,     X_u² = X_u X_uᵀ (X_u symmetric).

        Both products are symmetric rank-k updates (BLAS-3 ``syrk``, which
        NumPy's matmul calls for ``Aᵀ @ A`` on one buffer): in fan-in form
        ``X_u = F_uᵀF_u`` costs ``m·f²`` flops and ``X_u X_uᵀ`` another ``f³``
        (``2mf²`` and ``2f³`` as general products); the two Frobenius norms
        are dot products (``f²``). Per unit ``m f² + f³`` — GRU at H=256,
        B=20, T=90: ``1800·783² + 783³ ≈ 1.6·10⁹`` flops, against
        ``m²·f + m³ ≈ 8.4·10⁹`` on the trajectory side. In trajectory form
        (``m < f``) ``X_u = K_u`` is assembled from the shared Grams,
        ``Σ_s Gram_s ⊙ (E_s E_sᵀ)`` (``m²·Σ_s G_s``), and ``K_u K_uᵀ`` costs ``m³``.
        Cheaper exact routes do not exist here in general: ``tr(X⁴)`` needs
        one ``f × f`` symmetric product after ``X`` itself (a Cholesky factor
        would save a third but ``M_u`` is singular for GRU: the ``r``/``z``
        parts of its two biases give equal columns of ``F_u``), and the
        eigenvalues cost ``≈ 4f³/3`` half in BLAS-2.
        Rounding: each sum is of nonnegative terms computed by backward-stable
        products, relative error ``O(m·ε)``.
        """
        if self._eig is not None:
            lam2 = self._eig ** 2
            return float(lam2.sum()), float(np.sum(lam2 * lam2))

        def one(X):                            # X = M_u (Khatri–Rao products) or K_u (Hadamard sum of Grams)
            X2 = X @ X.T                       # syrk: X² for the symmetric X
            flat, flat2 = X.reshape(-1), X2.reshape(-1)
            return float(flat @ flat), float(flat2 @ flat2)
        parts = self._map_blocks(one)
        return float(sum(p[0] for p in parts)), float(sum(p[1] for p in parts))

    def eigenpairs(self, k):
        """The ``k`` largest eigenvalues of ``K`` and their eigenvectors shaped (k, B, T, S).

        Each vector is ``F_u y / √λ`` (fan-in form, ``M_u y = λ y``) or the
        block's own eigenvector (trajectory form), placed on unit ``u``'s
        entries ``p·H + u``; orthonormal (distinct units: disjoint supports).
        """
        k = check_positive_int("k", k)
        if k > self.size:
            raise ValueError(f"k: expected at most B·T·S = {self.size}, got {k}")
        check_memory("KBlocks.eigenpairs", 8 * k * self.size, self.memory_limit)
        m = self.block_size
        kk = min(k, m)
        cand = []
        for u in range(self.units):
            w, Y = scipy.linalg.eigh(self.block(u), subset_by_index=[m - kk, m - 1], driver="evr")
            cand.extend((float(w[i]), u, i) for i in range(kk))
        cand.sort(key=lambda c: -c[0])
        chosen = cand[:k]
        if len(chosen) < k or chosen[-1][0] <= 1e-12 * max(chosen[0][0], np.finfo(float).tiny):
            raise ValueError(
                f"k: K has fewer than {k} eigenvalues above 1e-12·λ_max (rank-deficient); its null space has no "
                "distinguished basis, ask for fewer eigenvectors")
        B, T, S = self.shape
        P, H = self.parts, self.units
        values = np.array([c[0] for c in chosen])
        vecs = np.zeros((k, B, T, P, H))
        by_unit = {}
        for r, (_, u, i) in enumerate(chosen):
            by_unit.setdefault(u, []).append((r, i))
        for u, items in by_unit.items():
            w, Y = scipy.linalg.eigh(self.block(u), subset_by_index=[m - kk, m - 1], driver="evr")
            idx = [i for _, i in items]
            V = Y[:, idx]
            if self.form == "fan_in":
                V = (self.factor(u) @ V) / np.sqrt(w[idx])
            for (r, _), col in zip(items, V.T):
                vecs[r, :, :, :, u] = col.reshape(B, T, P)
        return values, vecs.reshape(k, B, T, S)

    # ------------------------------------------------------------ traces
    def trace(self):
        """``tr K`` (module notes)."""
        return float(sum(np.einsum("ic,ic->i", s.activity, s.activity) @ np.einsum("ipqu,ipqu->i", s.d, s.d)
                         for s in self.sites))

    def inner(self, other):
        """``⟨K, K'⟩_F = tr(K K')`` with another :class:`KBlocks` of the same layout (numba kernel)."""
        if not isinstance(other, KBlocks):
            raise TypeError(f"other: expected KBlocks, got {type(other).__name__}")
        if other.shape != self.shape or other.units != self.units:
            raise ValueError(f"other: expected the layout {self.shape} with {self.units} units, "
                             f"got {other.shape} with {other.units}")
        same = other is self
        n = self.shape[0] * self.shape[1]
        d_bytes = 8 * n * self.parts * self.units * (max(s.d.shape[2] for s in self.sites) * len(self.sites)
                                                     + (0 if same else max(s.d.shape[2] for s in other.sites)
                                                        * len(other.sites)))
        kernel_bytes = self._gram_bytes() + (0 if same else other._gram_bytes()) + d_bytes
        fan_bytes = 8 * (self.rows * (self.fan_in + other.fan_in) + self.fan_in * other.fan_in)
        limit = min(self.memory_limit, other.memory_limit)
        if kernel_bytes > limit:
            if fan_bytes > limit:
                B, T, _ = self.shape
                raise MemoryError(
                    f"KBlocks.inner: the Gram route needs {kernel_bytes / 1024**2:.1f} MiB (activity Grams of "
                    f"(B·T)² = ({B}·{T})² floats per site) and the fan-in route {fan_bytes / 1024**2:.1f} MiB "
                    f"(factors of {self.rows} × fan-in {self.fan_in} and {other.fan_in}), both above the "
                    f"memory_limit of {limit / 1024**2:.1f} MiB; pass a larger memory_limit (bytes)")
            return self._inner_fan_in(other)
        GA, dA = self.grams(), self._stacked_d()
        GB, dB = (GA, dA) if same else (other.grams(), other._stacked_d())
        return float(_inner_kernel(GA, dA, GB, dB, same))

    def _inner_fan_in(self, other):
        """``Σ_u ⟨K_u, K'_u⟩_F = Σ_u tr(F_u F_uᵀ F'_u F'_uᵀ) = Σ_u ‖F_uᵀ F'_u‖_F²`` (no Grams; f × f' per unit)."""
        def one(u):
            F = self.factor(u)
            C = F.T @ (F if other is self else other.factor(u))     # syrk when other is self
            flat = C.reshape(-1)
            return float(flat @ flat)
        return float(sum(self._map_units(one)))

    def frobenius_sq(self):
        """``‖K‖_F² = tr(K²) = Σλ²`` (Gram kernel, or the fan-in route when the Grams do not fit: :meth:`inner`)."""
        return self.inner(self)

    # ------------------------------------------------------------ matrix-free product
    def matmat(self, X):
        """``K X`` through the blocks (X (B·T·S, k)); for checks, ``lin.K`` is faster."""
        B, T, S = self.shape
        X = as_real_array("X", X, (self.size, None), ("B·T·S", "k"))
        k = X.shape[1]
        gates = max(site.d.shape[2] for site in self.sites)
        check_memory("KBlocks.matmat", 8 * (2 * X.size + 2 * B * T * gates * self.units * k), self.memory_limit)
        W = X.reshape(B * T, self.parts, self.units, k)
        out = np.zeros_like(W)
        for s, G in zip(self.sites, self.grams()):
            Z = np.einsum("ipqu,ipuk->iquk", s.d, W)
            Z = np.einsum("ij,jquk->iquk", G, Z)
            out += np.einsum("ipqu,iquk->ipuk", s.d, Z)
        return out.reshape(B * T * S, k)

    # ------------------------------------------------------------ axis reductions
    def reduced(self, axes, kind, reduction="sum"):
        """Partial trace (``kind='partial_trace'``) or marginal sum of ``K`` over ``axes`` (indices of (B, T, S)).

        Returns a :class:`BlockDiagonalOperator`: one block per unit while the
        hidden axis is kept, a single dense block otherwise. From ``K_u``
        (the Grams, ``(B·T)²`` floats per site), or, in fan-in form when those
        do not fit the memory limit, by the same contraction on ``F_u``
        (``K_u = F_u F_uᵀ``, no Gram); a MemoryError naming the sizes when
        neither fits.
        """
        check_choice("kind", kind, ("partial_trace", "marginal_sum"))
        check_choice("reduction", reduction, ("sum", "mean"))
        axes = _reduced_axes(axes)
        B, T, S = self.shape
        H, P = self.units, self.parts
        sizes = (B, T)
        left, right = ["b", "t", "p"], ["c", "r", "q"]
        out_l, out_r = [], []
        for a in (0, 1):
            if a not in axes:
                out_l.append(left[a])
                out_r.append(right[a])
            elif kind == "partial_trace":
                right[a] = left[a]
        hidden_kept = 2 not in axes
        if hidden_kept:
            out_l.append("p")
            out_r.append("q")
        elif kind == "partial_trace":
            right[2] = left[2]
        spec = f"{''.join(left)}{''.join(right)}->{''.join(out_l + out_r)}"
        kept_bt = tuple(sizes[a] for a in (0, 1) if a not in axes)
        m = prod(kept_bt) * (P if hidden_kept else 1)
        result_bytes = 8 * m * m * (H if hidden_kept else 1)
        gram_route = 8 * 2 * self.rows ** 2 + self._gram_bytes()
        fan_route = 8 * (self.rows * self.fan_in + 2 * m * m)
        use_factor = self.form == "fan_in" and result_bytes + gram_route > self.memory_limit \
            and result_bytes + fan_route <= self.memory_limit
        if use_factor:
            # K_u[(b,t,p),(c,r,q)] = Σ_x F[b,t,p,x] F[c,r,q,x]: the same contraction on F_u, no Gram
            lhs, rhs = spec.split("->")
            spec = f"{lhs[:3]}x,{lhs[3:]}x->{rhs}"
        else:
            self._check_grams(f"KBlocks.reduced ({kind})", result_bytes + 8 * 2 * self.rows ** 2)
        blocks = np.zeros((H if hidden_kept else 1, m, m))
        for u in range(H):
            if use_factor:
                F4 = self.factor(u).reshape(B, T, P, self.fan_in)
                R = np.einsum(spec, F4, F4, optimize=True).reshape(m, m)
            else:
                Ku = self.trajectory_block(u).reshape(B, T, P, B, T, P)
                R = np.einsum(spec, Ku).reshape(m, m)
            if hidden_kept:
                blocks[u] = R
            else:
                blocks[0] += R
        n_traced = prod((B, T, S)[a] for a in axes)
        if reduction == "mean":
            blocks /= n_traced
        kept_shape = tuple((B, T, S)[a] for a in range(3) if a not in axes)
        if hidden_kept:
            kbt = np.arange(prod(kept_bt))
            index = (kbt[None, :, None] * S + np.arange(P)[None, None, :] * H
                     + np.arange(H)[:, None, None]).reshape(H, m)
        else:
            index = np.arange(m)[None, :]
        names = ", ".join(_AXES[a] for a in axes)
        return BlockDiagonalOperator(f"{kind}(K, {names})", blocks, index, full_shape=self.shape,
                                     traced_axes=axes, kind=kind, reduction=reduction, kept_shape=kept_shape)

    def axis_grams(self, axes, route="auto"):
        r"""``D_a = tr_{other axes}(K²)`` for each axis index in ``axes`` (effective dimensions; module notes).

        ``route``: ``'gram'``, ``'fan_in'`` (fan-in form only) or ``'auto'``
        (the one expected to be faster, :meth:`_fan_in_is_faster`, among those
        that fit the memory limit). Both are exact; they differ by rounding.

        *Gram route* (when the Grams, the stacked ``d`` and one ``n·P × n·P``
        block per worker fit the memory limit). ``K² = ⊕_u K_u²`` and ``K_u``
        is symmetric, so with ``x = (j, p2)`` running over ``K_u``'s columns::

            D_batch[b, c]   = Σ_u Σ_{t,p,x} K_u[(b,t,p),x] K_u[(c,t,p),x],
            D_time[t, r]    = Σ_u Σ_{b,p,x} K_u[(b,t,p),x] K_u[(b,r,p),x],
            D_hidden[(p,u),(q,u)] = Σ_{b,t,x} K_u[(b,t,p),x] K_u[(b,t,q),x]   (zero across units).

        Each unit's ``K_u`` is written by the kernel with its rows in
        ``(t, b, p)`` order (up to four units per call, sharing each Gram row
        while it is in cache), so ``D_time`` is one symmetric rank-k update of
        the ``T × (B·P·n·P)`` matrix, ``D_batch`` a sum of ``T`` of them of
        ``B × P·n·P``; for ``P = 1`` the unit's ``D_hidden`` entry ``‖K_u‖_F²``
        is the trace of either (no third pass over ``K_u``). Cost per unit: ``n²·P²·Σ_s G_s`` for ``K_u`` and
        ``n²·P²·(T + 2B)`` for the products (GRU at H=256, B=20, T=90:
        ``≈ 0.45·10⁹``), against ``3·n·P·f²`` (``≈ 3.4·10⁹``) for the fan-in
        route below.

        *Fan-in route* (when the Grams do not fit, fan-in form only):
        ``K_u² = L_u R_uᵀ`` with ``L = F_u``, ``R = F_u M_u``.

        Rounding: sums of products computed by backward-stable BLAS,
        relative error ``O(n·P·ε)`` per entry against ``|K|²`` sums.
        """
        B, T, S = self.shape
        H, P = self.units, self.parts
        m = self.rows
        route = check_choice("route", route, ("auto", "gram", "fan_in"))
        if route == "fan_in" and self.form != "fan_in":
            raise ValueError(f"route: 'fan_in' needs the fan-in form (f = {self.fan_in} ≤ n·P = {self.rows}); "
                             f"these blocks are in {self.form!r} form, use 'gram' or 'auto'")
        D = {a: np.zeros(((B, T, S)[a],) * 2) for a in axes}
        workers = check_positive_int("workers", self.workers)
        gram_need = self._gram_bytes() + self._stacked_d_bytes() + 8 * workers * (m * m + T * B * B)
        fan_need = 8 * workers * (2 * self.rows * self.fan_in + self.fan_in ** 2)
        if route == "auto" and self.form == "fan_in" and fan_need <= self.memory_limit \
                and (gram_need > self.memory_limit or self._fan_in_is_faster()):
            route = "fan_in"
        if route == "fan_in":
            return self._axis_grams_fan_in(axes, D)
        fixed = self._stacked_d_bytes() + 8 * workers * T * B * B
        self._check_grams("KBlocks.axis_grams", fixed + 8 * workers * m * m)
        room = (self.memory_limit - self._gram_bytes() - fixed) // (8 * workers * m * m)
        group = int(max(1, min(_TRAJECTORY_GROUP, room, H)))     # units whose K_u are written together
        grams, dstack = self.grams(), self._stacked_d()
        buffers = queue.SimpleQueue()
        for _ in range(workers):
            buffers.put(np.empty((group, m, m)))

        def parts_of(Ku):
            """One unit's ``{axis: part}`` from its ``K_u`` with rows (t, b, p)."""
            out = {}
            if 0 in axes:
                X = Ku.reshape(T, B, P * m)
                out[0] = np.matmul(X, X.transpose(0, 2, 1)).sum(axis=0)
            if 1 in axes:
                X = Ku.reshape(T, B * P * m)
                out[1] = X @ X.T                                   # syrk
            if 2 in axes:
                if P == 1 and (0 in axes or 1 in axes):
                    # ‖K_u‖_F² is the trace of either part above (Σ over their diagonal of row norms²)
                    out[2] = np.array([[np.trace(out[1] if 1 in axes else out[0])]])
                elif P == 1:
                    flat = Ku.reshape(-1)
                    out[2] = np.array([[flat @ flat]])
                else:
                    X = Ku.reshape(T * B, P, m)
                    out[2] = np.einsum("ipx,iqx->pq", X, X)
            return out

        def one(u0):
            u1 = min(H, u0 + group)
            buf = buffers.get()
            try:
                _unit_trajectory_rows(grams, self._unit_ET(dstack, u0, u1), T, True, buf)   # rows (t, b, p)
                return [parts_of(buf[v]) for v in range(u1 - u0)]
            finally:
                buffers.put(buf)

        groups = self._map_list(one, range(0, H, group))
        return self._sum_unit_parts(D, [part for g in groups for part in g])

    def _fan_in_is_faster(self):
        """Whether :meth:`axis_grams` is expected to run faster by the fan-in route (both are exact).

        A speed estimate only, per unit: the Gram route's kernel updates
        ``n²·P²·Σ_s G_s`` entries (about 1.3·10⁹ per second, scalar code)
        and its products take ``2·n²·P²·(T + 2B)`` flops; the fan-in route
        takes ``6·m·f²`` flops for ``M_u`` and ``F_u M_u`` and ``4·m·f·(T + B)``
        for the contractions (BLAS, about 3·10¹⁰ flops per second on one core
        here). GRU at H=256, B=20, T=90: Gram; Elman: fan-in.
        """
        B, T, _ = self.shape
        m, f = self.rows, self.fan_in
        gates = sum(s.d.shape[2] for s in self.sites)
        gram = m * m * self.parts * gates / 1.3e9 + 2.0 * m * m * (T + 2 * B) / 3e10
        fan = (6.0 * m * f * f + 4.0 * m * f * (T + B)) / 3e10 + m * f / 1e9
        return fan < gram

    def _axis_grams_fan_in(self, axes, D):
        """:meth:`axis_grams` by ``K_u² = F_u (M_u F_uᵀ)`` (no Gram; fan-in form), contractions by BLAS.

        With ``L = F_u`` and ``R = F_u M_u`` in rows ``(b, t, p)``:
        ``D_batch = L_b R_bᵀ`` (one product, rows ``b``, columns ``(t, p, x)``),
        ``D_time = Σ_b L[b] R[b]ᵀ`` (rows ``t``, columns ``(p, x)``),
        ``D_hidden[(p,u),(q,u)] = Σ_{b,t,x} L[b,t,p,x] R[b,t,q,x]`` (for ``P = 1``
        the trace of either part above).
        """
        B, T, S = self.shape
        H, P = self.units, self.parts
        f = self.fan_in
        workers = check_positive_int("workers", self.workers)
        check_memory("KBlocks.axis_grams", 8 * workers * (2 * self.rows * f + f ** 2), self.memory_limit)

        def one(u):
            L = self.factor(u)
            R = L @ (L.T @ L)
            out = {}
            if 0 in axes:
                out[0] = L.reshape(B, T * P * f) @ R.reshape(B, T * P * f).T
            if 1 in axes:
                out[1] = np.matmul(L.reshape(B, T, P * f), R.reshape(B, T, P * f).transpose(0, 2, 1)).sum(axis=0)
            if 2 in axes:
                if P == 1 and (0 in axes or 1 in axes):
                    # Σ_{b,t,x} L R = tr(L_b R_bᵀ) = tr(Σ_b L[b] R[b]ᵀ): the trace of either part above
                    out[2] = np.array([[np.trace(out[1] if 1 in axes else out[0])]])
                else:
                    L3, R3 = L.reshape(B * T, P, f), R.reshape(B * T, P, f)
                    out[2] = np.einsum("ipx,iqx->pq", L3, R3)
            return out

        return self._sum_unit_parts(D, self._map_units(one))

    def _sum_unit_parts(self, D, parts):
        """Add each unit's ``{axis: part}`` to ``D`` in unit order (the same sums for any number of workers);
        the hidden axis' ``P × P`` part goes to the entries ``p·H + u``."""
        H, P = self.units, self.parts
        for u, part in enumerate(parts):
            for a, R in part.items():
                if a == 2:
                    ix = np.arange(P) * H + u
                    D[2][np.ix_(ix, ix)] += R
                else:
                    D[a] += R
        return D


# -------------------------------------------------------------- block-diagonal operator


class BlockDiagonalOperator(CheckedInputOperator):
    """A symmetric operator ``⊕_u R_u`` on index sets ``index[u]`` of its space (results of :meth:`KBlocks.reduced`).

    Attributes as :class:`kpref.analysis.AxisReducedOperator`: ``name``,
    ``full_shape``, ``traced_axes``, ``kept_axes``, ``kept_shape``, ``kind``,
    ``reduction``; and ``blocks`` (U, m, m), ``index`` (U, m).
    """

    def __init__(self, name, blocks, index, *, full_shape, traced_axes, kind, reduction, kept_shape):
        self.name = name
        self.blocks = blocks
        self.index = index
        self.full_shape = full_shape
        self.traced_axes = traced_axes
        self.kept_axes = tuple(i for i in range(len(full_shape)) if i not in traced_axes)
        self.kept_shape = kept_shape
        self.kind = kind
        self.reduction = reduction
        n = int(index.size)
        if n != prod(kept_shape):
            raise ValueError(f"index: covers {n} entries, expected {prod(kept_shape)}")
        super().__init__(dtype=np.float64, shape=(n, n))

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64)
        out = np.empty_like(X)
        out[self.index] = np.matmul(self.blocks, X[self.index])
        return out

    def _matvec(self, x):
        return self._matmat(np.reshape(x, (-1, 1)))[:, 0]

    def _adjoint(self):
        return self

    def _rmatmat(self, X):
        return self._matmat(X)

    def _rmatvec(self, x):
        return self._matvec(x)

    def todense(self):
        out = np.zeros(self.shape)
        for blk, ix in zip(self.blocks, self.index):
            out[np.ix_(ix, ix)] = blk
        return out

    def __repr__(self):
        return f"<{self.shape[0]}x{self.shape[1]} {self.name}, {len(self.blocks)} blocks (float64)>"


# ----------------------------------------------------------------------------- dispatch


def structure_of(op, required=False, name="op", memory_limit=None):
    """The :class:`KBlocks` behind ``op`` when it is a kpref ``K`` with the per-unit structure.

    ``op`` is the operator an analysis received (a ``CheckedOperator``'s
    ``.op`` or the raw argument). Returns ``None`` when ``op`` declares no
    structure or its cell has none (``required=False``, the ``'auto'`` route);
    with ``required=True`` raises instead, naming the cell. A ``memory_limit``
    (the analysis' own argument) replaces the blocks' limit for this analysis.
    """
    f = op.unit_blocks if isinstance(op, NamedOperator) else None
    if f is None:
        if required:
            raise ValueError(f"{name}: method='blocks' needs a linearization's K (lin.K), whose per-unit "
                             f"structure is declared; got {type(op).__name__}")
        return None
    if required:
        kb = f()
    else:
        try:
            kb = f()
        except NotImplementedError:
            return None
    return kb if memory_limit is None else kb.with_memory_limit(memory_limit)

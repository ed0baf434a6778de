r"""Exact singular values of ``P`` per trial (``P`` is block diagonal in the batch; SPEC §3, §6).

Notes
-----
Trials do not interact, so with trajectory vectors flattened over ``(b, t, s)``
``P = ⊕_b P_b`` and ``σ(P)`` is the union of the ``σ(P_b)``. ``P_b`` is the
``(T·S) × (T·S)`` block lower-triangular matrix with blocks

    (P_b)[t, t'] = A_{b,t} A_{b,t−1} ⋯ A_{b,t'+1}   (t ≥ t'),   I on the diagonal,   0 above,

built column block by column block with the forward recursion
``X_{t'} = I``, ``X_t = A_{b,t} X_{t−1}`` from the dense state Jacobians
(``B·T·S²`` floats, memory checked) — the same sweep ``P`` applies — then
factorized by LAPACK's SVD (``σ`` to ``ε·σ_max`` absolutely). Cost per trial:
``T²/2`` products of ``S × S`` matrices and one SVD of order ``T·S``.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_memory

__all__ = ["propagator_singular_values"]


def propagator_singular_values(lin, *, memory_limit=None):
    """Singular values of each trial's block of ``P``, descending: (B, T·S).

    Parameters
    ----------
    lin : kpref.Linearization
    memory_limit : int, optional
        Bytes the dense state Jacobians (``B·T·S²`` floats) and one trial's
        block with its SVD work (``2 (T·S)²`` floats) may take each (default
        ``lin.memory_limit``).

    Returns
    -------
    (B, T·S) float64 array
        Row ``b``: ``σ(P_b)``; ``np.sort(result.ravel())[::-1]`` is ``σ(P)``.
    """
    for attr in ("shape", "state_jacobians"):
        if not hasattr(lin, attr):
            raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    B, T, S = lin.shape
    limit = lin.memory_limit if memory_limit is None else memory_limit
    m = T * S
    check_memory("propagator_singular_values: one trial's block of P", 8 * 2 * m * m, limit)
    A = lin.state_jacobians(memory_limit=limit)            # (B, T, S, S), A[:, 0] unused (h0 is not propagated)
    out = np.empty((B, m))
    for b in range(B):
        Pb = np.zeros((T, S, T, S))
        for tp in range(T):                                # column block t'
            X = np.eye(S)
            Pb[tp, :, tp, :] = X
            for t in range(tp + 1, T):
                X = A[b, t] @ X
                Pb[t, :, tp, :] = X
        out[b] = np.linalg.svd(Pb.reshape(m, m), compute_uv=False)
    return out

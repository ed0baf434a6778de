r"""Lyapunov exponents of a trajectory and the Kaplan–Yorke dimension (SPEC §6).

Notes
-----
Along each trial the tangent dynamics is ``v_t = A_t v_{t-1}`` with
``A_t = ∂F/∂h`` at ``(h_{t-1}, x_t)``, ``t = 0 … T-1`` (0-based; ``h_{-1} = h_0``,
so ``A_0`` is included: the exponents measure the growth of perturbations of
``h_0``). Repeated QR (Benettin et al. 1980; Shimada & Nagashima 1979):
start from an orthonormal frame ``Q_{-1}`` (``S × k`` per trial; the first
``k`` unit vectors by default), and for every step::

    A_t Q_{t-1} = Q_t R_t     (thin QR, batched over trials),

so that ``A_{T-1} ⋯ A_0 Q_{-1} = Q_{T-1} R_{T-1} ⋯ R_0``. The exponents are

    λ_i = Σ_{t ≥ t₀} log |(R_t)_ii| / ((T − t₀) · dt),

``t₀`` the number of ``transient`` steps (QR'd but not counted), ``dt =
cell.dt``: per step for discrete cells (``dt = 1``), per unit time for ODE
cells. Finite-time exponents approach the asymptotic ones at rate
``O(1/T)``; for ``k = S`` their sum is exact at any ``T``:
``Σ_i λ_i = Σ_t log |det A_t| / (T · dt)``. A singular ``A_t`` (e.g. dead
ReLU units) gives ``−inf``.

Kaplan–Yorke dimension of exponents sorted ``λ_1 ≥ λ_2 ≥ …``: with ``j``
the largest index with ``Σ_{i≤j} λ_i ≥ 0``,

    D_KY = j + (Σ_{i≤j} λ_i) / |λ_{j+1}|,

``0`` if ``λ_1 < 0`` and the number of exponents if their total sum is
``≥ 0`` (no contracting direction among those computed).
"""

from __future__ import annotations

import numpy as np

from .._checks import as_generator, check_bool, check_choice, check_positive_int
from ..operators import Linearization

__all__ = ["lyapunov_spectrum", "kaplan_yorke_dimension"]


def lyapunov_spectrum(lin, k=None, per_trial=False, *, transient=0, init="identity", rng=None):
    """Lyapunov exponents of a linearized trajectory by repeated QR (module notes).

    Parameters
    ----------
    lin : Linearization
        From :func:`kpref.linearize`; only ``lin.shape``, ``lin.apply_A`` and
        ``lin.cell.dt`` are used.
    k : int, optional
        Number of exponents (``1 ≤ k ≤ S``); default all ``S``.
    per_trial : bool
        Return ``(B, k)`` exponents of each trial instead of their mean.
    transient : int
        Leading steps that are propagated but not counted (``0 ≤ transient < T``).
    init : {'identity', 'random'}
        Starting frame: the first ``k`` unit vectors (deterministic) or a
        random orthonormal frame per trial drawn from ``rng``.
    rng : None, int or Generator
        Only with ``init='random'``.

    Returns
    -------
    (k,) or (B, k) float64 array
        Exponents, descending (per trial before averaging), per unit time.
    """
    if not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    B, T, S = lin.shape
    k = S if k is None else check_positive_int("k", k)
    if k > S:
        raise ValueError(f"k: expected at most the state size S={S}, got {k}")
    per_trial = check_bool("per_trial", per_trial)
    transient = check_positive_int("transient", transient, minimum=0)
    if transient >= T:
        raise ValueError(f"transient: expected fewer steps than T={T}, got {transient}")
    check_choice("init", init, ("identity", "random"))
    if init == "identity":
        if rng is not None:
            raise ValueError("rng: expected None with init='identity' (it draws no random numbers)")
        frame = np.zeros((B, S, k))
        frame[:, np.arange(k), np.arange(k)] = 1.0
    else:
        frame, _ = np.linalg.qr(as_generator(rng).standard_normal((B, S, k)))
    dt = float(lin.cell.dt)
    log_growth = np.zeros((B, k))
    Q = np.ascontiguousarray(frame.transpose(2, 0, 1))           # (k, B, S)
    with np.errstate(divide="ignore"):
        for t in range(T):
            AQ = lin.apply_A(t, Q).transpose(1, 2, 0)             # (B, S, k)
            Qt, R = np.linalg.qr(AQ)
            if t >= transient:
                log_growth += np.log(np.abs(np.diagonal(R, axis1=1, axis2=2)))
            Q = np.ascontiguousarray(Qt.transpose(2, 0, 1))
    exponents = -np.sort(-log_growth / ((T - transient) * dt), axis=1)
    return exponents if per_trial else exponents.mean(axis=0)


def kaplan_yorke_dimension(exponents):
    """Kaplan–Yorke (Lyapunov) dimension of a set of Lyapunov exponents (module notes).

    Parameters
    ----------
    exponents : (k,) array
        Finite values or ``−inf``; sorted here (descending).

    Returns
    -------
    float in [0, k]
    """
    arr = np.asarray(exponents)
    if arr.dtype.kind not in "f" or arr.ndim != 1 or arr.size == 0:
        raise TypeError(f"exponents: expected a non-empty 1-D float array, got dtype {arr.dtype}, shape {arr.shape}")
    lam = np.asarray(arr, dtype=np.float64)
    if np.isnan(lam).any() or np.isposinf(lam).any():
        raise ValueError(f"exponents: expected finite values or -inf, got {lam[np.isnan(lam) | np.isposinf(lam)][0]}")
    lam = -np.sort(-lam)
    if lam[0] < 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        partial = np.cumsum(lam)
    j = int(np.nonzero(partial >= 0)[0][-1])           # 0-based: j + 1 exponents
    if j == lam.size - 1:
        return float(lam.size)
    if np.isneginf(lam[j + 1]):
        return float(j + 1)
    return float(j + 1 + partial[j] / abs(lam[j + 1]))

r"""Dynamic mode decomposition of trajectory data: delays, snapshot pairs, DMD.

Conventions
-----------
*Trajectories* are an array ``(n_trajectories, T, D)`` or a sequence of
``(T_i, D)`` arrays (lengths may differ, the dimension ``D`` may not).
*Snapshot matrices* hold one snapshot per **column**: ``X, Y`` are ``(D, m)``
with ``Y[:, k]`` the successor of ``X[:, k]``. Pairs are built within each
trajectory, never across two, and stacked in trajectory order.

Notes
-----
**Time-delay embedding** with ``n`` delays and stride ``s`` replaces each
state by the ``(n + 1) D`` vector, oldest first,

.. math:: \tilde x_t = [x_t, x_{t+s}, \dots, x_{t+ns}],
   \qquad t = 0 \dots T - 1 - ns,

so a trajectory of length ``T`` becomes one of length ``T - ns`` (Takens;
Arbabi & Mezić 2017, "Ergodic theory, dynamic mode decomposition, and
computation of spectral properties of the Koopman operator", SIAM J. Appl.
Dyn. Syst. 16(4)). With ``s = 1`` this is exactly the published embedding of
Redman et al. (NeurIPS 2024).

**DMD** (Schmid 2010; Tu et al. 2014, "On dynamic mode decomposition: theory
and applications", J. Comput. Dyn. 1(2)). With the thin SVD
``X = U Σ Vᴴ`` truncated to rank ``r``,

.. math:: \tilde A = U_r^{H} Y V_r \Sigma_r^{-1}, \qquad
          \tilde A w_i = \lambda_i w_i .

``method='projected'`` (the default, the published configuration) returns the
projected modes ``φ_i = U_r w_i``; ``'exact'`` returns the exact modes
``φ_i = Y V_r Σ_r^{-1} w_i / λ_i`` (the projected mode when ``λ_i = 0``). The
eigenvalues of the two are identical.

``method='tls'``, total-least-squares DMD (Hemati, Rowley, Deem & Cattafesta
2017, "De-biasing the dynamic mode decomposition for applied Koopman spectral
analysis of noisy datasets", Theor. Comput. Fluid Dyn. 31): with ``Q_r`` the
first ``r`` right singular vectors of the stacked ``[X; Y]``, run the
projected DMD of rank ``r`` on ``X Q_r Q_rᴴ``, ``Y Q_r Q_rᴴ``. Noise in ``X``
biases the least-squares fit toward smaller |λ|; projecting both matrices on
a common row space removes that bias to first order.

``method='fb'``, forward-backward DMD (Dawson, Hemati, Williams & Rowley
2016, "Characterizing and correcting for the effect of sensor noise in the
dynamic mode decomposition", Exp. Fluids 57): in the POD basis ``U_r`` of
``X``, with ``X̃ = U_rᴴ X``, ``Ỹ = U_rᴴ Y``, the forward operator
``Ã_f = Ỹ X̃⁺`` (= the projected ``Ã``) and the backward operator
``Ã_b = X̃ Ỹ⁺`` give ``Ã = (Ã_f Ã_b^{-1})^{1/2}`` (principal square root,
``scipy.linalg.sqrtm``). The principal root has eigenvalues with ``Re ≥ 0``:
an eigenvalue with negative real part comes back with its sign flipped, so
use ``'fb'`` only for slowly varying data (training trajectories are).

**Rank** ``r``: ``None`` keeps every singular value (the published default,
no truncation) and refuses a numerically rank-deficient ``X`` (a singular
value ``≤ σ_1 · max(D, m) · ε``, as ``numpy.linalg.matrix_rank``) rather than
divide by it; an integer keeps that many; a float ``q ∈ (0, 1]`` keeps the
smallest ``k`` with ``Σ_{i≤k} σ_i² ≥ q Σ σ_i²`` (SPEC §6); ``'gavish-donoho'``
keeps the singular values above the optimal hard threshold for unknown noise
level (Gavish & Donoho 2014, "The optimal hard threshold for singular values
is 4/√3", IEEE Trans. Inf. Theory 60(8):5040–5053, eq. (5) with the cubic
approximation of their §III.D)

.. math:: τ = ω(β)\, σ_{\mathrm{med}}, \qquad
          ω(β) ≈ 0.56 β^3 − 0.95 β^2 + 1.82 β + 1.43,

``β = min(D, m) / max(D, m)`` the aspect ratio and ``σ_med`` the median
singular value of ``X``. A rank above the numerical rank of ``X`` is refused.

**Residuals and spurious eigenvalues** (the in-sample residual of ResDMD,
Colbrook & Townsend 2024, "Rigorous data-driven computation of spectral
properties of Koopman operators for dynamical systems", Comm. Pure Appl.
Math. 77). Each eigenvalue ``λ_i`` has a candidate Koopman eigenfunction,
linear in the (embedded) state, ``ψ_i(x) = z_iᴴ U_rᴴ x`` with ``z_i`` the
left eigenvector of ``Ã`` (``z_iᴴ Ã = λ_i z_iᴴ``). Its relative residual
over the snapshot pairs,

.. math:: ρ_i = \frac{\| ψ_i(Y) − λ_i ψ_i(X) \|_2}{\| ψ_i(X) \|_2},

is the relative one-step prediction error of that eigenfunction along the
data: ``0`` for exactly linear data, small for a genuine Koopman eigenvalue,
large for a spurious one (noise, truncation, spectral pollution). The
eigenvalues with ``ρ_i > residual_tol`` are flagged ``spurious``. ``X, Y``
are the data as given (centered if ``center=True``), for every method.

**Centering** (``center=True``): the mean ``μ`` of the columns of ``X`` is
subtracted from ``X`` and ``Y`` before the fit, i.e. the affine model
``y − μ = A (x − μ)``; it removes the constant (λ = 1) component of data that
fluctuate about a mean (Hirsh, Harris, Kutz & Brunton 2020, "Centering data
improves the dynamic mode decomposition", SIAM J. Appl. Dyn. Syst. 19(3)).

**Amplitudes**: ``b_j = Φ⁺ (x_{j,0} − μ)`` for the first snapshot of every
trajectory ``j`` (least squares), shape ``(n_trajectories, r)``.

**Order**: eigenvalues (and everything indexed by them) are sorted by
decreasing modulus, ties by decreasing real part, then decreasing imaginary
part, so a conjugate pair lists ``Im > 0`` first. Modes have unit 2-norm and
their largest-modulus entry real and positive.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .._checks import as_real_array, check_bool, check_choice, check_positive_float, check_positive_int

__all__ = [
    "DMDResult",
    "DMD_METHODS",
    "DEFAULT_RESIDUAL_TOL",
    "as_trajectories",
    "delay_embed",
    "snapshot_pairs",
    "select_rank",
    "gavish_donoho_omega",
    "dmd",
    "dmd_from_pairs",
    "sort_eigenvalues",
]

DMD_METHODS = ("projected", "exact", "tls", "fb")
RANK_RULES = ("gavish-donoho",)
#: Default threshold on the relative residual ρ above which an eigenvalue is flagged spurious.
DEFAULT_RESIDUAL_TOL = 0.1
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class DMDResult:
    """The output of :func:`dmd` (all eigenvalue-indexed fields share one order).

    Attributes
    ----------
    eigenvalues : (r,) complex128
        Sorted by decreasing modulus (see the module Notes).
    modes : (D, r) complex128
        Unit-norm DMD modes (projected or exact, per ``method``).
    amplitudes : (n_initial, r) complex128
        Least-squares coefficients of each trajectory's first snapshot on the modes.
    residuals : (r,) float64
        Relative residual ρ_i of each eigenvalue's candidate eigenfunction.
    spurious : (r,) bool
        ``residuals > residual_tol``.
    rank : int
        Number of singular values kept.
    singular_values : (min(D, m),) float64
        All singular values of the (centered) snapshot matrix ``X``.
    reduced_operator : (r, r) ndarray
        ``Ã`` (float64; complex128 for ``'fb'`` when its square root is complex).
    method : str
    mean : (D,) float64 or None
        The subtracted mean when ``center=True``.
    residual_tol : float
    """

    eigenvalues: np.ndarray
    modes: np.ndarray
    amplitudes: np.ndarray
    residuals: np.ndarray
    spurious: np.ndarray
    rank: int
    singular_values: np.ndarray
    reduced_operator: np.ndarray
    method: str
    mean: np.ndarray | None
    residual_tol: float


# --------------------------------------------------------------------------- input


def as_trajectories(name, trajectories, *, min_length=2):
    """Return the trajectories as a list of C-contiguous float64 ``(T_i, D)`` arrays.

    Accepts an array ``(n_trajectories, T, D)`` or a list/tuple of ``(T_i, D)``
    arrays with one common ``D``. Every trajectory must have at least
    ``min_length`` time steps.
    """
    if isinstance(trajectories, (list, tuple)):
        if len(trajectories) == 0:
            raise ValueError(f"{name}: expected at least one trajectory, got an empty {type(trajectories).__name__}")
        out = []
        for i, traj in enumerate(trajectories):
            arr = as_real_array(f"{name}[{i}]", traj, (None, None), ("T", "D"))
            if out and arr.shape[1] != out[0].shape[1]:
                raise ValueError(
                    f"{name}[{i}]: expected D={out[0].shape[1]} columns (the dimension of {name}[0]), "
                    f"got shape {arr.shape}; every trajectory must live in the same space"
                )
            out.append(arr)
    else:
        arr = as_real_array(name, trajectories, (None, None, None), ("n_trajectories", "T", "D"))
        out = [arr[i] for i in range(arr.shape[0])]
    for i, traj in enumerate(out):
        if traj.shape[0] < min_length:
            raise ValueError(
                f"{name}[{i}]: expected at least {min_length} time steps, got {traj.shape[0]}"
            )
    return out


def _check_delays(n_delays, stride):
    n_delays = check_positive_int("n_delays", n_delays, minimum=0)
    stride = check_positive_int("stride", stride, minimum=1)
    return n_delays, stride


def _embed_one(traj, n_delays, stride):
    T = traj.shape[0] - n_delays * stride
    return np.concatenate([traj[k * stride : k * stride + T] for k in range(n_delays + 1)], axis=1)


def delay_embed(trajectories, n_delays, stride=1):
    """Time-delay embedding ``[x_t, x_{t+s}, …, x_{t+ns}]`` (oldest first) of each trajectory.

    Parameters
    ----------
    trajectories : (n_trajectories, T, D) array or sequence of (T_i, D) arrays
    n_delays : int ≥ 0
        Number of delays ``n``; ``0`` returns the data unchanged (as float64).
    stride : int ≥ 1
        Steps between delays ``s``.

    Returns
    -------
    (n_trajectories, T - n·s, (n + 1)·D) array, or a list of ``(T_i - n·s, (n + 1)·D)``
    arrays when a sequence was given.

    Notes
    -----
    Every trajectory must be at least ``n·s + 1`` steps long (one embedded
    snapshot); :func:`dmd` needs two, i.e. ``n·s + 2``.
    """
    n_delays, stride = _check_delays(n_delays, stride)
    trajs = as_trajectories("trajectories", trajectories, min_length=n_delays * stride + 1)
    embedded = [_embed_one(t, n_delays, stride) for t in trajs]
    if isinstance(trajectories, (list, tuple)):
        return embedded
    return np.stack(embedded)


def snapshot_pairs(trajectories):
    """Stack the one-step pairs of every trajectory: ``X[:, k] → Y[:, k]``.

    Parameters
    ----------
    trajectories : (n_trajectories, T, D) array or sequence of (T_i, D) arrays

    Returns
    -------
    X, Y : (D, m) float64 arrays, ``m = Σ_i (T_i − 1)``
        Column ``k`` of ``Y`` is the successor of column ``k`` of ``X`` in the
        same trajectory; trajectories are stacked in order, and no pair joins
        the end of one trajectory to the start of the next.
    """
    trajs = as_trajectories("trajectories", trajectories, min_length=2)
    return _pairs(trajs)


def _pairs(trajs):
    X = np.ascontiguousarray(np.concatenate([t[:-1] for t in trajs], axis=0).T)
    Y = np.ascontiguousarray(np.concatenate([t[1:] for t in trajs], axis=0).T)
    return X, Y


# --------------------------------------------------------------------------- rank


def gavish_donoho_omega(beta):
    """``ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43``: Gavish & Donoho's threshold factor (unknown noise).

    ``beta`` is the aspect ratio ``min(shape)/max(shape)``, a number in (0, 1].
    """
    beta = check_positive_float("beta", beta, upper=1.0)
    return 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43


def _format_values(values, limit=4):
    """``[3e-15, 2.1e-15, …]`` (at most ``limit`` values, 3 significant digits) for messages."""
    shown = ", ".join(f"{v:.3g}" for v in values[:limit])
    more = f", … ({values.size} values)" if values.size > limit else ""
    return f"[{shown}{more}]"


def _numerical_rank(s, shape):
    if s.size == 0 or s[0] == 0.0:
        return 0, 0.0
    tol = s[0] * max(shape) * _EPS
    return int(np.count_nonzero(s > tol)), tol


def select_rank(singular_values, shape, rank):
    """The number of singular values kept by the rule ``rank`` (see the module Notes).

    Parameters
    ----------
    singular_values : (k,) array, decreasing
        All singular values of a ``shape`` matrix, ``k = min(shape)``.
    shape : (int, int)
    rank : None, int, float in (0, 1] or ``'gavish-donoho'``
    """
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
            or any(isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) for n in shape)):
        raise TypeError(f"shape: expected a pair of positive integers (D, m), got {shape!r}")
    shape = tuple(check_positive_int(f"shape[{i}]", n) for i, n in enumerate(shape))
    s = as_real_array("singular_values", singular_values, (min(shape),), ("min(shape)",))
    if s[-1] < 0.0 or np.any(np.diff(s) > 0.0):
        raise ValueError("singular_values: expected non-negative values in decreasing order, got "
                         f"{_format_values(s)}")
    k = s.size
    numerical, tol = _numerical_rank(s, shape)
    if numerical == 0:
        raise ValueError(f"X: expected a snapshot matrix with a nonzero singular value, got all zero (shape {shape})")
    if rank is None:
        if numerical < k:
            raise ValueError(
                f"rank: None keeps all {k} singular values, but the snapshot matrix of shape {shape} has numerical "
                f"rank {numerical} (singular values {_format_values(s[numerical:])} are at or below {tol:.3g}); pass rank=<int ≤ "
                f"{numerical}>, an energy fraction, or 'gavish-donoho'"
            )
        return k
    if isinstance(rank, str):
        check_choice("rank", rank, RANK_RULES)
        beta = min(shape) / max(shape)
        tau = gavish_donoho_omega(beta) * float(np.median(s))
        r = int(np.count_nonzero(s > tau))
        if r == 0:
            raise ValueError(
                f"rank: 'gavish-donoho' keeps no singular value (all ≤ threshold {tau:.3g} = ω({beta:.3g}) × median); "
                "the data look like noise"
            )
        return min(r, numerical)
    if isinstance(rank, (bool, np.bool_)):
        raise TypeError(f"rank: expected None, an int, a float in (0, 1] or 'gavish-donoho', got {rank!r}")
    if isinstance(rank, numbers.Integral):
        r = check_positive_int("rank", rank)
        if r > k:
            raise ValueError(
                f"rank: expected at most min(D, m) = {k} for a snapshot matrix of shape {shape}, got {r}"
            )
    elif isinstance(rank, numbers.Real):
        q = check_positive_float("rank", rank, upper=1.0)
        energy = np.cumsum(s * s)
        r = int(np.searchsorted(energy, q * energy[-1], side="left")) + 1
        r = min(r, k)
    else:
        raise TypeError(
            f"rank: expected None, an int, a float in (0, 1] or 'gavish-donoho', got {type(rank).__name__}"
        )
    if r > numerical:
        raise ValueError(
            f"rank: the data support at most rank {numerical} (the snapshot matrix of shape {shape} has "
            f"singular values {_format_values(s[numerical:])} at or below {tol:.3g}), got rank {r}"
        )
    return r


# --------------------------------------------------------------------------- DMD


def sort_eigenvalues(eigenvalues):
    """Indices sorting eigenvalues by decreasing modulus, then real part, then imaginary part."""
    ev = np.asarray(eigenvalues)
    return np.lexsort((-ev.imag, -ev.real, -np.abs(ev)))


def _normalize_columns(modes):
    norms = np.linalg.norm(modes, axis=0)
    norms[norms == 0.0] = 1.0
    modes = modes / norms
    idx = np.argmax(np.abs(modes), axis=0)
    lead = modes[idx, np.arange(modes.shape[1])]
    phase = np.ones_like(lead)
    nz = lead != 0
    phase[nz] = np.abs(lead[nz]) / lead[nz]
    return modes * phase


def _check_method_inputs(rank, method, center, residual_tol):
    method = check_choice("method", method, DMD_METHODS)
    center = check_bool("center", center)
    residual_tol = check_positive_float("residual_tol", residual_tol)
    return method, bool(center), residual_tol


def _thin_svd(M):
    """``M = U diag(s) Vh`` (thin), LAPACK ``gesdd`` through SciPy (``M`` is already checked finite).

    SciPy's call, not ``numpy.linalg.svd``: on the short-and-wide snapshot
    matrices of DMD (``D ≪ m``) the two agree to rounding, but NumPy's was
    10–100× slower on a loaded multi-core machine (OpenBLAS thread contention).
    """
    return scipy.linalg.svd(M, full_matrices=False, check_finite=False)


def _reduced_operator(X, Y, rank, method):
    """Checked, (centered) (D, m) snapshots → (Ã, U_r, σ_r, Y V_r, all singular values of X, r)."""
    U, s, Vh = _thin_svd(X)
    r = select_rank(s, X.shape, rank)
    Xfit, Yfit = X, Y
    if method == "tls":
        # project X and Y on the first r right singular vectors of [X; Y]
        _, _, Zh = _thin_svd(np.concatenate([X, Y], axis=0))
        Q = Zh[:r].T
        Xfit = (X @ Q) @ Q.T
        Yfit = (Y @ Q) @ Q.T
        U, s_fit, Vh = _thin_svd(Xfit)
        numerical, _ = _numerical_rank(s_fit, Xfit.shape)
        if numerical < r:
            raise ValueError(
                f"rank: the total-least-squares projection of the data supports rank {numerical}, got rank {r}"
            )
    else:
        s_fit = s
    Ur = U[:, :r]
    Vr = Vh[:r].T
    sr = s_fit[:r]
    # Ã = U_rᴴ Y V_r Σ_r⁻¹  (columns of U_rᴴ Y V_r divided by σ_j)
    YV = Yfit @ Vr
    A_tilde = (Ur.T @ YV) / sr[None, :]
    if method == "fb":
        Xr = Ur.T @ X  # = Σ_r V_rᴴ
        Yr = Ur.T @ Y
        sy = np.linalg.svd(Yr, compute_uv=False)
        numerical_y, _ = _numerical_rank(sy, Yr.shape)
        if numerical_y < r:
            raise ValueError(
                f"method: 'fb' needs the projected successors U_rᴴY to have rank {r}, got numerical rank "
                f"{numerical_y}; lower the rank or use method='tls'"
            )
        A_back = np.linalg.lstsq(Yr.T, Xr.T, rcond=None)[0].T  # Ã_b = X̃ Ỹ⁺
        A_tilde = scipy.linalg.sqrtm(np.linalg.solve(A_back.T, A_tilde.T).T)  # (Ã_f Ã_b⁻¹)^{1/2}
        if np.iscomplexobj(A_tilde) and np.all(A_tilde.imag == 0.0):
            A_tilde = np.ascontiguousarray(A_tilde.real)
    return A_tilde, Ur, sr, YV, s, r


def _center(X, Y, center):
    if not center:
        return X, Y, None
    mean = X.mean(axis=1)
    return X - mean[:, None], Y - mean[:, None], mean


def _eigenvalues_only(X, Y, rank, method, center):
    """Sorted eigenvalues of the DMD of checked snapshots (no modes, no residuals)."""
    X, Y, _ = _center(X, Y, center)
    A_tilde = _reduced_operator(X, Y, rank, method)[0]
    # the same LAPACK call as _dmd_core (eigenvalues computed with both eigenvector sets), so that
    # koopman_spectrum(...) equals dmd(...).eigenvalues bitwise
    ev = scipy.linalg.eig(A_tilde, left=True, right=True)[0].astype(np.complex128)
    return ev[sort_eigenvalues(ev)]


class _SubsetEigenvalues:
    r"""Eigenvalues of the projected DMD of any subset of embedded trajectories, from per-trajectory factors.

    For trajectory ``j`` with snapshots ``X_j, Y_j`` (``D × m_j``), the thin QR
    ``X_jᵀ = Q_j R_j`` and ``P_j = Y_j Q_j`` are computed once. For a subset
    ``S``, ``X_Sᵀ = blockdiag(Q_j) R_S`` with ``R_S`` the stacked ``R_j``; the
    SVD ``R_S = W Σ Zᵀ`` gives ``X_S = Z Σ (blockdiag(Q_j) W)ᵀ``, so

    .. math:: U = Z, \qquad Y_S V = \sum_{j∈S} P_j W_j, \qquad
              \tilde A = U_r^{T} (P_S W_r) Σ_r^{-1},

    with orthogonal transformations only (backward stable, no Gram matrix). It
    is the DMD of the stacked pairs up to rounding, at the cost of an SVD of a
    ``(Σ_j min(m_j, D)) × D`` matrix instead of ``D × m``: the resampling loops
    of :func:`kpref.koopman.conjugacy_test` use it (projected/exact DMD without
    centering; the other variants take the direct route).
    """

    def __init__(self, embedded):
        # public as kpref.koopman.SubsetEigenvalues: the (delay-embedded) trajectories are checked like any
        # trajectories (real, finite, one D, >= 2 steps each); the factors below are new arrays it owns
        embedded = as_trajectories("embedded", embedded, min_length=2)
        self.D = embedded[0].shape[1]
        self.m = np.array([e.shape[0] - 1 for e in embedded])
        self.R = []
        self.P = []
        for e in embedded:
            Q, R = scipy.linalg.qr(e[:-1], mode="economic", check_finite=False)  # X_jᵀ = Q_j R_j
            self.R.append(R)
            self.P.append(e[1:].T @ Q)  # P_j = Y_j Q_j

    def __call__(self, indices, rank):
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
            raise TypeError(f"indices: expected a non-empty 1-D integer array of trajectory indices, got {indices!r:.80}")
        if idx.min() < 0 or idx.max() >= len(self.R):
            raise ValueError(f"indices: expected indices in [0, {len(self.R)}), got {idx.min()}..{idx.max()}")
        indices = idx
        R = np.concatenate([self.R[i] for i in indices], axis=0)
        P = np.concatenate([self.P[i] for i in indices], axis=1)
        W, s, Zh = scipy.linalg.svd(R, full_matrices=False, check_finite=False)
        r = select_rank(s, (self.D, int(self.m[indices].sum())), rank)
        A_tilde = (Zh[:r] @ (P @ W[:, :r])) / s[None, :r]
        ev = scipy.linalg.eigvals(A_tilde, check_finite=False).astype(np.complex128)
        return ev[sort_eigenvalues(ev)]


def _dmd_core(X, Y, rank, method, center, residual_tol, initial):
    """DMD of checked (D, m) snapshot matrices; ``initial`` (n, D) are the amplitude targets."""
    X, Y, mean = _center(X, Y, center)
    if mean is not None:
        initial = initial - mean[None, :]
    A_tilde, Ur, sr, YV, s, r = _reduced_operator(X, Y, rank, method)
    eigenvalues, left, right = scipy.linalg.eig(A_tilde, left=True, right=True)
    eigenvalues = eigenvalues.astype(np.complex128)
    order = sort_eigenvalues(eigenvalues)
    eigenvalues = eigenvalues[order]
    left = left[:, order].astype(np.complex128)
    right = right[:, order].astype(np.complex128)
    modes = Ur @ right
    if method == "exact":
        exact = (YV / sr[None, :]) @ right
        nonzero = eigenvalues != 0
        modes[:, nonzero] = exact[:, nonzero] / eigenvalues[nonzero]
    modes = _normalize_columns(modes)
    amplitudes = np.linalg.lstsq(modes, initial.T.astype(np.complex128), rcond=None)[0].T
    # residual of ψ_i(x) = z_iᴴ U_rᴴ x along the data pairs
    psi_x = left.conj().T @ (Ur.T @ X)
    psi_y = left.conj().T @ (Ur.T @ Y)
    num = np.linalg.norm(psi_y - eigenvalues[:, None] * psi_x, axis=1)
    den = np.linalg.norm(psi_x, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        residuals = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.inf)
    return DMDResult(
        eigenvalues=eigenvalues,
        modes=modes,
        amplitudes=np.ascontiguousarray(amplitudes),
        residuals=residuals.astype(np.float64),
        spurious=residuals > residual_tol,
        rank=r,
        singular_values=s,
        reduced_operator=A_tilde,
        method=method,
        mean=mean,
        residual_tol=residual_tol,
    )


def dmd(trajectories, rank=None, method="projected", center=False, *, residual_tol=DEFAULT_RESIDUAL_TOL):
    """Dynamic mode decomposition of one or more trajectories.

    The defaults are the published configuration of Redman et al. (NeurIPS
    2024): projected operator ``Ã = Uᴴ Y V Σ⁻¹``, no truncation, no centering.

    Parameters
    ----------
    trajectories : (n_trajectories, T, D) array or sequence of (T_i, D) arrays
        Already embedded (see :func:`delay_embed`); every trajectory needs
        ``T_i ≥ 2``. Snapshot pairs are built within each trajectory.
    rank : None, int, float in (0, 1] or 'gavish-donoho'
        Truncation of the SVD of ``X`` (module Notes). ``None``: none.
    method : {'projected', 'exact', 'tls', 'fb'}
        Projected (Schmid) or exact (Tu) modes of the same eigenvalues;
        total-least-squares or forward-backward operators for noisy data.
    center : bool
        Subtract the mean snapshot of ``X`` from ``X`` and ``Y`` first.
    residual_tol : float > 0
        Eigenvalues whose relative residual exceeds it are flagged ``spurious``.

    Returns
    -------
    DMDResult

    Notes
    -----
    See the module docstring of ``kpref.koopman._dmd`` (reproduced in
    :mod:`kpref.koopman`) for the equations of every variant.
    """
    method, center, residual_tol = _check_method_inputs(rank, method, center, residual_tol)
    trajs = as_trajectories("trajectories", trajectories, min_length=2)
    X, Y = _pairs(trajs)
    initial = np.stack([t[0] for t in trajs])
    return _dmd_core(X, Y, rank, method, center, residual_tol, initial)


def dmd_from_pairs(X, Y, rank=None, method="projected", center=False, *, residual_tol=DEFAULT_RESIDUAL_TOL):
    """:func:`dmd` of explicit snapshot matrices ``X, Y`` of shape ``(D, m)`` (one pair per column).

    Amplitudes are those of the first column ``X[:, 0]``, shape ``(1, r)``.
    """
    method, center, residual_tol = _check_method_inputs(rank, method, center, residual_tol)
    X = as_real_array("X", X, (None, None), ("D", "m"))
    Y = as_real_array("Y", Y, X.shape, ("D", "m"))
    return _dmd_core(X, Y, rank, method, center, residual_tol, X[:, :1].T.copy())

r"""Koopman spectra of (training) trajectories and tests of topological conjugacy.

Redman, Bello-Rivas, Fonoberova, Mohr, Kevrekidis & Mezić, "Identifying
Equivalent Training Dynamics", NeurIPS 2024: two dynamical systems that are
topologically conjugate have the same Koopman eigenvalues, so two training
processes whose Koopman spectra (estimated by DMD of time-delay embedded
trajectories) disagree are not equivalent.

Notes
-----
**Spectrum.** ``koopman_spectrum`` = :func:`delay_embed` with ``n_delays``,
then :func:`dmd` (defaults: projected ``Ã = Uᴴ Y V Σ⁻¹``, no truncation, no
centering), eigenvalues sorted by decreasing modulus.

**Distances** between eigenvalue sets ``{λ_i}_{i≤k}``, ``{μ_j}_{j≤l}`` in the
complex plane (``|·|`` the Euclidean distance in ℂ ≅ ℝ²):

* ``'matched'`` (the published measure, ``k = l`` required): the optimal
  one-to-one matching σ (``scipy.optimize.linear_sum_assignment``),
  ``d_p = ( (1/k) Σ_i |λ_i − μ_{σ(i)}|^p )^{1/p}``; with ``p = 1`` the mean
  Euclidean distance of the matching — the 1-Wasserstein distance between the
  two uniform measures (Birkhoff–von Neumann).
* ``'wasserstein'``: the p-Wasserstein distance between the discrete measures
  ``Σ a_i δ_{λ_i}`` and ``Σ b_j δ_{μ_j}`` (weights normalized to sum 1,
  uniform by default), ``W_p = (min_π Σ π_ij |λ_i − μ_j|^p)^{1/p}`` over
  transport plans ``π ≥ 0`` with marginals ``a, b``. Exact: uniform weights
  are reduced to an assignment between ``lcm(k, l)`` replicated points
  (the transport polytope with integer marginals has integer vertices) when
  ``lcm(k, l) ≤ 1024``, and go to the linear program beyond;
  general weights solve the transport linear program with HiGHS' dual simplex
  (``scipy.optimize.linprog``), whose optimum is a vertex (accurate to the
  solver's feasibility tolerance, ~1e-9).

Both are metrics on (multi)sets, symmetric, invariant to the order of the
eigenvalues and to complex conjugation of both sets; a spectrum closed under
conjugation (any real operator's) is at distance 0 from its conjugate.

**Conjugacy test** (``conjugacy_test``), all from one ``numpy.random.Generator``:

1. ``distance`` = d(spectrum(A), spectrum(B)).
2. *Within-system spread*: for each system, ``n_resamples`` random splits of
   its trajectories into two disjoint halves (sizes ⌊n/2⌋, ⌈n/2⌉) and the
   distance between the two halves' spectra; ``spread_a``, ``spread_b`` are
   the medians and ``spread = √((spread_a² + spread_b²)/2)``. It is the
   distance one sees between two estimates of *one* system from different
   trajectories (initial conditions). With ``drop_spurious=True``, a
   resample whose spectrum loses every eigenvalue counts as distance ``inf``
   (conservative for both the spread and the p-value). The resampled spectra (steps 2 and 3)
   are computed from per-trajectory QR factors (``kpref.koopman._dmd._SubsetEigenvalues``,
   orthogonal transformations only) when the DMD is projected/exact without
   centering: the same spectra up to rounding (≤ 1e-9 on the published
   mirror/gradient data; ill-conditioned clusters, such as the near-Jordan
   cluster at 0 of the bisection spectrum, move by their own condition number,
   ~1e-4) for an SVD of ``(n·D) × D`` instead of ``D × m`` per resample.
3. *Permutation null* (``null='permutation'``): pool the trajectories of A
   and B, relabel them at random into groups of the original sizes, and take
   the distance of the two groups' spectra. ``p_value = (1 + #{null ≥
   distance}) / (n_resamples + 1)`` (a null value within ``1e-12`` relative of
   ``distance`` counts as ≥: ties are conservative). It tests *identity* of
   the two trajectory distributions, which conjugate systems written in
   different coordinates fail: significance alone cannot decide conjugacy.
4. ``effect_size = distance / max(spread, floor)``, ``floor = √ε · max(1,
   ρ)``: the distance in units of the within-system spread (reported, not
   used by the decision; the floor keeps it finite on exactly linear data,
   whose spread is rounding).
5. **Decision rule without replicates** (:func:`uncalibrated_margin_rule`, an
   equivalence margin on the eigenvalue scale, chosen by hand: **not
   calibrated** to any error rate; with ``replicates_a, replicates_b`` the
   decision is instead the calibrated one of
   :func:`kpref.koopman.compare_systems`, see "Replicates" below):

   .. math:: \text{conjugate} \iff \text{distance} + \text{spread} ≤
             \text{margin} · ρ, \qquad ρ = \max(\max_i |λ_i|, \max_j |μ_j|),

   default ``margin = DEFAULT_MARGIN = 0.05``: the spectra must agree to 5 %
   of the larger spectral radius (the unit circle for training dynamics that
   converge), *after* adding the within-system spread as an allowance for
   estimation error. Noisy or scarce data thus make the test conservative
   (it declines to call them conjugate) instead of permissive, and more data
   never turns a fixed spectral difference below the margin into
   "not conjugate" (a ``distance / spread`` rule would: the spread shrinks as
   trajectories are added while a systematic DMD bias of conjugate systems in
   different coordinates does not).

   On the published experiment (25 trajectories, T = 100, 4 delays, default
   ``n_resamples = 199``, seed 0): mirror vs gradient descent (gradient
   descent in ``u = log x``, as the published code) distance 0.0081, spread
   0.0029, ``distance + spread = 0.011 = 0.22 × margin·ρ`` (ρ = 1.0005);
   gradient descent vs bisection 0.753 + 0.021 = 0.77 = 15 × margin·ρ;
   mirror descent vs bisection 0.746 + 0.021 = 15 × margin·ρ. So the decision
   has a factor ≥ 4 of room on both sides; it holds for other seeds, for
   4×4 … 8×8 grids, for gradient descent mapped back to ``x``, and for the
   bisection variant that holds its root with ``rank=6``
   (``validation/test_koopman_published.py`` checks several of them).
   The permutation p-values are 0.005 (the smallest possible with 199
   resamples) for all three pairs: the mirror and gradient trajectories are
   *not* exchangeable, because they are conjugate, not identical.
   On the published FCN and grokking result files, this rule (with the
   seed-to-seed distance as spread) calls every pair conjugate, where the
   paper and the calibrated decision say not conjugate (README table): near
   ``|λ| = 1`` a margin of ``0.05 ρ`` is wide.

*Legacy swap test* (``null='legacy-swap'``, the published
``computing_significance`` script): keep the optimal matching of the two
spectra and, for each resample, swap each matched pair between the sets with
probability 1/2. **Known flaw**: the original matching stays feasible after a
swap with the same cost, so every null distance is ≤ the observed one; the
p-value only counts ties and says nothing about how large the distance is.
It is offered to reproduce the paper, and the decision rule ignores it.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse

from .._checks import (
    as_generator,
    as_real_array,
    as_real_or_complex_array,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_real,
    check_size_memory,
)
from ._dmd import (
    DEFAULT_RESIDUAL_TOL,
    _check_delays,
    _dmd_core,
    _eigenvalues_only,
    _embed_one,
    _check_method_inputs,
    _pairs,
    _SubsetEigenvalues,
    as_trajectories,
)

__all__ = [
    "CALIBRATED_RULE",
    "DEFAULT_MARGIN",
    "UNCALIBRATED_RULE",
    "ConjugacyResult",
    "SpectrumOptions",
    "koopman_spectrum",
    "replicate_spectra",
    "uncalibrated_margin_rule",
    "spectral_distance",
    "conjugacy_test",
    "trajectories_from_checkpoints",
    "published_trajectories",
]

#: Margin of :func:`uncalibrated_margin_rule` (not calibrated), relative to the larger spectral radius.
DEFAULT_MARGIN = 0.05
DISTANCE_METHODS = ("matched", "wasserstein")
NULL_METHODS = ("permutation", "legacy-swap")
_TIE_RTOL = 1e-12
_LCM_LIMIT = 1024  # replicated assignment up to a 1024×1024 cost matrix (8 MiB); the LP beyond


# --------------------------------------------------------------------------- spectrum


@dataclass(frozen=True)
class SpectrumOptions:
    """How a Koopman spectrum is estimated from trajectories (checked when built by :meth:`checked`).

    ``n_delays``, ``stride``: the delay embedding; ``rank``, ``method``,
    ``center``, ``residual_tol``: the DMD (see :func:`kpref.koopman.dmd`);
    ``drop_spurious``: drop eigenvalues whose residual exceeds ``residual_tol``.
    """

    n_delays: int
    stride: int = 1
    rank: object = None
    method: str = "projected"
    center: bool = False
    residual_tol: float = DEFAULT_RESIDUAL_TOL
    drop_spurious: bool = False

    @classmethod
    def checked(cls, n_delays, stride=1, rank=None, method="projected", center=False,
                residual_tol=DEFAULT_RESIDUAL_TOL, drop_spurious=False):
        """Build the options, refusing bad values with the argument named (``rank`` is checked by the DMD)."""
        n_delays, stride = _check_delays(n_delays, stride)
        method, center, residual_tol = _check_method_inputs(rank, method, center, residual_tol)
        drop_spurious = check_bool("drop_spurious", drop_spurious)
        return cls(n_delays, stride, rank, method, bool(center), residual_tol, bool(drop_spurious))

    @property
    def min_length(self):
        """Shortest trajectory that gives one snapshot pair after embedding: ``n_delays·stride + 2``."""
        return self.n_delays * self.stride + 2

    @property
    def factorizable(self):
        """Whether resampled spectra may come from per-trajectory QR factors (projected/exact, no centering)."""
        return self.method in ("projected", "exact") and not self.center and not self.drop_spurious

    def embed(self, trajs):
        """Delay-embed checked trajectories (list of (T_i, D) float64 arrays)."""
        return [_embed_one(t, self.n_delays, self.stride) for t in trajs]

    def spectrum_of_embedded(self, embedded):
        """Spectrum of already delay-embedded trajectories (what the resampling loops reuse)."""
        X, Y = _pairs(embedded)
        if not self.drop_spurious:
            return _eigenvalues_only(X, Y, self.rank, self.method, self.center)
        initial = np.stack([e[0] for e in embedded])
        result = _dmd_core(X, Y, self.rank, self.method, self.center, self.residual_tol, initial)
        return result.eigenvalues[~result.spurious]


def koopman_spectrum(
    trajectories,
    n_delays,
    rank=None,
    *,
    stride=1,
    method="projected",
    center=False,
    residual_tol=DEFAULT_RESIDUAL_TOL,
    drop_spurious=False,
):
    """Koopman eigenvalues of trajectories: delay embedding, then DMD.

    Parameters
    ----------
    trajectories : (n_trajectories, T, D) array or sequence of (T_i, D) arrays
        Each needs ``T_i ≥ n_delays·stride + 2`` steps.
    n_delays : int ≥ 0
        Delays of the embedding ``[x_t, x_{t+s}, …, x_{t+ns}]`` (published: 4).
    rank : None, int, float in (0, 1] or 'gavish-donoho'
        SVD truncation (see :func:`dmd`); ``None`` (published): none.
    stride : int ≥ 1
    method, center, residual_tol
        As in :func:`dmd` (defaults: the published configuration).
    drop_spurious : bool
        Drop the eigenvalues whose residual exceeds ``residual_tol``.

    Returns
    -------
    (r,) complex128
        Sorted by decreasing modulus (ties: real part, then imaginary part, decreasing).
    """
    opts = SpectrumOptions.checked(n_delays, stride, rank, method, center, residual_tol, drop_spurious)
    trajs = as_trajectories("trajectories", trajectories, min_length=opts.min_length)
    return opts.spectrum_of_embedded(opts.embed(trajs))


def _replicate_groups(name, labels, n):
    """Indices of each replicate (sorted unique labels) from one label per trajectory."""
    if labels is None:
        return [np.array([i]) for i in range(n)]
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu" or arr.shape != (n,):
        raise ValueError(
            f"{name}: expected one integer label per trajectory, shape ({n},), got "
            f"{'dtype ' + str(arr.dtype) if arr.dtype.kind not in 'iu' else 'shape ' + str(arr.shape)}"
        )
    return [np.flatnonzero(arr == u) for u in np.unique(arr)]


def replicate_spectra(
    trajectories,
    n_delays,
    rank=None,
    *,
    replicates=None,
    stride=1,
    method="projected",
    center=False,
    residual_tol=DEFAULT_RESIDUAL_TOL,
    drop_spurious=False,
):
    """One Koopman spectrum per replicate (seed, run) of one system.

    Parameters
    ----------
    trajectories : (n_trajectories, T, D) array or sequence of (T_i, D) arrays
    n_delays, rank, stride, method, center, residual_tol, drop_spurious
        As in :func:`koopman_spectrum`.
    replicates : (n_trajectories,) int array, optional
        The replicate of each trajectory (a run that recorded several
        trajectories shares a label); replicates in sorted label order.
        Default: every trajectory is a replicate of its own (one training run
        = one trajectory).

    Returns
    -------
    list of (r_i,) complex128 arrays
        Ready for :func:`kpref.koopman.compare_systems` (``rank=None`` or an
        integer rank gives equal sizes; adaptive ranks need ``method='wasserstein'`` there).
    """
    opts = SpectrumOptions.checked(n_delays, stride, rank, method, center, residual_tol, drop_spurious)
    trajs = as_trajectories("trajectories", trajectories, min_length=opts.min_length)
    embedded = opts.embed(trajs)
    groups = _replicate_groups("replicates", replicates, len(trajs))
    return [opts.spectrum_of_embedded([embedded[i] for i in g]) for g in groups]


# --------------------------------------------------------------------------- distance


def _as_spectrum(name, e):
    arr = as_real_or_complex_array(name, e, (None,), ("k",))
    if arr.size == 0:
        raise ValueError(f"{name}: expected at least one eigenvalue, got an empty array")
    return arr.astype(np.complex128)


def _check_p(p):
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p: expected a real number ≥ 1, got {p!r} ({type(p).__name__})")
    p = float(p)
    if not np.isfinite(p) or p < 1.0:
        raise ValueError(f"p: expected a finite real number ≥ 1 (a metric), got {p}")
    return p


def _as_weights(name, w, n):
    w = as_real_array(name, w, (n,), ("k",))
    if np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"{name}: expected non-negative weights with a positive sum, got {w!r}")
    return w / w.sum()


def _cost(e1, e2, p):
    d = np.abs(e1[:, None] - e2[None, :])
    return d if p == 1.0 else d**p


def _matched(e1, e2, p):
    cost = _cost(e1, e2, p)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    # summed in sorted order: the same value for (e1, e2) and (e2, e1), bitwise, whenever the optimal
    # matching is unique
    return float(np.sort(cost[rows, cols]).mean() ** (1.0 / p)), rows, cols


def _wasserstein_uniform(e1, e2, p):
    k, l = e1.size, e2.size
    lcm = k * l // math.gcd(k, l)
    if lcm > _LCM_LIMIT:
        return _wasserstein_lp(e1, e2, np.full(k, 1.0 / k), np.full(l, 1.0 / l), p)
    d, _, _ = _matched(np.repeat(e1, lcm // k), np.repeat(e2, lcm // l), p)
    return d


def _wasserstein_lp(e1, e2, a, b, p):
    k, l = e1.size, e2.size
    cost = _cost(e1, e2, p)
    # equality constraints: Σ_j π_ij = a_i, Σ_i π_ij = b_j  (π flattened C-order over (i, j))
    rows = scipy.sparse.kron(scipy.sparse.eye(k), np.ones((1, l)))
    cols = scipy.sparse.kron(np.ones((1, k)), scipy.sparse.eye(l))
    res = scipy.optimize.linprog(
        cost.ravel(),
        A_eq=scipy.sparse.vstack([rows, cols], format="csr"),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs-ds",
    )
    if res.status != 0:  # pragma: no cover - a transport LP is always feasible and bounded
        raise RuntimeError(f"spectral_distance: the transport linear program failed: {res.message}")
    return float(max(res.fun, 0.0) ** (1.0 / p))


def spectral_distance(e1, e2, method="matched", p=1, *, weights1=None, weights2=None):
    """Distance between two sets of (complex) eigenvalues.

    Parameters
    ----------
    e1, e2 : (k,), (l,) arrays, real or complex
    method : {'matched', 'wasserstein'}
        ``'matched'`` (published; ``k = l``): mean ``|·|^p`` of the optimal
        one-to-one matching, to the power ``1/p``. ``'wasserstein'``: exact
        p-Wasserstein distance between the (weighted) discrete measures; it
        accepts ``k ≠ l`` and equals ``'matched'`` for equal counts and
        uniform weights.
    p : float ≥ 1
    weights1, weights2 : (k,), (l,) arrays, optional
        Non-negative masses (normalized to sum 1), ``'wasserstein'`` only.

    Returns
    -------
    float

    Notes
    -----
    See :mod:`kpref.koopman` for the definitions and the exactness of each route.
    """
    method = check_choice("method", method, DISTANCE_METHODS)
    p = _check_p(p)
    e1 = _as_spectrum("e1", e1)
    e2 = _as_spectrum("e2", e2)
    if method == "matched":
        if weights1 is not None or weights2 is not None:
            raise ValueError("weights1, weights2: expected None for method='matched' (use method='wasserstein')")
        if e1.size != e2.size:
            raise ValueError(
                f"e2: method='matched' needs as many eigenvalues as e1 ({e1.size}), got {e2.size}; "
                "use method='wasserstein' for unequal counts"
            )
        return _matched(e1, e2, p)[0]
    if weights1 is None and weights2 is None:
        return _wasserstein_uniform(e1, e2, p)
    a = np.full(e1.size, 1.0 / e1.size) if weights1 is None else _as_weights("weights1", weights1, e1.size)
    b = np.full(e2.size, 1.0 / e2.size) if weights2 is None else _as_weights("weights2", weights2, e2.size)
    return _wasserstein_lp(e1, e2, a, b, p)


def _distance(e1, e2, method, p, what, *, resample=False):
    if resample and (e1.size == 0 or e2.size == 0):
        return np.inf  # no reliable eigenvalue left (drop_spurious): counted as maximally distant
    if e1.size == 0 or e2.size == 0:
        raise ValueError(
            f"drop_spurious: every eigenvalue was flagged spurious in {what} (spectra of sizes {e1.size} and "
            f"{e2.size}); raise residual_tol, lower the rank, or pass drop_spurious=False"
        )
    if method == "matched" and e1.size != e2.size:
        raise ValueError(
            f"distance: method='matched' needs spectra of equal size, got {e1.size} and {e2.size} for {what} "
            "(an adaptive rank or drop_spurious changes the count); use distance='wasserstein' or an integer rank"
        )
    if method == "matched":
        return _matched(e1, e2, p)[0]
    return _wasserstein_uniform(e1, e2, p)


# --------------------------------------------------------------------------- conjugacy test

#: Name of the decision rule of :func:`uncalibrated_margin_rule` (printed with every decision it makes).
UNCALIBRATED_RULE = "uncalibrated margin"
#: Name of the decision of :func:`kpref.koopman.compare_systems` on replicate spectra.
CALIBRATED_RULE = "calibrated replicates"


def uncalibrated_margin_rule(distance, spread, spectral_radius, margin=DEFAULT_MARGIN):
    r"""``distance + spread ≤ margin · spectral_radius``: the original equivalence rule, NOT calibrated.

    The margin is a fixed fraction of the spectral radius, chosen by hand, not
    derived from any error rate. Training spectra sit within a few hundredths of
    ``|λ| = 1``, where ``0.05 · ρ`` is wide: on the published FCN experiment it
    calls networks of different widths conjugate, the opposite of the paper and of
    the calibrated decision (:func:`kpref.koopman.compare_systems`). Kept for
    single-replicate data (the published optimizer experiment has one spectrum
    per optimizer) and for comparison; prefer replicates.
    """
    distance = check_real("distance", distance, minimum=0.0)
    spread = check_real("spread", spread, minimum=0.0)
    spectral_radius = check_real("spectral_radius", spectral_radius, minimum=0.0)
    margin = check_positive_float("margin", margin)
    return bool(distance + spread <= margin * spectral_radius)


def _split_distances(spectrum_of, offset, n, n_resamples, distance, p, gen, name):
    """Distances between the spectra of two random halves of trajectories ``offset … offset + n − 1``."""
    out = np.empty(n_resamples)
    half = n // 2
    for i in range(n_resamples):
        perm = offset + gen.permutation(n)
        out[i] = _distance(
            spectrum_of(perm[:half]), spectrum_of(perm[half:]), distance, p, f"two halves of {name}", resample=True
        )
    return out


def _permutation_null(spectrum_of, n_a, n_total, n_resamples, distance, p, gen):
    """Distances between the spectra of random relabelings of the pooled trajectories (group sizes kept)."""
    out = np.empty(n_resamples)
    for i in range(n_resamples):
        perm = gen.permutation(n_total)
        out[i] = _distance(
            spectrum_of(perm[:n_a]), spectrum_of(perm[n_a:]), distance, p,
            "a permutation of the pooled trajectories", resample=True,
        )
    return out


def _legacy_swap_null(ea, eb, n_resamples, distance, p, gen):
    """The published swap null: swap each matched eigenvalue pair between the sets with probability ½."""
    if ea.size != eb.size:
        raise ValueError(f"null: 'legacy-swap' needs spectra of equal size, got {ea.size} and {eb.size}")
    _, rows, cols = _matched(ea, eb, p)
    out = np.empty(n_resamples)
    for i in range(n_resamples):
        swap = gen.random(rows.size) > 0.5
        sa = np.where(swap, eb[cols], ea[rows])
        sb = np.where(swap, ea[rows], eb[cols])
        out[i] = _distance(sa, sb, distance, p, "swapped spectra")
    return out


@dataclass(frozen=True, eq=False)
class ConjugacyResult:
    """The output of :func:`conjugacy_test` (see :mod:`kpref.koopman` for every definition).

    Attributes
    ----------
    distance : float
        Spectral distance between the two systems (all trajectories of each pooled).
    spread, spread_a, spread_b : float
        Within-system spread (RMS of the two medians) and its two parts.
    p_value : float
        Trajectory-level permutation p-value ``(1 + #{null ≥ distance}) / (n_resamples + 1)``.
    effect_size : float
        ``distance / max(spread, floor)`` (reported, not used by the decision).
    conjugate : bool
        The decision: ``decision == 'conjugate'``.
    margin : float
        The uncalibrated rule's margin (fraction of ρ).
    spectral_radius : float
        The larger spectral radius of the two spectra, ρ.
    eigenvalues_a, eigenvalues_b : complex128 arrays
    null_distances : (n_resamples,) float64
    split_distances_a, split_distances_b : (n_resamples,) float64
    null : str
        'permutation' or 'legacy-swap'.
    rule : str
        Which rule decided: :data:`UNCALIBRATED_RULE` (no replicates) or
        :data:`CALIBRATED_RULE` (replicates given; see ``comparison``).
    decision : str
        'conjugate', 'not conjugate' or (calibrated rule only) 'inconclusive'.
    comparison : SystemComparison or None
        The calibrated replicate comparison, when replicates were given.
    """

    distance: float
    spread: float
    spread_a: float
    spread_b: float
    p_value: float
    effect_size: float
    conjugate: bool
    margin: float
    spectral_radius: float
    eigenvalues_a: np.ndarray
    eigenvalues_b: np.ndarray
    null_distances: np.ndarray
    split_distances_a: np.ndarray
    split_distances_b: np.ndarray
    null: str
    rule: str = UNCALIBRATED_RULE
    decision: str = ""
    comparison: object = None

    def summary(self):
        """The decision, the rule that made it, and its margin or p-value."""
        if self.comparison is not None:
            return f"{self.comparison.summary()} [conjugacy_test, rule: {self.rule}]"
        bound = self.margin * self.spectral_radius
        relation = "≤" if self.conjugate else ">"
        return (
            f"{self.decision.upper()} (rule: {self.rule}, distance + spread = {self.distance:.4g} + {self.spread:.4g} "
            f"{relation} margin·ρ = {self.margin:g}·{self.spectral_radius:.4g} = {bound:.4g}; the margin is not "
            f"calibrated to an error rate. Trajectory permutation p = {self.p_value:.4g}, not used by the rule)"
        )

    def __str__(self):
        return self.summary()


def conjugacy_test(
    trajs_a,
    trajs_b,
    n_delays,
    rank=None,
    n_resamples=199,
    rng=None,
    margin=None,
    *,
    null="permutation",
    distance="matched",
    p=1,
    stride=1,
    method="projected",
    center=False,
    residual_tol=DEFAULT_RESIDUAL_TOL,
    drop_spurious=False,
    replicates_a=None,
    replicates_b=None,
    alpha=None,
    quantile=None,
    names=("trajs_a", "trajs_b"),
):
    """Are two systems' trajectories topologically conjugate (same Koopman spectrum)?

    Parameters
    ----------
    trajs_a, trajs_b : (n, T, D) arrays or sequences of (T_i, D) arrays
        At least 2 trajectories each, all of one dimension ``D``.
    n_delays : int ≥ 0
    rank : as in :func:`dmd`
    n_resamples : int ≥ 1
        Random half-splits per system and null resamples (and, with
        replicates, the permutations and bootstrap draws of the calibrated test).
    rng : None, int or numpy.random.Generator
        Draw order: the splits of A, the splits of B, the null resamples, then
        (with replicates) the calibrated test's permutations and bootstrap.
    margin : float > 0, optional
        Margin of the uncalibrated rule relative to the larger spectral radius
        ρ; default :data:`DEFAULT_MARGIN` (= 0.05).
    null : {'permutation', 'legacy-swap'}
        Permutation of trajectory labels (valid), or the published swap of
        matched eigenvalues (legacy; its null never exceeds the observed distance).
    distance : {'matched', 'wasserstein'}
    p : float ≥ 1
    stride, method, center, residual_tol, drop_spurious
        As in :func:`koopman_spectrum`.
    replicates_a, replicates_b : (n,) int arrays, optional
        The replicate (seed, run) of each trajectory. When both are given, the
        decision is the calibrated one of :func:`kpref.koopman.compare_systems`
        on one spectrum per replicate (rule :data:`CALIBRATED_RULE`); pass
        ``np.arange(n)`` when every trajectory is a run of its own. Without
        them the decision is :func:`uncalibrated_margin_rule`.
    alpha, quantile : float, optional
        Of the calibrated decision (defaults of :func:`kpref.koopman.compare_systems`).
    names : (str, str)
        The systems' names in the calibrated decision's summary.

    Returns
    -------
    ConjugacyResult
        ``str(result)`` states the decision, its rule and its p-value or margin.

    Notes
    -----
    Uncalibrated rule: ``conjugate = distance + spread ≤ margin · ρ``; see
    :mod:`kpref.koopman` for the spread, the p-value, the effect size and the
    numbers this yields on the published experiment.
    """
    opts = SpectrumOptions.checked(n_delays, stride, rank, method, center, residual_tol, drop_spurious)
    A, B = _check_pair(trajs_a, trajs_b, opts)
    n_resamples = check_positive_int("n_resamples", n_resamples)
    # three (n_resamples,) float64 arrays of distances (null, split a, split b)
    check_size_memory(f"n_resamples={n_resamples}", 8 * 3 * n_resamples, what="the resampled distances")
    margin = DEFAULT_MARGIN if margin is None else check_positive_float("margin", margin)
    null = check_choice("null", null, NULL_METHODS)
    distance_method = check_choice("distance", distance, DISTANCE_METHODS)
    p = _check_p(p)
    groups = _check_replicates(replicates_a, replicates_b, len(A), len(B), alpha, quantile)
    gen = as_generator(rng)

    A, B = opts.embed(A), opts.embed(B)  # once; the resamples reuse the embedded trajectories
    spectrum_of = _subset_spectra(A + B, opts)
    ea = opts.spectrum_of_embedded(A)  # the direct route: the same numbers as koopman_spectrum
    eb = opts.spectrum_of_embedded(B)
    observed = _distance(ea, eb, distance_method, p, "trajs_a vs trajs_b")
    na, nb = len(A), len(B)
    split_a = _split_distances(spectrum_of, 0, na, n_resamples, distance_method, p, gen, "trajs_a")
    split_b = _split_distances(spectrum_of, na, nb, n_resamples, distance_method, p, gen, "trajs_b")
    spread_a, spread_b = float(np.median(split_a)), float(np.median(split_b))
    spread = float(np.sqrt(0.5 * (spread_a**2 + spread_b**2)))
    if null == "permutation":
        null_d = _permutation_null(spectrum_of, na, na + nb, n_resamples, distance_method, p, gen)
    else:
        null_d = _legacy_swap_null(ea, eb, n_resamples, distance_method, p, gen)
    p_value = float((1 + np.count_nonzero(null_d >= observed * (1.0 - _TIE_RTOL))) / (n_resamples + 1))
    radius = float(np.max(np.abs(np.concatenate([ea, eb]))))
    floor = np.sqrt(np.finfo(np.float64).eps) * max(1.0, radius)

    comparison = None
    if groups is None:
        rule, conjugate = UNCALIBRATED_RULE, uncalibrated_margin_rule(observed, spread, radius, margin)
        decision = "conjugate" if conjugate else "not conjugate"
    else:
        comparison = _calibrated_decision(A, B, groups, opts, distance_method, p, n_resamples, gen, names,
                                          alpha, quantile)
        rule, decision, conjugate = CALIBRATED_RULE, comparison.decision, comparison.conjugate
    return ConjugacyResult(
        distance=float(observed),
        spread=spread,
        spread_a=spread_a,
        spread_b=spread_b,
        p_value=p_value,
        effect_size=float(observed / max(spread, floor)),
        conjugate=bool(conjugate),
        margin=margin,
        spectral_radius=radius,
        eigenvalues_a=ea,
        eigenvalues_b=eb,
        null_distances=null_d,
        split_distances_a=split_a,
        split_distances_b=split_b,
        null=null,
        rule=rule,
        decision=decision,
        comparison=comparison,
    )


def _check_pair(trajs_a, trajs_b, opts):
    """Both systems' trajectories, checked: one dimension D, at least 2 each, long enough for the embedding."""
    A = as_trajectories("trajs_a", trajs_a, min_length=opts.min_length)
    B = as_trajectories("trajs_b", trajs_b, min_length=opts.min_length)
    if A[0].shape[1] != B[0].shape[1]:
        raise ValueError(
            f"trajs_b: expected trajectories of dimension D={A[0].shape[1]} (that of trajs_a), "
            f"got D={B[0].shape[1]}"
        )
    for name, trajs in (("trajs_a", A), ("trajs_b", B)):
        if len(trajs) < 2:
            raise ValueError(f"{name}: expected at least 2 trajectories (the spread splits them in halves), got {len(trajs)}")
    return A, B


def _check_replicates(replicates_a, replicates_b, n_a, n_b, alpha, quantile):
    """The replicate groups of both systems, or None (then alpha and quantile must be None too)."""
    if (replicates_a is None) != (replicates_b is None):
        raise ValueError("replicates_a, replicates_b: expected both or neither, got only one")
    if replicates_a is None:
        if alpha is not None or quantile is not None:
            raise ValueError("alpha, quantile: only used by the calibrated decision; pass replicates_a and replicates_b")
        return None
    return (_replicate_groups("replicates_a", replicates_a, n_a), _replicate_groups("replicates_b", replicates_b, n_b))


def _subset_spectra(pooled, opts):
    """``indices ↦`` spectrum of those embedded trajectories: per-trajectory QR factors when they apply."""
    if opts.factorizable:
        factored = _SubsetEigenvalues(pooled)
        return lambda indices: factored(indices, opts.rank)
    return lambda indices: opts.spectrum_of_embedded([pooled[j] for j in indices])


def _calibrated_decision(A, B, groups, opts, distance, p, n_resamples, gen, names, alpha, quantile):
    """:func:`kpref.koopman.compare_systems` on one spectrum per replicate group of embedded trajectories."""
    from ._replicates import compare_systems  # _replicates imports this module

    options = {k: v for k, v in (("alpha", alpha), ("quantile", quantile)) if v is not None}
    return compare_systems(
        [opts.spectrum_of_embedded([A[i] for i in g]) for g in groups[0]],
        [opts.spectrum_of_embedded([B[i] for i in g]) for g in groups[1]],
        method=distance, p=p, n_permutations=n_resamples, n_bootstrap=n_resamples, rng=gen, names=names, **options,
    )


# --------------------------------------------------------------------------- checkpoints


def _load_theta(path, where):
    """``theta`` of a kpref checkpoint, read only through :func:`kpref.load_checkpoint` (which validates it)."""
    from .. import load_checkpoint  # the trainer's validated reader; imported late (kpref imports koopman)

    return load_checkpoint(path, name=where).theta


def _is_path(x):
    return isinstance(x, (str, bytes, os.PathLike))


def trajectories_from_checkpoints(weights, n_components=None, *, subtract_mean=False):
    """Training trajectories from checkpoints: flattened parameters, optionally PCA-projected.

    Parameters
    ----------
    weights : (n_runs, n_checkpoints, p) array, sequence of (n_checkpoints, p) arrays, or sequence of sequences of .npz paths
        The flat parameter vector ``theta`` of each run at each checkpoint.
        Paths are kpref checkpoints (written by :func:`kpref.train`), read
        only through :func:`kpref.load_checkpoint` (which validates them); each
        gives its (p,) ``theta``. Every run must have the same number of
        checkpoints and the same p.
    n_components : int, optional
        Project onto the first ``n_components`` principal axes, fitted jointly
        on all runs and checkpoints.
    subtract_mean : bool
        With ``n_components``: subtract the joint mean before projecting
        (ordinary PCA scores). Default ``False``, as the published code: the
        axes are fitted on centered data but the scores are ``θ · v_k``, a
        *linear* (not affine) map of the parameters, which keeps a linear
        dynamics linear.

    Returns
    -------
    (n_runs, n_checkpoints, p or n_components) float64
        Ready for :func:`koopman_spectrum` / :func:`conjugacy_test`.

    Notes
    -----
    PCA: with ``Θ`` the ``(n_runs·n_checkpoints, p)`` stack and ``μ`` its mean
    row, ``Θ − μ = U S Vᵀ``; the axes are the first rows of ``Vᵀ``, each with
    its largest-magnitude entry made positive (a deterministic sign). The
    published ``dim_reduction`` (grokking experiment) fits its PCA on the
    snapshot matrix, i.e. on every checkpoint but the last of each run; kpref
    fits on all checkpoints.
    """
    if isinstance(weights, (list, tuple)):
        if len(weights) == 0:
            raise ValueError("weights: expected at least one run, got an empty sequence")
        runs = []
        for i, run in enumerate(weights):
            if isinstance(run, (list, tuple)) and len(run) > 0 and all(_is_path(x) for x in run):
                thetas = [
                    as_real_array(f"weights[{i}][{j}]", _load_theta(path, f"weights[{i}][{j}]"), (None,), ("p",))
                    for j, path in enumerate(run)
                ]
                for j, th in enumerate(thetas):
                    if th.shape != thetas[0].shape:
                        raise ValueError(
                            f"weights[{i}][{j}]: expected theta of shape {thetas[0].shape} (that of weights[{i}][0]), "
                            f"got {th.shape}"
                        )
                run = np.stack(thetas)
            runs.append(as_real_array(f"weights[{i}]", run, (None, None), ("n_checkpoints", "p")))
            if runs[-1].shape != runs[0].shape:
                raise ValueError(
                    f"weights[{i}]: expected shape {runs[0].shape} (n_checkpoints, p) like weights[0], "
                    f"got {runs[-1].shape}"
                )
        W = np.stack(runs)
    else:
        W = as_real_array("weights", weights, (None, None, None), ("n_runs", "n_checkpoints", "p"))
    subtract_mean = check_bool("subtract_mean", subtract_mean)
    if n_components is None:
        if subtract_mean:
            raise ValueError("subtract_mean: only meaningful with n_components, got n_components=None")
        return W.copy()  # owns its data: as_real_array passes a float64 C-contiguous input through
    n_runs, n_ckpt, n_params = W.shape
    stacked = W.reshape(n_runs * n_ckpt, n_params)
    limit = min(stacked.shape)
    n_components = check_positive_int("n_components", n_components)
    if n_components > limit:
        raise ValueError(
            f"n_components: expected at most min(n_runs·n_checkpoints, p) = {limit}, got {n_components}"
        )
    mean = stacked.mean(axis=0)
    _, _, Vt = np.linalg.svd(stacked - mean, full_matrices=False)
    axes = Vt[:n_components]
    lead = axes[np.arange(n_components), np.argmax(np.abs(axes), axis=1)]
    axes = axes * np.where(lead < 0, -1.0, 1.0)[:, None]
    data = stacked - mean if subtract_mean else stacked
    return np.ascontiguousarray((data @ axes.T).reshape(n_runs, n_ckpt, n_components))


# --------------------------------------------------------------------------- published experiment


def _grid(low, high, n):
    line = np.linspace(low, high, n)
    first, second = np.meshgrid(line, line)
    return np.stack([first.ravel(), second.ravel()], axis=1)


def published_trajectories(
    T=100,
    eta=0.01,
    grid_size=5,
    *,
    gradient_coordinates="u",
    gradient_grid="published",
    bisection_root="zeros",
    rng=None,
):
    r"""The three optimizers of Redman et al. (NeurIPS 2024), first experiment.

    Loss ``f(x) = Σ_i tan(x_i)`` on the box ``[1/T, 1]^2`` (d = 2), step
    ``η``, ``T`` iterates per trajectory (the initial point included),
    ``grid_size²`` initial conditions each.

    Parameters
    ----------
    T : int ≥ 2
    eta : float > 0
    grid_size : int ≥ 2
    gradient_coordinates : {'u', 'x'}
        Return gradient descent in its own coordinates ``u = log x`` (the
        published code runs DMD on ``u``) or mapped back to ``x = e^u``.
    gradient_grid : {'published', 'log'}
        Initial ``u`` on the published grid ``linspace(-2.3, -0.1)²`` or at
        ``u_0 = log x_0`` of the mirror-descent grid (exactly conjugate starts).
    bisection_root : {'zeros', 'hold'}
        What a bisection trajectory does after an iterate with ``f(z_t) = 0``
        exactly: ``'zeros'`` (published code) leaves the remaining iterates at
        0; ``'hold'`` keeps ``z_t`` (the fixed point).

    Returns
    -------
    dict with keys 'mirror', 'gradient', 'bisection', each (grid_size², T, 2) float64.

    Notes
    -----
    Exactly what the published code (``online_mirror_online_gradient_descent_main.py``) does:

    * **Online mirror descent**, log-barrier ``ψ(x) = −Σ log x_i``,
      ``∇ψ(x) = −1/x``: ``−1/y = −1/x_t − η ∇f(x_t)``, i.e.
      ``y = x_t / (1 + η x_t sec²(x_t))``, then the Bregman projection on the
      box, which for a separable ψ and a box is the coordinatewise clip
      (the published code calls a numerical minimizer; the iterates never
      reach the box's faces here, so both are the identity).
      ``x_0`` on the grid ``linspace(0.1, 0.9, grid_size)²`` (inside ``[1/T, 1]²``).
    * **Online gradient descent on u = log x**: ``u_{t+1} = clip(u_t − η e^{u_t}
      sec²(e^{u_t}))`` on ``[log(1/T), 0]²`` (Euclidean projection).
    * **Bisection method**: bisection for the root of ``f`` (a scalar) on the
      segment from ``a_0`` to ``b_0``: ``z_t = (a + b)/2``; if ``f(z_t) < 0``
      then ``a ← z_t``, if ``> 0`` then ``b ← z_t``, ``z_{t+1} = (a + b)/2``;
      ``a_0`` on ``linspace(−4/3, −1/3)²``, ``b_0`` on ``linspace(1/7, 8/7)²``
      (so ``f(a_0) < 0 < f(b_0)``). The published code stops when
      ``f(z_t) = 0`` exactly and leaves the rest of the trajectory at its
      initial value 0 (``bisection_root='zeros'``). This is not rare: on the
      published 5×5 grid, 20 of the 25 trajectories reach a float ``z`` with
      ``tan z_1 + tan z_2 == 0`` after 52–57 steps and then jump to 0, a
      feature of the published bisection spectrum: the delay shift of a
      trajectory that jumps to 0 is nilpotent, so the published bisection
      spectrum holds a numerically defective eigenvalue 0 of multiplicity 4,
      which rounding splits into four eigenvalues of modulus ~1e-4
      (≈ ε^{1/4}) whose exact positions are rounding noise (they move with
      the LAPACK routine; the distances, ~0.75, do not). ``'hold'`` keeps the
      fixed point instead; its converged trajectories make the delay-embedded
      snapshot matrix numerically rank deficient (rank 6 of 10 on the
      published grid), so it needs ``rank ≤ 6``.

    Grids are ``numpy.meshgrid`` order (first coordinate fastest); DMD does
    not depend on the order of the trajectories.

    **Replicates** (``rng`` given): the ``grid_size²`` initial conditions of
    each optimizer are drawn uniformly from the box its grid spans (``x_0``,
    ``u_0``, ``a_0``, ``b_0`` in that order, each ``(grid_size², 2)``;
    ``gradient_grid='log'`` takes ``u_0 = log x_0``) instead of the grid:
    one seed is one replicate of the experiment, for
    :func:`kpref.koopman.compare_systems`.
    """
    T = check_positive_int("T", T, minimum=2)
    eta = check_positive_float("eta", eta)
    grid_size = check_positive_int("grid_size", grid_size, minimum=2)
    gradient_coordinates = check_choice("gradient_coordinates", gradient_coordinates, ("u", "x"))
    gradient_grid = check_choice("gradient_grid", gradient_grid, ("published", "log"))
    bisection_root = check_choice("bisection_root", bisection_root, ("zeros", "hold"))
    low, high = 1.0 / T, 1.0
    n = grid_size * grid_size
    # three optimizers, each (grid_size², T, 2) float64, plus the initial grids
    check_size_memory(f"T={T}, grid_size={grid_size}", 8 * 3 * n * (T + 2) * 2,
                      what="the published trajectories (3 of (grid_size², T, 2))")
    if rng is None:
        starts = _grid
    else:
        gen = as_generator(rng)

        def starts(lo, hi, _size):
            return gen.uniform(lo, hi, (n, 2))

    x0 = starts(0.1, 0.9, grid_size)
    u0 = np.log(x0) if gradient_grid == "log" else starts(-2.3, -0.1, grid_size)
    a0 = starts(-4.0 / 3.0, -1.0 / 3.0, grid_size)
    b0 = starts(1.0 / 7.0, 8.0 / 7.0, grid_size)

    mirror = np.empty((n, T, 2))
    mirror[:, 0] = x0
    for t in range(1, T):
        x = mirror[:, t - 1]
        y = x / (1.0 + eta * x / np.cos(x) ** 2)  # −1/y = −1/x − η sec²x
        mirror[:, t] = np.clip(y, low, high)

    gradient = np.empty((n, T, 2))
    gradient[:, 0] = u0
    for t in range(1, T):
        u = gradient[:, t - 1]
        x = np.exp(u)
        gradient[:, t] = np.clip(u - eta * x / np.cos(x) ** 2, np.log(low), np.log(high))
    if gradient_coordinates == "x":
        gradient = np.exp(gradient)

    bisection = np.empty((n, T, 2))
    stopped = np.zeros(n, dtype=bool)
    a = a0.copy()
    b = b0.copy()
    bisection[:, 0] = 0.5 * (a + b)
    for t in range(1, T):
        z = bisection[:, t - 1]
        fz = np.tan(z).sum(axis=1)
        neg = fz < 0
        pos = fz > 0
        a[neg] = z[neg]
        b[pos] = z[pos]
        nxt = 0.5 * (a + b)
        stopped |= ~(neg | pos)
        nxt[stopped] = 0.0 if bisection_root == "zeros" else z[stopped]
        bisection[:, t] = nxt
    return {"mirror": mirror, "gradient": gradient, "bisection": bisection}

r"""Replicates as data: sets of Koopman spectra, one per seed or run, and a calibrated decision.

Two training processes (or any two dynamical systems) are each observed over
*replicates*: independent runs (seeds) that each give one Koopman spectrum, a
row of a published result file or :func:`kpref.koopman.koopman_spectrum` of one
run. This module works on those spectra alone.

Notes
-----
**Distances.** ``d(·,·)`` is :func:`kpref.koopman.spectral_distance`
(``'matched'``: mean distance of the optimal one-to-one matching, the published
measure; ``'wasserstein'`` for spectra of unequal sizes). For systems ``A``
(replicates ``a_1 … a_m``) and ``B`` (``b_1 … b_n``, ``m ≠ n`` allowed):

* within-system distances ``W_A = {d(a_i, a_j)}_{i<j}``, ``W_B`` likewise (seed to seed);
* between-system distances ``B_{AB} = {d(a_i, b_j)}`` (all ``m n`` pairs).

**Distance gap** (the energy statistic of Székely & Rizzo, halved, for the
metric ``d``):

.. math:: g = \overline{B_{AB}} − \tfrac12\big(\overline{W_A} + \overline{W_B}\big).

It is ≈ 0 when both systems' spectra come from one distribution and grows with
any systematic difference between them.

**"Not conjugate": permutation test over replicate labels.** Pool the
``m + n`` spectra, reassign the labels A/B at random (group sizes kept), and
recompute ``g`` from the pooled distance matrix; with ``R`` permutations,
``p = (1 + #{g* ≥ g (1 − 10⁻¹²)}) / (R + 1)``. If replicates are independent
and the two systems' spectra have one distribution, the labels are exchangeable
and ``P(p ≤ α) ≤ α`` exactly, for any ``m, n`` and any distribution of the
spectra: the false "not conjugate" rate is at most ``α``. Decide "not
conjugate" when ``p < α``.

*Rank-based effect size* (probability of superiority, the Mann–Whitney ``U``
over the two sets of pairs): ``A_{12} = P(D_b > D_w) + ½ P(D_b = D_w)`` with
``D_b`` a between-system and ``D_w`` a within-system distance (``W_A ∪ W_B``):
0.5 when the systems are indistinguishable, 1 when every between-system
distance exceeds every within-system one. Descriptive (the pairs are not
independent); the permutation test carries the error rate.

*Confidence interval of g*: percentile bootstrap over replicates (each system
resampled with replacement, sizes kept); within-system pairs of one original
replicate with itself are left out (their distance 0 is not a seed-to-seed
distance). Two-sided, level ``1 − α``.

**"Conjugate": equivalence test with a margin from the replicates.** The
margin is the ``q``-quantile (default ``q = 0.9``; inverted-CDF definition, so
that the bootstrap's weighted quantile is the same function) of the
within-system distances ``W_A ∪ W_B``: what one seed-to-seed comparison of *one* system
reaches in 90 % of cases. The systems are declared equivalent when the mean
between-system distance is below it, with confidence ``1 − α``:

.. math:: H_0: \; E[D_b] ≥ Q_q(D_w) \quad\text{vs}\quad H_1: \; E[D_b] < Q_q(D_w),

rejected (→ "conjugate") when the upper one-sided ``1 − α`` bootstrap bound of
``θ = \overline{B_{AB}} − \hat Q_q(W_A ∪ W_B)`` (both resampled together, so the
margin's own uncertainty counts) is below 0. Under identical distributions
``E[D_b] = E[D_w] < Q_{0.9}(D_w)`` for any distance distribution that is not
concentrated at a point, so the test can pass; a systematic difference that
moves the typical between-system distance past the 90th percentile of the
seed-to-seed ones makes it fail. The margin is a property of the data (their
replicate variability), not a fraction of the spectral radius; its resolution
(the smallest difference it rejects) and error rates are measured by simulation
(``validation/examples/koopman_calibration.py``, README table) and asserted in
``tests/test_koopman_replicates.py``.

**Decision** (:func:`compare_systems`): ``p < α`` → "not conjugate" (rule
``'permutation'``; it takes precedence: a difference the replicates resolve
refutes equal spectra even if it is within the margin, and ``equivalent`` then
records that it is small); else equivalence passes → "conjugate" (rule
``'equivalence'``); else "inconclusive" (neither test decides: more
replicates are needed).

*What the test can and cannot see.* It compares the distributions of
*estimated* spectra. Conjugate systems observed in different coordinates (e.g.
gradient descent in ``u = log x`` vs mirror descent in ``x``) can have DMD
estimates that differ systematically; the test resolves that difference and
says "not conjugate" although the dynamics are conjugate (measured on the
published optimizer experiment: "not conjugate" in those coordinates,
"conjugate" with both in ``x``). Compare systems in common coordinates where
possible.

*Replicates without variability* (deterministic runs: every seed-to-seed
distance 0) give a margin of 0, which no between-system distance can be
below: such data cannot support "conjugate", and identical systems come out
"inconclusive" (the permutation test has nothing to reject either). The
margin is printed with every decision, so this is visible.

**Measured error rates** (simulation, 200 trials per cell, README table):
false "not conjugate" 0.020–0.085 over noise levels and replicate counts
5 vs 5 … 20 vs 20 (nominal α = 0.05; binomial standard error ≈ 0.015);
false "conjugate" ≤ 0.005 for a spectral shift δ ≥ 1.4 × the mean
seed-to-seed distance with ≥ 10 replicates per system, but up to 0.93 for a
shift well below it (the resolution of the data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.stats

from .._checks import as_generator, check_choice, check_positive_float, check_positive_int, check_size_memory
from ._koopman import DISTANCE_METHODS, _as_spectrum, _check_p, _matched, _wasserstein_uniform

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EQUIVALENCE_QUANTILE",
    "DECISIONS",
    "SystemComparison",
    "WithinBetween",
    "load_spectra",
    "distance_matrix",
    "within_between",
    "compare_systems",
]

#: Level of both tests of :func:`compare_systems` (false "not conjugate" rate ≤ α).
DEFAULT_ALPHA = 0.05
#: Quantile of the within-system distances that sets the equivalence margin.
DEFAULT_EQUIVALENCE_QUANTILE = 0.9
DECISIONS = ("not conjugate", "conjugate", "inconclusive")
_TIE_RTOL = 1e-12


# --------------------------------------------------------------------------- input


def load_spectra(path, *, n_replicates=None, n_eigenvalues=None, name="path"):
    """Read a file of eigenvalues (one row per replicate) as a ``(n_replicates, k)`` complex128 array.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy`` file holding a real or complex floating array of shape
        ``(k,)`` (one spectrum, returned as one row) or ``(n_replicates, k)``,
        read with ``numpy.load(path, allow_pickle=False)``.
    n_replicates, n_eigenvalues : int, optional
        Expected number of rows and of eigenvalues per row; a file of another
        shape is refused.
    name : str
        The argument named in messages.

    Returns
    -------
    (n_replicates, k) complex128, finite, owned (not a memory map).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string (the argument named in messages), got {name!r}")
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise TypeError(f"{name}: expected a path (str or os.PathLike) to a .npy file, got {type(path).__name__}")
    path = os.fspath(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{name}: expected a readable .npy file of eigenvalues, got {path!r} ({exc})") from None
    except ValueError as exc:  # pickled object arrays, corrupt headers
        raise ValueError(f"{name}: expected a plain .npy array of eigenvalues (no pickle), got {path!r} ({exc})") from None
    if not isinstance(data, np.ndarray):
        data.close()
        raise ValueError(f"{name}: expected a .npy array, got an .npz archive {path!r}")
    if data.dtype.kind not in "fc":
        raise TypeError(f"{name}: expected real or complex floating eigenvalues, got dtype {data.dtype} in {path!r}")
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2:
        raise ValueError(f"{name}: expected shape (k,) or (n_replicates, k), got {data.shape} in {path!r}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one replicate and one eigenvalue, got shape {data.shape} in {path!r}")
    for expected, axis, what in ((n_replicates, 0, "n_replicates"), (n_eigenvalues, 1, "n_eigenvalues")):
        if expected is not None and data.shape[axis] != check_positive_int(what, expected):
            raise ValueError(f"{name}: expected {what}={expected}, got shape {data.shape} in {path!r}")
    out = np.array(data, dtype=np.complex128, order="C", copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected finite eigenvalues, got {out[where]} at index {where} in {path!r}")
    return out


def as_replicate_spectra(name, spectra, *, minimum=1):
    """Spectra as a list of 1-D complex128 arrays: a 2-D array (one row each) or a sequence of 1-D arrays."""
    if isinstance(spectra, (list, tuple)):
        rows = [_as_spectrum(f"{name}[{i}]", s) for i, s in enumerate(spectra)]
    else:
        arr = np.asarray(spectra)
        if arr.ndim != 2:
            raise ValueError(
                f"{name}: expected a 2-D array (n_replicates, k) or a sequence of 1-D spectra, got shape {arr.shape}"
            )
        rows = [_as_spectrum(f"{name}[{i}]", arr[i]) for i in range(arr.shape[0])]
    if len(rows) < minimum:
        raise ValueError(f"{name}: expected at least {minimum} replicate spectra, got {len(rows)}")
    return rows


def _pair_distance(e1, e2, method, p):
    if method == "matched":
        return _matched(e1, e2, p)[0]
    return _wasserstein_uniform(e1, e2, p)


def _check_sizes(method, rows, name):
    if method == "matched":
        sizes = {r.size for r in rows}
        if len(sizes) > 1:
            raise ValueError(
                f"{name}: method='matched' needs spectra of one size, got sizes {sorted(sizes)}; "
                "use method='wasserstein' for unequal counts"
            )


def _matrix(rows_a, rows_b, method, p):
    if rows_b is None:
        n = len(rows_a)
        out = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                out[i, j] = out[j, i] = _pair_distance(rows_a[i], rows_a[j], method, p)
        return out
    out = np.empty((len(rows_a), len(rows_b)))
    for i, a in enumerate(rows_a):
        for j, b in enumerate(rows_b):
            out[i, j] = _pair_distance(a, b, method, p)
    return out


def distance_matrix(spectra_a, spectra_b=None, method="matched", p=1):
    """Spectral distances between every pair of replicate spectra.

    Parameters
    ----------
    spectra_a : (m, k) array or sequence of 1-D arrays
        One spectrum per replicate (complex or real).
    spectra_b : (n, l) array or sequence of 1-D arrays, optional
        Without it, the symmetric ``(m, m)`` matrix of ``spectra_a`` with
        itself (zero diagonal).
    method, p
        As in :func:`kpref.koopman.spectral_distance`.

    Returns
    -------
    (m, n) or (m, m) float64
    """
    method = check_choice("method", method, DISTANCE_METHODS)
    p = _check_p(p)
    rows_a = as_replicate_spectra("spectra_a", spectra_a)
    rows_b = None if spectra_b is None else as_replicate_spectra("spectra_b", spectra_b)
    _check_sizes(method, rows_a + (rows_b or []), "spectra_a, spectra_b" if rows_b is not None else "spectra_a")
    return _matrix(rows_a, rows_b, method, p)


@dataclass(frozen=True, eq=False)
class WithinBetween:
    """Seed-to-seed and across-system distances of two sets of replicate spectra.

    Attributes
    ----------
    within_a : (m(m−1)/2,) float64
        ``d(a_i, a_j)``, ``i < j`` (row-major upper triangle).
    within_b : (n(n−1)/2,) float64
    between : (m·n,) float64
        ``d(a_i, b_j)``, row-major over ``(i, j)``.
    matrix : (m + n, m + n) float64
        The pooled distance matrix, A's replicates first.
    n_a, n_b : int
    """

    within_a: np.ndarray
    within_b: np.ndarray
    between: np.ndarray
    matrix: np.ndarray
    n_a: int
    n_b: int


def _within_between(rows_a, rows_b, method, p):
    pooled = _matrix(rows_a + rows_b, None, method, p)
    m, n = len(rows_a), len(rows_b)
    ia, ja = np.triu_indices(m, 1)
    ib, jb = np.triu_indices(n, 1)
    return WithinBetween(
        within_a=pooled[ia, ja],
        within_b=pooled[m + ib, m + jb],
        between=pooled[:m, m:].ravel().copy(),
        matrix=pooled,
        n_a=m,
        n_b=n,
    )


def within_between(spectra_a, spectra_b, method="matched", p=1):
    """Within-system (seed-to-seed) and between-system distances of two sets of replicate spectra.

    Parameters
    ----------
    spectra_a, spectra_b : (m, k), (n, l) arrays or sequences of 1-D arrays
        At least 2 replicates each (``m ≠ n`` allowed).
    method, p
        As in :func:`kpref.koopman.spectral_distance`.

    Returns
    -------
    WithinBetween
    """
    method = check_choice("method", method, DISTANCE_METHODS)
    p = _check_p(p)
    rows_a = as_replicate_spectra("spectra_a", spectra_a, minimum=2)
    rows_b = as_replicate_spectra("spectra_b", spectra_b, minimum=2)
    _check_sizes(method, rows_a + rows_b, "spectra_a, spectra_b")
    return _within_between(rows_a, rows_b, method, p)


# --------------------------------------------------------------------------- statistics


def _group_means(M, wa, wb):
    """Mean between, within-A and within-B distances for replicate multiplicities ``wa``, ``wb``.

    ``M`` is the pooled ``(N, N)`` matrix (zero diagonal); ``wa``, ``wb`` are
    ``(R, N)`` arrays, one row per resample: how often each pooled replicate
    is drawn into A and into B (0/1 for a relabeling, counts for a bootstrap
    draw). The sum over pairs ``i < j`` of distinct replicates weighted
    ``w_i w_j`` is ``½ wᵀ M w`` (the diagonal is 0), and there are
    ``½ ((Σ w)² − Σ w²)`` such pairs, so pairs of a replicate with itself, whose
    distance 0 is not a seed-to-seed distance, count in neither.
    """
    Ma, Mb = wa @ M, wb @ M
    n_a, n_b = wa.sum(axis=1), wb.sum(axis=1)
    between = (Ma * wb).sum(axis=1) / (n_a * n_b)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw repeating one replicate has no pair: nan
        within_a = (Ma * wa).sum(axis=1) / (n_a**2 - (wa**2).sum(axis=1))
        within_b = (Mb * wb).sum(axis=1) / (n_b**2 - (wb**2).sum(axis=1))
    return between, within_a, within_b


def _pair_weights(wa, wb, pairs_a, pairs_b):
    """Weights ``w_i w_j`` of the within-system pairs (A's pairs, then B's) for each resample row."""
    (ia, ja), (ib, jb) = pairs_a, pairs_b
    return np.concatenate([wa[:, ia] * wa[:, ja], wb[:, ib] * wb[:, jb]], axis=1)


def _weighted_quantile(values, weights, q):
    """Inverted-CDF ``q``-quantile of ``values`` under each row of ``weights``: the smallest value whose
    cumulative weight reaches ``q`` of the row's total (``numpy.quantile(..., method='inverted_cdf')`` for
    unit weights). Rows of zero total weight give ``nan``."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[:, order], axis=1)
    total = cum[:, -1]
    idx = np.minimum((cum < q * total[:, None]).sum(axis=1), values.size - 1)
    return np.where(total > 0, values[order][idx], np.nan)


def check_resampling_memory(n_permutations, n_bootstrap, n_replicates, replicates_name="n_replicates"):
    """Refuse resampling counts whose weight arrays cannot fit (``ValueError`` naming them).

    The permutation null holds an ``(n_permutations, N)`` weight array and its
    complement, the bootstrap two ``(n_bootstrap, N)`` arrays and the
    ``(n_bootstrap, ~N²/2)`` pair weights (``N = n_a + n_b`` replicates,
    ``replicates_name`` in the message).
    """
    N = n_replicates
    check_size_memory(f"n_permutations={n_permutations}, {replicates_name}={N}", 4 * 8 * n_permutations * N,
                      what="the permutation null's weights")
    check_size_memory(f"n_bootstrap={n_bootstrap}, {replicates_name}={N}", 4 * 8 * n_bootstrap * N * max(1, N // 2),
                      what="the bootstrap's weights")


def permutation_null(M, n_a, n_permutations, gen):
    """Gaps ``g*`` of ``n_permutations`` random relabelings of the pooled matrix ``M`` (A's first ``n_a`` rows)."""
    N = M.shape[0]
    wa = np.zeros((n_permutations, N))
    for i in range(n_permutations):
        wa[i, gen.permutation(N)[:n_a]] = 1.0
    between, within_a, within_b = _group_means(M, wa, 1.0 - wa)
    return between - 0.5 * (within_a + within_b)


def bootstrap_statistics(M, n_a, n_bootstrap, quantile, gen):
    """Bootstrap over replicates: gaps and ``mean between − Q_q(within)`` (rows of a (2, n_bootstrap) array).

    Each system is resampled with replacement (sizes kept), A first in every
    draw. Draws without a pair of distinct replicates in a system (possible
    with 2 replicates) give ``nan`` and are left out of the percentiles.
    """
    N = M.shape[0]
    n_b = N - n_a
    wa = np.zeros((n_bootstrap, N))
    wb = np.zeros((n_bootstrap, N))
    for i in range(n_bootstrap):
        wa[i, :n_a] = np.bincount(gen.integers(0, n_a, n_a), minlength=n_a)
        wb[i, n_a:] = np.bincount(gen.integers(0, n_b, n_b), minlength=n_b)
    between, within_a, within_b = _group_means(M, wa, wb)
    pairs_a = np.triu_indices(n_a, 1)
    pairs_b = tuple(n_a + k for k in np.triu_indices(n_b, 1))
    values = np.concatenate([M[pairs_a], M[pairs_b]])
    margin = _weighted_quantile(values, _pair_weights(wa, wb, pairs_a, pairs_b), quantile)
    gap = between - 0.5 * (within_a + within_b)
    margin = np.where(np.isnan(gap), np.nan, margin)
    return np.stack([gap, between - margin])


def probability_of_superiority(between, within):
    """``P(D_b > D_w) + ½ P(D_b = D_w)`` over all (between, within) pairs (Mann–Whitney U / (n_b n_w))."""
    ranks = scipy.stats.rankdata(np.concatenate([between, within]))
    nb, nw = between.size, within.size
    u = ranks[:nb].sum() - nb * (nb + 1) / 2.0
    return float(u / (nb * nw))


# --------------------------------------------------------------------------- decision


@dataclass(frozen=True, eq=False)
class SystemComparison:
    """The output of :func:`compare_systems` (definitions in :mod:`kpref.koopman`).

    Attributes
    ----------
    decision : str
        'not conjugate', 'conjugate' or 'inconclusive'.
    rule : str
        The rule that made it: 'permutation' (p < alpha), 'equivalence'
        (upper bound < 0) or 'none' (inconclusive).
    conjugate : bool
        ``decision == 'conjugate'``.
    p_value : float
        Permutation p-value of the gap.
    significant : bool
        ``p_value < alpha``.
    equivalent : bool
        The equivalence test passed (upper bound of ``mean_between − margin`` < 0).
    gap : float
        ``mean_between − (mean_within_a + mean_within_b) / 2``.
    gap_ci : (2,) float64
        Two-sided ``1 − alpha`` percentile bootstrap interval of the gap.
    effect_size : float
        Probability of superiority of between- over within-system distances.
    margin : float
        The ``quantile`` of the within-system distances (equivalence margin).
    equivalence_bound : float
        Upper one-sided ``1 − alpha`` bootstrap bound of ``mean_between − margin``.
    mean_between, mean_within_a, mean_within_b : float
    alpha, quantile : float
    n_a, n_b : int
    distances : WithinBetween
    null_gaps : (n_permutations,) float64
    bootstrap : (2, n_bootstrap) float64
        Bootstrap gaps (row 0) and ``mean_between − margin`` (row 1); ``nan``
        for draws without a within-system pair.
    method : str
    names : (str, str)
    """

    decision: str
    rule: str
    conjugate: bool
    p_value: float
    significant: bool
    equivalent: bool
    gap: float
    gap_ci: np.ndarray
    effect_size: float
    margin: float
    equivalence_bound: float
    mean_between: float
    mean_within_a: float
    mean_within_b: float
    alpha: float
    quantile: float
    n_a: int
    n_b: int
    distances: WithinBetween
    null_gaps: np.ndarray
    bootstrap: np.ndarray
    method: str
    names: tuple

    def summary(self):
        """One paragraph: the decision, the rule that made it, and its p-value or margin."""
        a, b = self.names
        head = f"{a} vs {b}: {self.decision.upper()}"
        if self.rule == "permutation":
            why = (f"rule: permutation test over replicate labels, p = {self.p_value:.4g} < alpha = {self.alpha:g}"
                   + ("; the difference is within the equivalence margin" if self.equivalent else ""))
        elif self.rule == "equivalence":
            why = (f"rule: equivalence test, mean between-system distance {self.mean_between:.4g} < margin "
                   f"{self.margin:.4g} (the {self.quantile:g}-quantile of within-system distances), upper "
                   f"{1 - self.alpha:g} bound of the difference {self.equivalence_bound:.3g} < 0; "
                   f"permutation p = {self.p_value:.4g}")
        else:
            why = (f"no rule decides: permutation p = {self.p_value:.4g} ≥ alpha = {self.alpha:g}, and the upper "
                   f"{1 - self.alpha:g} bound of mean between − margin ({self.mean_between:.4g} − {self.margin:.4g}) "
                   f"is {self.equivalence_bound:.3g} ≥ 0")
        stats = (f"replicates {self.n_a} and {self.n_b}; mean distance within {a} {self.mean_within_a:.4g}, within {b} "
                 f"{self.mean_within_b:.4g}, between {self.mean_between:.4g}; gap {self.gap:.4g} "
                 f"[{1 - self.alpha:g} CI {self.gap_ci[0]:.3g}, {self.gap_ci[1]:.3g}]; "
                 f"P(between > within) = {self.effect_size:.3f}")
        return f"{head} ({why}). {stats}"

    def __str__(self):
        return self.summary()


def compare_systems(
    spectra_a,
    spectra_b,
    *,
    method="matched",
    p=1,
    alpha=DEFAULT_ALPHA,
    quantile=DEFAULT_EQUIVALENCE_QUANTILE,
    n_permutations=999,
    n_bootstrap=999,
    rng=None,
    names=("A", "B"),
):
    """Are two systems conjugate, judged from their replicate spectra? (calibrated decision)

    Parameters
    ----------
    spectra_a, spectra_b : (m, k), (n, l) arrays or sequences of 1-D arrays
        One Koopman spectrum per replicate (seed, run), at least 2 each;
        ``m ≠ n`` allowed (and ``k ≠ l`` with ``method='wasserstein'``).
    method, p
        As in :func:`kpref.koopman.spectral_distance` (default: the published
        matched distance).
    alpha : float in (0, 0.5)
        Level of the permutation test (false "not conjugate" rate ≤ alpha) and
        of the equivalence test's one-sided bound; the gap's interval has level
        ``1 − alpha``.
    quantile : float in (0, 1)
        Quantile of the within-system distances that sets the margin.
    n_permutations, n_bootstrap : int ≥ 1
    rng : None, int or numpy.random.Generator
        Permutations first, then the bootstrap.
    names : (str, str)
        System names for :meth:`SystemComparison.summary`.

    Returns
    -------
    SystemComparison

    Notes
    -----
    See :mod:`kpref.koopman` (section "Replicates") for every definition and
    the error rates this rule has been measured to have.
    """
    method = check_choice("method", method, DISTANCE_METHODS)
    p = _check_p(p)
    alpha = check_positive_float("alpha", alpha, upper=0.5, upper_inclusive=False)
    quantile = check_positive_float("quantile", quantile, upper=1.0, upper_inclusive=False)
    n_permutations = check_positive_int("n_permutations", n_permutations)
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    if (not isinstance(names, tuple) or len(names) != 2 or not all(isinstance(s, str) for s in names)):
        raise TypeError(f"names: expected a tuple of two strings, got {names!r}")
    gen = as_generator(rng)
    rows_a = as_replicate_spectra("spectra_a", spectra_a, minimum=2)
    rows_b = as_replicate_spectra("spectra_b", spectra_b, minimum=2)
    _check_sizes(method, rows_a + rows_b, "spectra_a, spectra_b")
    check_resampling_memory(n_permutations, n_bootstrap, len(rows_a) + len(rows_b), "replicates in spectra_a, spectra_b")
    wb = _within_between(rows_a, rows_b, method, p)
    M, m = wb.matrix, wb.n_a
    ones_a = np.zeros((1, M.shape[0]))
    ones_a[0, :m] = 1.0
    mean_between, mean_wa, mean_wb = (float(v[0]) for v in _group_means(M, ones_a, 1.0 - ones_a))
    gap = mean_between - 0.5 * (mean_wa + mean_wb)
    within = np.concatenate([wb.within_a, wb.within_b])
    margin = float(np.quantile(within, quantile, method="inverted_cdf"))  # as the bootstrap's weighted quantile

    null = permutation_null(M, m, n_permutations, gen)
    p_value = float((1 + np.count_nonzero(null >= gap - _TIE_RTOL * abs(gap))) / (n_permutations + 1))
    boot = bootstrap_statistics(M, m, n_bootstrap, quantile, gen)
    valid = ~np.isnan(boot[0])
    if not valid.any():
        raise ValueError(  # pragma: no cover - needs every draw of 2 replicates to repeat one (prob. 2^-n_bootstrap·…)
            "n_bootstrap: every bootstrap draw repeated a single replicate; use more replicates or draws"
        )
    gap_ci = np.quantile(boot[0, valid], [alpha / 2, 1 - alpha / 2])
    bound = float(np.quantile(boot[1, valid], 1 - alpha))
    significant = p_value < alpha
    equivalent = bound < 0.0
    if significant:
        decision, rule = "not conjugate", "permutation"
    elif equivalent:
        decision, rule = "conjugate", "equivalence"
    else:
        decision, rule = "inconclusive", "none"
    return SystemComparison(
        decision=decision,
        rule=rule,
        conjugate=decision == "conjugate",
        p_value=p_value,
        significant=bool(significant),
        equivalent=bool(equivalent),
        gap=float(gap),
        gap_ci=gap_ci,
        effect_size=probability_of_superiority(wb.between, within),
        margin=margin,
        equivalence_bound=bound,
        mean_between=float(mean_between),
        mean_within_a=float(mean_wa),
        mean_within_b=float(mean_wb),
        alpha=alpha,
        quantile=quantile,
        n_a=m,
        n_b=wb.n_b,
        distances=wb,
        null_gaps=null,
        bootstrap=boot,
        method=method,
        names=names,
    )

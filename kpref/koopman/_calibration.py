r"""Calibration of the replicate decision by simulation: linear systems of known (non-)conjugacy.

Notes
-----
**Replicates of a linear system.** One replicate (a "seed") of the system with
spectrum ``Λ`` (closed under conjugation) is: a fresh random change of
coordinates ``S = Q_1 diag(geomspace(1, c, D)) Q_2`` (``Q_i`` Haar-orthogonal,
condition number ``c``), the operator ``A = S L S^{-1}`` (``L`` the real block
diagonal form of ``Λ``), ``n_trajectories`` trajectories of ``T`` steps from
standard normal initial states, Gaussian observation noise of standard
deviation ``noise`` on every entry, and the DMD spectrum of those noisy
trajectories (:func:`kpref.koopman.koopman_spectrum`, no delays, full rank,
projected: the published configuration). Replicates are independent and,
for one ``Λ``, identically distributed, whatever their coordinates: two sets
of replicates of the same ``Λ`` are the *same system under random coordinate
changes*, so the permutation test's labels are exchangeable.

**Known conjugacy / non-conjugacy.** System B has ``Λ`` (conjugate) or
``Λ_δ``: every eigenvalue moved by ``δ`` toward the origin,
``λ ↦ λ (|λ| − δ)/|λ|``, so that the noise-free matched distance of ``Λ`` and
``Λ_δ`` is exactly ``δ``.

**Error rates** (:func:`calibration_rates`) over ``n_trials`` independent
pairs of systems: the false "not conjugate" rate (conjugate pairs called not
conjugate; ≤ α by the permutation test's exchangeability) and the false
"conjugate" rate (pairs at distance ``δ`` called conjugate), with the rate of
each correct call and of "inconclusive".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import (MAX_RANDOM_DRAWS, as_generator, as_real_or_complex_array, check_positive_float, check_positive_int,
                       check_real, check_size_memory)
from ._koopman import koopman_spectrum
from ._replicates import DEFAULT_ALPHA, DEFAULT_EQUIVALENCE_QUANTILE, check_resampling_memory, compare_systems

__all__ = ["CalibrationRates", "linear_replicate_spectra", "shifted_spectrum", "calibration_rates"]


def _real_block_form(eigenvalues):
    """The real block-diagonal matrix with the given spectrum (complex pairs as scaled rotations)."""
    blocks = []
    for lam in eigenvalues:
        if lam.imag > 0:
            r, phi = abs(lam), np.angle(lam)
            blocks.append(r * np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]]))
        elif lam.imag == 0:
            blocks.append(np.array([[lam.real]]))
    n = sum(b.shape[0] for b in blocks)
    L = np.zeros((n, n))
    i = 0
    for b in blocks:
        L[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    return L


def _check_spectrum(eigenvalues):
    ev = as_real_or_complex_array("eigenvalues", eigenvalues, (None,), ("k",)).astype(np.complex128)
    upper = np.sort_complex(ev[ev.imag > 0])
    lower = np.sort_complex(ev[ev.imag < 0].conj())
    if upper.shape != lower.shape or not np.array_equal(upper, lower):
        raise ValueError(f"eigenvalues: expected a set closed under complex conjugation (a real operator), got {ev}")
    return ev


def shifted_spectrum(eigenvalues, delta):
    """Every eigenvalue moved by ``delta`` toward the origin: ``λ (|λ| − δ)/|λ|`` (matched distance exactly δ)."""
    ev = _check_spectrum(eigenvalues)
    delta = check_real("delta", delta, minimum=0.0)
    modulus = np.abs(ev)
    if not np.isfinite(delta) or delta < 0 or np.any(modulus <= delta):
        raise ValueError(f"delta: expected 0 ≤ delta < min |λ| = {modulus.min():g}, got {delta}")
    return ev * (modulus - delta) / modulus


def linear_replicate_spectra(eigenvalues, n_replicates, noise, *, n_trajectories=4, T=25, condition=4.0, rng=None):
    """Spectra of ``n_replicates`` independent noisy replicates of the linear system with ``eigenvalues``.

    Parameters
    ----------
    eigenvalues : (D,) array
        Closed under conjugation, nonzero.
    n_replicates : int ≥ 1
    noise : float ≥ 0
        Standard deviation of the observation noise.
    n_trajectories, T : int
        Trajectories per replicate and their length.
    condition : float ≥ 1
        Condition number of each replicate's random change of coordinates.
    rng : None, int or numpy.random.Generator

    Returns
    -------
    (n_replicates, D) complex128
        One DMD spectrum per replicate (module Notes).
    """
    ev = _check_spectrum(eigenvalues)
    n_replicates = check_positive_int("n_replicates", n_replicates)
    n_trajectories = check_positive_int("n_trajectories", n_trajectories)
    T = check_positive_int("T", T, minimum=3)
    noise = check_real("noise", noise, minimum=0.0)
    condition = check_positive_float("condition", condition)
    if condition < 1:
        raise ValueError(f"condition: expected a condition number ≥ 1, got {condition}")
    gen = as_generator(rng)
    D = ev.size
    # the spectra (complex), one replicate's trajectories and their noise, its D × D matrices
    check_size_memory(f"n_replicates={n_replicates}, n_trajectories={n_trajectories}, T={T}",
                      16 * n_replicates * D + 2 * 8 * n_trajectories * T * D + 6 * 8 * D * D,
                      what="the replicate spectra and one replicate's trajectories")
    L = _real_block_form(ev)
    D = L.shape[0]
    out = np.empty((n_replicates, D), dtype=np.complex128)
    for r in range(n_replicates):
        Q1, _ = np.linalg.qr(gen.standard_normal((D, D)))
        Q2, _ = np.linalg.qr(gen.standard_normal((D, D)))
        S = Q1 @ np.diag(np.geomspace(1.0, condition, D)) @ Q2
        A = S @ L @ np.linalg.inv(S)
        X = np.empty((n_trajectories, T, D))
        X[:, 0] = gen.standard_normal((n_trajectories, D))
        for t in range(1, T):
            X[:, t] = X[:, t - 1] @ A.T
        X += noise * gen.standard_normal(X.shape)
        out[r] = koopman_spectrum(X, 0)
    return out


class CalibrationRates(NamedTuple):
    """Rates of each decision over ``n_trials`` simulated pairs (see :func:`calibration_rates`).

    ``not_conjugate``, ``conjugate``, ``inconclusive``: fractions of the trials
    with that decision (they sum to 1); ``n_trials``; ``delta`` (0 for a
    conjugate pair); ``noise``; ``n_replicates``.
    """

    not_conjugate: float
    conjugate: float
    inconclusive: float
    n_trials: int
    delta: float
    noise: float
    n_replicates: tuple


def calibration_rates(
    eigenvalues,
    delta,
    noise,
    n_replicates,
    n_trials,
    *,
    alpha=DEFAULT_ALPHA,
    quantile=DEFAULT_EQUIVALENCE_QUANTILE,
    n_permutations=199,
    n_bootstrap=199,
    rng=None,
    **simulation,
):
    """Decision rates of :func:`kpref.koopman.compare_systems` on simulated pairs at distance ``delta``.

    Each trial draws ``n_replicates`` replicates of the system with
    ``eigenvalues`` and ``n_replicates`` of the one with
    ``shifted_spectrum(eigenvalues, delta)`` (``delta = 0``: the same system,
    so "not conjugate" is a false positive; ``delta > 0``: "conjugate" is a false
    negative of non-conjugacy), all from one generator.
    ``n_replicates`` is an int (both systems) or a pair ``(n_a, n_b)``
    (unequal counts). ``simulation`` goes to :func:`linear_replicate_spectra`.

    Returns
    -------
    CalibrationRates
    """
    ev = _check_spectrum(eigenvalues)
    moved = shifted_spectrum(ev, delta)
    noise = check_real("noise", noise, minimum=0.0)
    n_trials = check_positive_int("n_trials", n_trials, maximum=MAX_RANDOM_DRAWS,
                                  why="a rate from that many trials has a "
                                      "standard error <= 5e-4, and each trial simulates 2 n_replicates systems")
    if isinstance(n_replicates, tuple):
        if len(n_replicates) != 2:
            raise ValueError(f"n_replicates: expected an int or a pair (n_a, n_b), got {n_replicates!r}")
        n_a, n_b = (check_positive_int("n_replicates", n, minimum=2) for n in n_replicates)
    else:
        n_a = n_b = check_positive_int("n_replicates", n_replicates, minimum=2)
    # every size is checked before the first trial (a trial would fail only after the simulations)
    n_permutations = check_positive_int("n_permutations", n_permutations)
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    check_resampling_memory(n_permutations, n_bootstrap, n_a + n_b)
    gen = as_generator(rng)
    counts = {"not conjugate": 0, "conjugate": 0, "inconclusive": 0}
    for _ in range(n_trials):
        a = linear_replicate_spectra(ev, n_a, noise, rng=gen, **simulation)
        b = linear_replicate_spectra(moved, n_b, noise, rng=gen, **simulation)
        result = compare_systems(a, b, alpha=alpha, quantile=quantile, n_permutations=n_permutations,
                                 n_bootstrap=n_bootstrap, rng=gen)
        counts[result.decision] += 1
    return CalibrationRates(
        not_conjugate=counts["not conjugate"] / n_trials,
        conjugate=counts["conjugate"] / n_trials,
        inconclusive=counts["inconclusive"] / n_trials,
        n_trials=n_trials,
        delta=float(delta),
        noise=float(noise),
        n_replicates=(n_a, n_b),
    )

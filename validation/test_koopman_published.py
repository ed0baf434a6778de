"""The published first experiment at its real size, through conjugacy_test's defaults.

Mirror descent and gradient descent must come out conjugate, bisection not —
for the published configuration (5×5 grid, T = 100, η = 0.01, 4 delays, seed 0)
and, so that the decision rule is not tuned to one case, for other seeds,
other grids, gradient descent mapped back to x, and the bisection variant that
holds its root (with the rank that variant supports).
"""

import os
from pathlib import Path

import numpy as np
import pytest

from kpref import koopman as kk

CASES = {
    "published": ({}, {}, 0),
    "seed 1": ({}, {}, 1),
    "seed 2": ({}, {}, 2),
    "grid 4x4": ({"grid_size": 4}, {}, 0),
    "grid 6x6": ({"grid_size": 6}, {}, 0),
    "gradient in x": ({"gradient_coordinates": "x"}, {}, 0),
    "bisection holds its root, rank 6": ({"bisection_root": "hold"}, {"rank": 6}, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mirror_and_gradient_are_conjugate_and_bisection_is_not(case):
    trajectory_options, test_options, seed = CASES[case]
    tr = kk.published_trajectories(**trajectory_options)
    results = {
        (a, b): kk.conjugacy_test(tr[a], tr[b], 4, rng=seed, **test_options)
        for a, b in (("mirror", "gradient"), ("gradient", "bisection"), ("mirror", "bisection"))
    }
    mg = results["mirror", "gradient"]
    assert mg.conjugate, mg
    assert not results["gradient", "bisection"].conjugate
    assert not results["mirror", "bisection"].conjugate
    # with room on both sides of the margin (measured: ≤ 0.36 and ≥ 15 times margin · ρ)
    for (a, b), r in results.items():
        ratio = (r.distance + r.spread) / (r.margin * r.spectral_radius)
        assert ratio < 0.5 if r.conjugate else ratio > 5, (a, b, ratio)


def test_published_numbers():
    """The figures quoted in kpref.koopman's docstring (seed 0, default 199 resamples)."""
    tr = kk.published_trajectories()
    r = kk.conjugacy_test(tr["mirror"], tr["gradient"], 4, rng=0)
    assert r.distance == pytest.approx(0.00807, abs=5e-5)
    assert r.spread == pytest.approx(0.0029, abs=3e-4)
    assert r.spectral_radius == pytest.approx(1.0005, abs=1e-4)
    assert r.p_value == 1 / 200  # conjugate, but not exchangeable: the permutation null is not the decision
    d_gb = kk.spectral_distance(kk.koopman_spectrum(tr["gradient"], 4), kk.koopman_spectrum(tr["bisection"], 4))
    d_mb = kk.spectral_distance(kk.koopman_spectrum(tr["mirror"], 4), kk.koopman_spectrum(tr["bisection"], 4))
    assert d_gb == pytest.approx(0.7534, abs=5e-4) and d_mb == pytest.approx(0.7460, abs=5e-4)
    assert np.all(np.abs(kk.koopman_spectrum(tr["mirror"], 4)) < 1.0)


# --------------------------------------------------------------------------- the authors' saved eigenvalues
#
# Regression data, not something to tune to: the decision rule of kk.compare_systems was fixed (α = 0.05, the
# 0.9-quantile margin) before these files were read, and its error rates come from simulation
# (tests/test_koopman_replicates.py). Where it disagrees with the paper's reading, the README says so.

PUBLISHED_DIR_ENV = "KPREF_REDMAN2024_DIR"


def _published_dir():
    """(the folder of the published eigenvalue files or None, the folders searched).

    Looked up, in order: $KPREF_REDMAN2024_DIR; shared/data/redman2024 beside the repository (CI's read-only
    copy of shared/ sits beside the clone: ../shared from the repository root); and one level further up
    (a git worktree under a folder of worktrees)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [Path(os.environ[PUBLISHED_DIR_ENV])] if os.environ.get(PUBLISHED_DIR_ENV) else []
    candidates += [up / "shared" / "data" / "redman2024" for up in (root.parent, root.parent.parent)]
    for folder in candidates:
        if (folder / "mirror_descent_eigs.npy").is_file():
            return folder, candidates
    return None, candidates


def _require_published():
    folder, searched = _published_dir()
    if folder is None:
        pytest.skip(
            "the published Koopman eigenvalues (Redman et al. 2024) are not here: looked in "
            + ", ".join(map(str, searched)) + f"; set ${PUBLISHED_DIR_ENV} to their folder"
        )
    return folder


FILES = {
    "mirror": ("mirror_descent_eigs.npy", 1),
    "gradient": ("gradient_descent_eigs.npy", 1),
    "bisection": ("bisection_method_eigs.npy", 1),
    "h5": ("Koopman_eigenvalues_FCN_MNIST_h=5.npy", 25),
    "h10": ("Koopman_eigenvalues_FCN_MNIST_h=10.npy", 25),
    "h40": ("Koopman_eigenvalues_FCN_MNIST_h=40.npy", 25),
    "grokking": ("grokking_mod_addition_eigs.npy", 20),
    "constrained": ("grokking_mod_addition_constrained_alpha_0.8_eigs.npy", 20),
}


@pytest.fixture(scope="module")
def published():
    folder = _require_published()
    return {k: kk.load_spectra(folder / f, n_replicates=n, n_eigenvalues=10) for k, (f, n) in FILES.items()}


def paired_mean(a, b):
    """The paper's figure: the mean over rows of the matched distance of row i of a and row i of b."""
    return float(np.mean([kk.spectral_distance(x, y) for x, y in zip(a, b)]))


def test_kpref_reproduces_the_published_optimizer_spectra(published):
    tr = kk.published_trajectories()
    for name in ("mirror", "gradient"):
        # measured 2e-10 and 4e-10: rounding of the 10 × 2400 SVD and a 10 × 10 eigenproblem, each LAPACK build
        assert kk.spectral_distance(kk.koopman_spectrum(tr[name], 4), published[name][0]) <= 1e-9, name
    ours, theirs = kk.koopman_spectrum(tr["bisection"], 4), published["bisection"][0]
    # six eigenvalues agree; four form the numerically defective cluster at 0 (modulus ~1e-4 ≈ ε^¼, positions
    # set by rounding, see published_trajectories): they may differ by up to their modulus, 4 × 2.2e-4 / 10
    big = lambda e: e[np.abs(e) > 1e-3]  # the file is not sorted by modulus
    assert big(ours).size == big(theirs).size == 6
    assert kk.spectral_distance(big(ours), big(theirs)) <= 1e-9
    assert np.abs(ours[6:]).max() < 2.2e-4 and np.sort(np.abs(theirs))[3] < 2.2e-4
    assert kk.spectral_distance(ours, theirs) <= 4 * 2.2e-4 / 10


def test_published_distances(published):
    """The figures of the paper, to the digits it gives (±5e-5)."""
    d = lambda a, b: paired_mean(published[a], published[b])
    assert d("mirror", "gradient") == pytest.approx(0.0081, abs=5e-5)
    assert d("gradient", "bisection") == pytest.approx(0.7534, abs=5e-5)
    assert d("mirror", "bisection") == pytest.approx(0.7460, abs=5e-5)
    assert d("h5", "h10") == pytest.approx(0.0065, abs=5e-5)
    assert d("h5", "h40") == pytest.approx(0.0070, abs=5e-5)
    assert d("h10", "h40") == pytest.approx(0.0047, abs=5e-5)
    assert kk.within_between(published["h40"], published["h40"]).within_a.mean() == pytest.approx(0.0043, abs=5e-5)
    assert d("grokking", "constrained") == pytest.approx(0.0275, abs=5e-5)


CALIBRATED_PAIRS = [("h5", "h10"), ("h5", "h40"), ("h10", "h40"), ("grokking", "constrained")]


@pytest.mark.parametrize("a,b", CALIBRATED_PAIRS)
def test_calibrated_decision_on_published_replicates(published, a, b):
    """Recorded decisions (README table): all four pairs are resolved as not conjugate, as the paper reads them.

    The uncalibrated 5 % margin, with the seed-to-seed spread as its allowance, calls every one of them
    conjugate: that is the disagreement the calibration removes."""
    r = kk.compare_systems(published[a], published[b], rng=0, names=(a, b))
    assert r.decision == "not conjugate" and r.rule == "permutation", str(r)
    assert r.p_value == 1 / 1000  # no relabeling of 999 reaches the observed gap
    assert r.gap_ci[0] > 0
    spread = 0.5 * (r.mean_within_a + r.mean_within_b)
    radius = np.abs(np.concatenate([published[a], published[b]])).max()
    assert kk.uncalibrated_margin_rule(r.mean_between, spread, radius)


@pytest.mark.parametrize("name", ["h5", "h10", "h40", "grokking", "constrained"])
def test_within_system_control_is_called_conjugate_at_the_calibrated_margin(published, name):
    """One system's seeds split in two (first half vs second half): the equivalence test calls them conjugate."""
    rows = published[name]
    half = rows.shape[0] // 2
    r = kk.compare_systems(rows[:half], rows[half:], rng=0, names=(f"{name} first", f"{name} second"))
    assert r.decision == "conjugate" and r.rule == "equivalence", str(r)
    assert r.mean_between < r.margin and r.equivalence_bound < 0


def _optimizer_replicates(n_seeds, **options):
    spectra = {k: [] for k in ("mirror", "gradient", "bisection")}
    for seed in range(n_seeds):
        tr = kk.published_trajectories(rng=seed, **options)
        for k in spectra:
            spectra[k].append(kk.koopman_spectrum(tr[k], 4))
    return spectra


def test_optimizers_with_replicates_resolve_mirror_from_gradient_descent_in_the_published_coordinates():
    """Replicates of the first experiment: 12 seeds of 25 random initial conditions per optimizer.

    Finding (README): in the published set-up (gradient descent observed in u = log x, mirror descent in x) the
    calibrated decision calls them NOT conjugate (the paper: conjugate); bisection is far from both. The next test
    shows where the difference comes from."""
    spectra = _optimizer_replicates(12)
    results = {
        (a, b): kk.compare_systems(spectra[a], spectra[b], rng=0, names=(a, b))
        for a, b in (("mirror", "gradient"), ("gradient", "bisection"), ("mirror", "bisection"))
    }
    for pair, r in results.items():
        assert r.decision == "not conjugate" and r.p_value <= 0.01, str(r)
    assert results["mirror", "gradient"].mean_between < 0.05 < results["gradient", "bisection"].mean_between


def test_mirror_and_gradient_descent_observed_in_the_same_coordinates_are_called_conjugate():
    """The same two optimizers with gradient descent mapped back to x = e^u and started at u_0 = log x_0 (the
    conjugacy h = log maps one set of runs onto the other's starts): CONJUGATE at the calibrated margin
    (measured p = 0.85, margin 0.0175). So the 'not conjugate' above is the DMD estimate's dependence on the
    coordinates (linear observables of x vs of log x), which no test on estimated spectra can tell from a
    difference in the dynamics."""
    spectra = _optimizer_replicates(12, gradient_coordinates="x", gradient_grid="log")
    r = kk.compare_systems(spectra["mirror"], spectra["gradient"], rng=0, names=("mirror", "gradient in x"))
    assert r.decision == "conjugate" and r.rule == "equivalence", str(r)

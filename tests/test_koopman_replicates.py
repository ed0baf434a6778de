"""kpref.koopman replicates: spectra files, distance matrices, the calibrated decision and its error rates."""

import itertools
import os

import numpy as np
import pytest

from kpref import koopman as kk

SPECTRUM = np.array([0.95, 0.8 * np.exp(0.3j), 0.8 * np.exp(-0.3j), 0.6])


def noisy_spectra(rng, n, center=SPECTRUM, scale=0.01):
    """n replicate spectra: ``center`` plus complex Gaussian noise (conjugation symmetry not needed here)."""
    return center + scale * (rng.standard_normal((n, center.size)) + 1j * rng.standard_normal((n, center.size)))


# --------------------------------------------------------------------------- files


def test_load_spectra_reads_rows_and_single_spectra_and_owns_the_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = noisy_spectra(rng, 3)
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "one.npy", rows[0])
    np.save(tmp_path / "real.npy", rows.real.astype(np.float32))
    got = kk.load_spectra(tmp_path / "rows.npy", n_replicates=3, n_eigenvalues=4)
    np.testing.assert_array_equal(got, rows)
    assert got.dtype == np.complex128 and got.flags.owndata and got.flags.writeable
    np.testing.assert_array_equal(kk.load_spectra(str(tmp_path / "one.npy")), rows[:1])
    real = kk.load_spectra(tmp_path / "real.npy")
    assert real.dtype == np.complex128 and np.array_equal(real.real, rows.real.astype(np.float32))


def test_load_spectra_refuses_what_it_cannot_read(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1.0, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"spectra: expected a plain .npy array of eigenvalues \(no pickle\)"):
        kk.load_spectra(tmp_path / "obj.npy", name="spectra")
    np.save(tmp_path / "int.npy", np.arange(4))
    with pytest.raises(TypeError, match="path: expected real or complex floating eigenvalues, got dtype int64"):
        kk.load_spectra(tmp_path / "int.npy")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2), complex))
    with pytest.raises(ValueError, match=r"expected shape \(k,\) or \(n_replicates, k\), got \(2, 2, 2\)"):
        kk.load_spectra(tmp_path / "cube.npy")
    bad = np.ones((2, 3), complex)
    bad[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"expected finite eigenvalues, got .*nan.* at index \(1, 2\)"):
        kk.load_spectra(tmp_path / "nan.npy")
    np.save(tmp_path / "ok.npy", np.ones((2, 3), complex))
    with pytest.raises(ValueError, match=r"expected n_eigenvalues=10, got shape \(2, 3\)"):
        kk.load_spectra(tmp_path / "ok.npy", n_eigenvalues=10)
    with pytest.raises(ValueError, match=r"expected n_replicates=25, got shape \(2, 3\)"):
        kk.load_spectra(tmp_path / "ok.npy", n_replicates=25)
    np.savez(tmp_path / "arch.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="expected a .npy array, got an .npz archive"):
        kk.load_spectra(tmp_path / "arch.npz")
    with pytest.raises(ValueError, match="expected a readable .npy file"):
        kk.load_spectra(tmp_path / "missing.npy")


# --------------------------------------------------------------------------- distances


def test_distance_matrix_holds_the_spectral_distance_of_every_pair():
    rng = np.random.default_rng(1)
    a, b = noisy_spectra(rng, 3), noisy_spectra(rng, 5)
    M = kk.distance_matrix(a, b)
    assert M.shape == (3, 5)
    for i, j in itertools.product(range(3), range(5)):
        assert M[i, j] == kk.spectral_distance(a[i], b[j])
    S = kk.distance_matrix(a)
    np.testing.assert_array_equal(S, S.T)
    np.testing.assert_array_equal(np.diag(S), 0.0)
    assert S[0, 2] == kk.spectral_distance(a[0], a[2])
    # spectra of unequal sizes: a list of 1-D arrays and the Wasserstein distance
    ragged = [a[0], a[1][:3]]
    W = kk.distance_matrix(ragged, method="wasserstein")
    assert W[0, 1] == pytest.approx(kk.spectral_distance(a[0], a[1][:3], "wasserstein"), rel=1e-12)
    with pytest.raises(ValueError, match=r"spectra_a: method='matched' needs spectra of one size, got sizes \[3, 4\]"):
        kk.distance_matrix(ragged)
    with pytest.raises(ValueError, match=r"spectra_a: expected a 2-D array \(n_replicates, k\)"):
        kk.distance_matrix(a[0])


def test_within_between_with_unequal_replicate_counts():
    rng = np.random.default_rng(2)
    a, b = noisy_spectra(rng, 3), noisy_spectra(rng, 5, SPECTRUM * 0.9)
    wb = kk.within_between(a, b)
    assert (wb.n_a, wb.n_b) == (3, 5)
    assert wb.within_a.shape == (3,) and wb.within_b.shape == (10,) and wb.between.shape == (15,)
    np.testing.assert_array_equal(wb.within_a, [kk.spectral_distance(a[i], a[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
    np.testing.assert_array_equal(wb.between, kk.distance_matrix(a, b).ravel())
    np.testing.assert_array_equal(wb.matrix[3:, 3:], kk.distance_matrix(b))
    assert wb.between.min() > max(wb.within_a.max(), wb.within_b.max())  # 10 % apart, noise 1 %
    with pytest.raises(ValueError, match="spectra_b: expected at least 2 replicate spectra, got 1"):
        kk.within_between(a, b[:1])


# --------------------------------------------------------------------------- the calibrated decision


def test_compare_systems_statistics_follow_their_definitions():
    rng = np.random.default_rng(3)
    a, b = noisy_spectra(rng, 6), noisy_spectra(rng, 9)
    r = kk.compare_systems(a, b, n_permutations=99, n_bootstrap=99, rng=0)
    wb = r.distances
    assert r.mean_between == pytest.approx(wb.between.mean(), rel=1e-12)
    assert r.mean_within_a == pytest.approx(wb.within_a.mean(), rel=1e-12)
    assert r.mean_within_b == pytest.approx(wb.within_b.mean(), rel=1e-12)
    assert r.gap == pytest.approx(wb.between.mean() - 0.5 * (wb.within_a.mean() + wb.within_b.mean()), rel=1e-12)
    within = np.concatenate([wb.within_a, wb.within_b])
    assert r.margin == np.quantile(within, 0.9, method="inverted_cdf")
    assert r.p_value == (1 + np.count_nonzero(r.null_gaps >= r.gap - 1e-12 * abs(r.gap))) / 100
    # the rank-based effect size is the probability of superiority, counted pair by pair
    diff = wb.between[:, None] - within[None, :]
    assert r.effect_size == pytest.approx(np.mean(diff > 0) + 0.5 * np.mean(diff == 0), rel=1e-12)
    assert r.null_gaps.shape == (99,) and r.bootstrap.shape == (2, 99)
    lo, hi = np.quantile(r.bootstrap[0], [0.025, 0.975])
    np.testing.assert_array_equal(r.gap_ci, [lo, hi])
    assert r.equivalence_bound == np.quantile(r.bootstrap[1], 0.95)
    # one system: the permutation null straddles the observed gap and the decision is conjugate
    assert r.decision == "conjugate" and r.rule == "equivalence" and r.conjugate and r.equivalent
    assert "CONJUGATE (rule: equivalence test" in str(r) and f"margin {r.margin:.4g}" in str(r)
    again = kk.compare_systems(a, b, n_permutations=99, n_bootstrap=99, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.null_gaps, r.null_gaps)
    np.testing.assert_array_equal(again.bootstrap, r.bootstrap)


def test_compare_systems_catches_a_difference_and_says_which_rule_decided():
    rng = np.random.default_rng(4)
    a, b = noisy_spectra(rng, 8), noisy_spectra(rng, 5, SPECTRUM * 0.97)  # 3 % apart, noise 1 %
    r = kk.compare_systems(a, b, n_permutations=199, rng=0, names=("wide", "narrow"))
    assert r.decision == "not conjugate" and r.rule == "permutation" and not r.conjugate
    assert r.p_value == 1 / 200 and r.gap_ci[0] > 0 and not r.equivalent
    assert r.effect_size > 0.8  # measured 0.92; 0.5 = indistinguishable
    assert str(r).startswith("wide vs narrow: NOT CONJUGATE (rule: permutation test over replicate labels, p = 0.005")
    # neither test decides with two replicates each: 6 relabelings cannot reach p < 0.05
    tiny = kk.compare_systems(noisy_spectra(rng, 2), noisy_spectra(rng, 2, SPECTRUM * 0.995), rng=0)
    assert tiny.p_value >= 1 / 6 - 0.05


def test_bootstrap_leaves_out_pairs_of_a_replicate_with_itself():
    """With 2 replicates per system a draw may repeat one replicate: no seed-to-seed pair, so nan, left out.

    Counting the self pair (distance 0) instead would put the gap's bootstrap far above the observed gap."""
    rng = np.random.default_rng(5)
    a, b = noisy_spectra(rng, 2), noisy_spectra(rng, 2)
    r = kk.compare_systems(a, b, n_permutations=9, n_bootstrap=400, rng=1)
    missing = np.isnan(r.bootstrap[0])
    # each system repeats its replicate with probability 1/2, so ≈ 3/4 of the draws have no pair; 400 draws,
    # binomial sd 0.022: [0.65, 0.85] is ± 4.5 sd
    assert 0.65 < missing.mean() < 0.85
    # a draw with a pair in each system holds each original replicate once: it is the sample itself
    np.testing.assert_allclose(r.bootstrap[0, ~missing], r.gap, rtol=1e-12, atol=0)
    np.testing.assert_allclose(r.bootstrap[1, ~missing], r.mean_between - r.margin, rtol=1e-12, atol=0)
    assert np.isnan(r.bootstrap[1, missing]).all()


def test_replicates_without_variability_cannot_be_called_conjugate():
    """Identical replicate spectra: margin 0, so equivalence cannot pass; nothing to reject either: inconclusive."""
    same = np.tile(SPECTRUM, (4, 1))
    r = kk.compare_systems(same, same.copy(), n_permutations=19, n_bootstrap=19, rng=0)
    assert (r.decision, r.rule, r.margin, r.p_value) == ("inconclusive", "none", 0.0, 1.0)
    assert "no rule decides" in str(r)


def test_bad_comparison_arguments_are_refused():
    rng = np.random.default_rng(6)
    a = noisy_spectra(rng, 3)
    with pytest.raises(ValueError, match=r"alpha: expected a number in \(0, 0.5\)"):
        kk.compare_systems(a, a, alpha=0.5)
    with pytest.raises(ValueError, match=r"quantile: expected a number in \(0, 1.0\)"):
        kk.compare_systems(a, a, quantile=1.0)
    with pytest.raises(ValueError, match="n_permutations: expected an integer >= 1"):
        kk.compare_systems(a, a, n_permutations=0)
    with pytest.raises(TypeError, match="names: expected a tuple of two strings"):
        kk.compare_systems(a, a, names="ab")
    with pytest.raises(ValueError, match=r"spectra_a, spectra_b: method='matched' needs spectra of one size"):
        kk.compare_systems(a, a[:, :3])
    r = kk.compare_systems(a, a[:, :3], method="wasserstein", n_permutations=9, n_bootstrap=9, rng=0)
    assert r.method == "wasserstein"
    with pytest.raises(ValueError, match=r"spectra_a\[1\]: expected finite values"):
        kk.compare_systems([a[0], np.array([np.nan, 1.0])], a)


# --------------------------------------------------------------------------- calibration by simulation


def test_simulated_replicates_are_spectra_of_their_system():
    # noise-free: every replicate (its own random coordinates) recovers the spectrum to rounding
    spectra = kk.linear_replicate_spectra(SPECTRUM, 3, 0.0, rng=0)
    for s in spectra:
        assert kk.spectral_distance(s, SPECTRUM) <= 1e-10
    moved = kk.shifted_spectrum(SPECTRUM, 0.1)
    assert kk.spectral_distance(moved, SPECTRUM) == pytest.approx(0.1, rel=1e-12)
    np.testing.assert_allclose(np.abs(moved), np.abs(SPECTRUM) - 0.1, rtol=1e-14)
    with pytest.raises(ValueError, match="eigenvalues: expected a set closed under complex conjugation"):
        kk.linear_replicate_spectra(SPECTRUM[:2], 2, 0.0)
    with pytest.raises(ValueError, match=r"delta: expected 0 ≤ delta < min \|λ\| = 0.6"):
        kk.shifted_spectrum(SPECTRUM, 0.6)


# Error rates with fixed seeds, on cells of the README table (validation/examples/koopman_calibration.py, 200 trials
# per cell) at TRIALS trials. Each assertion is a binomial bound: the rate the rule must have (≤ α = 0.05 for a
# false "not conjugate", by the permutation test's exchangeability; the table's rate for the others) plus or minus 3
# binomial standard deviations at TRIALS trials (sd floored at that of a 0.05 rate, so a 0 or 1 rate keeps room).
# A correct rule passes; a broken one (a null that ignores the labels, a fixed-fraction-of-ρ margin, swapped
# decisions) does not.
TRIALS = 40


def _bound(rate, n=TRIALS):
    return 3.0 * np.sqrt(max(rate * (1.0 - rate), 0.05 * 0.95) / n)


def test_same_system_in_random_coordinates_is_called_conjugate_and_rarely_not_conjugate():
    r = kk.calibration_rates(SPECTRUM, 0.0, 0.03, 10, TRIALS, rng=11)  # table: 0.045 / 0.955 / 0
    # permutation test: false "not conjugate" ≤ α = 0.05 exactly (exchangeable replicates)
    assert r.not_conjugate <= 0.05 + _bound(0.05), r
    # equivalence test at the calibrated margin: the within-system control is called conjugate
    assert r.conjugate >= 0.955 - _bound(0.955), r


def test_unequal_replicate_counts_keep_the_false_positive_rate():
    r = kk.calibration_rates(SPECTRUM, 0.0, 0.03, (5, 15), TRIALS, rng=12)  # table: 0.065 / 0.760 / 0.175
    assert r.n_replicates == (5, 15)
    assert r.not_conjugate <= 0.05 + _bound(0.05), r


def test_eigenvalues_moved_beyond_the_seed_to_seed_scale_are_not_called_conjugate():
    # σ = 0.03 gives seed-to-seed distances ≈ 0.016; δ = 0.03 is 1.9 times that. Table: 0.985 / 0 / 0.015
    r = kk.calibration_rates(SPECTRUM, 0.03, 0.03, 5, TRIALS, rng=13)
    assert r.conjugate <= 0.05 + _bound(0.05), r  # false "conjugate"
    assert r.not_conjugate >= 0.985 - _bound(0.985), r


def test_with_too_few_replicates_to_resolve_a_difference_the_answer_is_inconclusive_not_conjugate():
    """3 vs 3 replicates: 20 relabelings, so p ≥ ~0.1 and the permutation test cannot decide; a difference of δ =
    0.03 (1.9 × the seed-to-seed distance) must then fail the equivalence test. A margin of a fixed 5 % of ρ
    (0.0475 here, above the mean between-system distance ≈ 0.035) would call it conjugate. Measured on 200 trials:
    conjugate 0.005, inconclusive 0.995."""
    r = kk.calibration_rates(SPECTRUM, 0.03, 0.03, 3, TRIALS, rng=16)
    assert r.conjugate <= 0.05 + _bound(0.05), r
    assert r.inconclusive >= 0.995 - _bound(0.995), r


# --------------------------------------------------------------------------- conjugacy_test with replicates


def _replicate_trajectories(eigenvalues, n_replicates, per_replicate, rng, noise=0.02):
    """Trajectories of ``n_replicates`` runs (own coordinates each), ``per_replicate`` trajectories per run.

    ``eigenvalues`` real."""
    out = []
    L = np.diag(eigenvalues)  # real eigenvalues: a symmetric operator in random orthogonal coordinates
    for _ in range(n_replicates):
        Q, _ = np.linalg.qr(rng.standard_normal((L.shape[0],) * 2))
        A = Q @ L @ Q.T
        X = np.empty((per_replicate, 20, L.shape[0]))
        X[:, 0] = rng.standard_normal((per_replicate, L.shape[0]))
        for t in range(1, 20):
            X[:, t] = X[:, t - 1] @ A.T
        out.append(X + noise * rng.standard_normal(X.shape))
    return np.concatenate(out), np.repeat(np.arange(n_replicates), per_replicate)


def test_conjugacy_test_uses_the_calibrated_decision_when_replicates_exist():
    rng = np.random.default_rng(14)
    ev = np.array([0.95, 0.7, 0.4])
    ta, la = _replicate_trajectories(ev, 8, 3, rng)
    tb, lb = _replicate_trajectories(ev, 6, 3, rng)
    tc, lc = _replicate_trajectories(ev - np.array([0.1, 0.0, 0.0]), 6, 3, rng)
    same = kk.conjugacy_test(ta, tb, 0, n_resamples=99, rng=0, replicates_a=la, replicates_b=lb)
    assert same.rule == kk.CALIBRATED_RULE and same.decision == "conjugate" and same.conjugate
    assert same.comparison.n_a == 8 and same.comparison.n_b == 6
    # the comparison holds one spectrum per replicate: that of its trajectories
    first = kk.koopman_spectrum(ta[la == 0], 0)
    np.testing.assert_array_equal(kk.replicate_spectra(ta, 0, replicates=la)[0], first)
    assert same.comparison.distances.within_a[0] == kk.spectral_distance(first, kk.koopman_spectrum(ta[la == 1], 0))
    assert "rule: calibrated replicates" in str(same) and "CONJUGATE (rule: equivalence test" in str(same)
    diff = kk.conjugacy_test(ta, tc, 0, n_resamples=99, rng=0, replicates_a=la, replicates_b=lc)
    assert diff.decision == "not conjugate" and diff.comparison.rule == "permutation" and not diff.conjugate
    # without replicates: the uncalibrated rule, named as such in the summary
    plain = kk.conjugacy_test(ta, tb, 0, n_resamples=19, rng=0)
    assert plain.rule == kk.UNCALIBRATED_RULE and plain.comparison is None
    assert plain.conjugate == kk.uncalibrated_margin_rule(plain.distance, plain.spread, plain.spectral_radius)
    assert str(plain).startswith(plain.decision.upper() + " (rule: uncalibrated margin, distance + spread")


def test_uncalibrated_margin_rule_is_the_documented_inequality():
    assert kk.uncalibrated_margin_rule(0.03, 0.02, 1.0)  # 0.05 ≤ 0.05
    assert not kk.uncalibrated_margin_rule(0.03, 0.0201, 1.0)
    assert kk.uncalibrated_margin_rule(0.03, 0.02, 0.5, margin=0.1)
    assert not kk.uncalibrated_margin_rule(0.03, 0.02, 0.5)


def test_bad_replicate_arguments_of_conjugacy_test_are_refused():
    X = np.random.default_rng(0).standard_normal((4, 10, 2))
    with pytest.raises(ValueError, match="replicates_a, replicates_b: expected both or neither"):
        kk.conjugacy_test(X, X, 0, replicates_a=np.arange(4))
    with pytest.raises(ValueError, match=r"replicates_b: expected one integer label per trajectory, shape \(4,\), got shape \(3,\)"):
        kk.conjugacy_test(X, X, 0, replicates_a=np.arange(4), replicates_b=np.arange(3))
    with pytest.raises(ValueError, match=r"replicates: expected one integer label per trajectory, shape \(4,\), got dtype float64"):
        kk.replicate_spectra(X, 0, replicates=np.zeros(4))
    with pytest.raises(ValueError, match="alpha, quantile: only used by the calibrated decision"):
        kk.conjugacy_test(X, X, 0, alpha=0.01)


# --------------------------------------------------------------------------- figures


def test_figures_are_written_as_complete_png_files(tmp_path):
    rng = np.random.default_rng(15)
    a, b = noisy_spectra(rng, 4), noisy_spectra(rng, 3, SPECTRUM * 0.9)
    spectra_png = kk.plot_replicate_spectra({"A": a, "B": b}, tmp_path / "spectra.png", zoom=(0.4, 1.0, -0.3, 0.3))
    r = kk.compare_systems(a, b, n_permutations=9, n_bootstrap=9, rng=0)
    distances_png = kk.plot_within_between({"A vs B": r, "raw": kk.within_between(a, b)}, tmp_path / "d.png")
    mask = os.umask(0)
    os.umask(mask)
    for path in (spectra_png, distances_png):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # as open() would create it, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "spectra.png"]  # no temporary file left
    with pytest.raises(TypeError, match="systems: expected a non-empty dict"):
        kk.plot_replicate_spectra([a], tmp_path / "x.png")
    with pytest.raises(TypeError, match=r"pairs\['x'\]: expected a WithinBetween or SystemComparison"):
        kk.plot_within_between({"x": a}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

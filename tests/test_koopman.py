"""kpref.koopman: delay embedding, DMD variants, spectral distances, conjugacy test, checkpoints."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kpref
from kpref import koopman as kk

# --------------------------------------------------------------------------- helpers


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def real_operator(eigenvalues, rng, condition=4.0):
    """A real matrix with the given spectrum (closed under conjugation), similar by a well-conditioned S."""
    blocks = []
    for lam in eigenvalues:
        if lam.imag > 0:
            blocks.append(abs(lam) * rotation(np.angle(lam)))
        elif lam.imag == 0:
            blocks.append(np.array([[lam.real]]))
    n = sum(b.shape[0] for b in blocks)
    L = np.zeros((n, n))
    i = 0
    for b in blocks:
        L[i : i + b.shape[0], i : i + b.shape[0]] = b
        i += b.shape[0]
    Q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    S = Q1 @ np.diag(np.geomspace(1.0, condition, n)) @ Q2
    return S @ L @ np.linalg.inv(S)


def linear_trajectories(A, n, T, rng):
    X = np.empty((n, T, A.shape[0]))
    X[:, 0] = rng.standard_normal((n, A.shape[0]))
    for t in range(1, T):
        X[:, t] = X[:, t - 1] @ A.T
    return X


def spectra(draw_seed):
    """A separated spectrum closed under conjugation: 1 real and 1 complex pair at least."""
    rng = np.random.default_rng(draw_seed)
    n_real = int(rng.integers(1, 3))
    n_pairs = int(rng.integers(1, 3))
    while True:
        reals = rng.uniform(0.3, 0.98, n_real) * rng.choice([-1.0, 1.0], n_real)
        pairs = rng.uniform(0.3, 0.98, n_pairs) * np.exp(1j * rng.uniform(0.2, 2.9, n_pairs))
        ev = np.concatenate([reals.astype(complex), pairs, pairs.conj()])
        gaps = np.abs(ev[:, None] - ev[None, :]) + np.eye(ev.size)
        if gaps.min() > 0.1:
            return ev, rng


def close_as_sets(a, b):
    return kk.spectral_distance(a, b) * a.size  # the largest matched error is at most k × the mean


seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------- delay embedding, pairs


def test_delay_embed_is_oldest_first_with_stride():
    traj = np.arange(12.0).reshape(1, 6, 2)  # x_t = [2t, 2t+1]
    out = kk.delay_embed(traj, 2, stride=2)
    assert out.shape == (1, 2, 6)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 4, 5, 8, 9])  # [x_0, x_2, x_4]
    np.testing.assert_array_equal(out[0, 1], [2, 3, 6, 7, 10, 11])  # [x_1, x_3, x_5]
    np.testing.assert_array_equal(kk.delay_embed(traj, 0), traj)


def test_delay_embed_of_a_list_keeps_each_length():
    a, b = np.ones((5, 3)), np.zeros((7, 3))
    out = kk.delay_embed([a, b], 1)
    assert isinstance(out, list) and [o.shape for o in out] == [(4, 6), (6, 6)]


def test_snapshot_pairs_never_join_two_trajectories():
    a = np.arange(6.0).reshape(3, 2)
    b = 100 + np.arange(8.0).reshape(4, 2)
    X, Y = kk.snapshot_pairs([a, b])
    assert X.shape == Y.shape == (2, 2 + 3)
    np.testing.assert_array_equal(X.T, np.concatenate([a[:-1], b[:-1]]))
    np.testing.assert_array_equal(Y.T, np.concatenate([a[1:], b[1:]]))


# --------------------------------------------------------------------------- DMD of exactly linear data


@given(seeds, st.sampled_from(["projected", "exact", "tls"]))
def test_dmd_of_linear_data_recovers_the_eigenvalues(seed, method):
    ev, rng = spectra(seed)
    A = real_operator(ev, rng)
    X = linear_trajectories(A, 4, 12, rng)
    res = kk.dmd(X, method=method)
    assert close_as_sets(res.eigenvalues, ev) <= 1e-10
    assert res.residuals.max() <= 1e-10 and not res.spurious.any()
    # modes are eigenvectors of A, and the amplitudes reconstruct every initial state
    assert np.abs(A @ res.modes - res.modes * res.eigenvalues).max() <= 1e-10
    np.testing.assert_allclose(res.modes @ res.amplitudes.T, X[:, 0].T, atol=1e-10)
    # sorted by decreasing modulus; conjugate pairs list Im > 0 first
    mod = np.abs(res.eigenvalues)
    assert np.all(np.diff(mod) <= 1e-15)


@given(seeds)
def test_forward_backward_dmd_recovers_eigenvalues_with_positive_real_part(seed):
    rng = np.random.default_rng(seed)
    ev = np.array([0.9, 0.6 * np.exp(0.4j), 0.6 * np.exp(-0.4j), 0.35])
    A = real_operator(ev, rng)
    res = kk.dmd(linear_trajectories(A, 3, 15, rng), method="fb")
    assert close_as_sets(res.eigenvalues, ev) <= 1e-10


def test_forward_backward_dmd_flips_a_negative_eigenvalue_as_documented():
    rng = np.random.default_rng(0)
    A = real_operator(np.array([-0.5, 0.8]), rng)
    res = kk.dmd(linear_trajectories(A, 3, 10, rng), method="fb")
    np.testing.assert_allclose(np.sort(res.eigenvalues.real), [0.5, 0.8], atol=1e-10)


def test_pairs_across_trajectories_would_give_wrong_eigenvalues():
    """The recovery check can fail: naive stacking (pairs joining trajectories) breaks it."""
    rng = np.random.default_rng(1)
    ev = np.array([0.9, 0.5])
    X = linear_trajectories(real_operator(ev, rng), 3, 8, rng)
    joined = X.reshape(1, -1, 2)
    assert close_as_sets(kk.dmd(X).eigenvalues, ev) <= 1e-12
    assert close_as_sets(kk.dmd(joined).eigenvalues, ev) > 1e-3


@given(seeds)
def test_similar_linear_systems_have_distance_zero(seed):
    ev, rng = spectra(seed)
    A = real_operator(ev, rng)
    S = real_operator(np.array([1.5, 0.7, 1.1, 0.9, 1.3, 0.8])[: A.shape[0]], rng)
    B = S @ A @ np.linalg.inv(S)
    ea = kk.koopman_spectrum(linear_trajectories(A, 4, 12, rng), 0)
    eb = kk.koopman_spectrum(linear_trajectories(B, 4, 12, rng), 0)
    assert kk.spectral_distance(ea, eb) <= 1e-10


def test_delays_on_linear_data_need_a_rank_and_then_recover_the_spectrum():
    rng = np.random.default_rng(2)
    ev = np.array([0.95, 0.7 * np.exp(0.5j), 0.7 * np.exp(-0.5j)])
    X = linear_trajectories(real_operator(ev, rng), 5, 20, rng)
    with pytest.raises(ValueError, match=r"rank: None keeps all 9 singular values.*numerical rank 3"):
        kk.koopman_spectrum(X, 2)
    assert close_as_sets(kk.koopman_spectrum(X, 2, rank=3), ev) <= 1e-10


def test_koopman_spectrum_equals_dmd_of_the_embedding():
    tr = kk.published_trajectories(T=30, grid_size=3)["mirror"]
    np.testing.assert_array_equal(kk.koopman_spectrum(tr, 4), kk.dmd(kk.delay_embed(tr, 4)).eigenvalues)


def test_exact_and_projected_modes_share_eigenvalues_and_exact_modes_are_eigenvectors_of_the_fit():
    rng = np.random.default_rng(4)
    X = linear_trajectories(real_operator(np.array([0.9, 0.4]), rng), 3, 10, rng)
    X = X + 1e-3 * rng.standard_normal(X.shape)
    emb = kk.delay_embed(X, 2)
    p, e = kk.dmd(emb, rank=3, method="projected"), kk.dmd(emb, rank=3, method="exact")
    np.testing.assert_array_equal(p.eigenvalues, e.eigenvalues)
    Xs, Ys = kk.snapshot_pairs(emb)
    U, sv, Vt = np.linalg.svd(Xs, full_matrices=False)
    A_fit = Ys @ (Vt[:3].T / sv[:3]) @ U[:, :3].T  # exact modes are eigenvectors of Y X_r⁺ (Tu et al.)
    assert np.abs(A_fit @ e.modes - e.modes * e.eigenvalues).max() <= 1e-8
    assert np.abs(A_fit @ p.modes - p.modes * p.eigenvalues).max() > 1e-6


# --------------------------------------------------------------------------- noisy data, rank, residuals


def test_tls_and_forward_backward_remove_the_noise_bias_of_projected_dmd():
    rng = np.random.default_rng(3)
    X = linear_trajectories(0.95 * rotation(0.2), 20, 40, rng)
    noisy = X + 0.05 * rng.standard_normal(X.shape)
    bias = {m: abs(np.abs(kk.dmd(noisy, method=m).eigenvalues[0]) - 0.95) for m in ("projected", "tls", "fb")}
    assert bias["projected"] > 5e-3  # least squares shrinks |λ| toward 0 ...
    assert bias["tls"] < bias["projected"] / 5 and bias["fb"] < bias["projected"] / 5  # ... TLS/FB do not


def test_residuals_flag_a_noise_coordinate_as_spurious():
    rng = np.random.default_rng(3)
    X = linear_trajectories(0.95 * rotation(0.2), 20, 40, rng)
    Z = np.concatenate([X, 0.3 * rng.standard_normal(X.shape[:2] + (1,))], axis=2)
    res = kk.dmd(Z)
    np.testing.assert_array_equal(res.spurious, [False, False, True])
    assert res.residuals[:2].max() < 1e-12 and res.residuals[2] > 0.5
    kept = kk.koopman_spectrum(Z, 0, drop_spurious=True)
    np.testing.assert_array_equal(kept, res.eigenvalues[:2])


def test_gavish_donoho_finds_the_rank_of_a_low_rank_matrix_in_noise():
    rng = np.random.default_rng(5)
    D, m, k = 40, 400, 3
    signal = rng.standard_normal((D, k)) @ np.diag([30.0, 20.0, 10.0]) @ rng.standard_normal((k, m)) / np.sqrt(m)
    s = np.linalg.svd(signal + 0.05 * rng.standard_normal((D, m)), compute_uv=False)
    assert kk.select_rank(s, (D, m), "gavish-donoho") == k
    beta = D / m
    tau = (0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43) * np.median(s)
    assert kk.gavish_donoho_omega(beta) * np.median(s) == tau
    assert kk.select_rank(s, (D, m), "gavish-donoho") == np.count_nonzero(s > tau)


def test_select_rank_integer_and_energy_fraction():
    s = np.array([3.0, 2.0, 1.0, 0.5])  # energies 9, 4, 1, 0.25 (total 14.25)
    assert kk.select_rank(s, (4, 10), 2) == 2
    assert kk.select_rank(s, (4, 10), 13 / 14.25) == 2  # exactly reached at k = 2
    assert kk.select_rank(s, (4, 10), 13.01 / 14.25) == 3
    assert kk.select_rank(s, (4, 10), 1.0) == 4
    assert kk.select_rank(s, (4, 10), None) == 4


def test_centering_subtracts_the_mean_from_x_and_y_for_every_method():
    """center=True is the DMD of (X − μ1ᵀ, Y − μ1ᵀ): eigenvalues (all four methods), residuals and flags.

    Centering Y matters for everything but the projected/exact eigenvalues. Why those cannot see it: with
    ``X_c = X − μ1ᵀ`` and μ the mean column of X, ``X_c 1 = 0``, so ``1`` is orthogonal to the row space of
    ``X_c`` and ``1ᵀ V_r = 0`` for its right singular vectors. Hence
    ``U_rᵀ (Y − μ1ᵀ) V_r Σ_r⁻¹ = U_rᵀ Y V_r Σ_r⁻¹ − U_rᵀ μ (1ᵀ V_r) Σ_r⁻¹ = Ã``: the same operator whether or not Y
    is centered. The residuals ``ψ_i(Y) − λ_i ψ_i(X_c)`` move by ``z_iᴴ U_rᵀ μ`` per column, TLS projects on the
    row space of the stacked ``[X_c; Y]``, and FB fits ``Ã_b = X̃ Ỹ⁺`` with ``Ỹ = U_rᵀ Y``: all three see it.
    So the test compares residuals, flags and the TLS/FB eigenvalues, and checks that a DMD that forgets to
    center Y differs from the reference in each of them.
    """
    rng = np.random.default_rng(6)
    A = real_operator(np.array([0.9, 0.7 * np.exp(0.4j), 0.7 * np.exp(-0.4j)]), rng)
    X = linear_trajectories(A, 4, 12, rng) + np.array([2.0, -1.0, 0.5])
    X = X + 0.01 * rng.standard_normal(X.shape)  # residuals ≈ 0.2 (the affine model is centered at μ, not the fixed point)
    Xs, Ys = kk.snapshot_pairs(X)
    mu = Xs.mean(axis=1)
    Xc, Yc = Xs - mu[:, None], Ys - mu[:, None]
    tol = 0.18  # between the residuals of the complex pair and of the real eigenvalue: some flagged, not all
    for method in kk.DMD_METHODS:
        res = kk.dmd(X, method=method, center=True, residual_tol=tol)
        ref = kk.dmd_from_pairs(Xc, Yc, method=method, residual_tol=tol)
        forgot_y = kk.dmd_from_pairs(Xc, Ys, method=method, residual_tol=tol)  # the mutant: Y left uncentered
        np.testing.assert_array_equal(res.mean, mu)
        # one route (SVD of the same matrices) in both: agreement to rounding, 1e-12 on O(1) data
        np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.residuals, ref.residuals, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(res.spurious, ref.spurious)
        assert np.abs(forgot_y.residuals - ref.residuals).max() > 1e-3, method
        if method in ("tls", "fb"):
            assert kk.spectral_distance(forgot_y.eigenvalues, ref.eigenvalues) > 1e-3, method
        else:  # the argument in the docstring: the projected operator cannot see Y's centering
            assert kk.spectral_distance(forgot_y.eigenvalues, ref.eigenvalues) <= 1e-12, method
    flags = kk.dmd(X, center=True, residual_tol=tol).spurious
    assert flags.any() and not flags.all()  # the flags are informative here, so comparing them can fail
    assert not np.array_equal(flags, kk.dmd_from_pairs(Xc, Ys, residual_tol=tol).spurious)


# --------------------------------------------------------------------------- spectral distance

eig_values = st.floats(-1.5, 1.5, allow_nan=False, allow_subnormal=False)


@st.composite
def eigen_sets(draw, min_size=1, max_size=7):
    n = draw(st.integers(min_size, max_size))
    re = draw(st.lists(eig_values, min_size=n, max_size=n))
    im = draw(st.lists(eig_values, min_size=n, max_size=n))
    return np.array(re) + 1j * np.array(im)


@given(eigen_sets(), st.data())
def test_matched_distance_is_a_symmetric_order_and_conjugation_invariant_metric(e1, data):
    e2 = data.draw(eigen_sets(e1.size, e1.size))
    e3 = data.draw(eigen_sets(e1.size, e1.size))
    perm = np.random.default_rng(data.draw(seeds)).permutation(e1.size)
    d12 = kk.spectral_distance(e1, e2)
    assert d12 == pytest.approx(kk.spectral_distance(e2, e1), rel=1e-14, abs=1e-15)
    assert d12 == pytest.approx(kk.spectral_distance(e1[perm], e2), rel=1e-14, abs=1e-15)
    assert d12 == pytest.approx(kk.spectral_distance(e1.conj(), e2.conj()), rel=1e-14, abs=1e-15)
    assert kk.spectral_distance(e1, e1[perm]) == 0.0
    assert kk.spectral_distance(e1, e2) <= kk.spectral_distance(e1, e3) + kk.spectral_distance(e3, e2) + 1e-12
    # optimal matching: no fixed pairing is cheaper
    assert d12 <= np.abs(e1 - e2).mean() + 1e-12
    assert d12 <= np.abs(e1 - e2[perm]).mean() + 1e-12


@given(eigen_sets(), st.floats(1e-3, 0.5), st.integers(0, 6))
def test_zero_only_for_equal_sets_and_moving_one_eigenvalue_by_delta_moves_the_distance_by_delta_over_k(e, delta, i):
    i = i % e.size
    gaps = np.abs(e[:, None] - e[None, :]) + 10 * np.eye(e.size)
    moved = e.copy()
    moved[i] += delta * np.exp(0.7j)
    d = kk.spectral_distance(e, moved)
    assert d > 0
    if gaps[i].min() > 3 * delta:  # the moved eigenvalue keeps its partner in the optimal matching
        assert d == pytest.approx(delta / e.size, rel=1e-12)
    else:
        assert d <= delta / e.size * (1 + 1e-12)


def test_a_spectrum_closed_under_conjugation_is_at_distance_zero_from_its_conjugate():
    rng = np.random.default_rng(0)
    ev = np.linalg.eigvals(rng.standard_normal((9, 9)))
    assert np.any(ev.imag != 0)
    assert kk.spectral_distance(ev, ev.conj()) == 0.0
    assert kk.spectral_distance(ev, ev.conj(), "wasserstein") == 0.0


def test_matched_distance_catches_a_wrong_matching():
    e1 = np.array([0.0, 1.0])
    e2 = np.array([1.0 + 0.1j, 0.0])
    assert kk.spectral_distance(e1, e2) == pytest.approx(0.05, rel=1e-15)  # not the sorted pairing's 0.55


@given(eigen_sets(), eigen_sets(), eigen_sets())
def test_wasserstein_handles_unequal_counts_and_is_a_metric(e1, e2, e3):
    d = lambda a, b: kk.spectral_distance(a, b, "wasserstein")
    assert d(e1, e2) == pytest.approx(d(e2, e1), rel=1e-12, abs=1e-14)
    assert d(e1, e2) <= d(e1, e3) + d(e3, e2) + 1e-12
    assert d(e1, np.concatenate([e1, e1])) == pytest.approx(0.0, abs=1e-14)  # same uniform measure
    if e1.size == e2.size:
        assert d(e1, e2) == pytest.approx(kk.spectral_distance(e1, e2), rel=1e-12, abs=1e-14)
    # the transport LP (explicit uniform weights) agrees with the replicated assignment
    lp = kk.spectral_distance(e1, e2, "wasserstein", weights1=np.ones(e1.size))
    assert lp == pytest.approx(d(e1, e2), rel=1e-8, abs=1e-9)


def test_wasserstein_weights_have_exact_values():
    d = kk.spectral_distance
    assert d([0.0, 1.0], [0.5], "wasserstein") == pytest.approx(0.5, rel=1e-15)
    assert d([0.0, 1.0], [0.0], "wasserstein", weights1=[3.0, 1.0]) == pytest.approx(0.25, rel=1e-9)
    assert d([0.0, 1.0], [0.0, 1.0], "wasserstein", weights1=[3.0, 1.0]) == pytest.approx(0.25, rel=1e-9)
    assert d([0.0, 1.0], [0.5j], "wasserstein", p=2) == pytest.approx(np.sqrt(0.5 * 0.25 + 0.5 * 1.25), rel=1e-15)
    assert d([0.0, 3.0], [0.0, 4.0], p=2) == pytest.approx(np.sqrt(0.5), rel=1e-15)


# --------------------------------------------------------------------------- conjugacy test


def test_conjugacy_test_of_similar_and_of_different_linear_systems():
    rng = np.random.default_rng(7)
    ev = np.array([0.95, 0.8 * np.exp(0.3j), 0.8 * np.exp(-0.3j)])
    A = real_operator(ev, rng)
    B = real_operator(ev, rng)  # similar to A: the same spectrum in other coordinates
    C = real_operator(ev * np.array([0.7, 1.0, 1.0]), rng)  # one eigenvalue moved by 0.285
    ta, tb, tc = (linear_trajectories(M, 8, 15, rng) for M in (A, B, C))
    same = kk.conjugacy_test(ta, tb, 0, n_resamples=19, rng=0)
    assert same.conjugate and same.distance <= 1e-10
    assert same.p_value == pytest.approx((1 + np.count_nonzero(same.null_distances >= same.distance * (1 - 1e-12))) / 20)
    diff = kk.conjugacy_test(ta, tc, 0, n_resamples=19, rng=0)
    assert not diff.conjugate
    assert diff.distance == pytest.approx(0.285 / 3, rel=1e-8)  # above margin · ρ = 0.05 · 0.95
    # the permutation null mixes trajectories of two systems in different coordinates, whose joint DMD is
    # far from either spectrum: p = 0.2 here, which is why the decision rests on the margin, not on p
    assert diff.p_value == (1 + np.count_nonzero(diff.null_distances >= diff.distance * (1 - 1e-12))) / 20


def test_conjugacy_test_is_reproducible_from_the_seed():
    tr = kk.published_trajectories(T=40, grid_size=3)
    r1 = kk.conjugacy_test(tr["mirror"], tr["gradient"], 2, n_resamples=9, rng=3)
    r2 = kk.conjugacy_test(tr["mirror"], tr["gradient"], 2, n_resamples=9, rng=np.random.default_rng(3))
    for f in ("null_distances", "split_distances_a", "split_distances_b"):
        np.testing.assert_array_equal(getattr(r1, f), getattr(r2, f))
    assert (r1.p_value, r1.spread, r1.conjugate) == (r2.p_value, r2.spread, r2.conjugate)


def test_resampled_spectra_from_factors_match_the_direct_route():
    tr = kk.published_trajectories(T=40, grid_size=3)["mirror"]
    emb = list(kk.delay_embed(tr, 2))
    factored = kk.SubsetEigenvalues(emb)
    for idx in (np.arange(9), np.array([0, 4, 5, 8])):
        direct = kk.koopman_spectrum(tr[idx], 2)
        assert kk.spectral_distance(factored(idx, None), direct) <= 1e-10
    assert factored(np.arange(9), 4).size == 4


def test_permutation_p_value_is_not_small_for_two_samples_of_one_system():
    rng = np.random.default_rng(8)
    A = real_operator(np.array([0.9, 0.7 * np.exp(0.4j), 0.7 * np.exp(-0.4j)]), rng)
    X = linear_trajectories(A, 16, 20, rng) + 1e-3 * rng.standard_normal((16, 20, 3))
    res = kk.conjugacy_test(X[:8], X[8:], 0, n_resamples=39, rng=0)
    assert res.conjugate and res.p_value > 0.1


def test_legacy_swap_null_never_exceeds_the_observed_distance():
    tr = kk.published_trajectories(grid_size=3)
    res = kk.conjugacy_test(tr["mirror"], tr["bisection"], 4, n_resamples=49, rng=0, null="legacy-swap")
    assert res.null == "legacy-swap"
    assert np.all(res.null_distances <= res.distance * (1 + 1e-12))  # the known flaw
    assert not res.conjugate  # the decision does not use the null


def test_conjugacy_test_with_unequal_counts_needs_wasserstein():
    rng = np.random.default_rng(3)
    X = linear_trajectories(0.95 * rotation(0.2), 6, 30, rng)
    noisy = np.concatenate([X, 0.3 * rng.standard_normal(X.shape[:2] + (1,))], axis=2)  # 1 spurious of 3
    clean = linear_trajectories(real_operator(np.array([0.95 * np.exp(0.2j), 0.95 * np.exp(-0.2j), 0.5]), rng), 6, 30, rng)
    with pytest.raises(ValueError, match=r"distance: method='matched' needs spectra of equal size, got 2 and 3 .*"
                                         r"use distance='wasserstein'"):
        kk.conjugacy_test(noisy, clean, 0, n_resamples=3, rng=0, drop_spurious=True)
    res = kk.conjugacy_test(noisy, clean, 0, n_resamples=5, rng=0, drop_spurious=True, distance="wasserstein")
    assert res.eigenvalues_a.size == 2 and res.eigenvalues_b.size == 3
    assert np.isinf(res.null_distances).any()  # mixed groups lose every eigenvalue: counted as inf
    # W1 between the uniform measures {λ, λ̄} and {λ, λ̄, 0.5}: mass 1/3 moves from λ, λ̄ to 0.5 (rounding aside)
    lam = 0.95 * np.exp(0.2j)
    assert res.distance == pytest.approx(abs(lam - 0.5) / 3, rel=1e-6)


# --------------------------------------------------------------------------- checkpoints


def test_trajectories_from_checkpoints_accepts_arrays_and_lists():
    rng = np.random.default_rng(9)
    W = rng.standard_normal((2, 4, 5))
    np.testing.assert_array_equal(kk.trajectories_from_checkpoints(W), W)
    np.testing.assert_array_equal(kk.trajectories_from_checkpoints([W[0], W[1]]), W)
    out = kk.trajectories_from_checkpoints(W)
    out[0, 0, 0] = 99.0
    assert W[0, 0, 0] != 99.0  # owns its data


def test_pca_projection_keeps_linear_training_dynamics_linear():
    rng = np.random.default_rng(10)
    p, k = 30, 3
    basis, _ = np.linalg.qr(rng.standard_normal((p, k)))
    M = real_operator(np.array([0.97, 0.85 * np.exp(0.2j), 0.85 * np.exp(-0.2j)]), rng)
    coords = linear_trajectories(M, 5, 25, rng)
    weights = coords @ basis.T  # runs (5, 25, p) in a k-dim subspace through the origin
    scores = kk.trajectories_from_checkpoints(weights, n_components=k)
    assert scores.shape == (5, 25, k)
    assert kk.spectral_distance(kk.koopman_spectrum(scores, 0), np.linalg.eigvals(M)) <= 1e-10
    # deterministic signs: the PCA axes, recovered from the scores (weights span a k-dim subspace through the
    # origin, so axesᵀ = W⁺ scores), are orthonormal with their largest-magnitude entry positive ...
    axes = np.linalg.lstsq(weights.reshape(-1, p), scores.reshape(-1, k), rcond=None)[0].T
    np.testing.assert_allclose(axes @ axes.T, np.eye(k), atol=1e-10)
    lead = axes[np.arange(k), np.argmax(np.abs(axes), axis=1)]
    assert np.all(lead > 0), lead
    # ... so negating the weights (SVD signs are arbitrary) gives the same axes, hence negated scores, and
    # permuting the parameters permutes the axes' entries, hence the same scores
    np.testing.assert_allclose(kk.trajectories_from_checkpoints(-weights, n_components=k), -scores, atol=1e-12)
    perm = rng.permutation(p)
    np.testing.assert_allclose(kk.trajectories_from_checkpoints(weights[:, :, perm], n_components=k), scores, atol=1e-12)


def _train_runs(tmp_path, cell, x, target, seeds, learning_rate):
    runs, results = [], []
    for seed in seeds:
        d = tmp_path / f"run{seed}"
        results.append(kpref.train(cell, x, target, rng=seed, steps=6, optimizer="gd", learning_rate=learning_rate,
                                   checkpoint_every=1, checkpoint_dir=d, progress=False))
        runs.append(sorted(str(f) for f in d.glob("checkpoint_*.npz")))
    return runs, results


def test_trajectories_from_kpref_training_checkpoints_hold_the_gradient_descent_iterates(tmp_path):
    cell = kpref.Linear(2, 3)
    x = np.random.default_rng(0).standard_normal((4, 6, 2))
    target = np.random.default_rng(1).standard_normal((4, 6, 1))
    eta = 0.05
    runs, results = _train_runs(tmp_path, cell, x, target, (0, 1), eta)
    traj = kk.trajectories_from_checkpoints(runs)
    assert traj.shape == (2, 7, cell.num_params)
    for r, (paths, result) in enumerate(zip(runs, results)):
        # the first checkpoint is the seeded initialization, the last the trained parameters ...
        np.testing.assert_array_equal(traj[r, 0], cell.init_params(np.random.default_rng(r)))
        np.testing.assert_array_equal(traj[r, -1], result.theta)
        # ... and every step in between is θ_{c+1} = θ_c − η ∇_θ L(θ_c, readout_c) (kpref's own gradient; rounding
        # of one axpy on O(1) numbers: 1e-14)
        for c in range(6):
            readout = kpref.load_checkpoint(paths[c]).readout
            grad = kpref.loss_and_gradient(cell, traj[r, c], readout, x, target).grad_theta
            np.testing.assert_allclose(traj[r, c + 1], traj[r, c] - eta * grad, rtol=0, atol=1e-14)
    # the PCA scores are the projections on the leading axes of the centered checkpoints
    scores = kk.trajectories_from_checkpoints(runs, n_components=2)
    stacked = traj.reshape(-1, cell.num_params)
    _, sv, _ = np.linalg.svd(stacked - stacked.mean(axis=0), full_matrices=False)
    centered = scores.reshape(-1, 2) - scores.reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(centered, axis=0), sv[:2], rtol=1e-10)


# --------------------------------------------------------------------------- published experiment


def test_published_optimizers_follow_their_update_equations():
    eta = 0.01
    tr = kk.published_trajectories()
    x, u, z = tr["mirror"], tr["gradient"], tr["bisection"]
    assert x.shape == u.shape == z.shape == (25, 100, 2)
    # mirror descent: −1/x_{t+1} = −1/x_t − η sec²(x_t)
    np.testing.assert_allclose(-1 / x[:, 1:], -1 / x[:, :-1] - eta / np.cos(x[:, :-1]) ** 2, rtol=1e-14)
    # gradient descent on u = log x: u_{t+1} = u_t − η e^u sec²(e^u)
    e = np.exp(u[:, :-1])
    np.testing.assert_allclose(u[:, 1:], u[:, :-1] - eta * e / np.cos(e) ** 2, rtol=1e-14)
    # bisection: 20 of the 25 published trajectories hit f(z) = 0 exactly and are then left at 0
    assert np.count_nonzero(np.all(z[:, -1] == 0.0, axis=1)) == 20
    held = kk.published_trajectories(bisection_root="hold")["bisection"]
    assert np.all(held[:, -1] != 0.0)


def test_mirror_and_gradient_descent_are_conjugate_to_first_order_in_eta():
    gaps = []
    for eta in (0.01, 0.005):
        tr = kk.published_trajectories(eta=eta, gradient_coordinates="x", gradient_grid="log")
        gaps.append(np.abs(tr["mirror"] - tr["gradient"]).max())
    assert gaps[0] < 2e-3 and 1.8 < gaps[0] / gaps[1] < 2.2


# --------------------------------------------------------------------------- bad input


def test_bad_trajectories_are_refused_with_the_argument_named():
    good = np.ones((2, 10, 3))
    with pytest.raises(ValueError, match=r"trajectories\[1\]: expected D=3 columns"):
        kk.koopman_spectrum([np.ones((10, 3)), np.ones((10, 4))], 1)
    with pytest.raises(ValueError, match=r"trajectories\[0\]: expected at least 7 time steps, got 6"):
        kk.koopman_spectrum(np.ones((2, 6, 3)), 5)
    bad = good.copy()
    bad[1, 4, 2] = np.nan
    with pytest.raises(ValueError, match=r"trajectories: expected finite values, got .*nan.* at index \(1, 4, 2\)"):
        kk.dmd(bad)
    with pytest.raises(TypeError, match="trajectories: expected a real floating array, got dtype int64"):
        kk.dmd(np.ones((2, 10, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"trajectories: expected a 3-D array"):
        kk.dmd(np.ones((10, 3)))
    with pytest.raises(ValueError, match=r"trajs_b: expected trajectories of dimension D=3"):
        kk.conjugacy_test(good, np.ones((2, 10, 2)), 1)
    with pytest.raises(ValueError, match="trajs_a: expected at least 2 trajectories"):
        kk.conjugacy_test(good[:1], good, 1)


def test_bad_ranks_and_options_are_refused():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 10, 2))
    with pytest.raises(ValueError, match=r"rank: expected at most min\(D, m\) = 2"):
        kk.dmd(X, rank=3)
    with pytest.raises(ValueError, match="rank: the data support at most rank 2"):
        kk.dmd(np.concatenate([X, X], axis=2), rank=3)
    with pytest.raises(TypeError, match="rank: expected None, an int"):
        kk.dmd(X, rank=True)
    with pytest.raises(ValueError, match=r"rank: expected a number in \(0, 1\.0\]"):
        kk.dmd(X, rank=1.5)
    with pytest.raises(ValueError, match="rank: expected an integer >= 1"):
        kk.dmd(X, rank=0)
    with pytest.raises(ValueError, match="rank: expected one of 'gavish-donoho'"):
        kk.dmd(X, rank="optimal")
    with pytest.raises(ValueError, match="method: expected one of 'projected', 'exact', 'tls', 'fb'"):
        kk.dmd(X, method="svd")
    with pytest.raises(TypeError, match="center: expected a bool"):
        kk.dmd(X, center=1)
    with pytest.raises(ValueError, match="n_delays: expected an integer >= 0"):
        kk.delay_embed(X, -1)
    with pytest.raises(ValueError, match="n_resamples: expected an integer >= 1"):
        kk.conjugacy_test(X, X, 0, n_resamples=0)
    with pytest.raises(ValueError, match="margin: expected a finite number > 0"):
        kk.conjugacy_test(X, X, 0, margin=-0.1)
    with pytest.raises(ValueError, match="null: expected one of"):
        kk.conjugacy_test(X, X, 0, null="swap")


def test_bad_distance_inputs_are_refused():
    with pytest.raises(ValueError, match=r"e2: method='matched' needs as many eigenvalues as e1 \(2\), got 3"):
        kk.spectral_distance([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="e1: expected at least one eigenvalue"):
        kk.spectral_distance(np.array([], dtype=complex), [1.0])
    with pytest.raises(ValueError, match=r"e1: expected finite values"):
        kk.spectral_distance([np.nan + 0j], [1.0])
    with pytest.raises(ValueError, match=r"p: expected a finite real number ≥ 1"):
        kk.spectral_distance([1.0], [1.0], p=0.5)
    with pytest.raises(TypeError, match="p: expected a real number"):
        kk.spectral_distance([1.0], [1.0], p=True)
    with pytest.raises(ValueError, match="weights1, weights2: expected None for method='matched'"):
        kk.spectral_distance([1.0], [1.0], weights1=[1.0])
    with pytest.raises(ValueError, match="weights2: expected non-negative weights"):
        kk.spectral_distance([1.0], [1.0, 2.0], "wasserstein", weights2=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"weights1: expected shape"):
        kk.spectral_distance([1.0], [1.0, 2.0], "wasserstein", weights1=[1.0, 1.0])
    with pytest.raises(ValueError, match="method: expected one of 'matched', 'wasserstein'"):
        kk.spectral_distance([1.0], [1.0], "emd")


def test_bad_checkpoints_are_refused(tmp_path):
    W = np.ones((2, 4, 5))
    with pytest.raises(ValueError, match=r"weights\[1\]: expected shape \(4, 5\)"):
        kk.trajectories_from_checkpoints([W[0], W[1, :3]])
    with pytest.raises(ValueError, match=r"n_components: expected at most min\(n_runs·n_checkpoints, p\) = 5"):
        kk.trajectories_from_checkpoints(W, n_components=6)
    with pytest.raises(ValueError, match="subtract_mean: only meaningful with n_components"):
        kk.trajectories_from_checkpoints(W, subtract_mean=True)
    path = tmp_path / "c.npz"
    np.savez(path, theta=np.ones(3))  # an .npz with a theta is not a checkpoint: kpref.load_checkpoint refuses it
    with pytest.raises(ValueError, match=r"weights\[0\]\[0\]: checkpoint .* is not a kpref checkpoint"):
        kk.trajectories_from_checkpoints([[str(path)]])
    with pytest.raises(ValueError, match=r"weights\[0\]\[0\]: expected a kpref checkpoint file, got .*missing.npz.*does not exist"):
        kk.trajectories_from_checkpoints([[str(tmp_path / "missing.npz")]])


def test_conjugacy_spread_and_p_value_are_their_formulas():
    """spread = RMS of the two within-system medians; p = (1 + #{null ≥ distance·(1 − 1e-12)}) / (n + 1)
    on the returned null distances (a linearly pooled spread survived mutation testing)."""
    rng = np.random.default_rng(5)
    a = linear_trajectories(0.95 * rotation(0.2), 8, 30, rng)
    b = linear_trajectories(0.9 * rotation(0.5), 8, 30, rng)
    a, b = a + 0.05 * rng.standard_normal(a.shape), b + 0.05 * rng.standard_normal(b.shape)  # spreads ≫ rounding
    res = kk.conjugacy_test(a, b, 0, n_resamples=19, rng=0)
    assert res.spread_a > 1e-4 and res.spread_b > 1e-4 and abs(res.spread_a - res.spread_b) > 1e-2 * res.spread
    assert res.spread == pytest.approx(np.sqrt(0.5 * (res.spread_a ** 2 + res.spread_b ** 2)), rel=1e-15, abs=0)
    ties = res.distance * (1 - 1e-12)
    assert res.p_value == (1 + np.count_nonzero(res.null_distances >= ties)) / 20

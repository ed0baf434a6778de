"""kpref.analysis traces: exact against NumPy, randomized estimators against exact values.

Statistical tests use fixed seeds and tolerances derived from each estimator's
variance, never tuned:

* Girard–Hutchinson with Rademacher probes: ``Var t = 2 (‖M_s‖_F² − Σ M_jj²) / s``
  (``M_s`` the symmetric part), exactly;
* Hutch++: conditional on its sketch basis ``Q`` it is Hutchinson on
  ``R = (I−QQᵀ) M (I−QQᵀ)`` with ``g`` probes, so the same formula applies to ``R``;
* XTrace (no closed-form variance): unbiasedness over independent replicates,
  tested as "the replicate mean lies within 5 standard errors of the exact trace",
  and its fast leave-one-out formulas against a naive re-factorizing implementation.

Each criterion has a test showing it rejects a deliberately wrong estimator.
"""

import numpy as np
import pytest
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from kpref.analysis import alignment, frobenius_norm, trace
from kpref.analysis import direct_target, gram_target, hutch_plus_plus, hutchinson, rademacher, xtrace
from kpref.operators import as_operator

Z = 5.0  # standard deviations: a correct estimator fails a single check with probability < 1e-6


def _symmetric(n, seed):
    A = np.random.default_rng(seed).standard_normal((n, n))
    return A + A.T + 2.0 * n ** 0.5 * np.eye(n)    # a trace well away from 0


def _psd_power_law(n, seed, power=1.5):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (Q * np.arange(1, n + 1) ** -power) @ Q.T


def _hutchinson_variance(M, s):
    Ms = 0.5 * (M + M.T)
    return 2.0 * (np.sum(Ms * Ms) - np.sum(np.diag(M) ** 2)) / s


def _replicate_z(estimates, exact):
    """|mean − exact| in standard errors of the replicate mean."""
    est = np.asarray(estimates)
    return abs(est.mean() - exact) / (est.std(ddof=1) / np.sqrt(est.size))


# ------------------------------------------------------------------------------------------ exact


@pytest.mark.parametrize("limit", [None, 8 * 40 * 3])      # the small limit streams 1-column blocks
def test_exact_methods_match_numpy(limit):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((30, 40)), rng.standard_normal((30, 40))
    M = rng.standard_normal((40, 40))
    assert trace(M, memory_limit=limit) == pytest.approx(np.trace(M), rel=1e-13)
    assert frobenius_norm(A, memory_limit=limit) == pytest.approx(np.linalg.norm(A), rel=1e-13)
    cos = np.sum(A * B) / (np.linalg.norm(A) * np.linalg.norm(B))
    assert alignment(A, B, memory_limit=limit) == pytest.approx(cos, rel=1e-12)
    assert alignment(A, A) == pytest.approx(1.0, rel=1e-14)
    assert alignment(A, -2.0 * A) == pytest.approx(-1.0, rel=1e-14)
    assert trace(M, return_error=True) == (pytest.approx(np.trace(M), rel=1e-13), 0.0)


def test_exact_methods_use_block_products_only():
    calls = []
    M = np.random.default_rng(0).standard_normal((50, 50))

    def matmat(X):
        calls.append(X.shape[1])
        return M @ X

    op = LinearOperator((50, 50), matvec=lambda x: M @ x, matmat=matmat, dtype=np.float64)
    assert trace(op) == pytest.approx(np.trace(M), rel=1e-13)
    assert calls == [50]                     # one block of 50 columns, no column loop


# ------------------------------------------------------------------------------------ Hutchinson


@pytest.mark.parametrize("symmetric", [True, False])
def test_hutchinson_within_its_exact_standard_deviation(symmetric):
    M = _symmetric(40, 3) if symmetric else np.random.default_rng(3).standard_normal((40, 40)) + 5 * np.eye(40)
    sd = np.sqrt(_hutchinson_variance(M, 50))
    for seed in range(5):
        t = trace(M, "hutchinson", n_probes=50, rng=seed)
        assert abs(t - np.trace(M)) <= Z * sd


def test_hutchinson_is_unbiased_and_its_error_estimate_estimates_its_variance():
    M = _symmetric(30, 4)
    s, reps = 10, 400
    out = np.array([trace(M, "hutchinson", n_probes=s, rng=seed, return_error=True) for seed in range(reps)])
    assert _replicate_z(out[:, 0], np.trace(M)) <= Z
    # err² is the sample variance / s: unbiased for Var t
    assert _replicate_z(out[:, 1] ** 2, _hutchinson_variance(M, s)) <= Z
    # and the replicate spread agrees with the formula (relative sd of a variance from 400 draws ≈ 7%)
    assert np.var(out[:, 0], ddof=1) == pytest.approx(_hutchinson_variance(M, s), rel=Z * np.sqrt(2 / reps) * 1.5)


def test_replicate_criterion_rejects_a_biased_hutchinson():
    """Dividing by s − 1 instead of s (a plausible bug) is caught by the criterion above."""
    M = _symmetric(30, 4)
    s = 10
    wrong = [hutchinson(direct_target(as_operator("M", M)), s, np.random.default_rng(seed)).samples.sum() / (s - 1)
             for seed in range(400)]
    assert _replicate_z(wrong, np.trace(M)) > Z


def test_hutchinson_exact_on_diagonal():
    """Rademacher probes: ωᵀDω = tr D for every probe, so the variance is 0."""
    D = np.diag(np.arange(1.0, 11.0))
    assert trace(D, "hutchinson", n_probes=3, rng=0, return_error=True) == (55.0, 0.0)


# --------------------------------------------------------------------------------------- Hutch++


@pytest.mark.parametrize("gram", [False, True])
def test_hutch_plus_plus_within_its_conditional_standard_deviation(gram):
    C = np.random.default_rng(5).standard_normal((60, 40)) @ np.diag(np.arange(1, 41) ** -1.0)
    M = C.T @ C if gram else _symmetric(40, 5)
    chk = as_operator("C", C if gram else M)
    target = gram_target(chk) if gram else direct_target(chk)
    n_probes = 30
    g = n_probes - 2 * (n_probes // 3)
    for seed in range(5):
        est, Q = hutch_plus_plus(target, n_probes, np.random.default_rng(seed), return_basis=True)
        proj = np.eye(40) - Q @ Q.T
        var = _hutchinson_variance(proj @ M @ proj, g)
        assert abs(est.value - np.trace(M)) <= Z * np.sqrt(var) + 1e-12 * np.trace(M)
        # error estimate: sample variance of g = 10 draws; within a χ²₉ range (p ≈ 1e-6 each side)
        assert 0.02 * var <= est.error ** 2 <= 5.0 * var


def test_public_hutch_plus_plus_is_the_internal_estimator_and_deterministic():
    M = _psd_power_law(50, 6)
    a = trace(M, "hutch++", n_probes=21, rng=7, return_error=True)
    b = trace(M, "hutch++", n_probes=21, rng=np.random.default_rng(7), return_error=True)
    c = hutch_plus_plus(direct_target(as_operator("M", M)), 21, np.random.default_rng(7))
    assert a == b == (c.value, c.error)


def test_hutch_plus_plus_is_unbiased_and_beats_hutchinson_on_decaying_psd():
    M = _psd_power_law(60, 8)
    est_pp = [trace(M, "hutch++", n_probes=24, rng=s) for s in range(300)]
    est_h = [trace(M, "hutchinson", n_probes=24, rng=s) for s in range(300)]
    assert _replicate_z(est_pp, np.trace(M)) <= Z
    assert _replicate_z(est_h, np.trace(M)) <= Z
    mse_pp = np.mean((np.array(est_pp) - np.trace(M)) ** 2)
    assert mse_pp < 0.25 * _hutchinson_variance(M, 24)    # the known low-rank advantage


def test_replicate_criterion_rejects_hutch_plus_plus_without_its_residual_term():
    """The sketch part alone, tr(QᵀMQ), is biased low on a PSD matrix; the criterion sees it."""
    M = _psd_power_law(60, 8)
    target = direct_target(as_operator("M", M))
    sketch_only = []
    for seed in range(300):
        est, Q = hutch_plus_plus(target, 24, np.random.default_rng(seed), return_basis=True)
        sketch_only.append(np.trace(Q.T @ M @ Q))
        assert np.all(est.samples >= sketch_only[-1] - 1e-12)    # the residual terms it drops are ≥ 0
    assert _replicate_z(sketch_only, np.trace(M)) > Z



def test_rademacher_keeps_its_stream():
    """The probes are ``2·bit − 1`` of ``rng.integers(0, 2, (n, k))`` (int64): the same draws as every earlier
    version, so a seeded run reproduces its old probes bitwise."""
    for n, k in ((7, 3), (1000, 11)):
        bits = np.random.default_rng(5).integers(0, 2, size=(n, k))
        W = rademacher(np.random.default_rng(5), n, k)
        assert W.dtype == np.float64 and W.shape == (n, k)
        assert np.array_equal(W, bits * 2.0 - 1.0)


@pytest.mark.parametrize("gram", [False, True])
def test_hutch_plus_plus_on_a_tall_space_matches_the_textbook_algorithm(gram):
    """dim = 5·512 + 37 rows: the sketch basis comes from a blocked tall-skinny QR (with a remainder block); the
    estimate is the textbook one (one LAPACK QR of the sketch).

    Tolerance: both Q are backward-stable QRs of the same sketch Y (cond(Y) ≤ cond(M) = 3 here), so their
    projectors differ by O(dim·ε·cond) ≈ 1e-12; the estimate is a sum of dim-sized quadratic forms in
    (I − QQᵀ), so it moves by O(1e-12) relative: 1e-10 leaves a margin of 100. A basis that misses a block
    of rows or mixes blocks is not orthonormal or does not span Y, at O(1).
    """
    n = 5 * 512 + 37
    rng = np.random.default_rng(21)
    C = rng.standard_normal((n, n)) / np.sqrt(n) * 0.1 + np.eye(n) if gram else None
    M = C.T @ C if gram else np.diag(np.linspace(1.0, 3.0, n))
    chk = as_operator("op", C if gram else M)
    target = gram_target(chk) if gram else direct_target(chk)
    est, Q = hutch_plus_plus(target, 30, np.random.default_rng(3), return_basis=True)
    r = np.random.default_rng(3)
    S = rademacher(r, n, 10)
    Y = M @ S
    assert np.abs(Q.T @ Q - np.eye(10)).max() <= 1e-13
    assert np.abs(Q @ (Q.T @ Y) - Y).max() <= 1e-13 * np.abs(Y).max()
    Q0, _ = np.linalg.qr(Y)
    G = rademacher(r, n, 10)
    G0 = G - Q0 @ (Q0.T @ G)
    ref = np.trace(Q0.T @ M @ Q0) + np.mean(np.einsum("ij,ij->j", G0, M @ G0))
    assert est.value == pytest.approx(ref, rel=1e-10)

# ---------------------------------------------------------------------------------------- XTrace


def _xtrace_naive(M, W):
    """Algorithm 1.2 of Epperly, Tropp & Webber (2024) with an explicit QR per left-out vector."""
    m = W.shape[1]
    Y = M @ W
    ests = []
    for i in range(m):
        Qi, _ = np.linalg.qr(np.delete(Y, i, axis=1))
        u = W[:, i] - Qi @ (Qi.T @ W[:, i])
        ests.append(np.trace(Qi.T @ M @ Qi) + u @ M @ u)
    ests = np.array(ests)
    return ests.mean(), ests.std(ddof=1) / np.sqrt(m)


@pytest.mark.parametrize("kind", ["symmetric", "nonsymmetric", "gram"])
def test_xtrace_fast_formulas_match_the_naive_algorithm(kind):
    rng = np.random.default_rng(9)
    C = rng.standard_normal((35, 30))
    M = {"symmetric": _symmetric(30, 9), "nonsymmetric": rng.standard_normal((30, 30)), "gram": C.T @ C}[kind]
    chk = as_operator("op", C if kind == "gram" else M)
    target = gram_target(chk) if kind == "gram" else direct_target(chk)
    est = xtrace(target, 16, np.random.default_rng(11))
    W = rademacher(np.random.default_rng(11), 30, 8)
    value, err = _xtrace_naive(M, W)
    assert est.value == pytest.approx(value, rel=1e-10, abs=1e-10 * np.abs(M).sum())
    assert est.error == pytest.approx(err, rel=1e-8)


def test_xtrace_is_unbiased_and_its_error_has_the_right_size():
    M = _psd_power_law(50, 10, power=0.75)
    out = np.array([trace(M, "xtrace", n_probes=16, rng=s, return_error=True) for s in range(300)])
    assert _replicate_z(out[:, 0], np.trace(M)) <= Z
    # the paper's error estimate is not unbiased for the sd; a sanity band on its typical size
    spread = out[:, 0].std(ddof=1)
    assert spread / 3 <= np.median(out[:, 1]) <= 3 * spread


def test_replicate_criterion_rejects_xtrace_without_leaving_out():
    """Reusing each probe with the full sketch basis (no leave-one-out): ω_i is no longer independent
    of the basis, and the estimate is biased; the criterion that passes XTrace rejects it."""
    M = _psd_power_law(50, 10, power=0.75)
    wrong = []
    for s in range(300):
        W = rademacher(np.random.default_rng(s), 50, 8)
        Q, _ = np.linalg.qr(M @ W)
        U = W - Q @ (Q.T @ W)
        wrong.append(np.trace(Q.T @ M @ Q) + np.mean(np.einsum("ij,ij->j", U, M @ U)))
    assert _replicate_z(wrong, np.trace(M)) > Z


def test_xtrace_is_exact_when_the_sketch_exceeds_the_rank():
    rng = np.random.default_rng(12)
    F = rng.standard_normal((40, 3))
    M = F @ F.T
    value, err = trace(M, "xtrace", n_probes=10, rng=0, return_error=True)
    assert value == pytest.approx(np.trace(M), rel=1e-10)
    assert err == 0.0


# ---------------------------------------------------------------------------- norms, alignment


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_frobenius_norm(method):
    rng = np.random.default_rng(13)
    A = rng.standard_normal((25, 30)) @ np.diag(np.arange(1, 31) ** -1.0)
    exact = np.linalg.norm(A)
    out = np.array([frobenius_norm(A, method, n_probes=18, rng=s, return_error=True) for s in range(200)])
    # the square is unbiased; the root is biased by O(Var/‖A‖³), far below the replicate error here
    assert _replicate_z(out[:, 0] ** 2, exact ** 2) <= Z
    assert frobenius_norm(A) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_alignment(method):
    rng = np.random.default_rng(14)
    A = rng.standard_normal((50, 50))
    B = A + 0.8 * rng.standard_normal((50, 50))
    exact = alignment(A, B)
    n_probes = 30            # sketches of 10 (Hutch++) and 15 (XTrace) vectors: far from exact
    out = np.array([alignment(A, B, method, n_probes=n_probes, rng=s, return_error=True) for s in range(200)])
    spread = out[:, 0].std(ddof=1)
    # a ratio estimator: bias O(1/n_probes), well inside 5 replicate sds at this size
    assert abs(out[:, 0].mean() - exact) <= Z * spread / np.sqrt(len(out)) + spread ** 2
    # the delta-method error is first-order accurate: within a factor 2 of the spread
    assert spread / 2 <= np.median(out[:, 1]) <= 2 * spread


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_frobenius_norm_error_is_the_propagated_trace_error(method):
    """The error column, exactly: ‖A‖_F = √t and err = err(t) / (2√t) for the trace estimate t of AᵀA
    drawn with the same seed (the same probes), to rounding."""
    rng = np.random.default_rng(13)
    A = rng.standard_normal((25, 30)) @ np.diag(np.arange(1, 31) ** -1.0)
    for seed in range(5):
        value, err = frobenius_norm(A, method, n_probes=18, rng=seed, return_error=True)
        t, t_err = trace(A.T @ A, method, n_probes=18, rng=seed, return_error=True)
        assert value == pytest.approx(np.sqrt(t), rel=1e-13, abs=0)
        assert err > 0 and err == pytest.approx(t_err / (2 * np.sqrt(t)), rel=1e-13, abs=0)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_alignment_error_is_the_delta_method_on_the_same_probes(method):
    """The error estimate, exactly, from the same probes.

    Hutchinson: one Rademacher block ω (the estimator's draws, ``rng.integers(0, 2) · 2 − 1``) serves the
    three samples s = ((Aω)ᵀBω, ‖Aω‖², ‖Bω‖²); with means (x, y, z), cos = x/√(yz) and the delta method
    err² = ∇ᵀ Cov(s) ∇ / m, ∇ = (1/√(yz), −cos/(2y), −cos/(2z)). Hutch++ / XTrace: tr(AᵀB), ‖A‖_F²,
    ‖B‖_F² estimated in that order from one generator, errors propagated to first order.
    """
    rng = np.random.default_rng(14)
    A = rng.standard_normal((50, 50))
    B = A + 0.8 * rng.standard_normal((50, 50))
    m = 30
    for seed in range(5):
        cos, err = alignment(A, B, method, n_probes=m, rng=seed, return_error=True)
        gen = np.random.default_rng(seed)
        if method == "hutchinson":
            W = gen.integers(0, 2, size=(50, m)).astype(float) * 2.0 - 1.0
            AW, BW = A @ W, B @ W
            s = np.stack([np.sum(AW * BW, axis=0), np.sum(AW * AW, axis=0), np.sum(BW * BW, axis=0)])
            x, y, z = s.mean(axis=1)
            c = x / np.sqrt(y * z)
            grad = np.array([1 / np.sqrt(y * z), -0.5 * c / y, -0.5 * c / z])
            e = np.sqrt(grad @ np.cov(s, ddof=1) @ grad / m)
        else:
            x, ex = trace(A.T @ B, method, n_probes=m, rng=gen, return_error=True)
            y, ey = trace(A.T @ A, method, n_probes=m, rng=gen, return_error=True)
            z, ez = trace(B.T @ B, method, n_probes=m, rng=gen, return_error=True)
            c = x / np.sqrt(y * z)
            e = np.sqrt((ex / np.sqrt(y * z)) ** 2 + (0.5 * c * ey / y) ** 2 + (0.5 * c * ez / z) ** 2)
        assert cos == pytest.approx(c, rel=1e-13, abs=0)
        assert err > 0 and err == pytest.approx(e, rel=1e-12, abs=0)


def test_hutchinson_alignment_of_an_operator_with_itself_is_exactly_one():
    A = np.random.default_rng(15).standard_normal((10, 12))
    assert alignment(A, 3 * A, "hutchinson", n_probes=5, rng=0) == pytest.approx(1.0, rel=1e-14)


# ----------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_the_argument_named():
    M = np.eye(4)
    with pytest.raises(ValueError, match="n_probes"):
        trace(M, n_probes=10)
    with pytest.raises(ValueError, match="rng"):
        trace(M, rng=0)
    with pytest.raises(ValueError, match="method"):
        trace(M, "hutch+")
    with pytest.raises(ValueError, match="n_probes"):
        trace(M, "hutch++", n_probes=3)
    with pytest.raises(TypeError, match="n_probes"):
        trace(M, "hutchinson", n_probes=10.0)
    with pytest.raises(TypeError, match="rng"):
        trace(M, "hutchinson", rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="op: expected a square"):
        trace(np.ones((3, 4)))
    with pytest.raises(TypeError, match="op"):
        trace(np.eye(3, dtype=int))
    with pytest.raises(TypeError, match="op"):
        trace(np.eye(3, dtype=complex))
    with pytest.raises(ValueError, match="op"):
        trace(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="B: expected the shape of A"):
        alignment(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="A"):
        alignment(np.zeros((3, 3)), np.eye(3))
    with pytest.raises(MemoryError, match="memory_limit"):
        trace(np.eye(50), memory_limit=100)


def test_operator_products_are_checked():
    nan_op = LinearOperator((3, 3), matvec=lambda x: np.full(3, np.nan), matmat=lambda X: np.full(X.shape, np.nan),
                            dtype=np.float64)
    with pytest.raises(ValueError, match="op: matmat returned 9 non-finite"):
        trace(nan_op)
    forward_only = LinearOperator((3, 3), matvec=lambda x: x, dtype=np.float64)
    with pytest.raises(TypeError, match="adjoint product"):
        frobenius_norm(forward_only, "hutch++", n_probes=6, rng=0)
    wrong_shape = LinearOperator((3, 3), matvec=lambda x: x[:2], matmat=lambda X: X[:2], dtype=np.float64)
    with pytest.raises(ValueError, match="shape"):
        trace(wrong_shape)


def test_float32_operators_are_converted():
    M = np.diag(np.arange(1.0, 5.0)).astype(np.float32)
    assert trace(M) == 10.0
    assert trace(aslinearoperator(M)) == 10.0

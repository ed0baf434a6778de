"""kpref.analysis spectra: dense against LAPACK, block Lanczos / ARPACK against dense, ranks
against their definitions, and the KPFlow papers' structural claim on small networks."""

import doctest

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.sparse.linalg import LinearOperator

import kpref
import kpref.analysis
from kpref.analysis import (block_lanczos, effective_rank, participation_ratio, singular_values, spectrum,
                            variance_rank)

Z = 5.0


def _sym_with_spectrum(lam, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))
    return (Q * np.asarray(lam)) @ Q.T


def _counting_operator(M, log):
    def matmat(X):
        log.append(X.shape[1])
        return M @ X
    return LinearOperator(M.shape, matvec=lambda x: M @ x, matmat=matmat, rmatmat=lambda X: M.T @ X,
                          dtype=np.float64)


# ------------------------------------------------------------------------------------- spectra


@given(st.integers(1, 12), st.integers(0, 2**31), st.sampled_from(["LA", "SA", "LM"]))
def test_dense_spectrum_matches_eigvalsh(n, seed, which):
    A = np.random.default_rng(seed).standard_normal((n, n))
    M = A + A.T
    lam = np.linalg.eigvalsh(M)
    key = {"LA": -lam, "SA": lam, "LM": -np.abs(lam)}[which]
    expected = lam[np.argsort(key, kind="stable")]
    got = spectrum(M, which=which)
    assert np.allclose(got, expected, rtol=0, atol=1e-13 * max(1.0, np.abs(lam).max()))
    k = max(1, n // 2)
    assert np.allclose(spectrum(M, k, which), expected[:k], rtol=0, atol=1e-13 * max(1.0, np.abs(lam).max()))


# a spectrum with a triple eigenvalue at the top, a cluster, and a negative end of larger magnitude
_LAM = np.concatenate([[10.0, 10.0, 10.0, 9.0, 8.99], np.linspace(-3.0, 5.0, 290), [-12.0, -11.0, -11.5]])


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("method", ["lanczos", "arpack"])
def test_lanczos_and_arpack_against_the_known_spectrum(which, method):
    # ARPACK (one vector per step) may miss copies of a multiple eigenvalue: give it a simple spectrum
    lam = _LAM if method == "lanczos" else _LAM + np.linspace(0, 1e-3, len(_LAM)) * (np.arange(len(_LAM)) < 3)
    M = _sym_with_spectrum(lam, 0)
    k = 6
    key = {"LA": -lam, "SA": lam, "LM": -np.abs(lam)}[which]
    expected = lam[np.argsort(key, kind="stable")][:k]
    got = spectrum(M, k, which, method=method, rng=1)
    # a Ritz value with residual r is within r of an eigenvalue; tol=1e-10 relative to max|λ| = 12
    assert np.allclose(got, expected, rtol=0, atol=1e-10 * 12 * 2)


def test_auto_uses_block_lanczos_above_the_dense_size():
    import scipy.sparse
    d = np.linspace(-1.0, 1.0, 2500) ** 3
    op = _counting_operator(scipy.sparse.diags(d).tocsr(), log := [])
    assert np.allclose(spectrum(op, 3, rng=0), np.sort(d)[::-1][:3], rtol=0, atol=1e-10)
    assert max(log) < 2500                                    # blocks, never the dense identity
    assert np.allclose(singular_values(op, 2, rng=0), [1.0, 1.0], rtol=0, atol=1e-9)


def test_block_lanczos_restarts_uses_blocks_and_reports_true_residuals():
    M = _sym_with_spectrum(_LAM, 2)
    log = []
    op = _counting_operator(M, log)
    res = block_lanczos(op.matmat, M.shape[0], 4, "LA", block_size=4, max_basis=16, rng=3)
    assert res.n_restarts > 0
    assert log[0] == 8                                    # the symmetry probe (8 random directions)
    assert set(log[1:-1]) == {4} and log[-1] == 4         # every product a block of 4, the last one the check
    assert res.n_products == sum(log)
    assert np.allclose(res.values, [10.0, 10.0, 10.0, 9.0], atol=1e-9)
    true = np.linalg.norm(M @ res.vectors - res.vectors * res.values, axis=0)
    assert np.allclose(res.residual_norms, true, rtol=1e-6, atol=1e-15)
    assert np.all(true <= 1e-10 * 12.0 * 1.01)
    assert np.allclose(res.vectors.T @ res.vectors, np.eye(4), atol=1e-12)


def test_block_lanczos_keeps_its_basis_orthogonal_after_an_eigenvalue_converges():
    """An isolated top eigenvalue (1000 above a dense bulk in [0, 1]) converges in a few blocks while the
    next three need ~50: plain (local) block Lanczos then loses orthogonality to the converged Ritz
    vector and grows ghost copies of 1000 (Paige), so the wanted pairs never pass the true-residual check.
    The full reorthogonalization pass prevents it (issue 13 mutant ``spectral-no-reorthogonalization``:
    without it this call exhausts its restarts).

    Tolerances: each true residual is ≤ tol·max|θ| = 1e-10·1000 = 1e-7, and a Ritz value with residual
    ‖r‖ lies within ‖r‖ of an eigenvalue (A symmetric), so |θ − λ| ≤ 1e-7 (×1.01 for the rounding of the
    residual's own computation, ~nε‖A‖ = 1e-10). The returned vectors are orthonormal to rounding of the
    two-pass orthogonalization and CholQR2, O(ε·√n) ≈ 1e-14 per column; 1e-12 leaves a margin of 100.
    The exact code needs no restart here; max_restarts=3 bounds the mutant's run.
    """
    n = 600
    lam = np.concatenate([[1000.0], np.linspace(0.0, 1.0, n - 1) ** 2])
    M = _sym_with_spectrum(lam, 7)
    res = block_lanczos(lambda X: M @ X, n, 4, "LA", block_size=4, max_basis=400, max_restarts=3, rng=1)
    exact = np.sort(lam)[::-1][:4]
    assert np.all(np.abs(res.values - exact) <= 1e-7 * 1.01)
    assert np.all(res.residual_norms <= 1e-7 * 1.01)
    assert np.abs(res.vectors.T @ res.vectors - np.eye(4)).max() <= 1e-12


def test_block_lanczos_is_deterministic_and_refuses_too_small_operators():
    M = _sym_with_spectrum(_LAM, 4)
    a = block_lanczos(lambda X: M @ X, 298, 3, rng=5)
    b = block_lanczos(lambda X: M @ X, 298, 3, rng=np.random.default_rng(5))
    assert np.array_equal(a.values, b.values)
    with pytest.raises(ValueError, match="method='dense'"):
        block_lanczos(lambda X: X, 10, 3)
    with pytest.raises(RuntimeError, match="no convergence"):
        block_lanczos(lambda X: M @ X, 298, 4, block_size=4, max_basis=16, max_restarts=1, tol=1e-14, rng=0)


@pytest.mark.parametrize("shape", [(300, 40), (40, 300), (120, 100)])
@pytest.mark.parametrize("method", ["dense", "lanczos", "arpack"])
def test_singular_values(shape, method):
    rng = np.random.default_rng(6)
    A = rng.standard_normal(shape) @ np.diag(np.arange(1, shape[1] + 1) ** -0.5)
    s = np.linalg.svd(A, compute_uv=False)
    if method == "dense":
        assert np.allclose(singular_values(A), s, rtol=1e-13)
    k = 5
    got = singular_values(A, k, method=method, rng=0)
    # Lanczos on the Gram operator: σ_i² within tol·σ_max² (tol 1e-10)
    assert np.allclose(got ** 2, s[:k] ** 2, rtol=0, atol=2e-10 * s[0] ** 2)


def test_spectrum_refuses_a_non_symmetric_operator_and_bad_arguments():
    A = np.random.default_rng(7).standard_normal((5, 5))
    with pytest.raises(ValueError, match="op: expected a symmetric operator"):
        spectrum(A)
    with pytest.raises(ValueError, match="op: expected a square"):
        spectrum(np.ones((2, 3)))
    with pytest.raises(ValueError, match="which"):
        spectrum(np.eye(3), which="BE")
    with pytest.raises(ValueError, match="k: expected at most"):
        spectrum(np.eye(3), k=4)
    with pytest.raises(ValueError, match="k: expected an integer"):
        spectrum(np.eye(3), method="lanczos")
    with pytest.raises(TypeError, match="k"):
        singular_values(np.eye(3), k=2.0)
    with pytest.raises(MemoryError, match="MiB"):
        spectrum(np.eye(30), memory_limit=1000)


# ------------------------------------------------------------------------------ summary ranks


@given(st.integers(1, 10), st.integers(1, 10), st.integers(0, 2**31))
def test_ranks_match_their_definitions(n, m, seed):
    A = np.random.default_rng(seed).standard_normal((n, m))
    s2 = np.linalg.svd(A, compute_uv=False) ** 2
    assert effective_rank(A) == pytest.approx(s2.sum() ** 2 / np.sum(s2 ** 2), rel=1e-12)
    assert participation_ratio(A @ A.T) == pytest.approx(effective_rank(A), rel=1e-10)
    for q in (0.5, 0.95, 1.0):
        cum = np.cumsum(s2)
        expected = min(i + 1 for i in range(len(s2)) if cum[i] >= q * cum[-1])
        assert variance_rank(A, q) == expected


def test_rank_examples():
    assert effective_rank(np.eye(7)) == 7.0
    assert participation_ratio(np.diag([1.0, 1.0, 1.0, 0.0])) == 3.0
    assert variance_rank(np.diag([3.0, 1.0, 0.1]), 0.89) == 1           # 9 / 10.01 = 0.8991
    assert variance_rank(np.diag([3.0, 1.0, 0.1]), 0.9) == 2
    assert variance_rank(np.diag([3.0, 1.0, 0.1]), 0.9989) == 2         # 10 / 10.01 = 0.9990
    assert variance_rank(np.diag([3.0, 1.0, 0.1]), 1.0) == 3


def test_rank_bad_input():
    with pytest.raises(ValueError, match="positive semidefinite"):
        participation_ratio(np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="zero operator"):
        effective_rank(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="q: expected a number in"):
        variance_rank(np.eye(3), 1.5)
    with pytest.raises(ValueError, match="q"):
        variance_rank(np.eye(3), 0.0)
    with pytest.raises(TypeError, match="op"):
        effective_rank(kpref.linearize(kpref.Elman(1, 2), kpref.Elman(1, 2).init_params(0), np.zeros((1, 2, 1))))


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_participation_ratio_and_effective_rank(method):
    rng = np.random.default_rng(8)
    A = rng.standard_normal((60, 50)) @ np.diag(np.arange(1, 51) ** -0.7)
    M = A @ A.T
    er, pr = effective_rank(A), participation_ratio(M)
    assert pr == pytest.approx(er, rel=1e-10)
    n_probes, reps = 24, 100
    for f, exact in ((effective_rank, er), (lambda op, *a, **k: participation_ratio(M, *a, **k), pr)):
        out = np.array([f(A, method, n_probes, s, return_error=True) for s in range(reps)])
        spread = out[:, 0].std(ddof=1)
        # a ratio of two unbiased estimates: bias O(Var), inside the replicate standard error here
        assert abs(out[:, 0].mean() - exact) <= Z * spread / np.sqrt(reps) + 2 * spread ** 2 / exact
        # the first-order error propagation is of the right size
        assert spread / 2.5 <= np.median(out[:, 1]) <= 2.5 * spread


# ------------------------------------------------------------------- real operators, the claim


def _lin(Cell, B=2, T=5, H=4, N=3, seed=0):
    rng = np.random.default_rng(seed)
    cell = Cell(input_size=N, hidden_size=H)
    return kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((B, T, N)))


def test_lanczos_on_K_and_NTK_of_a_GRU_matches_dense():
    lin = _lin(kpref.GRU, B=3, T=8, H=6)
    for op in (lin.K, lin.NTK):
        lam = np.linalg.eigvalsh(kpref.todense(op))[::-1]
        got = spectrum(op, 4, method="lanczos", rng=0)
        assert np.allclose(got, lam[:4], rtol=0, atol=1e-10 * lam[0] * 2)
    s = np.linalg.svd(kpref.todense(lin.P), compute_uv=False)
    assert np.allclose(singular_values(lin.P, 3, method="lanczos", rng=0) ** 2, s[:3] ** 2, atol=2e-10 * s[0] ** 2)


@pytest.mark.parametrize("Cell", [kpref.Elman, kpref.GRU])
def test_effective_rank_of_K_far_below_that_of_P_at_initialization(Cell):
    """KPFlow's structural claim (documented example in kpref.analysis at B=4, T=20, H=16)."""
    lin = _lin(Cell)
    er_K, er_P = effective_rank(lin.K), effective_rank(lin.P)
    assert er_K < er_P / 3          # 4.84 vs 26.9 (Elman), 3.53 vs 18.1 (GRU)
    # exact and randomized routes agree at this size
    est, err = effective_rank(lin.P, "xtrace", 30, 0, return_error=True)
    assert abs(est - er_P) <= Z * err


def _analysis_modules():
    """kpref.analysis and every module defining one of its public names (reached through the names)."""
    import sys
    names = {kpref.analysis.__name__} | {getattr(getattr(kpref.analysis, n), "__module__", None)
                                         for n in kpref.analysis.__all__}
    return sorted((sys.modules[m] for m in names if m and m.startswith("kpref.analysis")), key=lambda m: m.__name__)


@pytest.mark.parametrize("module", _analysis_modules(), ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_docstring_examples_are_collected():
    """The parametrization above reaches every module with examples (not vacuous)."""
    attempted = sum(doctest.testmod(m, optionflags=doctest.ELLIPSIS).attempted for m in _analysis_modules())
    assert attempted >= 30 and len(_analysis_modules()) >= 5


def _counting(A):
    """``A`` as a LinearOperator that counts the columns it is applied to (both directions)."""
    seen = {"cols": 0}

    def mm(X):
        seen["cols"] += X.shape[1]
        return A @ X

    def rmm(Y):
        seen["cols"] += Y.shape[1]
        return A.T @ Y

    op = LinearOperator(A.shape, matvec=lambda x: mm(x[:, None])[:, 0], rmatvec=lambda y: rmm(y[:, None])[:, 0],
                        matmat=mm, rmatmat=rmm, dtype=np.float64)
    return op, seen


def test_hutch_pp_effective_rank_shares_one_sketch_between_its_two_traces():
    """``(AᵀA)² S = AᵀA (AᵀA S)``: the ‖A‖_F² and ‖AᵀA‖_F² estimates share ``S`` and the second sketch costs two
    products a column, not four. With n_probes = 30 (s = g = 10): 2s + s + g = 40 columns for ‖A‖_F² and 2s + 2s
    + 2g = 60 for ‖AᵀA‖_F² — 100 in all, against 120 with two sketches. Each estimate is Hutch++ of its own
    target on that sketch: replayed by hand with the public pieces, the same generator gives the same value."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 30)) @ np.diag(np.arange(1, 31) ** -0.8)
    op, seen = _counting(A)
    value, err = effective_rank(op, "hutch++", 30, np.random.default_rng(5), return_error=True)
    assert seen["cols"] == 100
    gen = np.random.default_rng(5)
    S = kpref.analysis.rademacher(gen, 30, 10)
    Y1 = A.T @ (A @ S)
    M = A.T @ A
    fro = kpref.analysis.hutch_plus_plus(kpref.analysis.TraceTarget(30, factor=lambda X: A @ X,
                                                                    factor_adjoint=lambda Y: A.T @ Y),
                                         30, gen, sketch=Y1)
    g4 = kpref.analysis.hutch_plus_plus(kpref.analysis.TraceTarget(30, factor=lambda X: M @ X,
                                                                   factor_adjoint=lambda Y: M @ Y),
                                        30, gen, sketch=M @ Y1)
    assert value == pytest.approx(fro.value ** 2 / g4.value, rel=1e-12)
    assert err > 0


def test_hutch_plus_plus_sketch_argument_is_checked():
    target = kpref.analysis.TraceTarget(6, matmat=lambda X: X)
    for bad, exc, msg in ((np.ones((6, 3)), TypeError, r"shape \(6, 1\)"), (np.ones((6, 1), dtype=np.float32),
                          TypeError, "float32"), ([[1.0]] * 6, TypeError, "list"),
                          (np.full((6, 1), np.nan), ValueError, "finite")):
        with pytest.raises(exc, match=msg):
            kpref.analysis.hutch_plus_plus(target, 4, 0, sketch=bad)

"""The KPFlow package's definitions beside kpref's (issue 16): marginal effective dimension, reduced Grams,
the 95 %-variance operator effective rank, the misdirection, the g conventions, and eigenfunctions.

Every definition is held against its formula written out on dense arrays (einsum over the reshaped kernel).
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kpref
from kpref.analysis import (alignment, effective_dimension, effective_dimensions, eigenpairs, marginal_sum,
                            misdirection, operator_effective_rank, participation_ratio, partial_trace, pp_star,
                            reduced_gram, register_eigen_method, singular_triplets, variance_rank)

AXES = ("batch", "time", "hidden")
SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3))


def _lin(Cell=kpref.GRU, B=3, T=4, H=4, seed=0):
    rng = np.random.default_rng(seed)
    cell = Cell(3, H)
    return kpref.linearize(cell, cell.init_params(rng, g=1.0), rng.standard_normal((B, T, 3)))


def _reduced_reference(A, shape, keep, reduction):
    """D over the kept axes from the kernel of A Aᵀ reshaped to shape + shape (einsum; module notes)."""
    nd = len(shape)
    M = (A @ A.T).reshape(shape + shape)
    letters = "abcdefghij"
    row, col = list(letters[:nd]), list(letters[nd:2 * nd])
    for a in range(nd):
        if a not in keep and reduction == "partial_trace":
            col[a] = row[a]
    out = "".join(row[a] for a in keep) + "".join(col[a] for a in keep)
    D = np.einsum(f"{''.join(row)}{''.join(col)}->{out}", M)
    n = int(np.prod([shape[a] for a in keep]))
    return D.reshape(n, n)


def _pr(D):
    lam = np.linalg.eigvalsh(D)
    return lam.sum() ** 2 / np.sum(lam * lam)


# ------------------------------------------------------------------ effective dimension, both reductions
@given(SHAPES, st.integers(1, 5), st.integers(0, 2**31), st.sampled_from([0, 1, 2]),
       st.sampled_from(["partial_trace", "marginal"]))
def test_effective_dimension_against_the_kernel_formula(shape, cols, seed, axis, reduction):
    n = int(np.prod(shape))
    A = np.random.default_rng(seed).standard_normal((n, cols))
    D = _reduced_reference(A, shape, (axis,), reduction)
    assume(np.trace(D) > 1e-8)
    got = effective_dimension(A, shape, axis, reduction=reduction)
    # both sides are a ratio of sums of O(n·cols) products: rounding ~1e-15 relative per sum
    assert got == pytest.approx(_pr(D), rel=1e-11)


@given(SHAPES, st.integers(0, 2**31), st.sampled_from([0, 1, 2]))
def test_package_effdim_is_the_pr_of_the_marginal_sum(shape, seed, axis):
    """The stated relation: effdim_marginal(A) = PR(marginal_sum(A Aᵀ) over the other axes) = n_a cos(D, I)²."""
    assume(len([s for i, s in enumerate(shape) if i != axis]) > 0)
    n = int(np.prod(shape))
    A = np.random.default_rng(seed).standard_normal((n, 4))
    others = tuple(i for i in range(3) if i != axis)
    D = kpref.todense(marginal_sum(A @ A.T, shape, others))
    assume(np.trace(D) > 1e-8)
    value = effective_dimension(A, shape, axis, reduction="marginal")
    assert value == pytest.approx(participation_ratio(D), rel=1e-11)
    cos = np.trace(D) / (np.linalg.norm(D) * np.sqrt(D.shape[0]))       # the package's n · cos(D, I)²
    assert value == pytest.approx(D.shape[0] * cos**2, rel=1e-11)
    Dpt = kpref.todense(partial_trace(A @ A.T, shape, others))
    assert effective_dimension(A, shape, axis) == pytest.approx(participation_ratio(Dpt), rel=1e-11)


def test_the_two_definitions_differ_on_K_over_batch():
    lin = _lin()
    pt = effective_dimension(lin.K, lin.shape, "batch")
    mg = effective_dimension(lin.K, lin.shape, "batch", reduction="marginal")
    assert abs(pt - mg) > 0.1 * pt           # K couples the trials: a different number


def test_marginal_of_a_batch_block_diagonal_gram_equals_partial_trace():
    """When A Aᵀ is block diagonal in the other axes (here: A = I ⊗ a over time, hidden), both reductions agree."""
    rng = np.random.default_rng(3)
    shape = (4, 1, 1)
    A = rng.standard_normal((4, 6))
    assert effective_dimension(A, shape, "batch", reduction="marginal") == pytest.approx(
        effective_dimension(A, shape, "batch"), rel=1e-13)


@pytest.mark.parametrize("reduction", ["partial_trace", "marginal"])
def test_hutchinson_marginal_near_exact(reduction):
    lin = _lin(B=3, T=4, H=3)
    exact = effective_dimensions(lin, operators=("K", "NTK"), reduction=reduction)
    est = effective_dimensions(lin, operators=("K", "NTK"), method="hutchinson", n_probes=400, rng=1,
                               return_error=True, reduction=reduction)
    for op in ("K", "NTK"):
        for a in AXES:
            value, err = est[op][a]
            # jackknife standard error plus the O(1/s) bias of the ratio: 5 standard errors + 5/s relative
            assert abs(value - exact[op][a]) <= 5 * err + 5.0 / 400 * exact[op][a], (op, a, value, exact[op][a])
    other = "marginal" if reduction == "partial_trace" else "partial_trace"
    wrong = effective_dimensions(lin, operators=("K",), axes=("batch",), reduction=other)["K"]["batch"]
    value, err = est["K"]["batch"]
    assert abs(value - wrong) > 5 * err      # the estimator tracks its own definition, not the other one


def test_reduction_is_refused_when_unknown():
    with pytest.raises(ValueError, match="reduction"):
        effective_dimension(np.eye(4), (2, 2, 1), "batch", reduction="mean")
    with pytest.raises(ValueError, match="reduction"):
        effective_dimensions(_lin(), reduction="sum")


# ------------------------------------------------------------------ reduced Gram, operator effective rank
@given(SHAPES, st.integers(0, 2**31), st.sampled_from([0, 1, 2, (0, 1), (0, 2), (1, 2)]),
       st.sampled_from(["partial_trace", "marginal"]))
def test_reduced_gram_against_einsum(shape, seed, keep, reduction):
    n = int(np.prod(shape))
    A = np.random.default_rng(seed).standard_normal((n, 3))
    keep_t = keep if isinstance(keep, tuple) else (keep,)
    expected = _reduced_reference(A, shape, keep_t, reduction)
    got = reduced_gram(A, shape, keep, reduction)
    assert np.allclose(got, expected, rtol=1e-13, atol=1e-13 * np.abs(A).sum() ** 2)


def _variance_count(lam, q):
    lam = np.sort(lam)[::-1]
    total = lam.sum()
    for r in range(1, lam.size + 1):
        if lam[:r].sum() >= q * total:
            return r
    return lam.size


@given(SHAPES, st.integers(0, 2**31), st.sampled_from([0, 1, 2, (1, 2)]),
       st.sampled_from(["partial_trace", "marginal"]), st.sampled_from([0.5, 0.9, 0.95]))
def test_operator_effective_rank_against_the_count(shape, seed, keep, reduction, q):
    n = int(np.prod(shape))
    A = np.random.default_rng(seed).standard_normal((n, 5)) * np.logspace(0, -2, 5)
    keep_t = keep if isinstance(keep, tuple) else (keep,)
    lam = np.linalg.eigvalsh(_reduced_reference(A, shape, keep_t, reduction))
    assume(lam.max() > 1e-8)
    cum = np.cumsum(np.sort(lam)[::-1]) / lam.sum()
    assume(np.all(np.abs(cum - q) > 1e-9))          # no tie at the threshold (rounding decides it)
    assert operator_effective_rank(A, shape, keep, q, reduction) == _variance_count(lam, q)


def test_operator_effective_rank_hand_values_and_all_axes():
    # D = diag(10, 1, 1, 1) over the kept axis: 10/13 < 0.95, 12/13 < 0.95, 13/13 → 4; at q = 0.75: 1
    A = np.diag(np.sqrt([10.0, 1.0, 1.0, 1.0]))
    assert operator_effective_rank(A, (4, 1, 1), "batch") == 4
    assert operator_effective_rank(A, (4, 1, 1), "batch", q=0.75) == 1
    B = np.random.default_rng(0).standard_normal((12, 7))
    assert operator_effective_rank(B) == variance_rank(B)
    with pytest.raises(ValueError, match="shape"):
        operator_effective_rank(B, keep="batch")
    with pytest.raises(ValueError, match="zero"):
        operator_effective_rank(np.zeros((4, 2)), (4, 1, 1), "batch")


# ------------------------------------------------------------------ misdirection
def test_misdirection_is_the_alignment_of_ntk_with_pp_star():
    lin = _lin(B=2, T=3, H=3)
    N = kpref.todense(lin.NTK)
    P = kpref.todense(lin.P)
    Q = P @ P.T
    assert np.allclose(kpref.todense(pp_star(lin)), Q, rtol=1e-13, atol=1e-13 * np.abs(Q).max())
    expected = np.trace(N @ Q) / (np.linalg.norm(N) * np.linalg.norm(Q))
    assert misdirection(lin) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < expected < 1.0
    # not the alignment with P itself (a different operator)
    assert abs(misdirection(lin) - alignment(lin.NTK, lin.P)) > 1e-3
    value, err = misdirection(lin, "hutchinson", n_probes=300, rng=0, return_error=True)
    assert abs(value - expected) <= 5 * err    # delta-method standard error of the ratio estimator


# ------------------------------------------------------------------ g conventions
@pytest.mark.parametrize("Cell", [kpref.Elman, kpref.GRU, kpref.LSTM])
def test_kpflow_gain_scales_torch_uniform_recurrent_draw(Cell):
    cell = Cell(2, 8)
    base = cell.init_params(5)
    kp = cell.init_params(5, g=0.3, g_convention="kpflow")
    sl = cell.param_slices()["weight_hh"]
    assert np.array_equal(kp[sl], 0.3 * base[sl])
    rest = np.ones(cell.num_params, bool)
    rest[sl] = False
    assert np.array_equal(kp[rest], base[rest])
    gauss = cell.init_params(5, g=0.3)
    assert np.array_equal(gauss, cell.init_params(5, g=0.3, g_convention="gaussian"))
    assert not np.array_equal(gauss[sl], kp[sl])
    assert np.array_equal(gauss[rest], base[rest])


def test_gain_convention_spreads():
    cell = kpref.Elman(1, 400)
    sl = cell.param_slices()["weight_hh"]
    kp = cell.init_params(0, g=2.0, g_convention="kpflow")[sl]
    ga = cell.init_params(0, g=2.0)[sl]
    H = 400
    # 160 000 draws: the sample std is within 1 % of its value (relative s.e. ≈ 1/√(2n) ≈ 0.2 %)
    assert kp.std() == pytest.approx(2.0 / np.sqrt(3 * H), rel=0.01)
    assert ga.std() == pytest.approx(2.0 / np.sqrt(H), rel=0.01)
    with pytest.raises(ValueError, match="g_convention"):
        cell.init_params(0, g=1.0, g_convention="torch")


# ------------------------------------------------------------------ eigenfunctions
@pytest.mark.parametrize("name", ["K", "NTK", "PP*"])
def test_eigenpairs_of_trajectory_operators(name):
    lin = _lin(B=2, T=3, H=3)
    op = pp_star(lin) if name == "PP*" else getattr(lin, name)
    M = kpref.todense(op)
    res = eigenpairs(op, 4, shape=lin.shape)
    assert res.vectors.shape == (4,) + lin.shape
    lam = np.sort(np.linalg.eigvalsh(0.5 * (M + M.T)))[::-1][:4]
    scale = np.abs(lam).max()
    assert np.allclose(res.values, lam, rtol=0, atol=1e-12 * scale)
    U = res.vectors.reshape(4, -1).T
    assert np.allclose(M @ U, U * res.values, atol=1e-11 * scale)
    assert np.all(res.residuals <= 1e-11 * scale)
    assert np.allclose(U.T @ U, np.eye(4), atol=1e-12)
    for u in U.T:                                 # sign convention
        assert u[np.argmax(np.abs(u))] > 0


def test_eigenpairs_of_reductions_have_the_kept_shape():
    lin = _lin(B=3, T=4, H=3)
    red = partial_trace(lin.K, lin.shape, ("batch", "hidden"))
    res = eigenpairs(red, 2)
    assert res.vectors.shape == (2, 4) and res.residuals.max() <= 1e-11 * res.values[0]
    D = reduced_gram(lin.NTK, lin.shape, ("time", "hidden"), "marginal")
    res = eigenpairs(D, 3, shape=(4, lin.shape[2]))
    assert res.vectors.shape == (3, 4, lin.shape[2])
    assert np.allclose(res.values, np.sort(np.linalg.eigvalsh(D))[::-1][:3], atol=1e-12 * np.abs(D).max())


def test_lanczos_agrees_with_dense_and_residuals_catch_a_wrong_route():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    lam = np.concatenate([[10.0, 8.0, 6.0], np.linspace(1.0, 0.1, 57)])
    M = (Q * lam) @ Q.T
    d = eigenpairs(M, 3, method="dense")
    lz = eigenpairs(M, 3, method="lanczos", rng=1)
    assert np.allclose(d.values, lz.values, atol=1e-9)
    assert np.allclose(d.vectors, lz.vectors, atol=1e-6)     # same signs: the convention is deterministic
    name = "test_wrong_route"
    from kpref.analysis import EIGEN_METHODS
    try:
        register_eigen_method(name, lambda chk, k, which, tol, r, ml: (np.ones(k), np.eye(chk.shape[0])[:, :k]))
        wrong = eigenpairs(M, 3, method=name)
        assert wrong.residuals.max() > 1.0
    finally:
        EIGEN_METHODS.pop(name, None)


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_singular_triplets_of_P(method):
    lin = _lin(B=2, T=3, H=3)
    P = kpref.todense(lin.P)
    res = singular_triplets(lin.P, 3, in_shape=lin.shape, out_shape=lin.shape, method=method, rng=0)
    s = np.linalg.svd(P, compute_uv=False)[:3]
    assert np.allclose(res.values, s, rtol=1e-9)
    U, V = res.left.reshape(3, -1).T, res.right.reshape(3, -1).T
    assert np.allclose(P @ V, U * res.values, atol=1e-8 * s[0])
    assert np.allclose(P.T @ U, V * res.values, atol=1e-8 * s[0])
    assert np.all(res.residuals <= 1e-8 * s[0])
    for u in U.T:
        assert u[np.argmax(np.abs(u))] > 0


def test_eigen_bad_input():
    with pytest.raises(ValueError, match="shape"):
        eigenpairs(np.eye(6), 2, shape=(2, 2))
    with pytest.raises(ValueError, match="k"):
        eigenpairs(np.eye(6), 7)
    with pytest.raises(ValueError, match="symmetric"):
        eigenpairs(np.triu(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match="method"):
        eigenpairs(np.eye(4), 2, method="magic")
    with pytest.raises(ValueError, match="k"):
        singular_triplets(np.ones((3, 5)), None, method="lanczos")

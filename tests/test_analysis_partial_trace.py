"""kpref.analysis partial traces, marginal sums and effective dimensions against einsum of the
reshaped dense kernel, and on real linearizations (P block diagonal in batch, K not)."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy.sparse.linalg import LinearOperator, aslinearoperator

import kpref
from kpref.analysis import (effective_dimension, effective_dimensions, marginal_sum, participation_ratio,
                            partial_trace)
from kpref.testing import dottest

AXES = ("batch", "time", "hidden")
Z = 5.0


def _reference(M, shape, axes, kind, reduction):
    """Dense reference: the kernel M[(b,t,i),(b',t',j)] reshaped and contracted with einsum/trace/sum."""
    nd = len(shape)
    K = M.reshape(shape + shape)
    letters = "abcdefghijkl"
    row, col = list(letters[:nd]), list(letters[nd:2 * nd])
    for a in axes:
        if kind == "partial_trace":
            col[a] = row[a]                   # the diagonal in a
    out_row = "".join(row[i] for i in range(nd) if i not in axes)
    out_col = "".join(col[i] for i in range(nd) if i not in axes)
    R = np.einsum(f"{''.join(row)}{''.join(col)}->{out_row}{out_col}", K)
    n_kept = int(np.prod([shape[i] for i in range(nd) if i not in axes]))
    R = R.reshape(n_kept, n_kept)
    if reduction == "mean":
        R = R / np.prod([shape[a] for a in axes])
    return R


def _dense(op):
    return op.matmat(np.eye(op.shape[1]))


@given(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3)), st.integers(0, 2**31),
       st.sampled_from(["partial_trace", "marginal_sum"]), st.sampled_from(["sum", "mean"]),
       st.sampled_from([0, 1, 2, (0, 1), (0, 2), (1, 2)]))
def test_against_einsum_of_the_kernel(shape, seed, kind, reduction, axis):
    n = int(np.prod(shape))
    M = np.random.default_rng(seed).standard_normal((n, n))
    f = partial_trace if kind == "partial_trace" else marginal_sum
    op = f(M, shape, axis, reduction)
    axes = axis if isinstance(axis, tuple) else (axis,)
    expected = _reference(M, shape, axes, kind, reduction)
    assert op.shape == expected.shape
    assert np.allclose(_dense(op), expected, rtol=1e-13, atol=1e-13 * np.abs(M).sum())
    assert np.allclose(op.H.matmat(np.eye(op.shape[0])), expected.T, rtol=1e-13, atol=1e-13 * np.abs(M).sum())
    dottest(op, rng=seed, n_pairs=2)


def test_axis_names_chunking_and_block_products():
    shape = (3, 4, 2)
    M = np.random.default_rng(1).standard_normal((24, 24))
    calls = []

    def matmat(X):
        calls.append(X.shape[1])
        return M @ X

    op = LinearOperator((24, 24), matvec=lambda x: M @ x, matmat=matmat, rmatmat=lambda X: M.T @ X,
                        dtype=np.float64)
    for name, idx in zip(AXES, range(3)):
        assert np.array_equal(_dense(partial_trace(M, shape, name)), _dense(partial_trace(M, shape, idx)))
    # 5 vectors through the batch partial trace: one product with 3·5 vectors; marginal sum: 5 vectors
    partial_trace(op, shape, "batch").matmat(np.ones((8, 5)))
    marginal_sum(op, shape, "batch").matmat(np.ones((8, 5)))
    assert calls == [15, 5]
    # a memory limit that admits one traced index at a time: chunks, same answer
    small = partial_trace(M, shape, "batch", memory_limit=16 * 24 * 8)
    assert np.allclose(_dense(small), _dense(partial_trace(M, shape, "batch")), rtol=1e-15, atol=1e-14)


def test_partial_trace_and_marginal_sum_on_K_and_P():
    """SPEC §5: equal for P (block diagonal in batch), different for K (parameters couple trials)."""
    rng = np.random.default_rng(0)
    cell = kpref.GRU(input_size=2, hidden_size=3)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((3, 4, 2)))
    for M, equal in ((lin.P, True), (lin.K, False), (lin.NTK, False)):
        pt = kpref.todense(partial_trace(M, lin.shape, "batch"))
        ms = kpref.todense(marginal_sum(M, lin.shape, "batch"))
        dense = kpref.todense(M)
        assert np.allclose(pt, _reference(dense, lin.shape, (0,), "partial_trace", "sum"), rtol=1e-12, atol=1e-12)
        assert np.allclose(ms, _reference(dense, lin.shape, (0,), "marginal_sum", "sum"), rtol=1e-12, atol=1e-12)
        gap = np.linalg.norm(pt - ms) / np.linalg.norm(pt)
        assert (gap < 1e-14) if equal else (gap > 0.1)
    # with one trial the two coincide for every operator
    lin1 = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((1, 4, 2)))
    assert np.allclose(kpref.todense(partial_trace(lin1.K, lin1.shape, "batch")),
                       kpref.todense(marginal_sum(lin1.K, lin1.shape, "batch")), rtol=1e-14, atol=1e-14)


def test_partial_trace_bad_input():
    M = np.eye(24)
    with pytest.raises(ValueError, match="shape: expected sizes whose product"):
        partial_trace(M, (2, 3, 5), "batch")
    with pytest.raises(TypeError, match="shape"):
        partial_trace(M, 24, 0)
    with pytest.raises(ValueError, match="axis: expected one of"):
        partial_trace(M, (2, 3, 4), "space")
    with pytest.raises(ValueError, match="axis: expected an axis in"):
        partial_trace(M, (2, 3, 4), 3)
    with pytest.raises(TypeError, match="axis"):
        partial_trace(M, (2, 3, 4), 1.0)
    with pytest.raises(ValueError, match="axis: tracing every axis"):
        marginal_sum(M, (2, 3, 4), (0, 1, 2))
    with pytest.raises(ValueError, match="axis: expected distinct"):
        marginal_sum(M, (2, 3, 4), (0, "batch"))
    with pytest.raises(ValueError, match="reduction"):
        marginal_sum(M, (2, 3, 4), 0, "avg")
    with pytest.raises(ValueError, match="axis names"):
        partial_trace(M, (4, 6), "time")
    with pytest.raises(ValueError, match="op: expected a square"):
        partial_trace(np.ones((24, 3)), (2, 3, 4), 0)


# ------------------------------------------------------------------------ effective dimension


def _dimension_by_partial_traces(A, shape, axis):
    """PR of tr_{other two axes}(A Aᵀ), through the public partial trace."""
    AAt = aslinearoperator(A) @ aslinearoperator(A.T)
    others = tuple(i for i in range(3) if i != axis)
    return participation_ratio(_dense(partial_trace(AAt, shape, others)))


@given(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3)), st.integers(1, 7), st.integers(0, 2**31))
def test_effective_dimension_is_the_pr_of_the_partial_trace(shape, n_cols, seed):
    A = np.random.default_rng(seed).standard_normal((int(np.prod(shape)), n_cols))
    for axis in range(3):
        expected = _dimension_by_partial_traces(A, shape, axis)
        assert effective_dimension(A, shape, axis) == pytest.approx(expected, rel=1e-12)
        assert 1.0 - 1e-12 <= expected <= shape[axis] + 1e-12


def test_effective_dimension_examples():
    # A = u ⊗ I_T ⊗ w (rank-one in batch and hidden, identity in time): 1, T and 1
    B, T, H = 3, 5, 2
    A = np.kron(np.kron(np.ones((B, 1)), np.eye(T)), np.array([[1.0], [2.0]]))
    dims = [effective_dimension(A, (B, T, H), a) for a in AXES]
    assert dims == pytest.approx([1.0, 5.0, 1.0], rel=1e-14)


def test_effective_dimensions_of_a_linearization():
    rng = np.random.default_rng(2)
    cell = kpref.Elman(input_size=2, hidden_size=4)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((3, 6, 2)))
    dims = effective_dimensions(lin)
    assert set(dims) == {"K", "P", "NTK"} and all(set(d) == set(AXES) for d in dims.values())
    for name in ("K", "P", "NTK"):
        dense = kpref.todense(getattr(lin, name))
        for a, axis in enumerate(AXES):
            assert dims[name][axis] == pytest.approx(_dimension_by_partial_traces(dense, lin.shape, a), rel=1e-11)
    sub = effective_dimensions(lin, operators=("P",), axes=("time",), return_error=True)
    assert sub == {"P": {"time": (pytest.approx(dims["P"]["time"], rel=1e-14), 0.0)}}


def test_randomized_effective_dimension():
    """U-statistic estimate of tr(D²): consistent ratio with O(1/s) bias; its jackknife error has the
    right size."""
    rng = np.random.default_rng(3)
    shape = (4, 6, 5)
    A = rng.standard_normal((120, 40)) @ np.diag(np.arange(1, 41) ** -0.5)
    exact = {a: effective_dimension(A, shape, a) for a in range(3)}
    reps, s = 100, 30
    for a in range(3):
        out = np.array([effective_dimension(A, shape, a, "hutchinson", s, seed, return_error=True)
                        for seed in range(reps)])
        spread = out[:, 0].std(ddof=1)
        assert abs(out[:, 0].mean() - exact[a]) <= Z * spread / np.sqrt(reps) + 2 * spread ** 2 / exact[a]
        assert spread / 2 <= np.median(out[:, 1]) <= 2 * spread


def test_effective_dimension_bad_input():
    A = np.ones((24, 3))
    with pytest.raises(ValueError, match="n_probes, rng"):
        effective_dimension(A, (2, 3, 4), "time", n_probes=10)
    with pytest.raises(ValueError, match="method"):
        effective_dimension(A, (2, 3, 4), "time", "xtrace")
    with pytest.raises(ValueError, match="zero operator"):
        effective_dimension(np.zeros((24, 3)), (2, 3, 4), "time")
    with pytest.raises(TypeError, match="lin"):
        effective_dimensions(A)
    lin = kpref.linearize(kpref.Elman(1, 2), kpref.Elman(1, 2).init_params(0), np.zeros((1, 2, 1)))
    with pytest.raises(ValueError, match="operators"):
        effective_dimensions(lin, operators=("Q",))
    with pytest.raises(TypeError, match="operators, axes"):
        effective_dimensions(lin, operators="K")


def test_exact_effective_dimension_streams_every_column_block():
    """A memory limit that streams the identity in blocks of 2 columns gives the one-block answer (a Gram
    that kept only the last block survived mutation testing: every other test fits one block)."""
    from kpref.analysis import effective_dimension

    rng = np.random.default_rng(21)
    shape = (3, 4, 2)
    n = int(np.prod(shape))
    A = rng.standard_normal((n, n))
    for axis in ("batch", "time", "hidden"):
        one_block = effective_dimension(A, shape, axis)
        a = ("batch", "time", "hidden").index(axis)
        Y = np.moveaxis(A.reshape(shape + (n,)), a, 0).reshape(shape[a], -1)
        D = Y @ Y.T                                   # tr over the other axes of A Aᵀ (module notes)
        lam = np.linalg.eigvalsh(D)
        assert one_block == pytest.approx(lam.sum() ** 2 / np.sum(lam * lam), rel=1e-12, abs=0)
        assert effective_dimension(A, shape, axis, memory_limit=8 * n * 3 * 2) == pytest.approx(one_block, rel=1e-12, abs=0)


def test_randomized_effective_dimension_and_its_jackknife_error_are_their_formulas():
    """On the same Rademacher probes ω_k (the estimator's draws): with D_k = tr_{others}(Aω_k ω_kᵀAᵀ),
    a_k = tr D_k, G_kl = ⟨D_k, D_l⟩, the value is (Σa/s)² / (Σ_{k≠l} G_kl / (s(s−1))) and the error the
    jackknife of the leave-one-out values, √((s−1)/s · Σ_j (loo_j − mean loo)²) (its leave-one-out mean
    survived mutation testing)."""
    from kpref.analysis import effective_dimension

    shape, s = (3, 4, 2), 12
    n = int(np.prod(shape))
    A = np.random.default_rng(22).standard_normal((n, n))
    for a, axis in enumerate(("batch", "time", "hidden")):
        value, err = effective_dimension(A, shape, axis, "hutchinson", n_probes=s, rng=7, return_error=True)
        W = np.random.default_rng(7).integers(0, 2, size=(n, s)).astype(float) * 2.0 - 1.0
        Y = (A @ W).reshape(shape + (s,))
        Ya = np.moveaxis(Y, (len(shape), a), (0, 1)).reshape(s, shape[a], -1)
        D = np.einsum("kir,kjr->kij", Ya, Ya).reshape(s, -1)
        ak = D.reshape(s, shape[a], shape[a]).trace(axis1=1, axis2=2)
        G = D @ D.T
        off = G.sum() - np.trace(G)
        row = G.sum(axis=1) - np.diag(G)
        expected = (ak.sum() / s) ** 2 / (off / (s * (s - 1)))
        loo = ((ak.sum() - ak) / (s - 1)) ** 2 / ((off - 2 * row) / ((s - 1) * (s - 2)))
        assert value == pytest.approx(expected, rel=1e-12, abs=0)
        assert err > 0 and err == pytest.approx(np.sqrt((s - 1) / s * np.sum((loo - loo.mean()) ** 2)), rel=1e-10, abs=0)

"""Issue 14 §1: no silent wrong result (snapshots, refusals, derived operators, non-finite results).

Each test reproduces one reported failure (or a further instance of its
class) through the public API and asserts the error that replaces the silent
wrong answer, or the answer that no longer changes.
"""

import numpy as np
import pytest
import scipy.sparse
from scipy.sparse.linalg import aslinearoperator

import kpref
from kpref import analysis


def _gru_problem(H=40, B=2, T=6, seed=0):
    rng = np.random.default_rng(seed)
    cell = kpref.GRU(3, H)
    return cell, cell.init_params(rng), rng.standard_normal((B, T, 3)), rng


# ------------------------------------------------------------ snapshots
@pytest.mark.parametrize("strategy", ["matrix_free", "materialized"])
def test_linearization_is_a_snapshot(strategy):
    """``theta -= lr * lin.grad(e)`` (the issue's example) must not change ``lin``: θ, x, h0 are copied."""
    cell, theta, x, rng = _gru_problem(H=40 if strategy == "matrix_free" else 8)
    h0 = rng.standard_normal((2, cell.state_size))
    lin = kpref.linearize(cell, theta, x, h0, strategy=strategy)
    e = rng.standard_normal(lin.shape)
    g1 = lin.grad(e)
    v = rng.standard_normal(lin.size)
    k1 = lin.K @ v
    theta -= 0.5 * g1
    x *= 2.0
    h0 += 1.0
    assert np.array_equal(lin.grad(e), g1)           # bitwise: nothing the caller holds is used
    assert np.array_equal(lin.K @ v, k1)
    for arr in lin.point.cache + (lin.point.theta, lin.point.h, lin.point.x):
        assert not arr.flags.writeable
    for name in ("theta", "x", "h0", "z"):
        arr = getattr(lin, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[...] = 0.0


def test_step_point_is_a_snapshot_and_is_owned_by_its_cell():
    cell, theta, _, rng = _gru_problem(H=4)
    h, x = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    pt = cell.point(theta, h, x)
    V = rng.standard_normal((2, 3, 4))
    before = cell.state_jvp(pt, V)
    theta[:] = 0.0
    h[:] = 0.0
    assert np.array_equal(cell.state_jvp(pt, V), before)
    # a point built by another cell (same sizes, another kind) is refused, never truncated
    other = kpref.LSTM(3, 2)        # S = 4 as well
    pt_lstm = other.point(other.init_params(0), rng.standard_normal((3, 4)), x)
    with pytest.raises(ValueError, match="pt: expected a StepPoint built by this cell"):
        cell.state_jvp(pt_lstm, V)
    with pytest.raises(ValueError, match="pt: expected a StepPoint built by this cell"):
        cell.param_vjp(pt_lstm, V)
    # a hand-built point is checked for its shapes
    bad = kpref.StepPoint(np.zeros(cell.num_params - 1), pt.h, pt.x, pt.cache)
    with pytest.raises(ValueError, match=r"pt: expected a StepPoint of GRU"):
        cell.state_jvp(bad, V)


def test_partial_trace_does_not_alias_a_dense_input():
    M = np.random.default_rng(0).standard_normal((12, 12))
    M = M @ M.T
    pt = analysis.partial_trace(M, (2, 3, 2), "batch")
    before = kpref.todense(pt)
    M[:] = 0.0
    assert np.array_equal(kpref.todense(pt), before)


# ------------------------------------------------ the public constructor
def test_linearization_constructor_checks_its_input():
    cell, theta, x, rng = _gru_problem(H=5)
    lin = kpref.linearize(cell, theta, x)
    same = kpref.Linearization(cell, theta, x, None, lin.z)
    e = rng.standard_normal(lin.shape)
    assert np.array_equal(same.grad(e), lin.grad(e))
    with pytest.raises(ValueError, match=r"z: expected the trajectory of cell .* trial 1, step 3"):
        z = np.array(lin.z)
        z[1, 3, 2] += 1e-6
        kpref.Linearization(cell, theta, x, None, z)
    with pytest.raises(ValueError, match=r"z: expected shape"):
        kpref.Linearization(cell, theta, x, None, lin.z[:, :-1])
    with pytest.raises(TypeError, match="cell: expected a kpref cell"):
        kpref.Linearization("GRU", theta, x, None, lin.z)
    with pytest.raises(ValueError, match="strategy: expected one of"):
        kpref.Linearization(cell, theta, x, None, lin.z, strategy="dense")
    with pytest.raises(ValueError, match="memory_limit"):
        kpref.Linearization(cell, theta, x, None, lin.z, memory_limit=float("nan"))


# -------------------------------------------- symmetric-only routes refuse
@pytest.mark.parametrize("method", ["arpack", "lanczos"])
def test_symmetric_routes_refuse_a_non_symmetric_operator(method):
    """P has every eigenvalue 1; ARPACK returned 2.55, 1.90, 1.60 for it. Now refused up front."""
    cell, theta, x, _ = _gru_problem(H=8, B=4, T=20)
    lin = kpref.linearize(cell, theta, x)
    with pytest.raises(ValueError, match=rf"op: expected a symmetric operator \(spectrum\(method='{method}'\)"):
        analysis.spectrum(lin.P, k=3, method=method)
    # the symmetric operators of the same linearization pass and agree with the dense route
    dense = analysis.spectrum(lin.K, k=3, method="dense")
    assert np.allclose(analysis.spectrum(lin.K, k=3, method=method, rng=0), dense, rtol=1e-8, atol=0)


def test_block_lanczos_refuses_a_non_symmetric_or_broken_product():
    A = np.triu(np.ones((60, 60)))
    with pytest.raises(ValueError, match=r"matmat: expected a symmetric operator"):
        analysis.block_lanczos(lambda X: A @ X, 60, 2)
    with pytest.raises(ValueError, match=r"matmat: expected a real float block of shape"):
        analysis.block_lanczos(lambda X: X[:-1], 60, 2)
    with pytest.raises(ValueError, match=r"matmat: expected a finite product"):
        analysis.block_lanczos(lambda X: X * np.nan, 60, 2)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_randomized_participation_ratio_refuses_what_the_exact_one_refuses(method):
    n = 60
    indefinite = np.diag(np.r_[np.ones(n // 2), -np.ones(n // 2)])
    nonsym = np.triu(np.ones((n, n)))
    for M, what in ((indefinite, "positive semidefinite"), (nonsym, "symmetric")):
        with pytest.raises(ValueError, match=f"op: expected a {what} operator"):
            analysis.participation_ratio(M, method="exact")
        with pytest.raises(ValueError, match=f"op: expected a {what} operator"):
            analysis.participation_ratio(M, method=method, n_probes=30, rng=0)
    # a PSD operator is never refused (the probe is a sufficient test only)
    G = np.random.default_rng(1).standard_normal((n, 5))
    assert analysis.participation_ratio(G @ G.T, method=method, n_probes=30, rng=0) > 1.0


# ----------------------------------------------- size-like arguments
def test_todense_block_is_checked():
    """``todense(op, block=-1)`` returned uninitialized memory."""
    op = aslinearoperator(np.eye(5))
    for bad, exc in ((-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError), ("4", TypeError)):
        with pytest.raises(exc, match="block: expected an integer >= 1"):
            kpref.todense(op, block=bad)
    assert np.array_equal(kpref.todense(op, block=2), np.eye(5))


@pytest.mark.parametrize("bad,exc", [(float("nan"), ValueError), (-1, ValueError), (0, ValueError),
                                     (float("inf"), ValueError), ("1e9", TypeError), (True, TypeError),
                                     ([1], TypeError)])
def test_memory_limit_is_checked_everywhere(bad, exc):
    """NaN switched the limit off; negative and string values failed later with another message."""
    cell, theta, x, _ = _gru_problem(H=3)
    lin = kpref.linearize(cell, theta, x)
    M = kpref.todense(lin.K)
    calls = [
        lambda: kpref.linearize(cell, theta, x, memory_limit=bad),
        lambda: kpref.todense(lin.K, memory_limit=bad),
        lambda: lin.state_jacobians(memory_limit=bad),
        lambda: lin.kronecker_factors(memory_limit=bad),
        lambda: analysis.spectrum(M, memory_limit=bad),
        lambda: analysis.singular_values(M, memory_limit=bad),
        lambda: analysis.participation_ratio(M, memory_limit=bad),
        lambda: analysis.effective_rank(M, method="hutchinson", n_probes=4, rng=0, memory_limit=bad),
        lambda: analysis.variance_rank(M, memory_limit=bad),
        lambda: analysis.trace(M, method="hutchinson", n_probes=4, rng=0, memory_limit=bad),
        lambda: analysis.frobenius_norm(M, memory_limit=bad),
        lambda: analysis.alignment(M, M, memory_limit=bad),
        lambda: analysis.partial_trace(M, lin.shape, "batch", memory_limit=bad),
        lambda: analysis.marginal_sum(M, lin.shape, "batch", memory_limit=bad),
        lambda: analysis.effective_dimension(M, lin.shape, "time", memory_limit=bad),
        lambda: analysis.effective_dimensions(lin, memory_limit=bad),
        lambda: analysis.block_lanczos(lambda X: X, 40, 2, memory_limit=bad),
    ]
    for call in calls:
        with pytest.raises(exc, match="memory_limit: expected"):
            call()


# -------------------------------------------- every derived operator checks
def _derived_operators():
    cell, theta, x, _ = _gru_problem(H=3, B=2, T=3)
    lin = kpref.linearize(cell, theta, x)
    ops = {}
    for name in ("P", "P_inv", "J_theta", "K", "NTK"):
        op = getattr(lin, name)
        ops[name] = op
        ops[name + ".T"] = op.T
        ops[name + ".transpose()"] = op.transpose()
        ops[name + ".H"] = op.H
        ops[name + ".H.H"] = op.H.H
        ops[name + ".T.T"] = op.T.T
    for kind in ("partial_trace", "marginal_sum"):
        red = getattr(analysis, kind)(lin.K, lin.shape, "batch")
        ops[kind] = red
        ops[kind + ".T"] = red.T
        ops[kind + ".H"] = red.H
        ops[kind + " of a dense array"] = getattr(analysis, kind)(kpref.todense(lin.NTK), lin.shape, "time")
    return ops


@pytest.mark.parametrize("entry", ["matvec", "rmatvec", "matmat", "rmatmat", "@", "dot", "call"])
def test_every_derived_operator_checks_its_input(entry):
    """``.T``/``.transpose()`` and the partial-trace operators skipped the checks that ``.matvec`` applies."""
    for label, op in _derived_operators().items():
        n = op.shape[0] if entry.startswith("r") else op.shape[1]
        block = entry in ("matmat", "rmatmat")

        def apply(v):
            if entry == "@":
                return op @ v
            if entry == "dot":
                return op.dot(v)
            if entry == "call":
                return op(v)
            return getattr(op, entry)(v)

        good = np.ones((n, 2)) if block else np.ones(n)
        assert np.isfinite(apply(good)).all()
        nan = good.copy()
        nan[0] = np.nan
        for bad, exc, what in ((nan, ValueError, "finite"), (good.astype(np.int64), TypeError, "int64"),
                               (good + 1j, TypeError, "complex"), (good.astype(object), TypeError, "object"),
                               (np.ones(n + 1), ValueError, f"length {n}")):
            with pytest.raises(exc, match=what):
                apply(bad)
            assert label  # for the message of a failure above


def test_todense_checks_the_operator():
    with pytest.raises(TypeError, match="op: expected a real floating LinearOperator, got dtype complex128"):
        kpref.todense(aslinearoperator(np.eye(3) * 1j))
    with pytest.raises(TypeError, match="op: expected a real floating array, got dtype int64"):
        kpref.todense(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"op: matmat returned \d+ non-finite values"), np.errstate(invalid="ignore"):
        kpref.todense(aslinearoperator(np.diag([1.0, np.inf, 1.0])) * 1.0)
    sp = scipy.sparse.eye(3, format="csr")
    assert np.array_equal(kpref.todense(sp), np.eye(3))
    M = np.eye(3)
    D = kpref.todense(M)
    D[0, 0] = 7.0
    assert M[0, 0] == 1.0                          # a fresh copy, never the caller's array


# -------------------------------------------------- non-finite results
def test_non_finite_results_raise():
    """Linear at g = 50 simulated to inf/NaN silently, and mse_loss overflowed to inf."""
    rng = np.random.default_rng(0)
    cell = kpref.Linear(3, 20)
    theta = cell.init_params(0, g=50.0)
    x = rng.standard_normal((2, 200, 3))
    with pytest.raises(FloatingPointError, match=r"simulate: the trajectory z: the result is not finite"):
        kpref.simulate(cell, theta, x)
    with pytest.raises(FloatingPointError, match=r"linearize: the trajectory z: the result is not finite"):
        kpref.linearize(cell, theta, x)
    with pytest.raises(FloatingPointError, match=r"mse_loss: value: the result is not finite"):
        kpref.mse_loss(np.full((1, 2, 2), 1e200), np.zeros((1, 2, 1)), np.ones((1, 2)))
    # a finite trajectory of the same cell at a small gain passes
    assert np.isfinite(kpref.simulate(cell, cell.init_params(0, g=0.5), x)).all()


def test_an_overflowing_operator_product_raises():
    cell = kpref.Linear(1, 2, bias=False)
    theta = cell.init_params(0)
    theta[:] = 0.0
    lin = kpref.linearize(cell, theta, np.full((1, 2, 1), 10.0))
    with pytest.raises(FloatingPointError, match=r"J_theta.matvec: the result is not finite"):
        lin.J_theta.matvec(np.full(cell.num_params, 1e308))


def test_arpack_k_limits_are_kprefs_messages():
    """SciPy's eigsh fell back to dense with a warning then raised TypeError; svds raised its own message."""
    M = np.diag(np.arange(1.0, 7.0))
    with pytest.raises(ValueError, match=r"k: method='arpack' needs k < n = 6, got 6"):
        analysis.spectrum(M, k=6, method="arpack")
    with pytest.raises(ValueError, match=r"k: method='arpack' needs k < min\(op.shape\) = 6, got 6"):
        analysis.singular_values(M, k=6, method="arpack")
    assert np.allclose(analysis.spectrum(M, k=5, method="arpack", rng=0), [6, 5, 4, 3, 2])


def test_a_hand_built_step_point_with_integer_arrays_is_refused():
    """A StepPoint built by hand with int arrays reached the numba kernels (TypingError)."""
    cell = kpref.GRU(2, 3)
    pt = cell.point(cell.init_params(0), np.zeros((2, 3)), np.zeros((2, 2)))
    bad = kpref.StepPoint(pt.theta, pt.h.astype(np.int64), pt.x, pt.cache)
    with pytest.raises(TypeError, match=r"pt: expected float64 arrays in a StepPoint, got pt.h"):
        cell.state_jvp(bad, np.ones((1, 2, 3)))


def test_propagate_methods_check_their_block():
    cell, theta, x, rng = _gru_problem(H=3, B=2, T=4)
    lin = kpref.linearize(cell, theta, x)
    Q = rng.standard_normal((2, 4, 2, 3))       # (k, T, B, S)
    V = lin.propagate_forward_in_time(Q)
    flat = np.ascontiguousarray(Q.transpose(2, 1, 3, 0)).reshape(lin.size, 2)
    assert np.allclose(np.ascontiguousarray(V.transpose(2, 1, 3, 0)).reshape(lin.size, 2), lin.P @ flat,
                       rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match=r"Q: expected shape \(\*, 4, 2, 3\)"):
        lin.propagate_forward_in_time(Q.transpose(0, 2, 1, 3))
    with pytest.raises(TypeError, match="W: expected a real floating array"):
        lin.propagate_backward_in_time(Q + 1j)

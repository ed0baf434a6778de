"""The K-P operators of SPEC §3 and the gradient of SPEC §4, on random problems."""

import numpy as np
import pytest
from hypothesis import assume, example, given, strategies as st

import kpref
import kpref.strategies as kst
from kpref.testing import complex_step, dottest, richardson, taylor_test

STRATEGIES = ["matrix_free", "materialized"]


def _lin(problem, strategy="matrix_free"):
    cell, theta, x, h0 = problem
    return kpref.linearize(cell, theta, x, h0, strategy=strategy)


def _tiny_relu_problem():
    """Found by an exploring run: Elman(relu) at inputs near 1e-282. ‖J_θ u‖ underflowed in the dot test's
    norms (squares below 1e-308), the residual became inf: a false failure. Kept as an explicit example."""
    cell = kpref.Elman(2, 3, "relu", bias=False)
    rng = np.random.default_rng(0)
    return cell, cell.init_params(rng=0), 1e-282 * rng.standard_normal((2, 4, 2)), 1e-282 * rng.standard_normal((2, 3))


@given(kst.problems(), st.sampled_from(STRATEGIES), st.integers(0, 2**31))
@example(_tiny_relu_problem(), "matrix_free", 1)
@example(_tiny_relu_problem(), "materialized", 1)
def test_dot_tests_of_every_pair(problem, strategy, seed):
    lin = _lin(problem, strategy)
    for op in (lin.P, lin.P_inv, lin.J_theta, lin.K, lin.NTK):
        dottest(op, rng=seed, n_pairs=3, rtol=1e-13)


@given(kst.problems(), st.sampled_from(STRATEGIES), st.integers(0, 2**31))
def test_P_inv_inverts_P(problem, strategy, seed):
    lin = _lin(problem, strategy)
    Q = np.random.default_rng(seed).standard_normal((lin.size, 2))
    PQ = lin.P.matmat(Q)
    assert np.allclose(lin.P_inv.matmat(PQ), Q, rtol=1e-12, atol=1e-12 * (1 + np.abs(PQ).max()))
    assert np.allclose(lin.P.H.matmat(lin.P_inv.H.matmat(Q)), Q, rtol=1e-12,
                       atol=1e-12 * (1 + np.abs(lin.P.H.matmat(Q)).max()))


@given(kst.problems(max_batch=2, max_time=4, max_hidden=4))
def test_K_and_NTK_dense_identities(problem):
    lin = _lin(problem)
    P, J = kpref.todense(lin.P), kpref.todense(lin.J_theta)
    K, NTK = kpref.todense(lin.K), kpref.todense(lin.NTK)
    scale = max(np.abs(J @ J.T).max(), 1e-300)
    assert np.abs(K - K.T).max() <= 1e-14 * scale
    assert np.linalg.eigvalsh(K).min() >= -1e-12 * np.linalg.norm(K, 2)
    assert np.abs(K - J @ J.T).max() <= 1e-13 * scale
    PJ = P @ J
    assert np.abs(NTK - PJ @ PJ.T).max() <= 1e-12 * max(np.abs(PJ @ PJ.T).max(), 1e-300)
    assert np.abs(kpref.todense(lin.P.H) - P.T).max() <= 1e-14 * np.abs(P).max()


@given(kst.problems(), st.sampled_from(STRATEGIES), st.integers(1, 4), st.integers(0, 2**31))
def test_matmat_equals_columnwise_matvec(problem, strategy, k, seed):
    lin = _lin(problem, strategy)
    rng = np.random.default_rng(seed)
    for op in (lin.P, lin.P.H, lin.P_inv, lin.K, lin.NTK, lin.J_theta, lin.J_theta.H):
        X = rng.standard_normal((op.shape[1], k))
        cols = np.column_stack([op.matvec(X[:, j]) for j in range(k)])
        assert np.allclose(op.matmat(X), cols, rtol=1e-13, atol=1e-13 * (1 + np.abs(cols).max()))


@given(kst.problems(), st.integers(0, 2**31))
def test_strategies_agree(problem, seed):
    a, b = _lin(problem, "matrix_free"), _lin(problem, "materialized")
    X = np.random.default_rng(seed).standard_normal((a.size, 2))
    for name in ("P", "P_inv", "NTK"):
        u, w = getattr(a, name).matmat(X), getattr(b, name).matmat(X)
        assert np.allclose(u, w, rtol=1e-12, atol=1e-12 * (1 + np.abs(u).max()))
    assert np.allclose(a.P.H.matmat(X), b.P.H.matmat(X), rtol=1e-12, atol=1e-12 * (1 + np.abs(X).max()))


@given(kst.problems(names=[n for n in kst.cell_names() if n != "elman_relu"]), st.integers(0, 2**31))
def test_total_sensitivity_is_P_J(problem, seed):
    """dz/dθ δθ = P J_θ δθ, against the complex step of the whole trajectory."""
    cell, theta, x, h0 = problem
    lin = _lin(problem)
    d = np.random.default_rng(seed).standard_normal(cell.num_params)
    pred = lin.P.matvec(lin.J_theta.matvec(d)).reshape(lin.shape)
    cs = complex_step(lambda th: kpref.simulate(cell, th, x, h0, complex_step=True), theta, d)
    assert np.linalg.norm(pred - cs) <= 1e-12 * max(np.linalg.norm(cs), 1e-300) + 1e-300


@given(kst.problems(names=["elman_relu"]), st.integers(0, 2**31))
def test_total_sensitivity_is_P_J_relu(problem, seed):
    """dz/dθ δθ = P J_θ δθ for ReLU, against a Richardson difference of the trajectory within one pattern."""
    cell, theta, x, h0 = problem
    lin = _lin(problem)
    d = np.random.default_rng(seed).standard_normal(cell.num_params)
    pred = lin.P.matvec(lin.J_theta.matvec(d)).reshape(lin.shape)
    # z(θ) is smooth (a polynomial in θ) while the ReLU pattern of every pre-activation is fixed. The
    # differences at θ ± s d, s ≤ h, stay in one pattern when the patterns at ±h agree with θ's and
    # no pre-activation is near a kink (two sign changes within h are excluded by the margin:
    # pre-activations move by O(h ‖d‖) = O(1e-3) ≪ the 1e-2 margin).
    h = 1e-3 / np.linalg.norm(d)
    pre = lambda th: _relu_preactivations(cell, th, x, h0)
    a0 = pre(theta)
    assume(np.min(np.abs(a0)) >= 1e-2)
    assume(all(np.array_equal(pre(theta + s * d) > 0, a0 > 0) for s in (h, -h)))
    est, err = richardson(lambda th: kpref.simulate(cell, th, x, h0), theta, d, h=h)
    # Truncation: the extrapolated error estimate err (levels 4: O(h⁸)); 10·err covers the estimate's
    # own error. Rounding: each central difference errs by ≤ c ε ‖z‖ / h_min (h_min = h/8, c ≤ T·(N+S+1)
    # for the sums of a run), amplified ≤ 2 by the Richardson weights. (It was rtol 1e-6.)
    B, T, S = lin.shape
    rounding = 2 * T * (cell.input_size + S + 1) * np.finfo(float).eps * max(np.linalg.norm(lin.z), 1.0) / (h / 8)
    assert np.linalg.norm(pred - est) <= 10 * err + rounding


def _relu_preactivations(cell, theta, x, h0):
    """Every pre-activation W_ih x_t + W_hh h_{t-1} + b of an Elman(relu) run, (B, T, S)."""
    p = cell.unflatten(theta)
    z = kpref.simulate(cell, theta, x, h0)
    h_prev = np.concatenate([h0[:, None], z[:, :-1]], axis=1)
    a = x @ p["weight_ih"].T + h_prev @ p["weight_hh"].T
    return a + p["bias_ih"] + p["bias_hh"] if cell.bias else a


def _loss_problem(problem, seed):
    cell, theta, x, h0 = problem
    rng = np.random.default_rng(seed)
    O = 2
    w_out = rng.standard_normal((O, cell.output_size))
    b_out = rng.standard_normal(O)
    target = rng.standard_normal((x.shape[0], x.shape[1], O))
    return w_out, b_out, target


@given(kst.problems(names=[n for n in kst.cell_names() if n != "elman_relu"]), st.integers(0, 2**31))
def test_gradient_against_complex_step_and_taylor(problem, seed):
    cell, theta, x, h0 = problem
    w_out, b_out, target = _loss_problem(problem, seed)
    lin = _lin(problem)
    loss = kpref.mse_loss(lin.z, target, w_out, b_out, cell=cell)
    g = lin.grad(loss.e)
    R = cell.output_size

    def L(th):
        z = kpref.simulate(cell, th, x, h0, complex_step=True)[:, :, :R]
        r = z @ w_out.T + b_out - target
        return np.sum(r * r) / r.size

    d = np.random.default_rng(seed + 1).standard_normal(cell.num_params)
    cs = complex_step(lambda th: L(th.astype(complex)), theta, d)
    assert abs(g @ d - cs) <= 1e-12 * max(abs(cs), np.linalg.norm(g) * np.linalg.norm(d) * 1e-3, 1e-300)
    assert abs(L(theta) - loss.value) <= 1e-14 * max(1.0, loss.value)
    # linear_ok: where L is constant along d (g·d = 0, no curvature, e.g. a Linear cell at x = h0 = 0)
    # every remainder is round-off and the claimed derivative must be the whole increment
    taylor_test(lambda th: np.array([L(th)]), theta, d, np.array([g @ d]), linear_ok=True)


@given(kst.problems(names=[n for n in kst.cell_names() if n != "elman_relu"]), st.integers(0, 2**31))
def test_gradient_against_central_differences(problem, seed):
    cell, theta, x, h0 = problem
    w_out, b_out, target = _loss_problem(problem, seed)
    lin = _lin(problem)
    g = lin.grad(kpref.mse_loss(lin.z, target, w_out, b_out, cell=cell, reduction="sum").e)
    L = lambda th: kpref.mse_loss(kpref.simulate(cell, th, x, h0), target, w_out, b_out, cell=cell,
                                  reduction="sum").value
    d = np.random.default_rng(seed).standard_normal(cell.num_params)
    h = 1e-2 / np.linalg.norm(d)
    est, err = richardson(L, theta, d, h=h, levels=4)
    # Truncation: err, the a posteriori estimate of the extrapolated difference (O(h⁸) for smooth L);
    # 10·err covers the estimate's own error. Rounding: each central difference errs by ≤ 2 c ε |L| /
    # (2 h_min), h_min = h/8, with c ≤ T·(N+S+O+1) for the sums in a run and the loss; the Richardson
    # weights amplify it ≤ 2. The old check, h = 1e-6 at 1e-6·max(1, |fd|), had ~5000× slack.
    T, S = x.shape[1], cell.state_size
    c = T * (cell.input_size + S + w_out.shape[0] + 1)
    rounding = 2 * c * np.finfo(float).eps * max(abs(L(theta)), 1.0) / (h / 8)
    assert abs(est - g @ d) <= 10 * err + rounding


@given(kst.problems(names=[n for n in kst.cell_names() if n not in ("elman_relu", "linear")],
                    max_batch=2, max_time=5), st.integers(0, 2**31))
def test_gradient_flow_identity(problem, seed):
    """One GD step θ − η∇L moves z by −η NTK e + O(η²): the remainder falls at rate 2."""
    cell, theta, x, h0 = problem
    w_out, b_out, target = _loss_problem(problem, seed)
    lin = _lin(problem)
    e = kpref.mse_loss(lin.z, target, w_out, b_out, cell=cell).e
    g = lin.grad(e)
    # the GD step is η g with η up to 0.5/‖g‖: with g ≈ 0 the step does not move θ, nothing to measure
    assume(np.linalg.norm(g) >= 1e-6)
    pred = -lin.NTK.matvec(e.ravel())
    assert np.allclose(pred, -lin.P.matvec(lin.J_theta.matvec(g)), rtol=1e-12, atol=1e-14)
    z0 = lin.z.ravel()
    f = lambda eta: kpref.simulate(cell, theta - eta[0] * g, x, h0).ravel() - z0
    taylor_test(f, np.zeros(1), np.ones(1), pred, h0=0.5 / np.linalg.norm(g), linear_ok=True)


def test_a_wrong_adjoint_sweep_is_caught():
    """An off-by-one time index in P* (A_t instead of A_{t+1}) fails the dot test."""
    cell = kpref.Elman(2, 3)
    theta = cell.init_params(rng=0, g=1.5)
    x = np.random.default_rng(1).standard_normal((2, 6, 2))
    lin = kpref.linearize(cell, theta, x, strategy="materialized")
    B, T, S = lin.shape

    def backward(X, shift):          # P* on flat (B·T·S, k) columns, through the public apply_At
        W = X.reshape(B, T, S, -1).transpose(3, 1, 0, 2)       # (k, T, B, S)
        L = np.empty_like(W)
        L[:, T - 1] = W[:, T - 1]
        for t in range(T - 2, -1, -1):
            L[:, t] = W[:, t] + lin.apply_At(t + shift, L[:, t + 1])
        return np.ascontiguousarray(L.transpose(2, 1, 3, 0)).reshape(B * T * S, -1)

    right = kpref.NamedOperator("P_right", lin.P.shape, lin.P.matmat, lambda X: backward(X, 1), "P_right*")
    dottest(right, rng=0)          # the layout is right: only the time index below is wrong
    wrong = kpref.NamedOperator("P_wrong", lin.P.shape, lin.P.matmat, lambda X: backward(X, 0), "P_wrong*")  # A_t, not A_{t+1}
    with pytest.raises(AssertionError, match="dottest"):
        dottest(wrong, rng=0)


def test_mse_loss_matches_definition_and_mask():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 3, 4))
    w, b, tgt = rng.standard_normal((2, 4)), rng.standard_normal(2), rng.standard_normal((2, 3, 2))
    mask = (rng.random((2, 3)) > 0.4).astype(float)
    out = kpref.mse_loss(z, tgt, w, b, mask=mask, reduction="mean")
    y = z @ w.T + b
    assert np.isclose(out.value, np.sum(mask[..., None] * (y - tgt) ** 2) / y.size, rtol=1e-15)
    s = kpref.mse_loss(z, tgt, w, b, mask=mask[..., None].repeat(2, 2), reduction="sum")
    assert np.isclose(s.value, out.value * y.size, rtol=1e-14)
    # gradients by complex step
    d = rng.standard_normal(z.shape)
    f = lambda zz: np.sum(mask[..., None] * (zz @ w.T + b - tgt) ** 2) / y.size
    cs = np.imag(f(z + 1e-30j * d)) / 1e-30
    assert np.isclose(np.sum(out.e * d), cs, rtol=1e-13)


def test_linearize_bad_input():
    cell = kpref.Elman(2, 3)
    theta = cell.init_params(rng=0)
    x = np.zeros((2, 4, 2))
    lin = kpref.linearize(cell, theta, x)
    with pytest.raises(ValueError, match=r"e: expected .*shape \(2, 4, 3\)"):
        lin.grad(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match=r"P.matvec: expected a vector of length 24"):
        lin.P.matvec(np.zeros(23))
    with pytest.raises(ValueError, match=r"J_theta.rmatvec: expected a vector of length 24"):
        lin.J_theta.rmatvec(np.zeros(cell.num_params))
    with pytest.raises(TypeError, match="complex"):
        lin.K.matvec(np.zeros(24, dtype=complex))
    with pytest.raises(ValueError, match="finite"):
        lin.NTK.matvec(np.full(24, np.nan))
    with pytest.raises(MemoryError, match=r"needs .* MiB, above the limit"):
        kpref.todense(lin.K, memory_limit=100)
    with pytest.raises(ValueError, match="strategy"):
        kpref.linearize(cell, theta, x, strategy="dense")
    with pytest.raises(ValueError, match="adjoint: 'continuous' needs an ODE cell"):
        kpref.linearize(cell, theta, x, adjoint="continuous")
    with pytest.raises(ValueError, match="t: expected an integer step index"):
        lin.apply_A(4, np.zeros((1, 2, 3)))


WITH_SITES = [n for n in kst.cell_names() if kst.CELL_FACTORIES[n](1, 1, True).has_weight_sites]


@given(kst.problems(names=WITH_SITES, max_batch=2, max_time=4))
def test_kronecker_core_equals_K(problem):
    """K = Σ_sites D (Gram(a) ⊗ I) Dᵀ exactly, and each site's factors reproduce its block of J_θ."""
    lin = _lin(problem)
    K = kpref.todense(lin.K)
    Kk = kpref.todense(lin.K_kronecker)
    assert np.abs(K - Kk).max() <= 1e-13 * max(np.abs(K).max(), 1e-300)
    cell = lin.cell
    J = kpref.todense(lin.J_theta)
    slices = cell.param_slices()
    covered = []
    for site in lin.kronecker_factors():
        cols = np.concatenate([np.arange(cell.num_params)[slices[n]] for n in site.params])
        covered.extend(cols)
        Js = J[:, cols]
        part = np.einsum("rso,rq,qjo->rsqj", site.D, site.gram, site.D).reshape(lin.size, lin.size)
        assert np.abs(part - Js @ Js.T).max() <= 1e-13 * max(np.abs(Js @ Js.T).max(), 1e-300)
    assert sorted(covered) == list(range(cell.num_params))


def test_linear_cell_P_blocks_are_powers_of_W():
    """For h' = W h + U x + b, A_t = W, so P's (t, s) block is W^(t−s) (t ≥ s) and 0 above the diagonal."""
    cell = kpref.Linear(2, 3)
    theta = cell.init_params(rng=4, g=1.2)
    W = cell.unflatten(theta)["weight_hh"]
    B, T, S = 2, 5, 3
    x = np.random.default_rng(0).standard_normal((B, T, 2))
    for strategy in STRATEGIES:
        lin = kpref.linearize(cell, theta, x, strategy=strategy)
        P = kpref.todense(lin.P).reshape(B, T, S, B, T, S)
        for b in range(B):
            for c in range(B):
                for t in range(T):
                    for s in range(T):
                        block = P[b, t, :, c, s, :]
                        want = np.linalg.matrix_power(W, t - s) if (b == c and t >= s) else np.zeros((S, S))
                        assert np.allclose(block, want, rtol=1e-13, atol=1e-15)

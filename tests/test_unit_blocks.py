"""K's per-unit blocks (kpref.analysis.unit_blocks, issue 17) against dense K, and the block route of the analyses.

Tolerances: every compared quantity is computed twice in float64 from the
same K (dense LAPACK/sums on ``todense(lin.K)`` against LAPACK/sums on the
blocks). Both are backward stable: eigenvalues differ by at most
``c·n·ε·‖K‖₂`` (n ≤ 240 here, so ≲ 1e-13·λ_max), traces and Frobenius sums by
``n·ε`` relative. The issue's figure, 1e-12 relative to the largest
magnitude, leaves a factor ≥ 10 over that bound; a dropped site changes the
answers at O(1) (test_checker_catches_a_dropped_site).
"""

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import kpref
import kpref.strategies as kst
from kpref import analysis
from kpref.analysis import KBlocks, UnitSite, unit_blocks

RTOL = 1e-12
STRUCTURED = ["elman_tanh", "elman_relu", "gru", "leaky", "linear", "lstm"]
WITHOUT = ["rate_euler", "rate_midpoint", "rate_rk4"]
AXES = [("batch",), ("time",), ("hidden",), ("batch", "time"), ("batch", "hidden"), ("time", "hidden")]


def _problem(name, B=2, T=4, N=2, H=3, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    cell = kst.CELL_FACTORIES[name](N, H, bias)
    return kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((B, T, N)),
                           0.3 * rng.standard_normal((B, cell.state_size)))


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), np.finfo(float).tiny))


def check_blocks_against_dense(kb, K, rtol=RTOL):
    """Raise AssertionError unless ``kb`` reproduces the dense ``K``: entries, eigenvalues, traces, partial traces."""
    B, T, S = kb.shape
    n = B * T * S
    X = np.eye(n)
    errors = {"entries": _rel(kb.matmat(X), K)}
    lam = np.linalg.eigvalsh(K)[::-1]
    errors["eigenvalues"] = float(np.abs(kb.eigenvalues() - lam).max() / np.abs(lam).max())
    errors["trace"] = abs(kb.trace() - np.trace(K)) / abs(np.trace(K))
    errors["frobenius"] = abs(kb.frobenius_sq() - np.sum(K * K)) / np.sum(K * K)
    K6 = K.reshape(B, T, S, B, T, S)
    dense_pt = {(0,): np.einsum("btsbrq->tsrq", K6).reshape(T * S, T * S),
                (1,): np.einsum("btsctq->bscq", K6).reshape(B * S, B * S),
                (2,): np.einsum("btscrs->btcr", K6).reshape(B * T, B * T)}
    for axes, ref in dense_pt.items():
        errors[f"partial trace {axes}"] = _rel(kb.reduced(axes, "partial_trace").todense(), ref)
    bad = {k: v for k, v in errors.items() if not v <= rtol}
    assert not bad, f"block route disagrees with dense K (relative errors above {rtol:g}): {bad}"
    return errors


# ----------------------------------------------------------------------- the structure


@pytest.mark.parametrize("name", STRUCTURED)
@pytest.mark.parametrize("bias", [True, False])
def test_cross_unit_entries_of_dense_K_are_exactly_zero(name, bias):
    lin = _problem(name, bias=bias)
    B, T, S = lin.shape
    H = lin.cell.hidden_size
    K = kpref.todense(lin.K).reshape(B * T, S // H, H, B * T, S // H, H)
    unit = np.arange(H)
    cross = np.abs(K).copy()
    cross[:, :, unit, :, :, unit] = 0.0
    assert cross.max() == 0.0
    assert np.abs(K[:, :, unit, :, :, unit]).max() > 0.0     # the blocks themselves are not empty


@pytest.mark.parametrize("name", STRUCTURED)
@pytest.mark.parametrize("bias", [True, False])
def test_blocks_reproduce_dense_K(name, bias):
    lin = _problem(name, bias=bias, H=4)
    kb = lin.K_blocks()
    assert lin.K_blocks() is kb                    # built once
    assert kb.units == 4 and kb.parts == (2 if name == "lstm" else 1)
    check_blocks_against_dense(kb, kpref.todense(lin.K))


@given(kst.problems(names=STRUCTURED, max_batch=3, max_time=5, max_hidden=4))
def test_blocks_reproduce_dense_K_on_random_problems(problem):
    cell, theta, x, h0 = problem
    lin = kpref.linearize(cell, theta, x, h0)
    K = kpref.todense(lin.K)
    # an all-zero K (e.g. relu cells with every unit off) has nothing to compare relative to
    assume(np.abs(K).max() > 1e-8)
    check_blocks_against_dense(lin.K_blocks(), K)


def test_both_forms_agree():
    """B·T below the fan-in (GRU, N=2, H=2: 3·3 + 3·3 = 18) gives the trajectory form, above it the fan-in form."""
    forms = set()
    for B, T in [(1, 3), (3, 8)]:
        lin = _problem("gru", B=B, T=T, H=2)
        kb = lin.K_blocks()
        forms.add(kb.form)
        check_blocks_against_dense(kb, kpref.todense(lin.K))
    assert forms == {"fan_in", "trajectory"}


def test_checker_catches_a_dropped_site():
    """A deliberately wrong block (one site's d dropped for one unit, or the whole site) fails the checks."""
    lin = _problem("gru", H=3)
    kb = lin.K_blocks()
    K = kpref.todense(lin.K)
    for unit_only in (True, False):
        sites = list(kb.sites)
        d = sites[1].d.copy()
        if unit_only:
            d[:, :, :, 1] = 0.0
        else:
            d[:] = 0.0
        sites[1] = UnitSite(sites[1].params, sites[1].activity, d)
        wrong = KBlocks(kb.shape, kb.units, sites, cell_name="GRU")
        with pytest.raises(AssertionError, match="disagrees"):
            check_blocks_against_dense(wrong, K)
        # each check on its own sees it
        lam = np.linalg.eigvalsh(K)[::-1]
        assert np.abs(wrong.eigenvalues() - lam).max() > 1e-6 * lam[0]
        pt = np.einsum("btsbrq->tsrq", K.reshape(*kb.shape, *kb.shape)).reshape(kb.shape[1] * 3, -1)
        assert _rel(wrong.reduced((0,), "partial_trace").todense(), pt) > 1e-6
    # a wrong d on one row only (one site, one unit, one step)
    sites = list(kb.sites)
    d = sites[0].d.copy()
    d[5, 0, 0, 2] *= 1.5
    sites[0] = UnitSite(sites[0].params, sites[0].activity, d)
    with pytest.raises(AssertionError, match="disagrees"):
        check_blocks_against_dense(KBlocks(kb.shape, kb.units, sites), K)


# -------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", WITHOUT)
def test_cells_without_sites_are_refused_by_name(name):
    lin = _problem(name)
    with pytest.raises(NotImplementedError, match="RateODE"):
        unit_blocks(lin)
    with pytest.raises(NotImplementedError, match="RateODE"):
        analysis.spectrum(lin.K, 3, method="blocks")
    # 'auto' and the exact methods keep their dense / streamed routes for such cells
    K = kpref.todense(lin.K)
    assert _rel(analysis.spectrum(lin.K), np.linalg.eigvalsh(K)[::-1]) <= RTOL
    assert abs(analysis.trace(lin.K) - np.trace(K)) <= RTOL * abs(np.trace(K))


class _DenseOnlyElman(kpref.Elman):
    """An Elman that declares only the dense weight sites (the checked route of unit_blocks), optionally coupled."""

    has_unit_weight_sites = False
    coupling = 0.0

    def _weight_sites(self, pt):
        sites = [(names, act, D.copy()) for names, act, D in super()._weight_sites(pt)]
        sites[0][2][:, 0, 1] += self.coupling        # state entry of unit 0 fed by the weight row of unit 1
        return sites


def _dense_only_problem(coupling):
    rng = np.random.default_rng(4)
    cell = _DenseOnlyElman(2, 3)
    cell.coupling = coupling
    return kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((2, 4, 2)))


def test_cells_with_dense_sites_only_take_the_checked_route():
    lin = _dense_only_problem(0.0)
    check_blocks_against_dense(lin.K_blocks(), kpref.todense(lin.K))


def test_sites_coupling_units_are_refused():
    """A cell whose D has an entry from one unit's gate to another unit's state has no per-unit structure."""
    lin = _dense_only_problem(0.25)
    with pytest.raises(NotImplementedError, match=r"Elman.*couples units.*unit 1 to state part 0 of unit 0"):
        unit_blocks(lin)


@pytest.mark.parametrize("name", STRUCTURED)
@pytest.mark.parametrize("bias", [True, False])
def test_unit_weight_sites_are_the_unit_diagonal_of_weight_sites(name, bias):
    """The declared hook cell._unit_weight_sites(pt) holds every nonzero of cell.weight_sites(pt)'s D (the rest is 0)."""
    lin = _problem(name, bias=bias, H=3)
    cell = lin.cell
    U, P = cell.state_parts[0][1], len(cell.state_parts)
    dense, unit = cell.weight_sites(lin.point), cell._unit_weight_sites(lin.point)
    assert len(dense) == len(unit)
    idx = np.arange(U)
    for (names, act, D), (names_u, act_u, d) in zip(dense, unit):
        assert names == names_u and np.array_equal(act, act_u)
        G = D.shape[2] // U
        D5 = D.reshape(-1, P, U, G, U).copy()
        assert np.array_equal(D5[:, :, idx, :, idx].transpose(1, 2, 3, 0), d)
        D5[:, :, idx, :, idx] = 0.0
        assert not D5.any()
    assert not _problem("rate_euler").cell.has_unit_weight_sites


def test_method_blocks_needs_a_linearizations_K():
    A = np.eye(4)
    with pytest.raises(ValueError, match="method='blocks' needs a linearization's K"):
        analysis.spectrum(A, method="blocks")
    with pytest.raises(TypeError, match="Linearization"):
        unit_blocks(A)


def test_kronecker_factors_steps():
    lin = _problem("lstm", B=2, T=5)
    full = lin.kronecker_factors()
    part = lin.kronecker_factors(steps=(1, 3))
    B, T = 2, 5
    rows = (np.arange(B)[:, None] * T + np.arange(1, 3)[None, :]).ravel()
    for f, p in zip(full, part):
        assert np.array_equal(p.D, f.D[rows]) and np.array_equal(p.activity, f.activity[rows])
        assert np.array_equal(p.gram, f.gram[np.ix_(rows, rows)])
    assert not np.shares_memory(part[0].D, part[1].D)   # the LSTM's two sites never share an array
    for bad in [(3, 3), (0, 6), (-1, 2), [0, 1], (0.0, 1), (True, 2)]:
        with pytest.raises(ValueError, match="steps"):
            lin.kronecker_factors(steps=bad)


# ------------------------------------------------------------ analyses through the blocks


@pytest.mark.parametrize("name", STRUCTURED)
def test_analyses_take_the_block_route_and_agree_with_dense(name):
    lin = _problem(name, B=2, T=5, H=4)
    K = kpref.todense(lin.K)
    lam = np.linalg.eigvalsh(K)[::-1]
    top = np.abs(lam).max()
    assert np.abs(analysis.spectrum(lin.K) - analysis.spectrum(K)).max() <= RTOL * top
    assert np.abs(analysis.spectrum(lin.K, 5) - lam[:5]).max() <= RTOL * top
    assert np.abs(analysis.spectrum(lin.K, 4, "SA") - analysis.spectrum(K, 4, "SA")).max() <= RTOL * top
    assert np.abs(analysis.singular_values(lin.K) - analysis.singular_values(K)).max() <= RTOL * top
    assert np.abs(analysis.singular_values(lin.K, 3) - analysis.singular_values(K, 3)).max() <= RTOL * top
    for f in (analysis.trace, analysis.frobenius_norm, analysis.participation_ratio, analysis.effective_rank):
        assert abs(f(lin.K) - f(K)) <= RTOL * abs(f(K)), f.__name__
    for q in (0.5, 0.9, 0.99):
        assert analysis.variance_rank(lin.K, q) == analysis.variance_rank(K, q)
    for axes in AXES:
        for f in (analysis.partial_trace, analysis.marginal_sum):
            for reduction in ("sum", "mean"):
                got = f(lin.K, lin.shape, axes, reduction)
                assert isinstance(got, analysis.BlockDiagonalOperator)
                ref = kpref.todense(f(K, lin.shape, axes, reduction))
                assert _rel(kpref.todense(got), ref) <= RTOL, (f.__name__, axes, reduction)
                assert got.kept_shape == f(K, lin.shape, axes).kept_shape
        # a reduction keeps the block route for its own spectrum
        pt = analysis.partial_trace(lin.K, lin.shape, axes)
        assert _rel(analysis.spectrum(pt), analysis.spectrum(kpref.todense(pt))) <= RTOL
    dims = analysis.effective_dimensions(lin, operators=("K",))["K"]
    for a, v in dims.items():
        assert abs(v - analysis.effective_dimension(K, lin.shape, a)) <= RTOL * v, a


def test_alignment_of_two_block_structured_Ks():
    """cos(K, K') through the blocks: one cell at two parameter points, and a sub-batch's K against itself."""
    rng = np.random.default_rng(3)
    cell = kpref.GRU(2, 3)
    x = rng.standard_normal((2, 4, 2))
    la = kpref.linearize(cell, cell.init_params(rng), x)
    lb = kpref.linearize(cell, cell.init_params(rng, g=1.5), x)
    Ka, Kb = kpref.todense(la.K), kpref.todense(lb.K)
    ref = analysis.alignment(Ka, Kb)
    assert abs(analysis.alignment(la.K, lb.K) - ref) <= RTOL * abs(ref)
    assert abs(analysis.alignment(la.K, la.K) - 1.0) <= RTOL
    assert abs(ref) < 1 - 1e-6                  # the two points differ: the check can fail
    # one structured and one plain operator: the streamed route, same answer
    assert abs(analysis.alignment(la.K, Kb) - ref) <= RTOL * abs(ref)


@pytest.mark.parametrize("name", ["gru", "lstm", "elman_tanh"])
def test_eigenvectors_of_K(name):
    lin = _problem(name, B=2, T=5, H=3)
    K = kpref.todense(lin.K)
    kb = lin.K_blocks()
    k = 6
    values, vectors = kb.eigenpairs(k)
    assert vectors.shape == (k, *lin.shape)
    lam = np.linalg.eigvalsh(K)[::-1]
    assert np.abs(values - lam[:k]).max() <= RTOL * lam[0]
    V = vectors.reshape(k, -1).T
    assert np.abs(V.T @ V - np.eye(k)).max() <= 1e-12
    assert np.abs(K @ V - V * values).max() <= RTOL * lam[0]
    with pytest.raises(ValueError, match="k"):
        kb.eigenpairs(lin.size + 1)


def test_memory_checks_on_dense_blocks():
    lin = _problem("gru", B=2, T=4, H=3)
    kb = lin.K_blocks()
    small = KBlocks(kb.shape, kb.units, kb.sites, memory_limit=8 * 60)     # a block needs 8·2·8² bytes
    with pytest.raises(MemoryError, match="KBlocks"):
        small.block(0)
    with pytest.raises(MemoryError, match="KBlocks"):
        small.eigenvalues()
    with pytest.raises(ValueError, match="unit index"):
        lin.K_blocks().block(3)


def test_block_route_matches_block_lanczos_at_medium_size():
    """H = 64: the blocks' top eigenvalues against thick-restart block Lanczos on lin.K (tol 1e-10 relative)."""
    rng = np.random.default_rng(0)
    cell = kpref.GRU(3, 64)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((2, 10, 3)))
    exact = analysis.spectrum(lin.K, 10)
    lanczos = analysis.spectrum(lin.K, 10, method="lanczos", rng=0, tol=1e-10)
    # Lanczos: each Ritz value within its residual ≤ tol·max|θ| of an eigenvalue (module notes of _spectral)
    assert np.abs(exact - lanczos).max() <= 1e-10 * exact[0]


# ------------------------------------------------------------- P per trial, block Lanczos


@pytest.mark.parametrize("name", ["gru", "lstm", "rate_rk4"])
def test_propagator_singular_values_per_trial(name):
    lin = _problem(name, B=3, T=4, H=3)
    P = kpref.todense(lin.P)
    sv = analysis.propagator_singular_values(lin)
    B, T, S = lin.shape
    assert sv.shape == (B, T * S)
    ref = np.linalg.svd(P, compute_uv=False)
    assert np.abs(np.sort(sv.ravel())[::-1] - ref).max() <= RTOL * ref[0]
    for b in range(B):       # each row is its own trial's block
        blk = P[b * T * S:(b + 1) * T * S, b * T * S:(b + 1) * T * S]
        assert np.abs(sv[b] - np.linalg.svd(blk, compute_uv=False)).max() <= RTOL * ref[0]
    with pytest.raises(MemoryError, match="one trial's block of P"):
        analysis.propagator_singular_values(lin, memory_limit=8 * (T * S) ** 2)


@pytest.mark.parametrize("orthogonalization", ["local+1", "cgs2"])
def test_block_lanczos_orthogonalizations_agree_with_dense(orthogonalization):
    """Both orthogonalization routes, on a spectrum with a cluster and a rank-deficient operator (SVD branch)."""
    rng = np.random.default_rng(7)
    n = 300
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([[5.0, 5.0, 5.0, 4.0], np.linspace(3.0, 0.0, n - 4)])
    M = (Q * lam) @ Q.T
    low = Q[:, :6] @ np.diag([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]) @ Q[:, :6].T   # rank 6: an invariant subspace
    for A, k in ((M, 8), (low, 5)):
        ref = np.linalg.eigvalsh(A)[::-1][:k]
        res = analysis.block_lanczos(lambda X: A @ X, n, k, "LA", block_size=4, rng=1,
                                     orthogonalization=orthogonalization)
        assert np.abs(res.values - ref).max() <= 1e-9 * ref[0]
        assert res.residual_norms.max() <= 1e-10 * ref[0]
        assert np.abs(res.vectors.T @ res.vectors - np.eye(k)).max() <= 1e-10
    with pytest.raises(ValueError, match="orthogonalization"):
        analysis.block_lanczos(lambda X: M @ X, n, 3, orthogonalization="mgs")


def test_block_eigenvalues_with_worker_threads():
    lin = _problem("gru", B=3, T=8, H=5)
    serial = lin.K_blocks().eigenvalues()
    threaded = KBlocks(*(lambda kb: (kb.shape, kb.units, kb.sites))(lin.K_blocks()))
    threaded.workers = 2
    assert np.array_equal(threaded.eigenvalues(), serial)      # the same LAPACK calls, block by block
    bad = KBlocks(threaded.shape, threaded.units, threaded.sites)
    bad.workers = 0
    with pytest.raises(ValueError, match="workers"):
        bad.eigenvalues()


@pytest.mark.parametrize("B, T", [(1, 3), (3, 8)])     # trajectory and fan-in forms (GRU, N=2, H=2)
def test_power_sums_without_eigenvalues(B, T):
    lin = _problem("gru", B=B, T=T, H=2)
    kb = lin.K_blocks()
    fresh = KBlocks(kb.shape, kb.units, kb.sites)
    s2, s4 = fresh.power_sums()                      # block products, no spectrum cached
    lam = np.linalg.eigvalsh(kpref.todense(lin.K))
    assert abs(s2 - np.sum(lam**2)) <= RTOL * s2 and abs(s4 - np.sum(lam**4)) <= RTOL * s4


def test_an_analysis_memory_limit_reaches_the_blocks():
    """memory_limit= of an analysis call bounds the block route's dense work too (no silent override)."""
    lin = _problem("gru", B=3, T=8, H=3)      # fan-in blocks 3·3 + 3·4 = 21 (21² floats each), Grams 24² per site
    tiny = 8 * 100
    for call in (lambda: analysis.spectrum(lin.K, memory_limit=tiny),
                 lambda: analysis.effective_rank(lin.K, memory_limit=tiny),
                 lambda: analysis.frobenius_norm(lin.K, memory_limit=tiny),
                 lambda: analysis.partial_trace(lin.K, lin.shape, "batch", memory_limit=tiny),
                 lambda: analysis.effective_dimensions(lin, operators=("K",), memory_limit=tiny)):
        with pytest.raises(MemoryError, match="KBlocks"):
            call()
    assert analysis.trace(lin.K, memory_limit=tiny) == pytest.approx(np.trace(kpref.todense(lin.K)), rel=RTOL)
    assert lin.K_blocks().memory_limit == lin.memory_limit        # lin's own blocks keep their limit


def test_K_blocks_checks_its_memory_limit():
    """lin.K_blocks(memory_limit=...) is checked like every memory_limit, and bounds the build before allocating."""
    lin = _problem("gru", B=3, T=8, H=3)
    for bad, err in (("1e9", TypeError), (True, TypeError), (-1, ValueError), (float("nan"), ValueError)):
        with pytest.raises(err, match="memory_limit"):
            lin.K_blocks(memory_limit=bad)
    # GRU N=2, H=3: site arrays 8·24·(3 + 3·3) + 8·24·(4 + 3·3) bytes = 4800 bytes
    with pytest.raises(MemoryError, match=r"per-unit site arrays of GRU.*B·T = 24"):
        lin.K_blocks(memory_limit=4000)
    kb = lin.K_blocks(memory_limit=10**6)
    assert kb.memory_limit == 10**6
    assert lin.K_blocks().memory_limit == lin.memory_limit and lin.K_blocks() is lin.K_blocks()
    assert lin.K_blocks(memory_limit=10**6).sites is lin.K_blocks().sites       # one build, other limit


def test_gram_routes_check_memory_and_fall_back_to_the_fan_in_form():
    """Frobenius/alignment use the fan-in form when the (B·T)² Grams do not fit; partial traces refuse, naming the size."""
    lin = _problem("gru", B=4, T=20, H=3)    # n = 80: Grams 2·80² floats (100 KiB), fan-in 21: factors 80 × 21
    K = kpref.todense(lin.K)
    limit = 50 * 1024
    kb = lin.K_blocks(memory_limit=limit)
    assert kb.form == "fan_in"
    fro = analysis.frobenius_norm(lin.K, memory_limit=limit)     # the Gram route would raise MemoryError here
    assert abs(fro - np.linalg.norm(K)) <= RTOL * np.linalg.norm(K)
    rng = np.random.default_rng(5)
    other = kpref.linearize(lin.cell, lin.cell.init_params(rng, g=1.5), lin.x, lin.h0)
    ref = analysis.alignment(K, kpref.todense(other.K))
    assert abs(analysis.alignment(lin.K, other.K, memory_limit=limit) - ref) <= RTOL * abs(ref)
    # partial traces and marginal sums by the same contraction on F_u (no Gram) whenever the result fits:
    # every axis set but ('hidden',), whose result alone is (B·T)² = 80² floats (50 KiB)
    for axes in AXES[:2] + AXES[3:]:
        for f in (analysis.partial_trace, analysis.marginal_sum):
            got = f(lin.K, lin.shape, axes, memory_limit=limit)
            assert _rel(kpref.todense(got), kpref.todense(f(K, lin.shape, axes))) <= RTOL, (f.__name__, axes)
    assert AXES[2] == ("hidden",)
    with pytest.raises(MemoryError, match=r"partial_trace.*\(B·T\)² = \(4·20\)²"):
        analysis.partial_trace(lin.K, lin.shape, "hidden", memory_limit=limit)
    with pytest.raises(MemoryError, match=r"KBlocks.inner.*Gram route.*fan-in route"):
        analysis.frobenius_norm(lin.K, memory_limit=4 * 1024)


@pytest.mark.parametrize("op_name", ["K", "NTK"])
def test_locking_keeps_the_converged_eigenvalues(op_name):
    """Block Lanczos with locking (restarts forced by a small basis) gives dense eigenvalues, as without locking.

    Tolerance: each Ritz value lies within its true residual (≤ tol·max|θ|, tol = 1e-10) of an eigenvalue
    (module notes of kpref.analysis._spectral); the deflated couplings are below the same bound.
    """
    rng = np.random.default_rng(2)
    cell = kpref.GRU(2, 4)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((3, 8, 2)))
    op = getattr(lin, op_name)
    lam = np.linalg.eigvalsh(kpref.todense(op))[::-1]
    k = 6
    runs = {lock: analysis.block_lanczos(op.matmat, lin.size, k, block_size=2, max_basis=16, rng=0, tol=1e-10,
                                         locking=lock) for lock in (True, False)}
    assert runs[True].n_locked > 0 and runs[False].n_locked == 0       # locking did happen
    for res in runs.values():
        assert np.abs(res.values - lam[:k]).max() <= 1e-10 * lam[0]
        assert res.residual_norms.max() <= 1e-10 * lam[0]
        V = res.vectors
        assert np.abs(V.T @ V - np.eye(k)).max() <= 1e-10
    assert np.abs(runs[True].values - runs[False].values).max() <= 2e-10 * lam[0]
    # the old route stays available and unchanged in spirit: no locking, one more product for the residuals
    old = analysis.block_lanczos(op.matmat, lin.size, k, block_size=2, max_basis=16, rng=0, orthogonalization="cgs2")
    assert old.n_locked == 0 and np.abs(old.values - lam[:k]).max() <= 1e-10 * lam[0]
    with pytest.raises(TypeError, match="locking"):
        analysis.block_lanczos(op.matmat, lin.size, k, locking="yes")


def test_locked_lanczos_still_catches_a_wrong_block():
    """The agreement check of K's blocks against block Lanczos with locking fails for a block with one site's d dropped."""
    rng = np.random.default_rng(2)
    cell = kpref.GRU(2, 4)
    lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((3, 8, 2)))
    k = 6
    res = analysis.block_lanczos(lin.K.matmat, lin.size, k, block_size=2, max_basis=16, rng=0, tol=1e-10)
    assert res.n_locked > 0
    kb = lin.K_blocks()
    exact = kb.eigenvalues(k)
    assert np.abs(exact - res.values).max() <= 1e-10 * exact[0]
    # the unit holding the top eigenvector (a unit whose block holds none of the top k leaves them unchanged)
    _, vectors = kb.eigenpairs(1)
    top_unit = int(np.flatnonzero(np.abs(vectors[0]).sum(axis=(0, 1)))[0]) % kb.units
    for units in ([top_unit], list(range(kb.units))):       # one unit's hh-site d dropped, or the whole site's
        sites = list(kb.sites)
        d = sites[1].d.copy()
        d[:, :, :, units] = 0.0
        sites[1] = UnitSite(sites[1].params, sites[1].activity, d)
        wrong = KBlocks(kb.shape, kb.units, sites).eigenvalues(k)
        assert np.abs(wrong - res.values).max() > 1e-6 * exact[0], units


def test_fan_in_blocks_by_products_and_block_by_block_agree_with_dense():
    """The Khatri–Rao route (Z = a_s ⊙ a_s2 shared by all units) and the per-unit F_uᵀF_u route give dense K's answers.

    GRU, N=2, H=8, B=4, T=20: n = 80 rows, fan-in f = 3·3 + 3·9 = 36. The products Z take 80 · (6 + 27 + 45)
    floats (49 KiB); a limit of 40 KiB (70 KiB with two worker threads) leaves room for the per-unit blocks
    only (3 · 36² floats, 30 KiB, per worker), so the same KBlocks answer block by block. Tolerance as in the
    module docstring (RTOL).
    """
    lin = _problem("gru", B=4, T=20, H=8)
    K = kpref.todense(lin.K)
    lam = np.linalg.eigvalsh(K)
    kb = lin.K_blocks()
    assert kb.form == "fan_in" and kb.fan_in == 36
    for workers in (1, 2):
        for limit in (None, (40 if workers == 1 else 70) * 1024):
            fresh = KBlocks(kb.shape, kb.units, kb.sites, memory_limit=limit)
            fresh.workers = workers
            s2, s4 = fresh.power_sums()
            assert abs(s2 - np.sum(lam**2)) <= RTOL * s2 and abs(s4 - np.sum(lam**4)) <= RTOL * s4, (limit, workers)
            got = fresh.eigenvalues()
            assert np.abs(got - lam[::-1]).max() <= RTOL * lam.max(), (limit, workers)
            assert np.abs(fresh.eigenvalues(5) - lam[::-1][:5]).max() <= RTOL * lam.max(), (limit, workers)
    with pytest.raises(MemoryError, match="KBlocks.block"):
        KBlocks(kb.shape, kb.units, kb.sites, memory_limit=20 * 1024).power_sums()


@pytest.mark.parametrize("name", STRUCTURED)
def test_fan_in_blocks_by_khatri_rao_products_for_every_cell(name):
    """Every structured cell in fan-in form (B=4, T=20, H=3: n·P ≥ 80 > f): the blocks M_u assembled from the
    packed Khatri–Rao products (a kernel copying each gate pair's packed triangle or rectangle into M_u) give
    dense K's Σλ², Σλ⁴ and spectrum. Tolerance RTOL (module docstring); one misplaced entry changes M_u at O(1)."""
    lin = _problem(name, B=4, T=20, H=3)
    lam = np.linalg.eigvalsh(kpref.todense(lin.K))
    kb = lin.K_blocks()
    assert kb.form == "fan_in", name
    s2, s4 = kb.power_sums()
    assert abs(s2 - np.sum(lam**2)) <= RTOL * s2 and abs(s4 - np.sum(lam**4)) <= RTOL * s4
    got = kb.eigenvalues()[:kb.units * kb.block_size]
    assert np.abs(got - lam[::-1][:got.size]).max() <= RTOL * lam.max()
    for u in range(kb.units):       # and each block is the unit's F_uᵀF_u (the block-by-block route)
        M = kb.block(u)
        assert np.abs(np.linalg.eigvalsh(M) - kb.block_eigenvalues()[u]).max() <= RTOL * lam.max(), u


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_effective_dimensions_of_K_by_the_gram_and_the_fan_in_routes(name):
    """D_a = tr_others(K²) from K_u (Gram route, rows written time-major) and from F_u M_u F_uᵀ (no Gram) agree with dense.

    B=4, T=20 (n = 80): the Grams take 2 · 80² floats (100 KiB) and each worker's K_u block (80·P)² floats; a
    limit of 60 KiB (GRU) or 100 KiB (LSTM, P = 2) leaves the fan-in route only (2 factors 80·P × f and one
    f × f: 30 KiB and 78 KiB). Tolerance RTOL (module docstring).
    """
    lin = _problem(name, B=4, T=20, H=3)
    K = kpref.todense(lin.K)
    ref = {a: analysis.effective_dimension(K, lin.shape, a) for a in ("batch", "time", "hidden")}
    assert lin.K_blocks().form == "fan_in"
    for limit in (None, (60 if name == "gru" else 100) * 1024):
        dims = analysis.effective_dimensions(lin, operators=("K",), memory_limit=limit)["K"]
        for a, v in dims.items():
            assert abs(v - ref[a]) <= RTOL * ref[a], (limit, a)
    K2 = (K @ K).reshape(lin.shape * 2)
    dense = {0: np.einsum("btscts->bc", K2), 1: np.einsum("btsbrs->tr", K2), 2: np.einsum("btsbtq->sq", K2)}
    kb = lin.K_blocks()
    for route in ("gram", "fan_in", "auto"):
        for workers in (1, 2):
            threaded = kb.with_memory_limit(lin.memory_limit)
            threaded.workers = workers
            got = threaded.axis_grams((0, 1, 2), route=route)
            for a in (0, 1, 2):
                assert _rel(got[a], dense[a]) <= RTOL, (route, workers, a)
            if workers == 2:      # summed in unit order: the same numbers as one worker
                assert all(np.array_equal(got[a], serial[a]) for a in (0, 1, 2)), route
            serial = got
    with pytest.raises(ValueError, match="route: expected one of"):
        kb.axis_grams((0,), route="dense")
    traj = _problem(name, B=1, T=3, H=3).K_blocks()
    assert traj.form == "trajectory"
    with pytest.raises(ValueError, match="route: 'fan_in' needs the fan-in form"):
        traj.axis_grams((0,), route="fan_in")


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_axis_grams_of_any_subset_of_axes_by_both_routes(name):
    """The Gram route writes the K_u of up to four units per kernel call (H = 5: a group of 4 and one of 1); both
    routes, for P = 1, take the unit's D_hidden entry as the trace of the batch or time part they already have;
    each subset of axes, alone or with others, agrees with dense K² (tolerance RTOL, module docstring)."""
    lin = _problem(name, B=3, T=10, H=5)
    K = kpref.todense(lin.K)
    K2 = (K @ K).reshape(lin.shape * 2)
    dense = {0: np.einsum("btscts->bc", K2), 1: np.einsum("btsbrs->tr", K2), 2: np.einsum("btsbtq->sq", K2)}
    kb = lin.K_blocks()
    assert kb.form == "fan_in"
    for route in ("gram", "fan_in"):
        for axes in ((0,), (1,), (2,), (0, 2), (1, 2), (0, 1, 2)):
            got = kb.axis_grams(axes, route=route)
            assert sorted(got) == list(axes)
            for a in axes:
                assert _rel(got[a], dense[a]) <= RTOL, (route, axes, a)


def test_trajectory_kernel_with_inactive_gates():
    """Rows where some of a site's gates have d = 0 (GRU, 3 gates: two, one or none active) take the kernel's
    fused passes (two or three active gates in one pass over the row) or its per-gate loop; every K_u and the
    Gram route's D_a agree with K built by KBlocks.matmat (einsum over the same sites, no kernel) to RTOL
    (module docstring). A gate's term dropped or taken twice changes K_u at O(1)."""
    lin = _problem("gru", B=3, T=10, H=5)
    kb = lin.K_blocks()
    sites = []
    for site in kb.sites:
        d = site.d.copy()
        d[0::4, :, 1] = 0.0            # gates 0 and 2 active
        d[1::4, :, 0] = 0.0            # gates 1 and 2 active
        d[2::4, :, :2] = 0.0           # gate 2 only
        d[3::8] = 0.0                  # no gate
        sites.append(UnitSite(site.params, site.activity, d))
    wrong = KBlocks(kb.shape, kb.units, sites)
    K = wrong.matmat(np.eye(wrong.size))
    B, T, S = wrong.shape
    K4 = K.reshape(B * T, S, B * T, S)
    for u in range(wrong.units):
        assert _rel(wrong.trajectory_block(u), K4[:, u, :, u]) <= RTOL, u
    K2 = (K @ K).reshape(wrong.shape * 2)
    dense = {0: np.einsum("btscts->bc", K2), 1: np.einsum("btsbrs->tr", K2), 2: np.einsum("btsbtq->sq", K2)}
    got = wrong.axis_grams((0, 1, 2), route="gram")
    for a in (0, 1, 2):
        assert _rel(got[a], dense[a]) <= RTOL, a


def test_trajectory_blocks_are_exactly_symmetric():
    """K_u's entry (j, i) is computed by the same floating-point operations as (i, j)."""
    for name in ("gru", "lstm", "elman_tanh"):
        kb = _problem(name, B=2, T=5, H=3).K_blocks()
        for u in range(kb.units):
            Ku = kb.trajectory_block(u)
            assert np.array_equal(Ku, Ku.T), (name, u)

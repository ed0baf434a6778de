"""``python -m kpref verify``: the oracle checks itself on every built-in cell.

For each cell and a few sizes (random parameters with gain g = 1.5, random
inputs and initial state, all from one seeded ``numpy.random.Generator``):

========================  ==============================================  =========
check                     metric                                          threshold
========================  ==============================================  =========
dot A/Aᵀ, G/Gᵀ            worst symmetric dot-test residual               1e-13
dot P/P*, J/Jᵀ, K, NTK    worst symmetric dot-test residual               1e-13
tangent (complex step)    ‖jvp − Im F(z + i s v)/s‖ / ‖·‖ (A and G)       1e-12
tangent (Richardson)      same against an extrapolated central difference 1e-8
taylor (h, θ)             worst |rate − 2| over the last three rates (0  0.1
                          when F is exactly linear along the direction)
dz/dθ = P J_θ             relative error against the complex step         1e-12
grad = J_θᵀ P* e          relative error against the complex step of L    1e-12
P_inv P = I               relative error                                  1e-12
K Kronecker = J Jᵀ        relative error of the Kronecker core of SPEC §3 1e-12
                          on a block of 3 vectors (cells with weight sites;
                          the ODE cells have none: parameters enter every
                          integrator stage)
P materialized = free     relative error of P and P* between the two      1e-13
                          strategies on a block of 3 vectors
========================  ==============================================  =========

Exit status 0 when every row passes, 1 otherwise.
"""

from __future__ import annotations

import time

import numpy as np

from ..cells._simulate import _run
from ._checkers import complex_step, dottest, dottest_pair, richardson, taylor_test
from ._metrics import relative_error

__all__ = ["run_verify", "verify_cell"]


_rel = relative_error


def _taylor_worst(f, x, dx, d):
    """Worst |rate − 2| of the last three Taylor rates; 0 when f is exactly linear along dx.

    A map linear along ``dx`` (F of LeakyRNN, Euler RateODE and Linear in θ)
    has no second-order term: its remainder is round-off at every step. Then
    the tangent must be exact, ``‖f(x+dx) − f(x) − d‖ ≤ 1e-12 ‖d‖``, and the
    row reports that relative remainder instead of a rate.
    """
    f0 = f(x)
    lin_rem = np.linalg.norm(np.ravel(f(x + dx) - f0 - d)) / max(np.linalg.norm(np.ravel(d)), 1e-300)
    if lin_rem <= 1e-12:
        return 0.0
    try:
        rates = taylor_test(f, x, dx, d)
    except AssertionError:
        return np.inf
    return float(np.max(np.abs(rates[-3:] - 2.0)))


def verify_cell(name, cell, rng, B, T):
    """Rows ``(check, cell, size, worst residual, threshold)`` for one cell and size."""
    from ..operators._linearization import linearize

    rows = []
    size = f"B={B},T={T},N={cell.input_size},S={cell.state_size}"
    theta = cell.init_params(rng=rng, g=1.5)
    x = rng.standard_normal((B, T, cell.input_size))
    h0 = 0.5 * rng.standard_normal((B, cell.state_size))
    lin = linearize(cell, theta, x, h0, strategy="matrix_free")
    pt = lin.point
    M, S, p = pt.num_rows, cell.state_size, cell.num_params

    def dot(fwd, adj, shp_in, shp_out):
        return dottest_pair(fwd, adj, shp_in, shp_out, rng=rng, n_pairs=4, rtol=np.inf)

    rows.append(("dot A/A^T", dot(lambda V: cell._state_jvp(pt, V), lambda W: cell._state_vjp(pt, W),
                                  (3, M, S), (3, M, S)), 1e-13))
    rows.append(("dot G/G^T", dot(lambda d: cell._param_jvp(pt, d), lambda W: cell._param_vjp(pt, W),
                                  (3, p), (3, M, S)), 1e-13))
    worst = max(dottest(op, rng=rng, n_pairs=3, rtol=np.inf) for op in (lin.P, lin.J_theta, lin.P_inv))
    rows.append(("dot P/P*, J/J^T, P_inv", worst, 1e-13))
    worst = max(dottest(op, rng=rng, n_pairs=3, rtol=np.inf) for op in (lin.K, lin.NTK))
    rows.append(("dot K, NTK (symmetric)", worst, 1e-13))

    v = rng.standard_normal(pt.h.shape)
    d = rng.standard_normal(p)
    analytic = cell.analytic
    if analytic:
        cs_h = complex_step(lambda h: cell._step(theta.astype(complex), h, pt.x.astype(complex)), pt.h, v)
        cs_t = complex_step(lambda th: cell._step(th, pt.h.astype(complex), pt.x.astype(complex)), theta, d)
        err = max(_rel(cell._state_jvp(pt, v[None])[0], cs_h), _rel(cell._param_jvp(pt, d[None])[0], cs_t))
        rows.append(("tangent vs complex step", err, 1e-12))
    else:
        est_h, _ = richardson(lambda h: cell._step(theta, h, pt.x), pt.h, v, h=1e-4)
        est_t, _ = richardson(lambda th: cell._step(th, pt.h, pt.x), theta, d, h=1e-4)
        err = max(_rel(cell._state_jvp(pt, v[None])[0], est_h), _rel(cell._param_jvp(pt, d[None])[0], est_t))
        rows.append(("tangent vs Richardson", err, 1e-8))

    if analytic:  # ReLU is piecewise linear: its remainder vanishes between kinks
        hp = pt.h + 0.5 * rng.standard_normal(pt.h.shape)
        pt2 = cell.point(theta, hp, pt.x)
        worst = max(
            _taylor_worst(lambda h: cell._step(theta, h, pt.x), hp, v, cell._state_jvp(pt2, v[None])[0]),
            _taylor_worst(lambda th: cell._step(th, hp, pt.x), theta, d, cell._param_jvp(pt2, d[None])[0]),
        )
        rows.append(("taylor |rate-2| (h, theta)", worst, 0.1))

    if analytic:
        cs = complex_step(lambda th: _run(cell, th.astype(complex), x, h0), theta, d)
        pred = lin.P.matvec(lin.J_theta.matvec(d)).reshape(lin.shape)
        rows.append(("dz/dtheta = P J_theta", _rel(pred, cs), 1e-12))
        R = cell.output_size
        w_out = rng.standard_normal((2, R))
        target = rng.standard_normal((B, T, 2))

        def L(th):
            y = _run(cell, th, x, h0)[:, :, :R] @ w_out.T - target
            return np.sum(y * y)

        from ..operators import mse_loss

        e = mse_loss(lin.z, target, w_out, reduction="sum", cell=cell).e
        cs = complex_step(lambda th: L(th.astype(complex)), theta, d)
        rows.append(("grad = J^T P* e", abs(lin.grad(e) @ d - cs) / max(abs(cs), 1e-300), 1e-12))
    if cell.has_weight_sites:  # the Kronecker core of SPEC §3 (discrete cells; ODE stages have no single site)
        W = rng.standard_normal((lin.size, 3))
        rows.append(("K Kronecker = J J^T", _rel(lin.K_kronecker.matmat(W), lin.K.matmat(W)), 1e-12))
    mat = linearize(cell, theta, x, h0, strategy="materialized")
    W = rng.standard_normal((lin.size, 3))
    rows.append(("P materialized = matrix-free",
                 max(_rel(mat.P.matmat(W), lin.P.matmat(W)), _rel(mat.P.rmatmat(W), lin.P.rmatmat(W))), 1e-13))
    q = rng.standard_normal(lin.size)
    rows.append(("P_inv P = I", _rel(lin.P_inv.matvec(lin.P.matvec(q)), q), 1e-12))
    return [(check, name, size, float(val), thr) for check, val, thr in rows]


def _builtin_cells(quick):
    import kpref

    H = 4 if quick else 8
    return [
        ("Elman(tanh)", kpref.Elman(3, H)),
        ("Elman(relu)", kpref.Elman(3, H, "relu")),
        ("GRU", kpref.GRU(3, H)),
        ("LeakyRNN(a=0.2)", kpref.LeakyRNN(3, H, alpha=0.2)),
        ("Linear", kpref.Linear(3, H)),
        ("LSTM", kpref.LSTM(3, H)),
        ("RateODE(euler)", kpref.RateODE(3, H, dt=0.1, method="euler")),
        ("RateODE(midpoint)", kpref.RateODE(3, H, dt=0.1, method="midpoint")),
        ("RateODE(rk4)", kpref.RateODE(3, H, dt=0.1, method="rk4")),
    ]


def run_verify(quick=False, seed=0, out=print, *, cells=None):
    """Run every check, print the table, return the exit status (0 all pass, 1 otherwise).

    ``cells`` (optional): ``(label, cell)`` pairs to check instead of the built-in cells.
    """
    rng = np.random.default_rng(seed)
    sizes = [(2, 6)] if quick else [(2, 6), (3, 20), (1, 60)]
    start = time.perf_counter()
    rows = []
    for name, cell in (_builtin_cells(quick) if cells is None else cells):
        for B, T in sizes:
            rows.extend(verify_cell(name, cell, rng, B, T))
    header = f"{'check':<30} {'cell':<18} {'size':<22} {'worst':>10} {'threshold':>10}  result"
    out(header)
    out("-" * len(header))
    failed = 0
    for check, name, size, val, thr in rows:
        ok = bool(val <= thr)
        failed += not ok
        out(f"{check:<30} {name:<18} {size:<22} {val:10.2e} {thr:10.1e}  {'pass' if ok else 'FAIL'}")
    out("-" * len(header))
    out(f"{len(rows) - failed} passed, {failed} failed  ({time.perf_counter() - start:.1f} s, seed {seed})")
    return 0 if failed == 0 else 1

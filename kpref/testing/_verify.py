"""``python -m kpref verify``: the oracle checks itself on every built-in cell.

For each cell and a few sizes (random parameters with gain g = 1.5, random
inputs and initial state, all from one seeded ``numpy.random.Generator``).
Every row goes through the checkers of :mod:`kpref.testing` (``dottest``,
``taylor_test``, ``complex_step``, ``richardson``); none has its own copy.

==============================  ============================================  =========
check                           metric                                        threshold
==============================  ============================================  =========
dot A/Aᵀ, G/Gᵀ                  worst symmetric dot-test residual             1e-13
dot P/P*, J/Jᵀ, P_inv           same, matrix-free operators                   1e-13
dot K, NTK (symmetric)          same                                          1e-13
dot materialized P, P_inv       same, on the materialized strategy            1e-13
tangent (complex step)          ‖jvp − Im F(z + i s v)/s‖ / ‖·‖ (A and G)     1e-12
tangent (Richardson, ReLU)      same against an extrapolated central          1e-8
                                difference
taylor (h, θ)                   worst |rate − 2| of the last three rates (0   0.1
                                when F is exactly linear along the direction)
dz/dθ = P J_θ                   relative error against the complex step       1e-12
grad = J_θᵀ P* e                relative error against the complex step of L  1e-12
                                (sum reduction, no mask)
grad, masked mean loss          same for a 0/1 (B, T) mask and 'mean'; and    1e-12
                                the loss value against L written out
P_inv P = I, P_inv* P* = I      relative error, both strategies               1e-12
P, P* materialized = free       relative error between the strategies on a    1e-13
                                block of 3 vectors
P_inv, P_inv* materialized      same for P⁻¹ and its adjoint                  1e-13
= free
NTK materialized = free         same for the NTK                              1e-12
K Kronecker = J Jᵀ              relative error of the Kronecker core of SPEC  1e-12
                                §3 on a block of 3 vectors (every cell with
                                weight sites; the ODE cells have none)
continuous adjoint order        |fitted order − method order| of             0.5
                                ‖g_cont − g_disc‖ over dt/2, dt/4, dt/8 (ODE
                                cells; the input held, loads at the original
                                sample times)
==============================  ============================================  =========

Thresholds: dot tests and strategy agreements are rounding (a few n ε,
n ≤ 10³); complex-step comparisons are rounding of two exact derivatives
(1e-12 leaves 4500 ε for the sweeps over T ≤ 60 steps); Richardson at
h = 1e-4 with 4 levels has truncation O(h⁸) and rounding O(ε/h) ≈ 2e-12,
so 1e-8 is 5000× that rounding; the fitted order of a p-th order method
is p up to O(dt) terms (±0.5, as the tests of the ODE cells).

Exit status 0 when every row passes, 1 otherwise.
"""

from __future__ import annotations

import time

import numpy as np

from ..cells._simulate import _run
from .._checks import as_generator, as_real_array, check_positive_int, check_size_memory
from ._checkers import complex_step, dottest, dottest_pair, richardson, taylor_test
from ._metrics import relative_error

__all__ = ["run_verify", "verify_cell"]


_rel = relative_error


def _taylor_worst(f, x, dx, d):
    """Worst |rate − 2| of the last three rates of :func:`taylor_test` (``linear_ok``: 0 when f is
    exactly linear along dx and the tangent is its whole increment); inf when the test fails."""
    try:
        rates = taylor_test(f, x, dx, d, linear_ok=True)
    except AssertionError:
        return np.inf
    return float(np.max(np.abs(rates[-3:] - 2.0))) if rates.size else 0.0


def _with_dt(cell, dt):
    """The same ODE cell (field, sizes, tableau) with step ``dt``."""
    from ..ode import ODECell

    return ODECell(cell.field, cell.input_size, cell.state_size, dt, cell.tableau,
                   output_size=cell.output_size, check=False)


def continuous_adjoint_order(cell, theta, x, h0, e, levels=(2, 4, 8)):
    """Fitted order of ``‖g_cont − g_disc‖ / ‖g_disc‖`` against ``dt/r``, ``r`` in ``levels``.

    ``g_disc`` is the exact discrete gradient ``lin.grad`` and ``g_cont`` the
    continuous adjoint's (``linearize(..., adjoint='continuous').grad``) of the
    ODE cell ``cell`` with step ``cell.dt / r``. The input ``x`` (B, T, N) is
    held (each sample repeated ``r`` times) and the loads ``e`` (B, T, S) stay
    at the original sample times, so every refinement is one continuous
    problem. Returns ``(order, relative differences)``.
    """
    from ..operators._linearization import linearize

    from ..cells._simulate import check_problem
    from ..ode import ODECell

    if not isinstance(cell, ODECell):
        raise TypeError(f"cell: expected a kpref ODE cell (ODECell or RateODE: it has a step dt to refine), "
                        f"got {type(cell).__name__}")
    theta, x, h0 = check_problem(cell, theta, x, h0)
    B, T = x.shape[:2]
    e = as_real_array("e", e, (B, T, cell.state_size), ("B", "T", "S"))
    if isinstance(levels, (str, bytes)) or not hasattr(levels, "__iter__"):
        raise TypeError(f"levels: expected a sequence of refinement factors (ints >= 1), got {levels!r}")
    levels = tuple(check_positive_int(f"levels[{i}]", r) for i, r in enumerate(levels))
    if len(set(levels)) < 2:
        raise ValueError(f"levels: expected at least two distinct refinement factors (an order is a slope), "
                         f"got {levels}")
    check_size_memory(f"levels={levels}", 8 * 6 * B * T * max(levels) * (cell.state_size + cell.input_size),
                      what="the refined trajectories")
    B, T, S = e.shape
    dts, diffs = [], []
    for r in levels:
        fine = _with_dt(cell, cell.dt / r)
        xr = np.repeat(x, r, axis=1)
        er = np.zeros((B, T * r, S))
        er[:, r - 1::r] = e
        g_disc = linearize(fine, theta, xr, h0, strategy="matrix_free").grad(er)
        g_cont = linearize(fine, theta, xr, h0, strategy="matrix_free", adjoint="continuous").grad(er)
        dts.append(cell.dt / r)
        diffs.append(_rel(g_cont, g_disc))
    return float(np.polyfit(np.log(dts), np.log(diffs), 1)[0]), diffs


def verify_cell(name, cell, rng, B, T):
    """Rows ``(check, cell, size, worst residual, threshold)`` for one cell and size."""
    import kpref
    from ..operators._linearization import linearize

    from ..cells import Cell

    if not isinstance(name, str):
        raise TypeError(f"name: expected the cell's name (a string), got {type(name).__name__}")
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    rng = as_generator(rng)
    B = check_positive_int("B", B)
    T = check_positive_int("T", T)
    # x, h, the materialized A_t blocks and a few trajectory-sized vectors
    check_size_memory(f"B={B}, T={T}", 8 * B * T * (cell.input_size + 8 * cell.state_size
                                                    + 2 * cell.state_size * cell.state_size),
                      what=f"the verification problem of {name}")
    rows = []
    size = f"B={B},T={T},N={cell.input_size},S={cell.state_size}"
    theta = cell.init_params(rng=rng, g=1.5)
    x = rng.standard_normal((B, T, cell.input_size))
    h0 = 0.5 * rng.standard_normal((B, cell.state_size))
    lin = linearize(cell, theta, x, h0, strategy="matrix_free")
    mat = linearize(cell, theta, x, h0, strategy="materialized")
    pt = lin.point
    M, S, p = pt.num_rows, cell.state_size, cell.num_params

    def dot(fwd, adj, shp_in, shp_out):
        return dottest_pair(fwd, adj, shp_in, shp_out, rng=rng, n_pairs=4, rtol=np.inf)

    def dots(*ops):
        return max(dottest(op, rng=rng, n_pairs=3, rtol=np.inf) for op in ops)

    rows.append(("dot A/A^T", dot(lambda V: cell._state_jvp(pt, V), lambda W: cell._state_vjp(pt, W),
                                  (3, M, S), (3, M, S)), 1e-13))
    rows.append(("dot G/G^T", dot(lambda d: cell._param_jvp(pt, d), lambda W: cell._param_vjp(pt, W),
                                  (3, p), (3, M, S)), 1e-13))
    rows.append(("dot P/P*, J/J^T, P_inv", dots(lin.P, lin.J_theta, lin.P_inv), 1e-13))
    rows.append(("dot K, NTK (symmetric)", dots(lin.K, lin.NTK), 1e-13))
    rows.append(("dot materialized P, P_inv", dots(mat.P, mat.P_inv), 1e-13))

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
        R, O = cell.output_size, 2
        w_out = rng.standard_normal((O, R))
        target = rng.standard_normal((B, T, O))
        mask = (rng.random((B, T)) < 0.6).astype(float)
        mask[0, -1] = 1.0  # never all zero

        def L(th, m=None, c=1.0):
            y = _run(cell, th, x, h0)[:, :, :R] @ w_out.T - target
            return np.sum(y * y * (1.0 if m is None else m[:, :, None])) / c

        e = kpref.mse_loss(lin.z, target, w_out, reduction="sum", cell=cell).e
        cs = complex_step(lambda th: L(th.astype(complex)), theta, d)
        rows.append(("grad = J^T P* e", abs(lin.grad(e) @ d - cs) / max(abs(cs), 1e-300), 1e-12))
        c = float(B * T * O)
        loss = kpref.mse_loss(lin.z, target, w_out, mask=mask, reduction="mean", cell=cell)
        cs = complex_step(lambda th: L(th.astype(complex), mask, c), theta, d)
        err = max(abs(lin.grad(loss.e) @ d - cs) / max(abs(cs), 1e-300),
                  abs(loss.value - L(theta, mask, c)) / max(abs(loss.value), 1e-300))
        rows.append(("grad, masked mean loss", err, 1e-12))

    W = rng.standard_normal((lin.size, 3))
    rows.append(("P_inv P = I, P_inv* P* = I",
                 max(_rel(o.P_inv.matmat(o.P.matmat(W)), W) for o in (lin, mat))
                 + max(_rel(o.P_inv.rmatmat(o.P.rmatmat(W)), W) for o in (lin, mat)), 1e-12))
    rows.append(("P, P* materialized = free",
                 max(_rel(mat.P.matmat(W), lin.P.matmat(W)), _rel(mat.P.rmatmat(W), lin.P.rmatmat(W))), 1e-13))
    rows.append(("P_inv, P_inv* materialized = free",
                 max(_rel(mat.P_inv.matmat(W), lin.P_inv.matmat(W)),
                     _rel(mat.P_inv.rmatmat(W), lin.P_inv.rmatmat(W))), 1e-13))
    rows.append(("NTK materialized = free", _rel(mat.NTK.matmat(W), lin.NTK.matmat(W)), 1e-12))
    if cell.has_weight_sites:  # the Kronecker core of SPEC §3 (discrete cells; ODE stages have no single site)
        rows.append(("K Kronecker = J J^T", _rel(lin.K_kronecker.matmat(W), lin.K.matmat(W)), 1e-12))
    if cell.has_continuous_adjoint:
        xo, ho = rng.standard_normal((2, 4, cell.input_size)), rng.standard_normal((2, cell.state_size))
        order, _ = continuous_adjoint_order(cell, theta, xo, ho, rng.standard_normal((2, 4, cell.state_size)))
        rows.append(("continuous adjoint order", abs(order - cell.order), 0.5))
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

    ``cells`` (optional): ``[(label, cell), …]`` to verify instead of the built-in cells.
    """
    rng = np.random.default_rng(seed)
    sizes = [(2, 6)] if quick else [(2, 6), (3, 20), (1, 60)]
    start = time.perf_counter()
    rows = []
    for name, cell in (_builtin_cells(quick) if cells is None else cells):
        for B, T in sizes:
            rows.extend(verify_cell(name, cell, rng, B, T))
    header = f"{'check':<34} {'cell':<18} {'size':<22} {'worst':>10} {'threshold':>10}  result"
    out(header)
    out("-" * len(header))
    failed = 0
    for check, name, size, val, thr in rows:
        ok = bool(val <= thr)
        failed += not ok
        out(f"{check:<34} {name:<18} {size:<22} {val:10.2e} {thr:10.1e}  {'pass' if ok else 'FAIL'}")
    out("-" * len(header))
    out(f"{len(rows) - failed} passed, {failed} failed  ({time.perf_counter() - start:.1f} s, seed {seed})")
    return 0 if failed == 0 else 1

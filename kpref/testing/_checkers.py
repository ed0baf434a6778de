"""Checkers for derivatives and operators, usable from any project's tests.

* :func:`dottest` / :func:`dottest_pair` — is the adjoint the adjoint?
* :func:`taylor_test` — is the derivative the derivative (remainder at rate 2)?
* :func:`complex_step` — a derivative to rounding, for analytic functions.
* :func:`richardson` — an extrapolated central difference with an error estimate.

Each checker raises ``AssertionError`` with a diagnosis (the check, the
metric, the threshold, what to try next) and returns the number it judged,
so a test can also report it.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._checks import as_generator, as_real_array, check_positive_int

__all__ = ["dottest", "dottest_pair", "taylor_test", "complex_step", "richardson"]

_EPS = np.finfo(np.float64).eps


def dottest_pair(forward, adjoint, in_shape, out_shape, *, rng=None, n_pairs=8, rtol=1e-13, name="operator"):
    """Dot test of a pair of callables ``forward: R^in → R^out``, ``adjoint: R^out → R^in``.

    Draws ``n_pairs`` standard-normal pairs ``(u, w)`` from ``rng`` and returns
    the worst symmetric residual

        |⟨A u, w⟩ − ⟨u, Aᴴ w⟩| / (‖A u‖ ‖w‖ + ‖u‖ ‖Aᴴ w‖)

    (0 when both products vanish). Raises ``AssertionError`` with both inner
    products, the residual and the threshold if it exceeds ``rtol``.
    """
    rng = as_generator(rng)
    n_pairs = check_positive_int("n_pairs", n_pairs)
    worst, report = 0.0, None
    for i in range(n_pairs):
        u = rng.standard_normal(in_shape)
        w = rng.standard_normal(out_shape)
        Au = np.asarray(forward(u), dtype=np.float64)
        Aw = np.asarray(adjoint(w), dtype=np.float64)
        if Au.shape != tuple(np.atleast_1d(out_shape)) and Au.size != w.size:
            raise AssertionError(f"dottest({name}): forward returned shape {Au.shape}, expected {out_shape}")
        if Aw.size != u.size:
            raise AssertionError(f"dottest({name}): adjoint returned shape {Aw.shape}, expected {in_shape}")
        lhs = float(np.vdot(Au.ravel(), w.ravel()))
        rhs = float(np.vdot(u.ravel(), Aw.ravel()))
        scale = np.linalg.norm(Au) * np.linalg.norm(w) + np.linalg.norm(u) * np.linalg.norm(Aw)
        res = abs(lhs - rhs) / scale if scale > 0 else (0.0 if lhs == rhs else np.inf)
        if res > worst or report is None:
            worst, report = max(worst, res), (i, lhs, rhs, res)
    if not worst <= rtol:
        i, lhs, rhs, res = report
        raise AssertionError(
            f"dottest({name}) failed: <A u, w> = {lhs!r} but <u, A^H w> = {rhs!r} (pair {i}); "
            f"symmetric residual {res:.3e} > threshold {rtol:.1e}. The adjoint is not the transpose of the "
            "forward map: check the adjoint statement by statement against the forward it transposes."
        )
    return worst


def dottest(op, *, rng=None, n_pairs=8, rtol=1e-13):
    """Dot test of a ``LinearOperator`` (or matrix) against its adjoint ``op.H``.

    Returns the worst symmetric residual over ``n_pairs`` random pairs; raises
    ``AssertionError`` with both inner products, the residual and the
    threshold when it exceeds ``rtol``. See :func:`dottest_pair`.
    """
    if not isinstance(op, LinearOperator):
        op = aslinearoperator(op)
    n, m = op.shape
    return dottest_pair(op.matvec, op.rmatvec, (m,), (n,), rng=rng, n_pairs=n_pairs, rtol=rtol,
                        name=getattr(op, "name", type(op).__name__))


def taylor_test(f, x, dx, derivative, *, h0=None, n_steps=18, floor=None, linear_ok=False):
    """Taylor remainder test: ``‖f(x + h dx) − f(x) − h f'(x)dx‖`` must fall as ``h²``.

    Parameters
    ----------
    f : callable
        Maps an array shaped like ``x`` to an array (or float).
    x, dx : arrays of one shape
    derivative : array
        The claimed directional derivative ``f'(x) dx`` (shape of ``f(x)``).
    h0 : float, optional
        Largest step (default ``0.5 / rms(dx)``).
    n_steps : int
        Number of halvings.
    floor : float, optional
        Remainders below it are at round-off and discarded (default
        ``1e4 · eps · max‖f(x + h dx)‖``).
    linear_ok : bool
        If True, an ``f`` that is exactly linear along ``dx`` passes: when every
        remainder is at round-off (so no rate can be measured) the test instead
        requires ``‖f(x + h0 dx) − f(x) − h0 f'(x)dx‖ ≤ 1e-12 · h0‖f'(x)dx‖``,
        i.e. that the claimed derivative *is* the whole increment. A wrong
        derivative still fails (its remainder is O(h0), far above round-off).
        Use it for maps that are linear in some directions for some data
        (a bias-free LeakyRNN in θ over one step, a Linear cell).

    Returns
    -------
    rates : ndarray
        ``log2(r(h) / r(h/2))`` for consecutive kept steps.

    Passes when at least three consecutive rates are within 0.1 of 2 at the
    smallest steps above the round-off floor (the asymptotic regime: at large
    steps a wrong derivative can still show rate 2, because the h² term
    dominates its O(h) error there); the
    failure message prints the table and says "derivative wrong" (rates near
    1: the first-order term does not cancel) or "step range at round-off"
    (too few steps above the floor: raise ``h0``).
    """
    x = as_real_array("x", x, allow_empty=False)
    dx = as_real_array("dx", dx, x.shape)
    f0 = np.asarray(f(x), dtype=np.float64)
    d = as_real_array("derivative", np.asarray(derivative, dtype=np.float64).reshape(f0.shape), f0.shape,
                      allow_empty=True) if f0.ndim else float(derivative)
    if h0 is None:
        h0 = 0.5 / max(np.linalg.norm(dx) / np.sqrt(dx.size), 1e-300)
    hs = h0 * 0.5 ** np.arange(n_steps)
    rem, scale = [], []
    for h in hs:
        fh = np.asarray(f(x + h * dx), dtype=np.float64)
        rem.append(float(np.linalg.norm(np.ravel(fh - f0 - h * d))))
        scale.append(float(max(np.linalg.norm(np.ravel(fh)), np.linalg.norm(np.ravel(f0)))))
    rem = np.array(rem)
    floor = 1e4 * _EPS * max(scale) if floor is None else floor
    keep = rem > floor
    rates = np.full(n_steps - 1, np.nan)
    for i in range(n_steps - 1):
        if keep[i] and keep[i + 1]:
            rates[i] = np.log2(rem[i] / rem[i + 1])
    # judge the asymptotic regime: the run of good rates must reach the smallest
    # steps still above round-off (a wrong derivative can show rate 2 at large h,
    # where the h² term dominates the O(h) error, and fall to 1 below)
    valid_idx = np.flatnonzero(~np.isnan(rates))
    best = 0
    for i in valid_idx[::-1]:
        if abs(rates[i] - 2.0) > 0.1:
            break
        best += 1
    if best < 3 and linear_ok and not keep.any():
        if rem[0] <= 1e-12 * h0 * max(float(np.linalg.norm(np.ravel(d))), 1e-300) + floor:
            return np.empty(0)
    if best < 3:
        table = "\n".join(
            f"  h={h:10.3e}  remainder={r:10.3e}  rate={'   -   ' if np.isnan(q) else f'{q:6.3f}'}"
            f"{'' if k else '  (at round-off, discarded)'}"
            for h, r, q, k in zip(hs, rem, np.append(rates, np.nan), keep)
        )
        valid = rates[~np.isnan(rates)]
        if valid.size < 3:
            verdict = "step range at round-off: fewer than 4 steps above the floor; raise h0"
        elif np.median(valid) < 1.5:
            verdict = "derivative wrong: remainders fall at rate ~1, the first-order term does not cancel"
        else:
            verdict = "rates not settled at 2: widen the step range (more n_steps, another h0)"
        raise AssertionError(f"taylor_test failed ({verdict}); need the last 3 rates above round-off in [1.9, 2.1]:\n{table}")
    return rates[~np.isnan(rates)]


def complex_step(f, x, dx, h=1e-30):
    """Directional derivative ``Im f(x + i h dx) / h`` (exact to rounding for analytic ``f``).

    ``f`` must accept complex input (kpref cells: ``cell.step(..., complex_step=True)``).
    """
    x = as_real_array("x", x)
    dx = as_real_array("dx", dx, x.shape)
    return np.imag(np.asarray(f(x + 1j * h * dx))) / h


def richardson(f, x, dx, h=1e-2, levels=4):
    """Richardson-extrapolated central difference of ``f`` at ``x`` along ``dx``.

    Central differences ``D(h) = (f(x + h dx) − f(x − h dx)) / 2h`` at
    ``h, h/2, …`` are combined by the Richardson table
    ``D_{i,j} = D_{i,j-1} + (D_{i,j-1} − D_{i-1,j-1}) / (4^j − 1)``.

    Returns
    -------
    (estimate, error) : (array, float)
        The last diagonal entry and ``‖D_{n,n} − D_{n,n-1}‖``, the usual a
        posteriori error estimate.
    """
    x = as_real_array("x", x)
    dx = as_real_array("dx", dx, x.shape)
    levels = check_positive_int("levels", levels, minimum=2)
    table = []
    for i in range(levels):
        hi = h / 2**i
        row = [(np.asarray(f(x + hi * dx), dtype=np.float64) - np.asarray(f(x - hi * dx), dtype=np.float64))
               / (2 * hi)]
        for j in range(1, i + 1):
            row.append(row[j - 1] + (row[j - 1] - table[i - 1][j - 1]) / (4**j - 1))
        table.append(row)
    est = table[-1][-1]
    err = float(np.linalg.norm(np.ravel(est - table[-1][-2])))
    return est, err

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

import numbers

import numpy as np
from scipy.sparse.linalg import LinearOperator, aslinearoperator

from .._checks import MAX_RANDOM_DRAWS, as_generator, as_real_array, check_bool, check_positive_float, check_positive_int

__all__ = ["dottest", "dottest_pair", "symmetric_residual", "taylor_test", "complex_step", "richardson"]

_EPS = np.finfo(np.float64).eps


def _check_rtol(rtol):
    """``rtol`` as a float in [0, inf]; ``inf`` means "report the residual, never fail"."""
    if isinstance(rtol, (bool, np.bool_)) or not isinstance(rtol, numbers.Real):
        raise TypeError(f"rtol: expected a non-negative real number, got {rtol!r} ({type(rtol).__name__})")
    rtol = float(rtol)
    if np.isnan(rtol) or rtol < 0.0:
        raise ValueError(f"rtol: expected a number >= 0 (inf: report only, never fail), got {rtol}")
    return rtol


def _check_shape_arg(name, shape):
    """A shape argument as a tuple of positive ints (an int is a 1-D shape)."""
    dims = (shape,) if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"{name}: expected a shape (a tuple of positive integers), got {shape!r}") from None
    if not dims:
        raise ValueError(f"{name}: expected a shape with at least one dimension, got {shape!r}")
    return tuple(check_positive_int(f"{name}[{i}]", d) for i, d in enumerate(dims))


def _call_on(name, fn, v, shape_name):
    """``fn(v)``; a ValueError/TypeError/IndexError raised by ``fn`` on ``v`` names ``fn`` and ``shape_name``.

    A map that cannot take an input of the declared shape usually means the shape is wrong: the raw
    message (a NumPy "matmul: dimension mismatch") would name neither.
    """
    try:
        return fn(v.copy())
    except (ValueError, TypeError, IndexError) as exc:
        cls = TypeError if isinstance(exc, TypeError) else ValueError
        raise cls(f"{name}: failed on an input of {shape_name}={v.shape} ({type(exc).__name__}: {exc}); "
                        f"check {shape_name} and {name}") from exc


def _real_result(name, value, shape, shape_name=None):
    """The output of a map under test as float64 of ``shape``: complex, non-numeric, mis-shaped or
    non-finite output is refused (a checker cannot judge it), never cast, reshaped or ignored."""
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(
            f"{name}: returned complex values (dtype {arr.dtype}); the dot test judges real operators "
            "only, and casting would drop the imaginary part")
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected real floating values, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name}: returned shape {arr.shape}, expected {shape}"
                         + (f" ({shape_name})" if shape_name else ""))
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: returned non-finite values ({int((~np.isfinite(arr)).sum())} entries); "
                         "a dot test cannot judge them")
    return arr


def _norm(v):
    """Euclidean norm without under/overflow: ‖v‖ = m ‖v/m‖ with m = max|v|.

    ``np.linalg.norm`` squares the entries: below ~1e-154 the squares
    underflow (norm 0 or subnormal garbage), above ~1e154 they overflow (inf).
    """
    m = float(np.max(np.abs(v))) if v.size else 0.0
    if m == 0.0:
        return 0.0
    return m * float(np.linalg.norm(v / m))


def _product(a, b):
    """``a·b`` as ``(mantissa, exponent)`` with ``a·b = mantissa · 2**exponent`` (``(0.0, 0)`` if either is 0)."""
    if a == 0.0 or b == 0.0:
        return 0.0, 0
    ma, ea = np.frexp(a)
    mb, eb = np.frexp(b)
    return float(ma * mb), int(ea + eb)


def _unit(v, n):
    return v / n if n > 0.0 else v


def symmetric_residual(u, w, Au, Aw):
    """``|⟨A u, w⟩ − ⟨u, Aᴴ w⟩| / (‖A u‖ ‖w‖ + ‖u‖ ‖Aᴴ w‖)`` without under/overflow at any magnitude.

    Each vector is scaled to unit norm before the inner products, and the two
    norm products are scaled by a common power of two: ``c_1 = ‖A u‖ ‖w‖ / s``,
    ``c_2 = ‖u‖ ‖Aᴴ w‖ / s`` with ``s ≈ max`` of the two, so the residual is
    ``|c_1 ⟨â, ŵ⟩ − c_2 ⟨û, b̂⟩| / (c_1 + c_2)`` (hats: unit vectors). Its
    rounding error is that of the unit-vector inner products, ``~ n ε``,
    whatever the scale of the data. 0 when both products vanish.
    """
    u, w = as_real_array("u", u), as_real_array("w", w)
    Au = as_real_array("Au", Au, w.shape)      # A u lives where w does, Aᴴ w where u does
    Aw = as_real_array("Aw", Aw, u.shape)
    nu, nw, na, nb = _norm(u), _norm(w), _norm(Au), _norm(Aw)
    # the products ‖A u‖‖w‖ and ‖u‖‖Aᴴ w‖ as mantissa · 2^exponent: exact power-of-two scaling, no
    # under/overflow, and no rounding beyond the mantissa product (logarithms would lose ~|log| ε)
    (m1, e1), (m2, e2) = _product(na, nw), _product(nu, nb)
    if m1 == 0.0 and m2 == 0.0:
        return 0.0
    top = max(e1 if m1 else e2, e2 if m2 else e1)
    c1, c2 = np.ldexp(m1, e1 - top), np.ldexp(m2, e2 - top)
    i1 = float(np.vdot(_unit(Au, na).ravel(), _unit(w, nw).ravel()))
    i2 = float(np.vdot(_unit(u, nu).ravel(), _unit(Aw, nb).ravel()))
    return abs(c1 * i1 - c2 * i2) / (c1 + c2)


def dottest_pair(forward, adjoint, in_shape, out_shape, *, rng=None, n_pairs=8, rtol=1e-13, name="operator"):
    """Dot test of a pair of callables ``forward: R^in → R^out``, ``adjoint: R^out → R^in``.

    Draws ``n_pairs`` standard-normal pairs ``(u, w)`` from ``rng`` and returns
    the worst symmetric residual

        |⟨A u, w⟩ − ⟨u, Aᴴ w⟩| / (‖A u‖ ‖w‖ + ‖u‖ ‖Aᴴ w‖)

    computed without under/overflow at any magnitude of ``A`` (see
    :func:`symmetric_residual`; 0 when both products vanish). Raises
    ``AssertionError`` with both inner products, the residual and the
    threshold if it exceeds ``rtol`` (``rtol=inf``: report only).

    ``forward(u)`` must return real floats of shape ``out_shape`` and
    ``adjoint(w)`` of shape ``in_shape``: complex, integer, mis-shaped or
    non-finite returns are refused (``TypeError``/``ValueError`` naming
    ``forward`` or ``adjoint``), as are a negative or NaN ``rtol``.
    """
    rng = as_generator(rng)
    n_pairs = check_positive_int("n_pairs", n_pairs, maximum=MAX_RANDOM_DRAWS,
                                 why="more random pairs add nothing a dot test can use, and the loop would run for years")
    rtol = _check_rtol(rtol)
    in_shape = _check_shape_arg("in_shape", in_shape)
    out_shape = _check_shape_arg("out_shape", out_shape)
    if not callable(forward):
        raise TypeError(f"forward: expected a callable, got {type(forward).__name__}")
    if not callable(adjoint):
        raise TypeError(f"adjoint: expected a callable, got {type(adjoint).__name__}")
    worst, report = -1.0, None
    for i in range(n_pairs):
        u = rng.standard_normal(in_shape)
        w = rng.standard_normal(out_shape)
        Au = _real_result("forward", _call_on("forward", forward, u, "in_shape"), out_shape, "out_shape")
        Aw = _real_result("adjoint", _call_on("adjoint", adjoint, w, "out_shape"), in_shape, "in_shape")
        res = symmetric_residual(u, w, Au, Aw)
        if res > worst:
            worst, report = res, (i, float(np.vdot(Au.ravel(), w.ravel())), float(np.vdot(u.ravel(), Aw.ravel())))
    if not worst <= rtol:
        i, lhs, rhs = report
        raise AssertionError(
            f"dottest({name}) failed: <A u, w> = {lhs!r} but <u, A^H w> = {rhs!r} (pair {i}); "
            f"symmetric residual {worst:.3e} > threshold {rtol:.1e}. The adjoint is not the transpose of the "
            "forward map: check the adjoint statement by statement against the forward it transposes."
        )
    return worst


def dottest(op, *, rng=None, n_pairs=8, rtol=1e-13):
    """Dot test of a real ``LinearOperator`` (or real matrix) against its adjoint ``op.H``.

    Returns the worst symmetric residual over ``n_pairs`` random pairs; raises
    ``AssertionError`` with both inner products, the residual and the
    threshold when it exceeds ``rtol``. See :func:`dottest_pair`. A complex
    operator or matrix is refused (``TypeError`` naming ``op``): the test
    draws real vectors and would judge only the real part.
    """
    if not isinstance(op, LinearOperator):
        arr = np.asarray(op) if not hasattr(op, "shape") or isinstance(op, np.ndarray) else op
        dtype = getattr(arr, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind == "c":
            raise TypeError(f"op: expected a real operator or matrix, got complex dtype {dtype}; "
                            "dottest draws real vectors and would judge only the real part")
        if dtype is None or np.dtype(dtype).kind != "f":
            raise TypeError(f"op: expected a real floating matrix or a LinearOperator, got dtype {dtype}")
        if isinstance(arr, np.ndarray):
            # a dense matrix is checked as any kpref array: 2-D, non-empty, finite (NaN/inf would give a verdict
            # on non-finite products, which no threshold can judge)
            arr = as_real_array("op", arr, (None, None), ("rows", "columns"))
        op = aslinearoperator(arr)
    if op.dtype is not None and np.dtype(op.dtype).kind == "c":
        raise TypeError(f"op: expected a real LinearOperator, got dtype {op.dtype}; dottest draws real "
                        "vectors and would judge only the real part")
    n, m = op.shape
    if min(n, m) < 1:
        raise ValueError(f"op: expected a non-empty operator, got shape {op.shape}")
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
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    # from the largest float (2**1024) to the smallest subnormal (2**-1074) there are 2098 halvings: more
    # steps are all h = 0 (no remainder to measure)
    n_steps = check_positive_int("n_steps", n_steps, minimum=4, maximum=2098,
                                 why="h0 / 2**n_steps underflows to 0 beyond 2098 halvings of any float")
    linear_ok = check_bool("linear_ok", linear_ok)
    f0 = _value("f(x)", f(x.copy()), None)
    d = as_real_array("derivative", derivative, allow_empty=True)
    if d.shape != f0.shape:  # never reshaped: a flat derivative of a matrix-valued f is a caller's mistake
        raise ValueError(f"derivative: expected the shape of f(x), {f0.shape}, got shape {d.shape}")
    if not _norm(dx) > 0.0:
        raise ValueError("dx: expected a non-zero direction, got all zeros (no remainder to measure)")
    if h0 is None:
        h0 = 0.5 / (_norm(dx) / np.sqrt(dx.size))
    h0 = check_positive_float("h0", h0)
    if floor is not None and not (isinstance(floor, numbers.Real) and not isinstance(floor, (bool, np.bool_))
                                  and floor == 0):
        floor = check_positive_float("floor", floor)  # 0 (keep every remainder) or a finite positive floor
    hs = h0 * 0.5 ** np.arange(n_steps)
    rem, scale = [], []
    for h in hs:
        fh = _value(f"f(x + h dx) at h={h:.3e}", f(x + h * dx), f0.shape)
        rem.append(_norm(fh - f0 - h * d))
        scale.append(max(_norm(fh), _norm(f0)))
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
        if rem[0] <= 1e-12 * h0 * _norm(d) + floor:
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

    ``f`` must accept complex input and keep it complex (kpref cells:
    ``cell.step(..., complex_step=True)``). The truncation error is
    ``O(h² ‖dx‖² |f‴|)`` with no cancellation, so ``h`` must be tiny:
    ``0 < h ≤ 1e-10`` (default 1e-30).

    Refused, because no verdict is possible (``TypeError``/``ValueError``
    naming ``f`` or ``h``): ``h`` outside (0, 1e-10]; an ``f`` that returns
    real values for complex input (it dropped the imaginary part: ``abs``,
    ``.real``, a float cast or buffer); non-finite values; and a result that
    is exactly 0 while a central difference of ``f`` along ``dx`` is not
    (``f`` is not analytic: ``abs``, ``conj`` or a real part somewhere).
    """
    x = as_real_array("x", x)
    dx = as_real_array("dx", dx, x.shape)
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    h = check_positive_float("h", h, upper=1e-10)
    out = np.asarray(f(x + 1j * h * dx))
    if out.dtype.kind != "c":
        raise TypeError(
            f"f: returned {out.dtype} values for complex input x + i h dx, so it dropped the imaginary part "
            "(abs, .real, a float cast or a float buffer); the complex step needs an f that keeps complex "
            "arithmetic (kpref cells: step(..., complex_step=True)); use richardson otherwise")
    if not np.isfinite(out).all():
        raise ValueError("f: returned non-finite values at x + i h dx; the complex step cannot judge them")
    d = np.array(np.imag(out) / h, dtype=np.float64)  # the shape of f(x), a 0-d array for a scalar f
    if not d.any():
        # An analytic f with zero derivative along dx has a central difference of O(δ²‖f‴‖) truncation plus
        # O(ε‖f‖/δ) rounding; δ = ε^(1/3) max(1, |x|)/|dx| makes both ~4e-11 ‖f‖ (for ‖f‴‖ ~ ‖f‖). A
        # difference 1e4× above that (~7e-7 ‖f‖) means f moves along dx while Im f(x + i h dx) is exactly 0.
        delta = np.cbrt(_EPS) * max(1.0, float(np.max(np.abs(x)))) / max(float(np.max(np.abs(dx))), 1e-300)
        fp = _value("f(x + δ dx)", np.real_if_close(f(x + delta * dx)), None)
        fm = _value("f(x - δ dx)", np.real_if_close(f(x - delta * dx)), fp.shape)
        cd, scale = _norm(fp - fm) / (2 * delta), max(_norm(fp), _norm(fm))
        if cd > 1e4 * (np.cbrt(_EPS) ** 2 + _EPS / np.cbrt(_EPS)) * scale:
            raise ValueError(
                f"f: the complex step is exactly 0 but a central difference of f along dx is {cd:.3e}: f is not "
                "analytic (it takes abs, conj, real or imaginary parts, or compares complex values somewhere); "
                "use richardson instead")
    return d


def richardson(f, x, dx, h=1e-2, levels=4):
    """Richardson-extrapolated central difference of ``f`` at ``x`` along ``dx``.

    Central differences ``D(h) = (f(x + h dx) − f(x − h dx)) / 2h`` at
    ``h, h/2, …`` are combined by the Richardson table
    ``D_{i,j} = D_{i,j-1} + (D_{i,j-1} − D_{i-1,j-1}) / (4^j − 1)``.

    ``h`` must be finite and > 0 and ``levels`` in [2, 30]; ``f`` must return
    finite real values of one shape (``TypeError``/``ValueError`` naming the
    argument otherwise: a difference of NaN or of dropped imaginary parts
    cannot be judged).

    Returns
    -------
    (estimate, error) : (array, float)
        The last diagonal entry and ``‖D_{n,n} − D_{n,n-1}‖``, the usual a
        posteriori error estimate.
    """
    x = as_real_array("x", x)
    dx = as_real_array("dx", dx, x.shape)
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    h = check_positive_float("h", h)
    levels = check_positive_int("levels", levels, minimum=2)
    if levels > 30:
        raise ValueError(f"levels: expected an integer in [2, 30] (h/2^29 is already at rounding), got {levels}")
    table, shape = [], None
    for i in range(levels):
        hi = h / 2**i
        fp = _value(f"f(x + h dx) at h={hi:.3e}", f(x + hi * dx), shape)
        shape = fp.shape
        fm = _value(f"f(x - h dx) at h={hi:.3e}", f(x - hi * dx), shape)
        row = [(fp - fm) / (2 * hi)]
        for j in range(1, i + 1):
            row.append(row[j - 1] + (row[j - 1] - table[i - 1][j - 1]) / (4**j - 1))
        table.append(row)
    est = table[-1][-1]
    err = _norm(np.ravel(est - table[-1][-2]))
    return est, err


def _value(what, value, shape):
    """A value of the function under test as a finite float64 array (of ``shape`` if given)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise TypeError(f"f: {what} returned complex values (dtype {arr.dtype}); expected real floats")
    if arr.dtype.kind != "f":
        raise TypeError(f"f: {what} returned dtype {arr.dtype}; expected real floats")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"f: {what} returned shape {arr.shape}, expected {shape} (the shape of f(x))")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"f: {what} returned non-finite values; no derivative can be judged there")
    return arr

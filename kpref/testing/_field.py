"""``check_field``: a user's :class:`~kpref.VectorField` checked against itself, on the shared checkers.

In this order (so a failure names the inconsistent method):

1. ``f`` returns finite (M, S) values;
2. ``jvp_z`` against a Richardson-extrapolated central difference of ``f``
   (:func:`~kpref.testing.richardson`, two levels: error ``O(ε⁴)``);
3. ``vjp_z`` against ``jvp_z`` (:func:`~kpref.testing.dottest_pair`);
4. ``jvp_params`` against a Richardson-extrapolated central difference of ``f``;
5. ``vjp_params`` against ``jvp_params`` (dot test).

Tolerances. The dot tests use the symmetric residual
``|⟨J v, w⟩ − ⟨v, Jᵀ w⟩| / (‖J v‖‖w‖ + ‖v‖‖Jᵀ w‖) ≤ rtol``. The difference
checks require ``‖D − J v‖ ≤ 1e-6 (‖J v‖ + ‖f‖ + 1e-300)``: with the step
``ε = 1e-3 · max(1, |z|_∞) / |v|_∞`` the extrapolated truncation error is
``O(ε⁴) ≈ 1e-12`` relative and the rounding error of the differences about
``eps · ‖f‖ / ε ≈ 1e-13 ‖f‖``, both far below 1e-6; a wrong derivative of
any term of ``f`` is off by O(1) of that term.
"""

from __future__ import annotations

import numpy as np

from .._checks import as_generator, check_positive_float, check_positive_int, check_size_memory
from ._checkers import dottest_pair, richardson

__all__ = ["check_field"]


def check_field(cell, rng=None, theta=None, *, num_rows=3, rtol=1e-10):
    """Check the five methods of an ODE cell's field against each other and against ``f``.

    Parameters
    ----------
    cell : kpref.ODECell
        The cell whose ``field`` is checked (``ODECell`` runs this at
        construction unless ``check=False``).
    rng : None, int or numpy.random.Generator
        Draws ``z``, ``x`` (standard normal), the directions, and
        ``theta`` if not given (``init_params``).
    theta : (p,) array, optional
    num_rows : int
        ``M``.
    rtol : float
        Dot-test threshold.

    Returns
    -------
    dict
        The residual of each check, by method name.

    Raises
    ------
    ValueError
        Naming the inconsistent method, with the figures.
    """
    from ..ode import ODECell

    if not isinstance(cell, ODECell):
        raise TypeError(f"cell: expected a kpref.ODECell (the field's integrator), got {type(cell).__name__}")
    rng = as_generator(rng)
    M = check_positive_int("num_rows", num_rows)
    # about a dozen (M, S) row blocks (z, f, cache, directions, products, Richardson's evaluations) and x
    check_size_memory(f"num_rows={M}", 8 * M * (12 * cell.state_size + 2 * cell.input_size),
                      what="the field's row blocks")
    rtol = check_positive_float("rtol", rtol)
    theta = cell.init_params(rng) if theta is None else cell.check_theta(theta)
    params = cell._params(theta)
    field, S, N = cell.field, cell.state_size, cell.input_size
    name = type(field).__name__
    z = rng.standard_normal((M, S))
    x = rng.standard_normal((M, N))
    cache = field.prepare_rows(z, x, params)
    fz = field.f_rows(z, x, params)
    report = {"f": 0.0}
    fscale = float(np.linalg.norm(fz))

    def fd_check(method, exact, fun, at, direction):
        eps = 1e-3 * max(1.0, float(np.abs(at).max())) / max(1e-300, float(np.abs(direction).max()))
        approx, _ = richardson(fun, at, direction, h=eps, levels=2)
        err = float(np.linalg.norm(approx - exact))
        scale = float(np.linalg.norm(exact)) + fscale + 1e-300
        report[method] = err / scale
        if not err <= 1e-6 * scale:
            raise ValueError(
                f"{name}.{method} is inconsistent with {name}.f: a Richardson-extrapolated central "
                f"difference of f differs from {method} by {err:.3e} (relative {err / scale:.3e} > 1e-6; "
                f"|{method}| = {np.linalg.norm(exact):.3e}, |f| = {fscale:.3e}). Check {method}'s "
                "derivative of every term of f."
            )

    def dot_check(method, partner, forward, adjoint, in_shape):
        try:
            report[method] = float(dottest_pair(forward, adjoint, in_shape, (M, S), rng=rng, n_pairs=2, rtol=rtol,
                                          name=f"{name}.{partner}/{name}.{method}"))
        except AssertionError as exc:
            raise ValueError(f"{name}.{method} is not the adjoint of {name}.{partner}: {exc} "
                             f"Transpose {partner} statement by statement.") from None

    # 2. jvp_z against f
    v = rng.standard_normal((M, S))
    jvp_z = lambda u: field.jvp_z_block(z, x, params, cache, u[None])[0]   # noqa: E731
    fd_check("jvp_z", jvp_z(v), lambda zz: field.f_rows(zz, x, params), z, v)
    # 3. vjp_z against jvp_z
    dot_check("vjp_z", "jvp_z", jvp_z, lambda w: field.vjp_z_block(z, x, params, cache, w[None])[0], (M, S))
    # 4. jvp_params against f
    dtheta = rng.standard_normal(cell.num_params)
    jvp_p = lambda d: field.jvp_params_block(z, x, params, cache, cell._unpack_block(d[None]))[0]   # noqa: E731
    fd_check("jvp_params", jvp_p(dtheta), lambda th: field.f_rows(z, x, cell._params(th)), theta, dtheta)
    # 5. vjp_params against jvp_params
    dot_check("vjp_params", "jvp_params", jvp_p,
              lambda w: cell._pack_block(field.vjp_params_block(z, x, params, cache, w[None]), 1)[0],
              (cell.num_params,))
    return report

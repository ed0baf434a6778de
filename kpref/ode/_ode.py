r"""Continuous-time cells: a user vector field integrated by an explicit Runge–Kutta step.

A continuous-time model ``dz/ds = f(z, x; θ)`` becomes a kpref cell by
integrating it over one input sample with one explicit Runge–Kutta step of
size ``Δt = dt``, the input held constant over the step (zero-order hold,
SPEC §2). ``F`` is that whole step, and the cell's tangents and adjoints are
the *exact discrete* ones: the stages are differentiated by hand, the tangent
runs them forward, the adjoint transposes them in reverse order. Every
operator of :func:`kpref.linearize` (P, P*, J_θ, K, NTK, the gradient) is
therefore exact for the computed trajectory, whatever ``dt``.

The pieces, one module each:

* :mod:`kpref.ode._field` — :class:`VectorField`, the user's contract (an ABC
  stating the linearity of each method) and the checked calls of it;
* :mod:`kpref.ode._tableau` — :class:`ButcherTableau`, a validated frozen
  explicit tableau, and :data:`METHODS`::

    Euler (order 1)      Z_1 = h;                        h' = h + Δt k_1
    midpoint (order 2)   Z_2 = h + Δt/2 k_1;             h' = h + Δt k_2
    classic RK4 (4)      Z_2 = h + Δt/2 k_1, Z_3 = h + Δt/2 k_2, Z_4 = h + Δt k_3;
                         h' = h + Δt (k_1/6 + k_2/3 + k_3/3 + k_4/6)

* :mod:`kpref.ode._stepper` — :class:`RungeKuttaStepper`, the step and its
  stage tangents and adjoints (every equation there);
* :mod:`kpref.ode._adjoint` — :class:`ContinuousAdjoint`, the adjoint ODE as
  a strategy for ``linearize(..., adjoint=)``;
* this module — :class:`ODECell`, which validates the field and glues them
  into the :class:`~kpref.Cell` hooks. ``check_field`` lives in
  :func:`kpref.testing.check_field`.
"""

from __future__ import annotations


from ..cells._cell import Cell
from .._checks import (
    as_real_array,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from ..cells._simulate import check_problem
from ._adjoint import ContinuousAdjoint
from ._field import FIELD_METHODS as _FIELD_METHODS, VectorField, _field_name, _param_shapes_of  # noqa: F401
from ._stepper import RungeKuttaStepper
from ._tableau import ButcherTableau, METHODS

__all__ = ["VectorField", "ODECell", "METHODS", "ButcherTableau"]


class ODECell(Cell):
    """A kpref cell that integrates a :class:`VectorField` over each input sample.

    ``F(h, x; θ)`` is one explicit Runge–Kutta step of size ``dt`` of
    ``dz/ds = field.f(z, x; θ)`` with ``x`` held; its tangents and adjoints
    are the exact discrete ones (see :mod:`kpref.ode._stepper` for every stage
    equation), so every operator of :func:`kpref.linearize` applies.

    Parameters
    ----------
    field : VectorField
        The user's field (an instance of a :class:`VectorField` subclass).
    input_size, state_size : int
        ``N`` and ``S``.
    dt : float
        Integrator step (> 0), the time one input sample lasts.
    method : {'euler', 'midpoint', 'rk4'} or ButcherTableau
        The integrator: a name of :data:`METHODS` or a validated explicit tableau.
    output_size : int, optional
        Number of leading state entries a readout reads (default: all ``S``).
    check : bool, default True
        Run :meth:`check_field` (seeded, deterministic) at construction.

    Attributes
    ----------
    dt : float
    continuous : bool
        ``True``.
    method : str
        The tableau's name.
    tableau : ButcherTableau
    stepper : RungeKuttaStepper
        The step and its four linear products (what the hooks call).
    order : int
        1, 2 or 4: the order of the integrator (and of the continuous adjoint's
        deviation from the exact discrete gradient).
    """

    continuous = True
    has_continuous_adjoint = True   # continuous_adjoint(): the adjoint ODE with the same tableau

    @property
    def analytic(self):
        """The field's declaration (:attr:`VectorField.analytic`): the step is analytic when ``f`` is."""
        return bool(self.field.analytic)

    def __init__(self, field, input_size, state_size, dt, method, *, output_size=None, check=True):
        if not isinstance(field, VectorField):
            raise TypeError(
                f"field: expected an instance of a kpref.VectorField subclass, got {type(field).__name__}"
            )
        shapes = _param_shapes_of(field)
        state_size = check_positive_int("state_size", state_size)
        self.dt = check_positive_float("dt", dt)
        if isinstance(method, ButcherTableau):
            self.tableau = method
        else:
            self.tableau = METHODS[check_choice("method", method, tuple(METHODS))]
        self.method = self.tableau.name
        self.order = self.tableau.order
        super().__init__(input_size, state_size, state_size, shapes)
        self.field = field
        self.stepper = RungeKuttaStepper(field, self.tableau, self.dt)
        recurrent = tuple(field.recurrent_weights or ())
        for name in recurrent:
            if name not in shapes or shapes[name] != (state_size, state_size):
                raise ValueError(
                    f"{_field_name(field)}.recurrent_weights: expected names of ({state_size}, {state_size}) "
                    f"parameters among {list(shapes)}, got {name!r}"
                )
        self.recurrent_weights = recurrent
        if output_size is None:
            self._output_size = state_size
        else:
            self._output_size = check_positive_int("output_size", output_size)
            if self._output_size > state_size:
                raise ValueError(f"output_size: expected an integer <= state_size={state_size}, got {output_size}")
        check = check_bool("check", check)
        if check:
            self.check_field(rng=0)

    @property
    def output_size(self):
        """Number of leading state entries a readout reads."""
        return self._output_size

    def init_params(self, rng=None, g=None, g_convention="gaussian"):
        if g is not None and not self.recurrent_weights:
            raise ValueError(
                f"g: {_field_name(self.field)} declares no recurrent_weights, so there is no block to draw "
                "with gain g; set recurrent_weights on the field or leave g=None"
            )
        return super().init_params(rng, g, g_convention)

    init_params.__doc__ = Cell.init_params.__doc__

    # ----------------------------------------------------------- integrator
    def _params(self, theta):
        """Read-only views of ``theta`` by name (what the field's methods receive)."""
        views = self._views(theta)
        for v in views.values():
            v.flags.writeable = False
        return views


    def _step(self, theta, h, x):
        return self.stepper.step(self._params(theta), h, x)[0]

    def _prepare(self, theta, h, x):
        """Cache: stage states ``Z`` (M, s, S), then the field's cache for the stacked rows, each (M, s, …)."""
        return self.stepper.prepare(self._params(theta), h, x)

    # ------------------------------------------------------ stage tangents
    def _state_jvp(self, pt, V):
        return self.stepper.state_jvp(self._params(pt.theta), pt.x, pt.cache, V)

    def _state_vjp(self, pt, W):
        return self.stepper.state_vjp(self._params(pt.theta), pt.x, pt.cache, W)

    def _param_jvp(self, pt, dtheta):
        return self.stepper.param_jvp(self._params(pt.theta), pt.x, pt.cache, self._unpack_block(dtheta),
                                      dtheta.shape[0])

    def _param_vjp(self, pt, W):
        return self._pack_block(self.stepper.param_vjp(self._params(pt.theta), pt.x, pt.cache, W), W.shape[0])

    # ---------------------------------------------------- continuous adjoint
    def continuous_adjoint(self):
        """The continuous-adjoint strategy (:class:`~kpref.ode.ContinuousAdjoint`) for ``linearize(adjoint=)``."""
        strategy = ContinuousAdjoint()
        strategy.check(self)
        return strategy

    def continuous_adjoint_gradient(self, theta, x, h0, z, e):
        """Gradient by the continuous adjoint ODE, solved backward with the same method.

        Same as ``linearize(cell, theta, x, h0, adjoint='continuous').grad(e)``
        (kept for callers of this method; see :class:`~kpref.ode.ContinuousAdjoint`).

        Parameters
        ----------
        theta : (p,) array
        x : (B, T, N) array
        h0 : (B, S) array or None
        z : (B, T, S) array
            The trajectory ``simulate(cell, theta, x, h0)``.
        e : (B, T, S) array
            ``e[:, t]`` is a point load at the end of step ``t`` (``∂L/∂z``).

        Returns
        -------
        (p,) float64 array
            ``∫ (∂f/∂θ)ᵀ λ ds``. It differs from the exact discrete gradient
            ``J_θᵀ P* e`` by ``O(dt^order)``.
        """
        theta, x, h0 = check_problem(self, theta, x, h0)
        B, T, _ = x.shape
        z = as_real_array("z", z, (B, T, self.state_size), ("B", "T", "S"))
        e = as_real_array("e", e, (B, T, self.state_size), ("B", "T", "S"))
        return self.continuous_adjoint().solve(self, theta, x, h0, z, e)

    # ------------------------------------------------------------- checking
    def check_field(self, rng=None, theta=None, *, num_rows=3, rtol=1e-10):
        """Check the field's five methods against each other and against ``f``.

        A thin shim of :func:`kpref.testing.check_field` (``check_field(cell, ...)``),
        which documents the checks, parameters and return.
        """
        from ..testing._field import check_field   # testing sits above ode: imported when used

        return check_field(self, rng, theta, num_rows=num_rows, rtol=rtol)

    def __repr__(self):
        return (f"ODECell({_field_name(self.field)}, input_size={self.input_size}, "
                f"state_size={self.state_size}, dt={self.dt}, method={self.method!r})")

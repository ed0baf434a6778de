r"""Continuous-time cells: user vector fields, explicit Runge–Kutta steps, both adjoints.

A continuous-time model ``dz/ds = f(z, x; θ)`` becomes a kpref cell by
integrating it over one input sample with one explicit Runge–Kutta step of
size ``Δt = dt``, the input held constant over the step (zero-order hold,
SPEC §2). ``F`` is that whole step, and the cell's tangents and adjoints are
the *exact discrete* ones: the stages are differentiated by hand, the tangent
runs them forward, the adjoint transposes them in reverse order. Every
operator of :func:`kpref.linearize` (P, P*, J_θ, K, NTK, the gradient) is
therefore exact for the computed trajectory, whatever ``dt``.

Notes
-----
**Integrators.** With ``k_i = f(Z_i, x; θ)`` the stage slopes::

    Euler (order 1)
        Z_1 = h;                 k_1 = f(Z_1)
        h'  = h + Δt k_1

    midpoint / RK2 (order 2)
        Z_1 = h;                 k_1 = f(Z_1)
        Z_2 = h + Δt/2 k_1;      k_2 = f(Z_2)          (z_mid)
        h'  = h + Δt k_2

    classic RK4 (order 4)
        Z_1 = h;                 k_1 = f(Z_1)
        Z_2 = h + Δt/2 k_1;      k_2 = f(Z_2)
        Z_3 = h + Δt/2 k_2;      k_3 = f(Z_3)
        Z_4 = h + Δt k_3;        k_4 = f(Z_4)
        h'  = h + Δt (k_1/6 + k_2/3 + k_3/3 + k_4/6)

All three are the explicit tableau ``Z_i = h + Δt Σ_{j<i} a_ij k_j``,
``h' = h + Δt Σ_i b_i k_i`` (nodes ``c_i = Σ_j a_ij``), which is what the code
runs. Below ``J_i = ∂f/∂z (Z_i, x; θ)`` and ``Φ_i = ∂f/∂θ (Z_i, x; θ)``.

**State tangent** ``A v`` (``A = ∂F/∂h``)::

    δZ_i = v + Δt Σ_{j<i} a_ij δk_j
    δk_i = J_i δZ_i
    A v  = v + Δt Σ_i b_i δk_i

**State adjoint** ``Aᵀ w`` (the tangent's statements transposed, last first)::

    k̄_i = Δt b_i w,   v̄ = w                    (transposes A v = v + Δt Σ b_i δk_i)
    for i = s, …, 1:
        Z̄_i  = J_iᵀ k̄_i                          (transposes δk_i = J_i δZ_i)
        v̄   += Z̄_i                               (transposes δZ_i = v + …)
        k̄_j += Δt a_ij Z̄_i,  j < i               (transposes δZ_i = … + Δt a_ij δk_j)
    Aᵀ w = v̄

**Parameter tangent** ``G δθ`` (``h`` fixed; θ enters every stage)::

    δZ_i = Δt Σ_{j<i} a_ij δk_j
    δk_i = J_i δZ_i + Φ_i δθ
    G δθ = Δt Σ_i b_i δk_i

**Parameter adjoint** ``Σ_rows Gᵀ w``: the same reverse sweep for ``k̄_i``
(without ``v̄``), then ``Gᵀ w = Σ_i Φ_iᵀ k̄_i``, summed over rows. kpref makes
that one call of the field's parameter adjoint on the ``s·M`` stacked stage
rows ``(Z_i, x)`` with weights ``k̄_i`` (row-wise sums commute).

**The continuous adjoint** (``kpref.linearize(..., adjoint='continuous')``,
:meth:`ODECell.continuous_adjoint_gradient`). The loss ``Σ_t ⟨e_t, z_t⟩``
puts a point load ``e_t`` at the end of step ``t``. The adjoint solves
``dλ/ds = −J(z(s))ᵀ λ`` backward, jumps by ``e_t`` at step ends
(``λ(t⁻) = λ(t⁺) + e_t``), and ``∇_θ L = ∫ Φ(z(s))ᵀ λ(s) ds``. Over each step,
in the reversed time ``σ = t_end − s``, the augmented system
``dλ/dσ = Jᵀ λ``, ``dμ/dσ = Φᵀ λ`` is integrated with the *same* tableau::

    Λ_i  = λ + Δt Σ_{j<i} a_ij l_j,   l_i = J(y_i)ᵀ Λ_i,   m_i = Φ(y_i)ᵀ Λ_i
    λ   ← λ + Δt Σ_i b_i l_i,         μ  ← μ + Δt Σ_i b_i m_i

with ``y_i`` the forward state at time ``t_end − c_i Δt``: the step's end
``z_t`` (``c = 0``), its start ``z_{t−1}`` (``c = 1``), and, for ``c = 1/2``
(midpoint, RK4), a forward half step of size ``Δt/2`` from ``z_{t−1}`` with
the same method (local error ``O(Δt^{order+1})``, so the global order is
kept). The result differs from the exact discrete gradient ``J_θᵀ P* e`` by
``O(Δt^order)``: order 1, 2, 4 for Euler, midpoint, RK4 (tested by refining
``dt`` with the input repeated and the loads kept at the original sample
times).

*Which adjoint to use.* The discrete adjoint is the exact gradient of what
was computed: use it to train, to check a gradient, and whenever the
operators (P, K, NTK) must be consistent with the gradient. The continuous
adjoint approximates the gradient of the continuous-time model's loss (the
``dt → 0`` limit); it is not the derivative of anything computed, so a
finite-difference check of it fails at the ``O(Δt^order)`` level. Use it to
reproduce an adjoint-ODE solver (neural-ODE style ``odeint_adjoint``) or to
study a continuous-time quantity independently of the discretization.

**The VectorField contract** (:class:`VectorField`). Rows ``m`` are
independent (the field at row ``m`` reads only row ``m`` of ``z`` and ``x``),
arrays are float64 (complex128 in ``f`` under complex step), ``params`` is a
dict name → read-only array of the declared shape:

==============================================  ===================  =========
method                                          returns              linear in
==============================================  ===================  =========
``f(z, x, params)``                             (M, S)               —
``jvp_z(z, x, params, v)``     ``J v``          (M, S)               ``v``
``vjp_z(z, x, params, w)``     ``Jᵀ w``         (M, S)               ``w``
``jvp_params(z, x, params, dparams)`` ``Φ δθ``  (M, S)               ``dparams``
``vjp_params(z, x, params, w)`` ``Σ_m Φ_mᵀ w_m``  dict name → shape  ``w``
==============================================  ===================  =========

``z``, ``v``, ``w`` are (M, S), ``x`` is (M, N), ``dparams`` is one direction
(a dict of the declared shapes). Every return is checked (shape, real
floating dtype, finite) and a violation raises naming the method, the shape
returned and the shape expected. Since rows are independent, kpref applies
``jvp_z``/``vjp_z`` to a block of ``k`` vectors in one call on ``k·M`` tiled
rows; ``jvp_params``/``vjp_params`` are called once per direction.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from ..cells._cell import Cell
from .._checks import (
    as_generator,
    as_real_array,
    check_bool,
    check_choice,
    check_positive_float,
    check_positive_int,
)
from ..cells._simulate import check_problem

__all__ = ["VectorField", "ODECell", "METHODS"]


class _Tableau:
    """An explicit Runge–Kutta tableau: ``a`` as per-stage lists of ``(j, a_ij)``, weights ``b``, nodes ``c``."""

    def __init__(self, name, order, a, b, c):
        self.name = name
        self.order = order
        self.a = a
        self.b = b
        self.c = c
        self.stages = len(b)


METHODS = OrderedDict(
    euler=_Tableau("euler", 1, ((),), (1.0,), (0.0,)),
    midpoint=_Tableau("midpoint", 2, ((), ((0, 0.5),)), (0.0, 1.0), (0.0, 0.5)),
    rk4=_Tableau(
        "rk4", 4,
        ((), ((0, 0.5),), ((1, 0.5),), ((2, 1.0),)),
        (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0),
        (0.0, 0.5, 0.5, 1.0),
    ),
)

_FIELD_METHODS = ("f", "jvp_z", "vjp_z", "jvp_params", "vjp_params")


def _field_name(field):
    return type(field).__name__


def _readonly(a):
    """A read-only view of ``a``: what a user method receives (it must not write to its arguments)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _checked_rows(field, method, out, shape, *, complex_ok=False):
    """A user method's array return as float64 (complex128 if allowed), or a diagnosis."""
    where = f"{_field_name(field)}.{method}"
    if out is None:
        raise TypeError(f"{where}: expected an array of shape {shape}, got None (missing return?)")
    try:
        arr = np.asarray(out)
    except Exception as exc:  # pragma: no cover - exotic return types
        raise TypeError(f"{where}: expected an array of shape {shape}, got {type(out).__name__}") from exc
    kind = arr.dtype.kind
    if kind == "c" and not complex_ok:
        raise TypeError(f"{where}: expected a real floating array, got dtype {arr.dtype} (shape {arr.shape})")
    if kind not in "fc":
        raise TypeError(f"{where}: expected a real floating array of shape {shape}, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{where}: returned an array of shape {arr.shape}, expected shape {tuple(shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.complex128 if kind == "c" else np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{where}: returned non-finite values ({int((~finite).sum())} entries of the (shape {arr.shape}) "
            f"result, first {arr[bad]!r} at index {bad}); expected finite values"
        )
    return arr


def _checked_param_dict(field, out, shapes):
    """``vjp_params``'s return: a mapping with exactly the declared names and shapes."""
    where = f"{_field_name(field)}.vjp_params"
    if not isinstance(out, Mapping):
        raise TypeError(f"{where}: expected a dict name -> array with names {list(shapes)}, got {type(out).__name__}")
    unknown = sorted(str(n) for n in set(out) - set(shapes))
    missing = [n for n in shapes if n not in out]
    if unknown or missing:
        raise ValueError(f"{where}: expected exactly the names {list(shapes)}, got unknown {unknown} and missing {missing}")
    return {name: _checked_rows(field, f"vjp_params[{name!r}]", out[name], shape) for name, shape in shapes.items()}


def _param_shapes_of(field):
    """The field's declared ``param_shapes`` as an OrderedDict of int tuples (checked)."""
    shapes = getattr(field, "param_shapes", None)
    where = f"{_field_name(field)}.param_shapes"
    if not isinstance(shapes, Mapping):
        raise TypeError(
            f"{where}: expected an ordered mapping name -> shape (class or instance attribute), "
            f"got {type(shapes).__name__}"
        )
    if len(shapes) == 0:
        raise ValueError(f"{where}: expected at least one parameter, got an empty mapping")
    out = OrderedDict()
    for name, shape in shapes.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: expected string names, got {name!r}")
        if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            dims = tuple(shape)
        except TypeError:
            raise TypeError(f"{where}[{name!r}]: expected a shape tuple of positive ints, got {shape!r}") from None
        for d in dims:
            if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 1:
                raise ValueError(f"{where}[{name!r}]: expected a shape tuple of positive ints, got {shape!r}")
        out[name] = tuple(int(d) for d in dims)
    return out


class VectorField:
    """Base class of a user vector field ``dz/ds = f(z, x; θ)`` for :class:`ODECell`.

    A subclass declares ``param_shapes`` (class or instance attribute, an
    ordered mapping name → shape) and implements five batched methods on
    ``z`` (M, S), ``x`` (M, N) and ``params`` (dict name → array):

    ``f(z, x, params)`` → (M, S)
        The field.
    ``jvp_z(z, x, params, v)`` → (M, S)
        ``(∂f/∂z) v`` row by row; linear in ``v`` (M, S).
    ``vjp_z(z, x, params, w)`` → (M, S)
        ``(∂f/∂z)ᵀ w`` row by row; linear in ``w`` (M, S).
    ``jvp_params(z, x, params, dparams)`` → (M, S)
        ``(∂f/∂θ) δθ`` for one direction ``dparams`` (dict of the declared
        shapes); linear in ``dparams``.
    ``vjp_params(z, x, params, w)`` → dict name → array of the declared shape
        ``Σ_m (∂f/∂θ)_mᵀ w_m``, summed over the rows; linear in ``w``.

    Optionally ``recurrent_weights`` (tuple of names of (S, S) blocks that
    ``init_params(g=...)`` redraws with gain ``g``).

    The base class has no constructor arguments and no state; a subclass
    need not call ``super().__init__()``. Rows must be independent, the
    adjoints must be the transposes for the plain Euclidean inner products,
    and ``f`` should accept complex arrays if complex-step checks of the cell
    are wanted. :meth:`ODECell.check_field` tests all of this numerically.
    NumPy implementations work; numba-jitted ones are faster.
    """

    param_shapes = None

    def f(self, z, x, params):
        raise NotImplementedError(f"{_field_name(self)}.f(z, x, params) is not implemented")

    def jvp_z(self, z, x, params, v):
        raise NotImplementedError(f"{_field_name(self)}.jvp_z(z, x, params, v) is not implemented")

    def vjp_z(self, z, x, params, w):
        raise NotImplementedError(f"{_field_name(self)}.vjp_z(z, x, params, w) is not implemented")

    def jvp_params(self, z, x, params, dparams):
        raise NotImplementedError(f"{_field_name(self)}.jvp_params(z, x, params, dparams) is not implemented")

    def vjp_params(self, z, x, params, w):
        raise NotImplementedError(f"{_field_name(self)}.vjp_params(z, x, params, w) is not implemented")

    # ------------------------------------------------------------------
    # Block hooks used by ODECell. The defaults call the public methods and
    # check every return; kpref's own fields (RateODE) override them with
    # batched numba kernels. ``cache`` is the tuple ``_prepare_rows`` made
    # for the same rows.
    def _prepare_rows(self, z, x, params):
        return ()

    def _f_rows(self, z, x, params):
        complex_ok = np.iscomplexobj(z) or np.iscomplexobj(x) or any(np.iscomplexobj(p) for p in params.values())
        return _checked_rows(self, "f", self.f(_readonly(z), _readonly(x), params), z.shape, complex_ok=complex_ok)

    def _jvp_z_block(self, z, x, params, cache, V):
        k, R, S = V.shape
        z, x = _readonly(z), _readonly(x)
        if k == 1:
            return _checked_rows(self, "jvp_z", self.jvp_z(z, x, params, _readonly(V[0])), (R, S))[None]
        out = self.jvp_z(_readonly(np.tile(z, (k, 1))), _readonly(np.tile(x, (k, 1))), params,
                         _readonly(V.reshape(k * R, S)))
        return _checked_rows(self, "jvp_z", out, (k * R, S)).reshape(k, R, S)

    def _vjp_z_block(self, z, x, params, cache, W):
        k, R, S = W.shape
        z, x = _readonly(z), _readonly(x)
        if k == 1:
            return _checked_rows(self, "vjp_z", self.vjp_z(z, x, params, _readonly(W[0])), (R, S))[None]
        out = self.vjp_z(_readonly(np.tile(z, (k, 1))), _readonly(np.tile(x, (k, 1))), params,
                         _readonly(W.reshape(k * R, S)))
        return _checked_rows(self, "vjp_z", out, (k * R, S)).reshape(k, R, S)

    def _jvp_params_block(self, z, x, params, cache, dparams):
        k = next(iter(dparams.values())).shape[0]
        z, x = _readonly(z), _readonly(x)
        out = np.empty((k,) + z.shape)
        for j in range(k):
            direction = {name: _readonly(blk[j]) for name, blk in dparams.items()}
            out[j] = _checked_rows(self, "jvp_params", self.jvp_params(z, x, params, direction), z.shape)
        return out

    def _vjp_params_block(self, z, x, params, cache, W):
        k = W.shape[0]
        z, x = _readonly(z), _readonly(x)
        shapes = {name: p.shape for name, p in params.items()}
        out = {name: np.empty((k,) + shape) for name, shape in shapes.items()}
        for j in range(k):
            got = _checked_param_dict(self, self.vjp_params(z, x, params, _readonly(W[j])), shapes)
            for name in shapes:
                out[name][j] = got[name]
        return out


class ODECell(Cell):
    """A kpref cell that integrates a :class:`VectorField` over each input sample.

    ``F(h, x; θ)`` is one explicit Runge–Kutta step of size ``dt`` of
    ``dz/ds = field.f(z, x; θ)`` with ``x`` held; its tangents and adjoints
    are the exact discrete ones (see :mod:`kpref.ode._ode` for every stage
    equation), so every operator of :func:`kpref.linearize` applies.

    Parameters
    ----------
    field : VectorField
        The user's field (an instance of a :class:`VectorField` subclass).
    input_size, state_size : int
        ``N`` and ``S``.
    dt : float
        Integrator step (> 0), the time one input sample lasts.
    method : {'euler', 'midpoint', 'rk4'}
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
    order : int
        1, 2 or 4: the order of the integrator (and of the continuous adjoint's
        deviation from the exact discrete gradient).
    """

    continuous = True

    def __init__(self, field, input_size, state_size, dt, method, *, output_size=None, check=True):
        if not isinstance(field, VectorField):
            raise TypeError(
                f"field: expected an instance of a kpref.VectorField subclass, got {type(field).__name__}"
            )
        for name in _FIELD_METHODS:
            if getattr(type(field), name) is getattr(VectorField, name):
                raise TypeError(f"field: {_field_name(field)} does not implement {name}; a VectorField "
                                f"implements all of {', '.join(_FIELD_METHODS)}")
        shapes = _param_shapes_of(field)
        state_size = check_positive_int("state_size", state_size)
        self.dt = check_positive_float("dt", dt)
        self.method = check_choice("method", method, tuple(METHODS))
        self._tableau = METHODS[self.method]
        self.order = self._tableau.order
        super().__init__(input_size, state_size, state_size, shapes)
        self.field = field
        recurrent = tuple(getattr(field, "recurrent_weights", ()) or ())
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

    def _integrate_step(self, params, h, x, dt):
        """One step of the tableau of size ``dt`` (any dtype); returns ``h'`` and the stage states."""
        tab = self._tableau
        slopes, stages = [], []
        for i in range(tab.stages):
            Z = h
            for j, a in tab.a[i]:
                Z = Z + (dt * a) * slopes[j]
            stages.append(Z)
            slopes.append(self.field._f_rows(Z, x, params))
        out = h
        for b, k in zip(tab.b, slopes):
            if b != 0.0:
                out = out + (dt * b) * k
        return out, stages

    def _step(self, theta, h, x):
        return self._integrate_step(self._params(theta), h, x, self.dt)[0]

    def _prepare(self, theta, h, x):
        """Cache: stage states ``Z`` (M, s, S), then the field's cache for the stacked rows, each (M, s, …)."""
        params = self._params(theta)
        s = self._tableau.stages
        M = h.shape[0]
        _, stages = self._integrate_step(params, h, x, self.dt)
        Z = np.ascontiguousarray(np.stack(stages, axis=1))
        rows = Z.reshape(M * s, self.state_size)
        field_cache = self.field._prepare_rows(rows, np.repeat(x, s, axis=0), params)
        return (Z,) + tuple(np.ascontiguousarray(c).reshape((M, s) + c.shape[1:]) for c in field_cache)

    def _stage(self, pt, i):
        """Stage ``i``'s rows: ``Z_i`` (M, S) and the field cache at ``Z_i``."""
        return (np.ascontiguousarray(pt.cache[0][:, i]),
                tuple(np.ascontiguousarray(c[:, i]) for c in pt.cache[1:]))

    def _stacked(self, pt):
        """All stage rows stacked in (m, i) order: ``Z`` (M·s, S), ``x`` (M·s, N), field cache."""
        M, s = pt.cache[0].shape[:2]
        flat = tuple(np.ascontiguousarray(c).reshape((M * s,) + c.shape[2:]) for c in pt.cache)
        return flat[0], np.repeat(pt.x, s, axis=0), flat[1:]

    # ------------------------------------------------------ stage tangents
    def _state_jvp(self, pt, V):
        tab, dt, field = self._tableau, self.dt, self.field
        params = self._params(pt.theta)
        V = np.ascontiguousarray(V)
        dK = []
        for i in range(tab.stages):
            dZ = V                                   # δZ_i = v + Δt Σ_{j<i} a_ij δk_j
            for j, a in tab.a[i]:
                dZ = dZ + (dt * a) * dK[j]
            Zi, ci = self._stage(pt, i)
            dK.append(field._jvp_z_block(Zi, pt.x, params, ci, np.ascontiguousarray(dZ)))  # δk_i = J_i δZ_i
        out = V                                      # A v = v + Δt Σ_i b_i δk_i
        for b, dk in zip(tab.b, dK):
            if b != 0.0:
                out = out + (dt * b) * dk
        return out

    def _state_vjp(self, pt, W):
        tab, dt, field = self._tableau, self.dt, self.field
        params = self._params(pt.theta)
        W = np.ascontiguousarray(W)
        Kbar = [(dt * b) * W for b in tab.b]        # transposes: A v = v + Δt Σ_i b_i δk_i  (δk part)
        Vbar = W.copy()                              # transposes: A v = v + …                 (v part)
        for i in reversed(range(tab.stages)):
            Zi, ci = self._stage(pt, i)
            Zbar = field._vjp_z_block(Zi, pt.x, params, ci, Kbar[i])  # transposes: δk_i = J_i δZ_i
            Vbar += Zbar                             # transposes: δZ_i = v + …
            for j, a in tab.a[i]:
                Kbar[j] = Kbar[j] + (dt * a) * Zbar  # transposes: δZ_i = … + Δt a_ij δk_j
        return Vbar

    def _param_jvp(self, pt, dtheta):
        tab, dt, field = self._tableau, self.dt, self.field
        params = self._params(pt.theta)
        k = dtheta.shape[0]
        M, s, S = pt.cache[0].shape
        Zs, xs, cs = self._stacked(pt)
        # Φ_i δθ at every stage in one call on the stacked rows
        phi = field._jvp_params_block(Zs, xs, params, cs, self._unpack_block(dtheta)).reshape(k, M, s, S)
        dK = []
        for i in range(tab.stages):
            dk = np.ascontiguousarray(phi[:, :, i])  # δk_i = Φ_i δθ + …
            if tab.a[i]:
                dZ = 0.0                             # δZ_i = Δt Σ_{j<i} a_ij δk_j
                for j, a in tab.a[i]:
                    dZ = dZ + (dt * a) * dK[j]
                Zi, ci = self._stage(pt, i)
                dk = dk + field._jvp_z_block(Zi, pt.x, params, ci, np.ascontiguousarray(dZ))  # … + J_i δZ_i
            dK.append(dk)
        out = np.zeros((k, M, S))                    # G δθ = Δt Σ_i b_i δk_i
        for b, dk in zip(tab.b, dK):
            if b != 0.0:
                out += (dt * b) * dk
        return out

    def _param_vjp(self, pt, W):
        tab, dt, field = self._tableau, self.dt, self.field
        params = self._params(pt.theta)
        W = np.ascontiguousarray(W)
        k = W.shape[0]
        M, s, S = pt.cache[0].shape
        Kbar = [(dt * b) * W for b in tab.b]        # transposes: G δθ = Δt Σ_i b_i δk_i
        for i in reversed(range(tab.stages)):
            if tab.a[i]:
                Zi, ci = self._stage(pt, i)
                Zbar = field._vjp_z_block(Zi, pt.x, params, ci, Kbar[i])  # transposes: δk_i = J_i δZ_i + …
                for j, a in tab.a[i]:
                    Kbar[j] = Kbar[j] + (dt * a) * Zbar  # transposes: δZ_i = Δt Σ_{j<i} a_ij δk_j
        # transposes: δk_i = … + Φ_i δθ, every stage at once on the stacked rows
        stacked = np.ascontiguousarray(np.stack(Kbar, axis=2)).reshape(k, M * s, S)
        Zs, xs, cs = self._stacked(pt)
        return self._pack_block(field._vjp_params_block(Zs, xs, params, cs, stacked), k)

    # ---------------------------------------------------- continuous adjoint
    def continuous_adjoint_gradient(self, theta, x, h0, z, e):
        """Gradient by the continuous adjoint ODE, solved backward with the same method.

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
            ``∫ (∂f/∂θ)ᵀ λ ds``, with ``λ`` the adjoint described in the
            module docstring of :mod:`kpref.ode._ode`. It differs from the exact
            discrete gradient ``J_θᵀ P* e`` by ``O(dt^order)``.
        """
        theta, x, h0 = check_problem(self, theta, x, h0)
        B, T, _ = x.shape
        z = as_real_array("z", z, (B, T, self.state_size), ("B", "T", "S"))
        e = as_real_array("e", e, (B, T, self.state_size), ("B", "T", "S"))
        return self._continuous_adjoint_gradient(theta, x, h0, z, e)

    def _midstep_state(self, params, z_start, x_t):
        """The forward state half a step after ``z_start``: one step of size Δt/2 with the same method."""
        return self._integrate_step(params, z_start, x_t, 0.5 * self.dt)[0]

    def _continuous_adjoint_gradient(self, theta, x, h0, z, e):
        tab, dt, field = self._tableau, self.dt, self.field
        params = self._params(theta)
        B, T, S = z.shape
        s = tab.stages
        need_half = any(c == 0.5 for c in tab.c)
        Y = np.empty((T, B, s, S))                   # forward states at the stage times
        Lam = np.empty((T, B, s, S))                 # quadrature weights Δt b_i Λ_i
        lam = np.zeros((B, S))
        for t in reversed(range(T)):
            lam = lam + e[:, t]                      # jump: λ(t⁻) = λ(t⁺) + e_t
            x_t = np.ascontiguousarray(x[:, t])
            z_end = np.ascontiguousarray(z[:, t])
            z_start = np.ascontiguousarray(z[:, t - 1]) if t > 0 else h0
            z_half = self._midstep_state(params, z_start, x_t) if need_half else None
            for i, c in enumerate(tab.c):
                Y[t, :, i] = z_end if c == 0.0 else (z_start if c == 1.0 else z_half)
            rows = np.ascontiguousarray(Y[t]).reshape(B * s, S)
            cache = tuple(np.ascontiguousarray(cc).reshape((B, s) + cc.shape[1:])
                          for cc in field._prepare_rows(rows, np.repeat(x_t, s, axis=0), params))
            slopes = []
            for i in range(tab.stages):
                Lam_i = lam                          # Λ_i = λ + Δt Σ_{j<i} a_ij l_j
                for j, a in tab.a[i]:
                    Lam_i = Lam_i + (dt * a) * slopes[j]
                Lam[t, :, i] = (dt * tab.b[i]) * Lam_i
                ci = tuple(np.ascontiguousarray(cc[:, i]) for cc in cache)
                slopes.append(field._vjp_z_block(np.ascontiguousarray(Y[t, :, i]), x_t, params, ci,
                                                 np.ascontiguousarray(Lam_i)[None])[0])  # l_i = J(y_i)ᵀ Λ_i
            for b, l in zip(tab.b, slopes):      # λ ← λ + Δt Σ_i b_i l_i
                if b != 0.0:
                    lam = lam + (dt * b) * l
        # μ = Σ_steps Δt Σ_i b_i Φ(y_i)ᵀ Λ_i, in one call on all stage rows
        rows = Y.reshape(T * B * s, S)
        xs = np.repeat(np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * B, -1), s, axis=0)
        cache = field._prepare_rows(rows, xs, params)
        grads = field._vjp_params_block(rows, xs, params, cache, Lam.reshape(1, T * B * s, S))
        return self._pack_block(grads, 1)[0]

    # ------------------------------------------------------------- checking
    def check_field(self, rng=None, theta=None, *, num_rows=3, rtol=1e-10):
        """Check the field's five methods against each other and against ``f``.

        In this order (so a failure names the inconsistent method):

        1. ``f`` returns finite (M, S) values;
        2. ``jvp_z`` against a Richardson-extrapolated central difference of ``f``;
        3. ``vjp_z`` against ``jvp_z`` (dot test);
        4. ``jvp_params`` against a Richardson-extrapolated central difference of ``f``;
        5. ``vjp_params`` against ``jvp_params`` (dot test).

        Dot tests use the symmetric residual
        ``|⟨J v, w⟩ − ⟨v, Jᵀ w⟩| / (‖J v‖‖w‖ + ‖v‖‖Jᵀ w‖) ≤ rtol``; the
        difference checks ``‖D − J v‖ ≤ 1e-6 (‖J v‖ + ‖f‖ + 1e-300)``
        (extrapolated error ``O(ε⁴)``).

        Parameters
        ----------
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
        rng = as_generator(rng)
        M = check_positive_int("num_rows", num_rows)
        rtol = check_positive_float("rtol", rtol)
        theta = self.init_params(rng) if theta is None else self.check_theta(theta)
        params = self._params(theta)
        field, S, N = self.field, self.state_size, self.input_size
        name = _field_name(field)
        z = rng.standard_normal((M, S))
        x = rng.standard_normal((M, N))
        report = {}

        fz = field._f_rows(z, x, params)
        report["f"] = 0.0
        fscale = float(np.linalg.norm(fz))

        def richardson(fun, eps):
            d1 = (fun(eps) - fun(-eps)) / (2.0 * eps)
            d2 = (fun(eps / 2) - fun(-eps / 2)) / eps
            return (4.0 * d2 - d1) / 3.0

        def fd_check(method, exact, fun, eps):
            approx = richardson(fun, eps)
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

        def dot_check(method, partner, lhs, rhs, scale):
            res = abs(lhs - rhs) / scale if scale > 0 else (0.0 if lhs == rhs else np.inf)
            report[method] = res
            if not res <= rtol:
                raise ValueError(
                    f"{name}.{method} is not the adjoint of {name}.{partner}: <{partner}(v), w> = {lhs!r} but "
                    f"<v, {method}(w)> = {rhs!r}; symmetric residual {res:.3e} > {rtol:.1e}. "
                    f"Transpose {partner} statement by statement."
                )

        # 2. jvp_z against f
        v = rng.standard_normal((M, S))
        Jv = field._jvp_z_block(z, x, params, field._prepare_rows(z, x, params), v[None])[0]
        eps_z = 1e-3 * max(1.0, float(np.abs(z).max())) / max(1e-300, float(np.abs(v).max()))
        fd_check("jvp_z", Jv, lambda h: field._f_rows(z + h * v, x, params), eps_z)

        # 3. vjp_z against jvp_z
        w = rng.standard_normal((M, S))
        JTw = field._vjp_z_block(z, x, params, field._prepare_rows(z, x, params), w[None])[0]
        dot_check("vjp_z", "jvp_z", float(np.vdot(Jv, w)), float(np.vdot(v, JTw)),
                  float(np.linalg.norm(Jv) * np.linalg.norm(w) + np.linalg.norm(v) * np.linalg.norm(JTw)))

        # 4. jvp_params against f
        dtheta = rng.standard_normal(self.num_params)
        Pd = field._jvp_params_block(z, x, params, field._prepare_rows(z, x, params),
                                     self._unpack_block(dtheta[None]))[0]
        eps_p = 1e-3 * max(1.0, float(np.abs(theta).max())) / max(1e-300, float(np.abs(dtheta).max()))
        fd_check("jvp_params", Pd, lambda h: field._f_rows(z, x, self._params(theta + h * dtheta)), eps_p)

        # 5. vjp_params against jvp_params
        PTw = self._pack_block(field._vjp_params_block(z, x, params, field._prepare_rows(z, x, params),
                                                       w[None]), 1)[0]
        dot_check("vjp_params", "jvp_params", float(np.vdot(Pd, w)), float(np.vdot(dtheta, PTw)),
                  float(np.linalg.norm(Pd) * np.linalg.norm(w) + np.linalg.norm(dtheta) * np.linalg.norm(PTw)))
        return report

    def __repr__(self):
        return (f"ODECell({_field_name(self.field)}, input_size={self.input_size}, "
                f"state_size={self.state_size}, dt={self.dt}, method={self.method!r})")

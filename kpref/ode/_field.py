r"""The user's vector field ``dz/ds = f(z, x; θ)``: the :class:`VectorField` contract and its checked calls.

Rows ``m`` are independent (the field at row ``m`` reads only row ``m`` of
``z`` and ``x``), arrays are float64 (complex128 in ``f`` under complex
step), ``params`` is a dict name → read-only array of the declared shape:

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
returned and the shape expected.

The integrator calls the *block hooks* (``prepare_rows``, ``f_rows``,
``jvp_z_block``, ``vjp_z_block``, ``jvp_params_block``, ``vjp_params_block``),
which take a block of ``k`` vectors at once. Their defaults call the five
methods above (``jvp_z``/``vjp_z`` once on ``k·M`` tiled rows, since rows are
independent; ``jvp_params``/``vjp_params`` once per direction) and check every
return; a field may override them with batched kernels (:class:`~kpref.ode.RateField`).
"""

from __future__ import annotations

import abc
import numbers
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

__all__ = ["VectorField", "FIELD_METHODS"]

#: The five methods a :class:`VectorField` implements.
FIELD_METHODS = ("f", "jvp_z", "vjp_z", "jvp_params", "vjp_params")


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
    shapes = field.param_shapes
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


class VectorField(abc.ABC):
    """Abstract user vector field ``dz/ds = f(z, x; θ)`` for :class:`~kpref.ODECell`.

    A subclass declares ``param_shapes`` (class or instance attribute, an
    ordered mapping name → shape) and implements the five abstract methods on
    ``z`` (M, S), ``x`` (M, N) and ``params`` (dict name → read-only array);
    the linearity of each is stated on it. Optionally it declares
    ``recurrent_weights`` (names of (S, S) blocks that ``init_params(g=...)``
    redraws with gain ``g``) and ``analytic`` (``True`` when ``f`` is analytic
    and accepts complex arrays, so complex-step checks of the cell are valid).

    The base class has no constructor arguments and no state; a subclass
    need not call ``super().__init__()``. Rows must be independent and the
    adjoints the transposes for the plain Euclidean inner products:
    :func:`kpref.testing.check_field` tests all of this numerically (ODECell
    runs it at construction). NumPy implementations work; numba-jitted ones
    are faster, and a field may also override the block hooks.
    """

    param_shapes = None
    #: Names of (S, S) blocks that ``init_params(g=...)`` redraws with gain ``g``.
    recurrent_weights = ()
    #: Whether ``f`` is analytic in ``(z, x, θ)`` and accepts complex arrays
    #: (complex-step checks valid); declare ``True`` only then.
    analytic = False

    def __new__(cls, *args, **kwargs):
        missing = [name for name in FIELD_METHODS if name in getattr(cls, "__abstractmethods__", ())]
        if missing:
            raise TypeError(f"field: {cls.__name__} does not implement {', '.join(missing)}; a VectorField "
                            f"implements all of {', '.join(FIELD_METHODS)}")
        return super().__new__(cls)

    @abc.abstractmethod
    def f(self, z, x, params):
        """The field ``f(z, x; θ)`` row by row: (M, S). Not linear."""

    @abc.abstractmethod
    def jvp_z(self, z, x, params, v):
        """``J v = (∂f/∂z) v`` row by row: (M, S). Linear in ``v`` (M, S)."""

    @abc.abstractmethod
    def vjp_z(self, z, x, params, w):
        """``Jᵀ w`` row by row: (M, S). Linear in ``w`` (M, S); the transpose of :meth:`jvp_z`."""

    @abc.abstractmethod
    def jvp_params(self, z, x, params, dparams):
        """``Φ δθ = (∂f/∂θ) δθ`` row by row for one direction ``dparams`` (dict of the declared shapes): (M, S).

        Linear in ``dparams``.
        """

    @abc.abstractmethod
    def vjp_params(self, z, x, params, w):
        """``Σ_m Φ_mᵀ w_m``, summed over the rows: dict name → array of the declared shape.

        Linear in ``w`` (M, S); the transpose of :meth:`jvp_params`.
        """

    # ------------------------------------------------------------------
    # Block hooks used by the integrator. The defaults call the public methods
    # and check every return; kpref's own fields (RateField) override them
    # with batched numba kernels. ``cache`` is the tuple ``prepare_rows`` made
    # for the same rows (row-indexed arrays, leading axis M).
    def prepare_rows(self, z, x, params):
        """Row-indexed arrays reused by the block products at these rows (default: none)."""
        return ()

    def f_rows(self, z, x, params):
        """Checked ``f`` (complex128 allowed when an argument is complex)."""
        complex_ok = np.iscomplexobj(z) or np.iscomplexobj(x) or any(np.iscomplexobj(p) for p in params.values())
        return _checked_rows(self, "f", self.f(_readonly(z), _readonly(x), params), z.shape, complex_ok=complex_ok)

    def jvp_z_block(self, z, x, params, cache, V):
        """``J V`` for a block ``V`` (k, M, S) → (k, M, S). Linear in ``V``."""
        return self._rows_block("jvp_z", self.jvp_z, z, x, params, V)

    def vjp_z_block(self, z, x, params, cache, W):
        """``Jᵀ W`` for a block ``W`` (k, M, S) → (k, M, S). Linear in ``W``."""
        return self._rows_block("vjp_z", self.vjp_z, z, x, params, W)

    def _rows_block(self, name, method, z, x, params, V):
        """``method`` (``jvp_z`` or ``vjp_z``, row-wise) on a block of ``k`` vectors: one call on ``k·M``
        tiled rows (rows are independent), every return checked."""
        k, R, S = V.shape
        z, x = _readonly(z), _readonly(x)
        if k == 1:
            return _checked_rows(self, name, method(z, x, params, _readonly(V[0])), (R, S))[None]
        out = method(_readonly(np.tile(z, (k, 1))), _readonly(np.tile(x, (k, 1))), params,
                     _readonly(V.reshape(k * R, S)))
        return _checked_rows(self, name, out, (k * R, S)).reshape(k, R, S)

    def jvp_params_block(self, z, x, params, cache, dparams):
        """``Φ δθ`` for ``k`` directions (dict name → (k, *shape)) → (k, M, S). Linear in ``dparams``."""
        k = next(iter(dparams.values())).shape[0]
        z, x = _readonly(z), _readonly(x)
        out = np.empty((k,) + z.shape)
        for j in range(k):
            direction = {name: _readonly(blk[j]) for name, blk in dparams.items()}
            out[j] = _checked_rows(self, "jvp_params", self.jvp_params(z, x, params, direction), z.shape)
        return out

    def vjp_params_block(self, z, x, params, cache, W):
        """``Σ_m Φ_mᵀ W_m`` for a block ``W`` (k, M, S) → dict name → (k, *shape). Linear in ``W``."""
        k = W.shape[0]
        z, x = _readonly(z), _readonly(x)
        shapes = {name: p.shape for name, p in params.items()}
        out = {name: np.empty((k,) + shape) for name, shape in shapes.items()}
        for j in range(k):
            got = _checked_param_dict(self, self.vjp_params(z, x, params, _readonly(W[j])), shapes)
            for name in shapes:
                out[name][j] = got[name]
        return out

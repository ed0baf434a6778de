"""Any operator of another implementation against any kpref operator, and backends as operators.

* :func:`check_operator` — a backend callable against a kpref
  ``LinearOperator`` (``lin.NTK``, a partial trace, a marginal sum, an
  operator kpref adds later), with the budgets, the decoded worst entry and
  the per-step localization of :func:`kpref.testing.check_backend`.
* :func:`as_operator` — a backend callable as a SciPy ``LinearOperator``, so
  :mod:`kpref.analysis` and :func:`kpref.todense` apply to it directly.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .._checks import MAX_RANDOM_DRAWS, as_generator, as_real_array, check_positive_float, check_positive_int
from ..interop._names import describe_value
from ..operators._linearization import Linearization, linearize
from ..operators._named import NamedOperator
from ._backend import _declared_dtype, parameter_space, trajectory_space
from ._compare import Report, Space, as_answer, compare_operator, perturbed

__all__ = ["check_operator", "as_operator"]


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _space_of(spec, n, lin, what):
    """A Space for vectors of length ``n`` from ``spec`` (see :func:`check_operator`)."""
    if spec is None or isinstance(spec, Linearization):
        if lin is not None and n == lin.size:
            return trajectory_space(lin.cell, lin.shape)
        if lin is not None and n == lin.num_params:
            return parameter_space(lin.cell)
        return Space((n,), lambda index: f"entry {index[0]}")
    if hasattr(spec, "keys"):
        sizes = OrderedDict(spec)
        if not all(_is_int(v) and v > 0 for v in sizes.values()):
            raise ValueError(f"space: expected axis name -> positive int, got {dict(sizes)}")
        space = Space.axes(sizes)
    elif isinstance(spec, (tuple, list)) and spec and all(_is_int(v) and v > 0 for v in spec):
        if lin is not None and tuple(spec) == lin.shape:
            space = trajectory_space(lin.cell, lin.shape)
        else:
            space = Space.axes(OrderedDict((f"axis{i}", int(v)) for i, v in enumerate(spec)))
            space.describe = lambda index: f"index {tuple(int(i) for i in index)}"
    else:
        raise TypeError(f"space: expected a Linearization, a mapping axis name -> size, a shape tuple or a pair "
                        f"(input space, output space), got {describe_value(spec)}")
    if space.size != n:
        raise ValueError(f"space: the {what} space {space.shape} has {space.size} entries, the reference operator "
                         f"{n}")
    return space


def _spaces(space, shape, lin):
    n_out, n_in = shape
    pair = (isinstance(space, (tuple, list)) and len(space) == 2
            and not all(_is_int(v) for v in space))
    spec_in, spec_out = (space[0], space[1]) if pair else (space, space)
    return _space_of(spec_in, n_in, lin, "input"), _space_of(spec_out, n_out, lin, "output")


def _reference_of(reference, lin):
    """(kpref's operator, the function that rebuilds it from a linearization or None)."""
    if isinstance(reference, LinearOperator):
        return reference, None
    if not callable(reference):
        raise TypeError(f"reference: expected a scipy LinearOperator or a function lin -> LinearOperator, "
                        f"got {describe_value(reference)}")
    if lin is None:
        raise ValueError("reference: a function of the linearization needs lin= (or space=lin)")
    ref_op = reference(lin)
    if not isinstance(ref_op, LinearOperator):
        raise TypeError(f"reference(lin): expected a scipy LinearOperator, got {describe_value(ref_op)}")
    return ref_op, reference


def check_operator(fn, reference, *, adjoint=None, space=None, lin=None, dtype=None, name=None, rtol=None,
                   n_vectors=3, rng=0):
    """Compare a backend operator (and its adjoint) with a kpref ``LinearOperator``.

    Parameters
    ----------
    fn : callable
        The backend's operator: takes an input vector shaped as the input
        space, returns the answer shaped as the output space (NumPy, torch,
        JAX or nested lists; its dtype sets the budget).
    reference : LinearOperator or callable lin → LinearOperator
        kpref's operator, e.g. ``lin.NTK`` or
        ``kpref.analysis.partial_trace(lin.K, lin.shape, 'batch')``. Given as a
        function of the :class:`kpref.Linearization`, kpref also rebuilds it at
        rounding-like perturbed data to measure the answer's condition ``κ``
        (as :func:`check_backend` does); given as an operator, ``κ`` is measured
        from the perturbed input alone, and the report says so.
    adjoint : callable, optional
        The backend's adjoint, checked against ``reference.H``.
    space : optional
        How input and output vectors are shaped and their entries named:
        a :class:`kpref.Linearization` (trajectory vectors ``(B, T, S)``,
        parameter vectors ``(p,)``, recognized by size); a mapping axis name →
        size, e.g. ``{'time': T, 'unit': S}`` (an axis named ``'time'``, ``'t'``
        or ``'step'`` is localized per step); a shape tuple; or a pair
        ``(input space, output space)`` of those. Default: ``lin``'s spaces,
        else flat vectors.
    lin : Linearization, optional
        The linearization ``reference`` is built from (implied when ``space``
        is one). Its sizes set the rounding chain ``L = T + N + S``; without
        it ``L`` is the input dimension (a dense dot product).
    dtype : optional
        The precision the backend computes in (default: its answers' dtype).
    name : str, optional
        Default: the reference's name.
    rtol, n_vectors, rng
        As in :func:`check_backend`.

    Returns
    -------
    Report
        One check named ``name`` (and ``name + '*'`` for the adjoint).
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable backend operator, got {describe_value(fn)}")
    if adjoint is not None and not callable(adjoint):
        raise TypeError(f"adjoint: expected a callable or None, got {describe_value(adjoint)}")
    if isinstance(space, Linearization):
        lin = space if lin is None else lin
    if lin is not None and not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref.Linearization (kpref.linearize(...)), got {describe_value(lin)}")
    ref_op, build = _reference_of(reference, lin)
    declared = _declared_dtype(dtype)
    if rtol is not None:
        rtol = check_positive_float("rtol", rtol)
    n_vectors = check_positive_int("n_vectors", n_vectors, maximum=MAX_RANDOM_DRAWS,
                                   why="more random draws add nothing a check can use, and the loop would run for years")
    rng = as_generator(rng)
    name = str(name if name is not None else getattr(ref_op, "name", "operator"))
    in_space, out_space = _spaces(space, ref_op.shape, lin)
    if lin is not None:
        B, T, S = lin.shape
        chain = T + lin.cell.input_size + S
    else:
        chain = in_space.size
    notes = ()
    ref_p_op = None
    if build is not None:
        ref_p_op = build(linearize(lin.cell, perturbed(lin.theta, rng), perturbed(lin.x, rng), perturbed(lin.h0, rng)))
    else:
        notes = ("condition from the input's perturbation only (reference given as an operator; pass "
                 "reference=lambda lin: ... with lin= to include the data's)",)

    def one(label, call, op, op_p, src, dst, sweep):
        def apply(o):
            return lambda u: np.asarray(o.matvec(u.ravel())).reshape(dst.shape)
        return compare_operator(
            label, lambda u: call(u.copy()), lambda g: g.standard_normal(src.shape), apply(op), dst,
            n_vectors=n_vectors, rng=rng, chain=chain, declared=declared, rtol=rtol,
            perturbed_reference=None if op_p is None else (lambda u: apply(op_p)(perturbed(u, rng))),
            sweep=sweep, notes=notes)

    checks = OrderedDict()
    checks[name] = one(name, fn, ref_op, ref_p_op, in_space, out_space, "forward")
    if adjoint is not None:
        checks[name + "*"] = one(name + "*", adjoint, ref_op.H, None if ref_p_op is None else ref_p_op.H,
                                 out_space, in_space, "backward")
    subject = repr(lin.cell) if lin is not None else repr(ref_op)
    shape = lin.shape if lin is not None else ref_op.shape
    return Report(checks, [], subject, shape, 0 if lin is None else lin.num_params, n_vectors)


class _BackendOperator(NamedOperator):
    """A NamedOperator whose ``.T`` is its checked adjoint (a real operator: transpose = adjoint)."""

    def _transpose(self):
        return self._adjoint()


def _shape_arg(name, shape):
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not shape or not all(_is_int(v) and v > 0 for v in shape):
        raise ValueError(f"{name}: expected a shape tuple of positive ints, e.g. (B, T, S), got {shape!r}")
    return tuple(int(v) for v in shape)


def as_operator(fn, shape, adjoint=None, *, input_shape=None, name="backend"):
    """A backend callable as a SciPy ``LinearOperator`` (float64, flat C-order vectors).

    Parameters
    ----------
    fn : callable
        Takes an array of ``input_shape``, returns one of ``shape`` (NumPy,
        torch, JAX or nested lists; any real float dtype).
    shape : tuple of int
        The shape of its answers: the trajectory shape ``(B, T, S)`` for a
        trajectory-space operator (``P``, ``K``, ``NTK`` of another implementation).
    adjoint : callable, optional
        Its adjoint (answers of ``input_shape``): enables ``.H``, ``.T``,
        ``rmatvec``. Without it they raise ``NotImplementedError``.
    input_shape : tuple of int, optional
        The shape of its inputs (default ``shape``; ``(p,)`` for a ``J``).
    name : str

    Returns
    -------
    LinearOperator
        Every route (``matvec``, ``matmat``, ``rmatvec``, ``.H``, ``.T``) checks
        its input (length, real, finite) and each answer (shape, real
        floating dtype, finite), and returns float64 arrays it owns. Columns of
        a block go through ``fn`` one at a time (a backend takes one vector).
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable backend operator, got {describe_value(fn)}")
    if adjoint is not None and not callable(adjoint):
        raise TypeError(f"adjoint: expected a callable or None, got {describe_value(adjoint)}")
    out_shape = _shape_arg("shape", shape)
    in_shape = out_shape if input_shape is None else _shape_arg("input_shape", input_shape)
    name = str(name)

    def columns(f, label, src, dst):
        def mm(X):
            out = np.empty((int(np.prod(dst)), X.shape[1]))
            for k in range(X.shape[1]):
                raw = f(np.array(X[:, k].reshape(src)))
                arr = as_answer(label, raw, Space(dst, str))
                out[:, k] = as_real_array(f"backend {label} answer", arr).ravel()
            return out
        return mm

    n_out, n_in = int(np.prod(out_shape)), int(np.prod(in_shape))
    if adjoint is None:
        def rmm(X):
            raise NotImplementedError(f"{name}: no adjoint given (as_operator(..., adjoint=...)): .H, .T and "
                                      "rmatvec need the backend's adjoint")
    else:
        rmm = columns(adjoint, f"{name}*", out_shape, in_shape)
    op = _BackendOperator(name, (n_out, n_in), columns(fn, name, in_shape, out_shape), rmm, f"{name}*")
    op._partner = _BackendOperator(f"{name}*", (n_in, n_out), rmm, op._mm, name, partner=op)
    return op

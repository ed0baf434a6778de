r"""Checking another implementation of the K-P operators against kpref.

:func:`check_backend` calls the operators a *backend* (a PyTorch, JAX or GPU
implementation) offers, on several random vectors, compares each answer with
kpref's float64 one, and returns a :class:`Report`: per operator PASS/FAIL,
the norm-wise relative error, its budget, the worst entry decoded into names,
the first time step over budget and, for parameter-space answers, the error of
each parameter block.

The backend contract
--------------------
``backend`` is a mapping, or an object with attributes, holding any subset of
these callables (``S`` the state size: ``2H`` for an LSTM's ``[h, c]``; ``t``
a 0-based step index, kpref's ``A_t``, ``G_t`` at ``(h_{t-1}, x_t)``,
``h_{-1} = h_0``):

====================== ===================================== ==================
name                   computes                              kpref counterpart
====================== ===================================== ==================
``simulate()``         the trajectory ``z`` (B, T, S)        ``lin.z``
``P(q)``               ``v_t = A_t v_{t-1} + q_t``           ``lin.P``
``P_adjoint(w)``       ``λ_t = w_t + A_{t+1}ᵀ λ_{t+1}``      ``lin.P.H``
``P_inv(v)``           ``v_t − A_t v_{t-1}``                 ``lin.P_inv``
``P_inv_adjoint(w)``   ``w_t − A_{t+1}ᵀ w_{t+1}`` (P⁻ᵀ)      ``lin.P_inv.H``
``J(dtheta)``          ``(G_{b,t} δθ)``, h_{t-1} fixed       ``lin.J_theta``
``J_adjoint(w)``       ``Σ_{b,t} G_{b,t}ᵀ w_{b,t}``          ``lin.J_theta.H``
``K(w)``               ``J Jᵀ w``                            ``lin.K``
``NTK(w)``             ``P K P* w``                          ``lin.NTK``
``dz_dtheta(dtheta)``  ``P J δθ`` (total Jacobian)           ``lin.P @ lin.J_theta``
``dz_dtheta_adjoint(w)`` ``Jᵀ P* w`` (BPTT)                  ``lin.grad``
``grad(e)``            ``Jᵀ P* e`` (the same map)            ``lin.grad``
``A(t, v)``            ``A_t v``, v (B, S)                   ``lin.apply_A``
``A_adjoint(t, w)``    ``A_tᵀ w``                            ``lin.apply_At``
``G(t, dtheta)``       ``G_t δθ`` (B, S)                     ``(J δθ)[:, t]``
``G_adjoint(t, w)``    ``Σ_b G_{b,t}ᵀ w_b`` (p,)             ``J_θᵀ`` of step t
``error_signal()``     ``e = ∂L/∂z`` of ``check_backend(..., loss=)`` ``mse_loss(...).e``
====================== ===================================== ==================

Inputs are NumPy float64 arrays; trajectory vectors are ``(B, T, S)``.
Parameter vectors are flat ``(p,)`` in kpref's layout (``cell.param_shapes``,
torch's order for the torch-convention cells), unless the backend declares
``params``: a mapping (e.g. ``module.state_dict()``) or a sequence of its
parameter names, in its own order and torch's names; then parameter inputs
are dicts ``{its key: array}`` in that order (module prefixes such as
``rnn.`` kept, ``_l0`` suffixes kept, its other parameters, e.g. a readout,
given zero tangents when the mapping gives their shapes). Answers may be NumPy
arrays, torch tensors (any device, with or without grad), JAX arrays or nested
lists; parameter answers may also be dicts in torch names (prefixes and
``_l0`` accepted; keys that are not the cell's parameters are set aside and
named in the report, never mixed in), or flat over *all* the declared
``params`` in the backend's order (e.g. ``parameters_to_vector`` of a model
with a readout), when ``params`` is a mapping with extras. The coarsest dtype of the answers sets
the budget, unless the backend carries ``dtype`` (``'float32'``, a NumPy or a
torch dtype): the precision it computes in, when that differs from the dtype
of the arrays it returns.

Notes
-----
**Error.** For each operator and each of ``n_vectors`` standard-normal
inputs ``u`` the error is the norm-wise relative error
``‖y_backend − y_kpref‖ / ‖y_kpref‖`` (Euclidean over all entries); the
worst over the inputs is reported.

**Budget.** A correct implementation in precision ``ε`` (``np.finfo(dtype).eps``
of the backend: 2⁻²³ for float32, 2⁻⁵² for float64) rounds its data (``θ``,
``x``, ``h0``, the input vector) and every intermediate result: componentwise
relative perturbations of size ``ε``. How much such perturbations move the
answer depends on the problem (a contracting network forgets them, a
chaotic one amplifies them exponentially in ``T``, a ReLU unit near 0 can
switch), so kpref *measures* it, per operator, on the very inputs it checks::

    κ_op = max_u ‖y(θ̃, x̃, h̃0, ũ) − y(θ, x, h0, u)‖ / (δ ‖y(θ, x, h0, u)‖),
    ã = a ⊙ (1 + δ ξ),  ξ ~ U[-1, 1] entrywise,  δ = 2⁻²⁰,

(kpref's own float64 operators at the perturbed data: a relative condition
number sampled along one random rounding-like direction, in the linear
regime: ``δ`` is far above float64 rounding and far below 1), and ::

    budget = C · ε · L · max(1, κ_op),   C = 4,   L = T + N + S  (2T + N + S for NTK).

``L = T + N + S`` is the length of the longest chain of roundings a correct
implementation makes per answer entry (``T`` steps of a sweep, dot products
of length at most ``N + S`` per step; worst case: the roundings add up
linearly); ``C`` covers the constant number of operations per step (gates,
integrator stages, the two factors of ``K``). The measured ``κ_op`` is the
part a fixed formula cannot know. A bound from ``‖P‖₂`` (the growth factor of
the sweep) is valid but useless in practice: the trajectory grows along the
same directions as its perturbations, so for an exploding linear network
(``‖P‖ ≈ 1e18``) a float32 backend still errs by ~5ε, and at the edge of chaos
(tanh, gain 1.5, ``‖P‖ ≈ 80``) ``‖P‖²ε`` exceeds 1e-2 while the error is ~5ε;
``κ_op`` tracks the observed error within a factor ~3 in all of these
(validation/test_torch_backend.py checks correct float32 and float64 torch
backends against it, and mutated float64 ones fail by 10¹¹ budgets or more).
For a stable network the float32 budget is ~1e-5, the float64 one ~1e-14.
When the budget reaches ``0.1`` the problem is too ill-conditioned (chaotic,
long) for the dtype to be checked: the report says so; check in float64 or
with a shorter ``T``. A ReLU pre-activation within rounding of 0 is a
non-differentiable point: the perturbation measures it only if it happens to
flip it. An explicit ``rtol`` replaces the budget for every operator.

**Locations.** Indices are 0-based array indices: "trial b, step t, unit s"
is entry ``[b, t, s]`` of the ``(B, T, S)`` answer (``z[:, t]`` is the state
after the ``t+1``-th step, SPEC §1); for an LSTM the unit is named within
``h`` or ``c``. A parameter index is named by its block
(:meth:`kpref.Cell.param_block_of`) and, for the stacked gate rows of a GRU
(``[r; z; n]``) or an LSTM (``[i; f; g; o]``), by its gate; parameter answers also carry their error per
block and per gate rows of each stacked block (``'weight_hh[n]'``). The *first step
over budget* is the first ``t``, in the direction the operator sweeps
(backward in time for ``P_adjoint``), whose per-step relative error
``‖δy[:, t]‖ / ‖y[:, t]‖`` exceeds the budget: where a wrong recurrence
starts to differ; every step over budget is listed too ("t = 0 only (1 of
20)"). A backward sweep that is wrong anywhere is first wrong at ``T − 2``
(``λ_{T−1} = w_{T−1}`` involves no ``A``), so that alone names no mistake. The per-step slots (``A``, ``A_adjoint``, ``G``) are assembled into a
``(B, T, S)`` answer over ``t`` and ``G_adjoint`` into ``(T, p)``, so they are
localized the same way.

**Hints.** A failing line names the classic mistakes it recognizes: only
``t = 0`` wrong (``h0``), a backward sweep wrong from ``T − 2`` (an off-by-one
time index: the answer matches kpref's with ``A_t`` for ``A_{t+1}``), answers
that match kpref with ``weight_hh`` transposed or with ``h0 = 0``, a gate whose rows of a parameter answer are exactly 0 (a missing
gate), float32-sized errors in float64 arrays ("declare dtype='float32'?"),
and a trajectory of ``T + 1`` steps ("pass includes_h0=True").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ..cells._cell import Cell
from .._checks import (MAX_RANDOM_DRAWS, as_generator, check_bool, check_memory, check_positive_float, check_positive_int,
                       physical_memory)
from ..interop._names import closest, describe_value, match_names, to_numpy
from ..operators._linearization import linearize, mse_loss
from ._compare import OperatorCheck, Report, Space, as_answer, compare_operator, perturbed

__all__ = ["check_backend", "Report", "OperatorCheck", "reference_backend", "OPERATORS",
           "describe_state_index", "describe_param_index"]


class _Slot(NamedTuple):
    takes: str | None    # 'traj', 'param', 'step' (t, v) or None
    gives: str           # 'traj', 'param', 'step_param'
    sweep: str | None
    hint: str


_SLOTS = OrderedDict(
    simulate=_Slot(None, "traj", "forward",
                   "the step F itself differs: compare one step (cell.step) on one trial, the parameter layout "
                   "(cell.params_to_torch) and the gate order; every other operator is suspect until this passes"),
    P=_Slot("traj", "traj", "forward",
            "the state tangent A_t = dF/dh at (h_{t-1}, x_t) or the sweep v_t = A_t v_{t-1} + q_t, v_0 = q_0"),
    P_adjoint=_Slot("traj", "traj", "backward",
                    "the backward sweep lambda_t = w_t + A_{t+1}^T lambda_{t+1}: a first failing step T-2 (in "
                    "backward order) with P passing points to an off-by-one time index of A"),
    P_inv=_Slot("traj", "traj", "forward", "(P^-1 v)_t = v_t - A_t v_{t-1}: no sweep; the pairing of A_t with v_{t-1}"),
    P_inv_adjoint=_Slot("traj", "traj", "backward",
                        "(P^-T w)_t = w_t - A_{t+1}^T w_{t+1}: A_{t+1}, not A_t (first failing step T-2 backward: "
                        "an off-by-one time index)"),
    J=_Slot("param", "traj", "forward",
            "the immediate parameter Jacobian G_t at fixed h_{t-1} (differentiating through h_{t-1} gives P J)"),
    J_adjoint=_Slot("traj", "param", None,
                    "the parameter adjoint sum_{b,t} G_{b,t}^T w_{b,t} of the step: see the block breakdown"),
    K=_Slot("traj", "traj", "forward", "K = J J^T: if J and J_adjoint pass, the composition"),
    NTK=_Slot("traj", "traj", "forward", "NTK = P K P*: if P, K and P_adjoint pass, the order of the composition"),
    dz_dtheta=_Slot("param", "traj", "forward",
                    "dz/dtheta = P J: the total Jacobian (through h_{t-1}); if P and J pass, the composition"),
    dz_dtheta_adjoint=_Slot("traj", "param", None,
                            "J^T P* w (the BPTT map): if J_adjoint and P_adjoint pass, the pairing of G_t with "
                            "lambda_t in time"),
    grad=_Slot("traj", "param", None,
               "grad = J^T P* e: if J_adjoint and P_adjoint pass, the pairing of G_t with lambda_t in time"),
    A=_Slot("step", "traj", "forward", "A_t = dF/dh at (h_{t-1}, x_t), t 0-based (A_0 at h0)"),
    A_adjoint=_Slot("step", "traj", "forward", "A_t^T at (h_{t-1}, x_t), t 0-based: the transpose of A(t, .)"),
    G=_Slot("param", "traj", "forward", "G_t = dF/dtheta at (h_{t-1}, x_t) with h_{t-1} fixed, t 0-based"),
    G_adjoint=_Slot("step", "step_param", None, "sum_b G_{b,t}^T w_b at step t: see the block breakdown"),
    error_signal=_Slot(None, "traj", "forward",
                       "e = dL/dz of the loss: the readout (W_out, b_out), the reduction ('mean' divides by "
                       "B*T*O) and the mask"),
)

#: Operator names a backend may provide, in the order they are checked (``error_signal`` needs ``loss=``).
OPERATORS = tuple(n for n in _SLOTS if n != "error_signal")
_DECLARATIONS = ("dtype", "params")
_STACKED = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


# --------------------------------------------------------------- naming
def _gates_of(cell):
    """The cell's declared ``gate_names`` (``None`` when it declares none)."""
    return tuple(cell.gate_names) or None


def _gate_rows(cell):
    """``'block[gate]'`` → flat indices of that gate's rows in each stacked block (GRU, LSTM); else empty."""
    gates = _gates_of(cell)
    if not gates:
        return {}
    H = cell.hidden_size
    out = OrderedDict()
    for name, sl in cell.param_slices().items():
        shape = cell.param_shapes[name]
        if name not in _STACKED or shape[0] != len(gates) * H:
            continue
        flat = np.arange(sl.start, sl.stop).reshape(shape)
        for k, gate in enumerate(gates):
            out[f"{name}[{gate}]"] = flat[k * H:(k + 1) * H].ravel()
    return out


def describe_state_index(cell, b, t, s):
    """"trial b, step t, unit s" (and ``of h``/``of c`` for an LSTM's ``[h, c]`` state).

    ``b``, ``t``: integers >= 0 such that a float64 trajectory holding entry ``(b, t, s)`` (at least
    ``(b + 1)(t + 1) S`` values) fits in this machine's memory; ``s``: ``0 <= s < cell.state_size``.
    """
    _check_cell(cell)
    b = check_positive_int("b", b, minimum=0)
    t = check_positive_int("t", t, minimum=0)
    s = check_positive_int("s", s, minimum=0)
    if s >= cell.state_size:
        raise ValueError(f"s: expected a unit index 0 <= s < state_size={cell.state_size}, got {s}")
    ram = physical_memory()
    if ram is not None and 8 * (b + 1) * (t + 1) * cell.state_size > ram:
        raise ValueError(f"b={b}, t={t}: no float64 trajectory holding this entry fits in this machine's memory "
                         f"({ram / 2**30:.3g} GiB); expected the index of an entry of a trajectory")
    parts = tuple(cell.state_parts)
    if len(parts) > 1:
        start = 0
        for part, size in parts:
            if s < start + size:
                return f"trial {b}, step {t}, unit {s - start} of {part}"
            start += size
    return f"trial {b}, step {t}, unit {s}"


def describe_param_index(cell, index):
    """Name of flat parameter ``index``: block, entry and (stacked gate rows) gate and unit."""
    _check_cell(cell)
    name, idx = cell.param_block_of(index)     # checks index (an integer in [0, num_params), naming it)
    idx = tuple(int(i) for i in idx)
    text = f"{name}[{', '.join(map(str, idx))}]"
    gates = _gates_of(cell)
    H = cell.hidden_size
    shape = cell.param_shapes[name]
    if gates and name in _STACKED and shape[0] == len(gates) * H:
        row = idx[0]
        text += f" (gate {gates[row // H]}, unit {row % H}"
        text += f", column {idx[1]})" if len(idx) > 1 else ")"
    return text


def _check_cell(cell):
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")


def trajectory_space(cell, shape):
    """The (B, T, S) space of ``cell``'s trajectories, entries named "trial b, step t, unit s"."""
    return Space(shape, lambda index: describe_state_index(cell, *index), time_axis=1)


def parameter_space(cell):
    """The (p,) space of ``cell``'s parameters, with its blocks and gate rows."""
    blocks = OrderedDict((n, np.arange(sl.start, sl.stop)) for n, sl in cell.param_slices().items())
    return Space((cell.num_params,), lambda index: describe_param_index(cell, index[0]),
                 groups=blocks, subgroups=_gate_rows(cell))


def _step_parameter_space(cell, T):
    """(T, p): one parameter vector per step (``G_adjoint``)."""
    p = cell.num_params
    whole = parameter_space(cell)

    def spread(table):
        return OrderedDict((n, (np.arange(T)[:, None] * p + idx[None, :]).ravel()) for n, idx in table.items())
    return Space((T, p), lambda index: f"step {index[0]}, {describe_param_index(cell, index[1])}", time_axis=0,
                 groups=spread(whole.groups), subgroups=spread(whole.subgroups))


# ------------------------------------------------------------- the backend
def _declared_dtype(d):
    if d is None:
        return None
    text = str(d)
    if text.startswith("torch."):
        text = text[len("torch."):]
    try:
        dt = np.dtype(text if not isinstance(d, (np.dtype, type)) else d)
    except TypeError as exc:
        raise TypeError(f"backend dtype: expected a floating dtype (e.g. 'float32'), got {d!r}") from exc
    if dt.kind != "f":
        raise TypeError(f"backend dtype: expected a floating dtype (e.g. 'float32'), got {d!r}")
    return dt


def _operators_of(backend, with_loss):
    """name → callable for the operators the backend offers (checked), declarations, not-provided guesses."""
    names = OPERATORS + (("error_signal",) if with_loss else ())
    accepted = list(_SLOTS) + list(_DECLARATIONS)
    not_provided = {}
    if hasattr(backend, "keys") and hasattr(backend, "__getitem__"):
        keys = list(backend.keys())
        unknown = [str(k) for k in keys if k not in accepted]
        if unknown:
            near = {u: closest(u, accepted) for u in unknown}
            text = "; ".join(f"closest to {u!r}: {near[u]!r}" for u in unknown if near[u])
            raise ValueError(f"backend: expected keys among {accepted}, got unknown {unknown}"
                             + (f" ({text})" if text else ""))
        get = backend.__getitem__
        has = lambda n: n in keys  # noqa: E731
    else:
        get = lambda n: getattr(backend, n, None)  # noqa: E731
        has = lambda n: getattr(backend, n, None) is not None  # noqa: E731
        public = [a for a in dir(backend) if not a.startswith("_") and a not in accepted
                  and callable(getattr(backend, a, None))]
        for attr in public:   # a callable that is no slot but close to a missing one: misspelled?
            near = closest(attr, [n for n in names if not has(n)])
            if near is not None:
                not_provided[near] = attr
    if "error_signal" in (backend.keys() if hasattr(backend, "keys") else ()) and not with_loss:
        raise ValueError("backend: an 'error_signal' entry needs the loss it is the signal of: "
                         "check_backend(..., loss=dict(target=..., w_out=...))")
    ops = OrderedDict((n, get(n)) for n in names if has(n) and get(n) is not None)
    for n, f in ops.items():
        if not callable(f):
            raise TypeError(f"backend {n}: expected a callable, got {type(f).__name__}")
    if not ops:
        raise ValueError(f"backend: expected at least one of {list(names)}, got none"
                         + (f" (misspelled? {not_provided})" if not_provided else ""))
    declared = {d: (get(d) if has(d) else None) for d in _DECLARATIONS}
    return ops, _declared_dtype(declared["dtype"]), declared["params"], not_provided


class _Params:
    """Parameter vectors between kpref's flat layout and the backend's own (flat, or a dict in its names)."""

    def __init__(self, cell, declared):
        self.cell = cell
        self.set_aside = []
        self.match, self.shapes = None, {}
        if declared is not None:
            keys = list(declared.keys()) if hasattr(declared, "keys") else declared
            if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
                raise TypeError(f"backend params: expected a mapping (a state dict) or a sequence of parameter "
                                f"names, got {describe_value(declared)}")
            self.match = match_names(cell, keys, "backend params")
            if hasattr(declared, "keys"):
                self.shapes = {k: tuple(np.shape(to_numpy(declared[k]))) for k in self.match.order}
            self._aside(self.match.extras)

    def _aside(self, keys):
        self.set_aside += [k for k in keys if k not in self.set_aside]

    def tangent(self, flat):
        """kpref's flat (p,) → what the backend takes: a copy, or a dict in its key order (extras: zeros)."""
        if self.match is None:
            return flat.copy()
        views, out = self.cell.unflatten(flat), OrderedDict()
        for key in self.match.order:
            name = self.match.kpref_name(key)
            if name is not None:
                out[key] = views[name].copy()
            elif key in self.shapes:
                out[key] = np.zeros(self.shapes[key])
        return out

    def _flat_in_backend_order(self, op, raw):
        """A flat answer over all the backend's parameters in its own order (a readout included): the cell's part."""
        flat = as_answer(op, raw, Space((sum(int(np.prod(s)) for s in self.shapes.values()),), str))
        pieces, start = {}, 0
        for key in self.match.order:
            size = int(np.prod(self.shapes[key]))
            pieces[key] = flat[start:start + size].reshape(self.shapes[key])
            start += size
        return self.answer(op, pieces)

    def answer(self, op, raw):
        """A parameter answer (flat, or a dict in torch names) → (p,) array in kpref's layout, its dtype kept."""
        p = self.cell.num_params
        if not (hasattr(raw, "keys") and hasattr(raw, "__getitem__")):
            total = sum(int(np.prod(s)) for s in self.shapes.values())
            if self.match is not None and self.match.extras and len(self.shapes) == len(self.match.order) \
                    and np.ndim(to_numpy(raw)) == 1 and np.size(to_numpy(raw)) == total:
                return self._flat_in_backend_order(op, raw)
            return as_answer(op, raw, Space((p,), str))
        match = match_names(self.cell, list(raw.keys()), f"backend {op} answer")
        self._aside(match.extras)
        arrays = OrderedDict()
        for name, key in match.keys.items():
            arr = as_answer(f"{op}[{key!r}]", raw[key], Space(self.cell.param_shapes[name], str))
            arrays[name] = arr
        dtype = max((a.dtype for a in arrays.values()), key=lambda d: np.finfo(d).eps)
        out = np.empty(p, dtype=dtype)
        for name, sl in self.cell.param_slices().items():
            out[sl] = arrays[name].ravel()
        return out


def _transposed_recurrent(cell, theta):
    """θ with every H×H block of ``weight_hh`` transposed (an involution), or None if it has none."""
    shape = cell.param_shapes.get("weight_hh")
    H = cell.hidden_size
    if shape is None or len(shape) != 2 or shape[1] != H or shape[0] % H:
        return None
    out = theta.copy()
    sl = cell.param_slices()["weight_hh"]
    G = shape[0] // H
    out[sl] = theta[sl].reshape(G, H, H).transpose(0, 2, 1).ravel()
    return out


def _reference(lin, loss=None):
    """kpref's answer for each slot: name → callable(u) (u: kpref's input, None for simulate)."""
    B, T, S = lin.shape
    n = B * T * S

    def traj(Y):
        return Y.reshape(B, T, S)

    def per_step(apply):
        return lambda V: np.stack([apply(t, V[:, t][None])[0] for t in range(T)], axis=1)

    def G_adjoint(W):
        # one J_θᵀ block product over T vectors (w placed at one step each): B·T·S·T floats
        check_memory("check_backend G_adjoint reference", 8 * B * T * S * T, lin.memory_limit)
        X = np.zeros((B, T, S, T))
        for t in range(T):
            X[:, t, :, t] = W[:, t]
        return lin.J_theta.H.matmat(X.reshape(n, T)).T

    ops = {
        "simulate": lambda _: lin.z.copy(),
        "P": lambda q: traj(lin.P.matvec(q.ravel())),
        "P_adjoint": lambda w: traj(lin.P.H.matvec(w.ravel())),
        "P_inv": lambda v: traj(lin.P_inv.matvec(v.ravel())),
        "P_inv_adjoint": lambda w: traj(lin.P_inv.H.matvec(w.ravel())),
        "J": lambda d: traj(lin.J_theta.matvec(d)),
        "J_adjoint": lambda w: lin.J_theta.H.matvec(w.ravel()),
        "K": lambda w: traj(lin.K.matvec(w.ravel())),
        "NTK": lambda w: traj(lin.NTK.matvec(w.ravel())),
        "dz_dtheta": lambda d: traj(lin.P.matvec(lin.J_theta.matvec(d))),
        "dz_dtheta_adjoint": lambda w: lin.grad(w),
        "grad": lambda e: lin.grad(e),
        "A": per_step(lin.apply_A),
        "A_adjoint": per_step(lin.apply_At),
        "G": lambda d: traj(lin.J_theta.matvec(d)),
        "G_adjoint": G_adjoint,
    }
    if loss is not None:
        ops["error_signal"] = lambda _: mse_loss(lin.z, cell=lin.cell, **loss).e
    return ops


def reference_backend(cell, theta, x, h0=None, *, loss=None):
    """kpref's own operators in the backend format of :func:`check_backend` (a dict of callables).

    A template for writing a backend, and the reference a backend's tests can
    also be run against (``check_backend(reference_backend(...), ...)`` passes
    with errors of exactly 0). Every slot of :data:`OPERATORS` is there
    (``A(t, v)`` and the other per-step slots take a step index first), and
    ``error_signal`` when ``loss`` (the keywords of :func:`kpref.mse_loss`) is given.
    """
    ref = _reference(linearize(cell, theta, x, h0), _check_loss(loss))
    out = {}
    for name, fn in ref.items():
        slot = _SLOTS[name]
        if slot.takes is None:
            out[name] = (lambda f: lambda: f(None))(fn)
        elif name in ("A", "A_adjoint"):
            out[name] = (lambda f, n: lambda t, v: f(_one_step(v, t, x))[:, t])(fn, name)
        elif name == "G":
            out[name] = (lambda f: lambda t, d: f(d)[:, t])(fn)
        elif name == "G_adjoint":
            out[name] = (lambda f: lambda t, w: f(_one_step(w, t, x))[t])(fn)
        else:
            out[name] = fn
    return out


def _one_step(v, t, x):
    """A (B, S) vector placed at step ``t`` of a zero (B, T, S) trajectory vector."""
    v = np.asarray(v, dtype=np.float64)
    T = np.shape(x)[1]
    out = np.zeros((v.shape[0], T, v.shape[1]))
    out[:, t] = v
    return out


def _check_loss(loss):
    if loss is None:
        return None
    if not hasattr(loss, "keys"):
        raise TypeError(f"loss: expected a dict of kpref.mse_loss keywords (target, w_out, b_out, mask, reduction), "
                        f"got {describe_value(loss)}")
    allowed = ("target", "w_out", "b_out", "mask", "reduction")
    unknown = [k for k in loss if k not in allowed]
    if unknown or "target" not in loss or "w_out" not in loss:
        raise ValueError(f"loss: expected the keys target, w_out (and optionally b_out, mask, reduction), "
                         f"got {sorted(loss)}")
    return dict(loss)


# ------------------------------------------------------------------ checking
def _caller(name, fn, params, shape):
    """The backend's operator as a function of kpref's input (step slots: looped over t and assembled)."""
    B, T, S = shape
    slot = _SLOTS[name]
    if slot.takes is None:
        return lambda u: fn()
    if name in ("A", "A_adjoint"):
        step = Space((B, S), str)
        return lambda V: np.stack([as_answer(f"{name}(t={t})", fn(t, V[:, t].copy()), step) for t in range(T)], axis=1)
    if name == "G":
        step = Space((B, S), str)
        return lambda d: np.stack([as_answer(f"G(t={t})", fn(t, params.tangent(d)), step) for t in range(T)], axis=1)
    if name == "G_adjoint":
        return lambda W: np.stack([params.answer(f"G_adjoint(t={t})", fn(t, W[:, t].copy())) for t in range(T)])
    if slot.takes == "param":
        return lambda d: fn(params.tangent(d))
    return lambda u: fn(u.copy())


def check_backend(backend, cell, theta, x, h0=None, *, rtol=None, n_vectors=3, rng=0, loss=None, includes_h0=False):
    """Compare a backend's trajectory, operators and gradient with kpref's.

    Parameters
    ----------
    backend : mapping or object
        Any subset of the operator slots (see the module notes for their
        contract), built by the caller for this ``(cell, theta, x, h0)``;
        optionally ``dtype``, the precision it computes in, and ``params``,
        its parameter names in its own order (a state dict or a sequence).
    cell : kpref cell
    theta : (p,) array
    x : (B, T, N) array
    h0 : (B, S) array, optional (zeros)
    rtol : float, optional
        Overrides the conditioning-scaled budget of every operator.
    n_vectors : int, default 3
        Random inputs per operator.
    rng : None, int or numpy.random.Generator, default 0
        Source of the random inputs and of the perturbations that measure
        each operator's condition (a fixed seed by default: a report is
        reproducible).
    loss : dict, optional
        Keywords of :func:`kpref.mse_loss` (``target``, ``w_out``, ``b_out``,
        ``mask``, ``reduction``): the loss whose error signal ``e = ∂L/∂z``
        the backend's ``error_signal()`` returns.
    includes_h0 : bool, default False
        The backend's ``simulate()`` returns ``T + 1`` states, ``h_0`` first
        (checked to equal ``h0``, then dropped).

    Returns
    -------
    Report

    Raises
    ------
    ValueError, TypeError
        For a malformed problem or backend (unknown operator names, an entry
        that is not callable, an answer of the wrong shape or a non-float
        dtype), naming the entry and what it returned. A wrong *number*, a
        non-finite answer or an exception inside the backend is never an
        exception here: it is a FAIL in the report (``report.raise_if_failed()``
        turns it into an ``AssertionError``).
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    loss = _check_loss(loss)
    ops, declared, declared_params, not_provided = _operators_of(backend, loss is not None)
    if rtol is not None:
        rtol = check_positive_float("rtol", rtol)
    n_vectors = check_positive_int("n_vectors", n_vectors, maximum=MAX_RANDOM_DRAWS,
                                   why="more random draws add nothing a check can use, and the loop would run for years")
    includes_h0 = check_bool("includes_h0", includes_h0)
    rng = as_generator(rng)
    lin = linearize(cell, theta, x, h0)
    B, T, S = lin.shape
    params = _Params(cell, declared_params)
    reference = _reference(lin, loss)
    # the same problem at rounding-like perturbed data (θ̃, x̃, h̃0): measures each answer's condition
    lin_p = linearize(cell, perturbed(lin.theta, rng), perturbed(lin.x, rng), perturbed(lin.h0, rng))
    ref_p = _reference(lin_p, None if loss is None else {k: (perturbed(np.asarray(v, float), rng)
                       if k in ("target", "w_out", "b_out") and v is not None else v) for k, v in loss.items()})
    spaces = {"traj": trajectory_space(cell, (B, T, S)), "param": parameter_space(cell),
              "step_param": _step_parameter_space(cell, T)}
    draws = {"traj": lambda g: g.standard_normal((B, T, S)), "step": lambda g: g.standard_normal((B, T, S)),
             "param": lambda g: g.standard_normal(lin.num_params), None: None}
    alternatives = _Alternatives(cell, lin, loss)
    checks = OrderedDict()
    for name, fn in ops.items():
        slot = _SLOTS[name]
        space = spaces[slot.gives]
        convert = None
        if slot.gives == "param":
            convert = (lambda n: lambda raw: params.answer(n, raw))(name)
        h0_check = []
        if name == "simulate" and includes_h0:
            convert = _with_h0(lin.h0, h0_check)
        checks[name] = compare_operator(
            name, _caller(name, fn, params, (B, T, S)), draws[slot.takes],
            (lambda f: lambda u: f(u))(reference[name]), space, n_vectors=n_vectors, rng=rng,
            chain=(2 * T if name == "NTK" else T) + cell.input_size + S, declared=declared, rtol=rtol,
            perturbed_reference=(lambda f: lambda u: f(None if u is None else perturbed(u, rng)))(ref_p[name]),
            sweep=slot.sweep, convert=convert, alternatives=alternatives.of(name))
        if h0_check:
            _judge_h0(checks[name], h0_check[0])
    skipped = [n for n in OPERATORS if n not in ops]
    report = Report(checks, skipped, repr(cell), (B, T, S), lin.num_params, n_vectors, not_provided=not_provided,
                    set_aside=params.set_aside, hints={n: s.hint for n, s in _SLOTS.items()})
    for check in report.checks.values():
        if params.set_aside and _SLOTS[check.name].gives in ("param", "step_param") or (
                params.set_aside and _SLOTS[check.name].takes == "param"):
            extra = f"set aside (not the cell's): {', '.join(params.set_aside)}"
            check.note = f"{check.note}; {extra}" if check.note else extra
    return report


def _with_h0(h0, out):
    """Convert a (B, T+1, S) trajectory: record the error of its h_0 column, return the rest."""
    B, S = h0.shape

    def convert(raw):
        arr = np.asarray(to_numpy(raw))
        if arr.ndim != 3 or arr.shape[0] != B or arr.shape[2] != S or arr.shape[1] < 2:
            raise ValueError(f"backend simulate: with includes_h0=True expected shape (B, T+1, S) = "
                             f"({B}, T+1, {S}), got {describe_value(raw)}")
        full = as_answer("simulate", arr, Space(arr.shape, str))
        err = np.linalg.norm(full[:, 0].astype(np.float64) - h0)
        den = np.linalg.norm(h0)
        out.append((err / den if den > 0 else err, full.dtype))
        return full[:, 1:]
    return convert


def _judge_h0(check, h0_error):
    """A copy of h0 is exact up to one rounding to the answer's dtype: ``ε`` relative."""
    err, dtype = h0_error
    limit = float(np.finfo(dtype).eps)
    text = f"h_0 column rel. error {err:.1e}" + ("" if err <= limit else f" > {limit:.1e}: h_0 differs from h0")
    check.note = f"{check.note}; {text}" if check.note else text
    if not err <= limit:
        check.passed = False


class _Alternatives:
    """kpref's answers under classic mistakes, built only when an operator fails (see compare_operator)."""

    def __init__(self, cell, lin, loss):
        self.cell, self.lin, self.loss = cell, lin, loss
        self._refs = {}

    def _get(self, label):
        if label not in self._refs:
            lin = self.lin
            if label == "off_by_one":
                self._refs[label] = _off_by_one_reference(lin)
            elif label == "transposed":
                theta_t = _transposed_recurrent(self.cell, lin.theta)
                self._refs[label] = None if theta_t is None else _reference(
                    linearize(self.cell, theta_t, lin.x, lin.h0), self.loss)
            else:
                self._refs[label] = None if not np.any(lin.h0) else _reference(
                    linearize(self.cell, lin.theta, lin.x, np.zeros_like(lin.h0)), self.loss)
        return self._refs[label]

    def of(self, name):
        cell = self.cell
        gives = _SLOTS[name].gives

        def transposed(u):
            ref = self._get("transposed")
            d = u if _SLOTS[name].takes != "param" else _transposed_recurrent(cell, u)
            out = ref[name](d)
            if gives == "param":
                return _transposed_recurrent(cell, out)
            if gives == "step_param":
                return np.stack([_transposed_recurrent(cell, row) for row in out])
            return out

        def zero_h0(u):
            return self._get("zero_h0")[name](u)

        out = {}
        if _transposed_recurrent(cell, self.lin.theta) is not None:
            out["transposed"] = (transposed, "matches kpref with weight_hh transposed (each HxH gate block): "
                                             "a transposed recurrent weight (h @ W_hh instead of h @ W_hh.T?)")
        if np.any(self.lin.h0):
            out["zero_h0"] = (zero_h0, "matches kpref with h0 = 0: the backend ignores the initial state")
        if name in _OFF_BY_ONE_SLOTS:
            out["off_by_one"] = (lambda u: self._get("off_by_one")[name](u),
                                 "matches kpref with A_t in place of A_{t+1} in the backward sweep: an off-by-one "
                                 "time index")
        return out


_OFF_BY_ONE_SLOTS = ("P_adjoint", "P_inv_adjoint", "NTK", "dz_dtheta_adjoint", "grad")


def _off_by_one_reference(lin):
    """kpref's answers with the classic off-by-one of the backward sweeps: ``A_t`` where ``A_{t+1}`` belongs."""
    B, T, S = lin.shape

    def P_adjoint(w):              # λ_t = w_t + A_tᵀ λ_{t+1} (correct: A_{t+1})
        lam = np.array(w, dtype=np.float64)
        for t in range(T - 2, -1, -1):
            lam[:, t] += lin.apply_At(t, lam[None, :, t + 1])[0]
        return lam

    def P_inv_adjoint(w):          # w_t − A_tᵀ w_{t+1} (correct: A_{t+1})
        out = np.array(w, dtype=np.float64)
        for t in range(T - 1):
            out[:, t] -= lin.apply_At(t, w[None, :, t + 1])[0]
        return out

    def backprop(w):
        return lin.J_theta.H.matvec(P_adjoint(w).ravel())
    return {"P_adjoint": P_adjoint, "P_inv_adjoint": P_inv_adjoint, "dz_dtheta_adjoint": backprop, "grad": backprop,
            "NTK": lambda w: lin.P.matvec(lin.K.matvec(P_adjoint(w).ravel())).reshape(B, T, S)}

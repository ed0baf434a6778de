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
these callables; each takes and returns NumPy arrays (float32 or float64),
trajectory vectors shaped ``(B, T, S)`` (``S`` the state size: ``2H`` for an
LSTM's ``[h, c]``), parameter vectors flat ``(p,)`` in kpref's layout
(``cell.param_shapes``; :meth:`kpref.Cell.params_to_torch` gives the named
blocks):

=============== ================================ =========================
name            computes                         kpref counterpart
=============== ================================ =========================
``simulate()``  the trajectory ``z`` (B, T, S)   ``lin.z``
``P(q)``        ``v_t = A_t v_{t-1} + q_t``      ``lin.P``
``P_adjoint(w)`` ``λ_t = w_t + A_{t+1}ᵀ λ_{t+1}`` ``lin.P.H``
``J(dtheta)``   ``(G_{b,t} δθ)``, h_{t-1} fixed  ``lin.J_theta``
``J_adjoint(w)`` ``Σ_{b,t} G_{b,t}ᵀ w_{b,t}``    ``lin.J_theta.H``
``K(w)``        ``J Jᵀ w``                       ``lin.K``
``grad(e)``     ``Jᵀ P* e`` (BPTT)               ``lin.grad``
=============== ================================ =========================

It may also carry ``dtype`` (``'float32'``, a NumPy dtype or a torch dtype):
the precision it computes in, when that differs from the dtype of the arrays
it returns.

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

    budget = C · ε · (T + N + S) · max(1, κ_op),   C = 4.

``T + N + S`` is the length of the longest chain of roundings a correct
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
starts to differ.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..cells._cell import Cell, _torch_free_array
from .._checks import as_generator, check_positive_float, check_positive_int
from ..operators import linearize
from ._metrics import norm_ratio

__all__ = ["check_backend", "Report", "OperatorCheck", "reference_backend", "OPERATORS"]

#: Operator names a backend may provide, in the order they are checked.
OPERATORS = ("simulate", "P", "P_adjoint", "J", "J_adjoint", "K", "grad")

_BUDGET_CONSTANT = 4.0
_PERTURBATION = 2.0**-20
_LOOSE_BUDGET = 0.1

# name → (input space, output space, sweep direction)
_SPEC = {
    "simulate": (None, "traj", "forward"),
    "P": ("traj", "traj", "forward"),
    "P_adjoint": ("traj", "traj", "backward"),
    "J": ("param", "traj", "forward"),
    "J_adjoint": ("traj", "param", None),
    "K": ("traj", "traj", "forward"),
    "grad": ("traj", "param", None),
}

_HINTS = {
    "simulate": "the step F itself differs: compare one step (cell.step) on one trial, the parameter layout "
                "(cell.params_to_torch) and the gate order; every other operator is suspect until this passes",
    "P": "the state tangent A_t = dF/dh at (h_{t-1}, x_t) or the sweep v_t = A_t v_{t-1} + q_t, v_0 = q_0",
    "P_adjoint": "the backward sweep lambda_t = w_t + A_{t+1}^T lambda_{t+1}: a first failing step T-2 (in "
                 "backward order) with P passing points to an off-by-one time index of A",
    "J": "the immediate parameter Jacobian G_t at fixed h_{t-1} (differentiating through h_{t-1} gives P J)",
    "J_adjoint": "the parameter adjoint sum_{b,t} G_{b,t}^T w_{b,t} of the step: see the block breakdown",
    "K": "K = J J^T: if J and J_adjoint pass, the composition",
    "grad": "grad = J^T P* e: if J_adjoint and P_adjoint pass, the pairing of G_t with lambda_t in time",
}

_STACKED = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass
class OperatorCheck:
    """The result of comparing one operator of a backend with kpref (one line of a :class:`Report`).

    Attributes
    ----------
    name : str
        Operator name (see :data:`OPERATORS`).
    passed : bool
    rel_error : float
        Worst norm-wise relative error over the inputs.
    budget : float
        The threshold (the conditioning-scaled budget, or the caller's ``rtol``).
    dtype : str
        Precision the budget assumed.
    condition : float
        ``κ_op``, the measured relative condition number of the answer (the
        budget is ``C·ε·(T + N + S)·max(1, κ_op)``).
    worst_entry : str
        The entry of largest absolute error, decoded into names.
    worst_index : tuple of int
        Its array index in the answer.
    backend_value, kpref_value : float
        The two answers at that entry.
    first_bad_step : int or None
        First time step (in sweep order) whose per-step relative error exceeds
        the budget; ``None`` if none does or the answer is a parameter vector.
    step_errors : list of float
        Per-step relative errors (worst over the inputs), for trajectory answers.
    block_errors : dict
        Parameter block → relative error, for parameter answers.
    gate_errors : dict
        ``'block[gate]'`` → relative error of that gate's rows of a stacked
        block (GRU, LSTM), for parameter answers: a dropped or misplaced gate
        term shows as one gate with error ~1 (an unused gate: exactly 1).
    note : str
        Anything a reader must know (non-finite answers, a loose budget).
    """

    name: str
    passed: bool
    rel_error: float
    budget: float
    dtype: str
    condition: float
    worst_entry: str
    worst_index: tuple
    backend_value: float
    kpref_value: float
    first_bad_step: int | None = None
    step_errors: list = field(default_factory=list)
    block_errors: dict = field(default_factory=dict)
    gate_errors: dict = field(default_factory=dict)
    sweep: str | None = None
    note: str = ""

    def line(self):
        """One line: the name first, then verdict, error, budget, location."""
        verdict = "PASS" if self.passed else "FAIL"
        cmp = "<=" if self.passed else ">"
        text = (f"{self.name:<9} {verdict}  rel.error {self.rel_error:.2e} {cmp} budget {self.budget:.2e} "
                f"[{self.dtype}, condition {self.condition:.2g}]  worst: {self.worst_entry} (backend {self.backend_value:.6g}, "
                f"kpref {self.kpref_value:.6g})")
        if not self.passed and self.first_bad_step is not None:
            order = " (backward in time)" if self.sweep == "backward" else ""
            text += f"; first step over budget{order}: t={self.first_bad_step}"
        if not self.passed and self.block_errors:
            text += "; by block: " + ", ".join(f"{k} {v:.1e}" for k, v in self.block_errors.items())
        if not self.passed and self.gate_errors:
            worst = sorted(self.gate_errors.items(), key=lambda kv: -np.nan_to_num(kv[1], nan=np.inf))[:4]
            text += "; worst gates: " + ", ".join(f"{k} {v:.1e}" for k, v in worst)
        if self.note:
            text += f"; note: {self.note}"
        return text

    def to_json(self):
        """Plain JSON-serializable dict (non-finite floats as the strings 'inf'/'nan')."""
        return {
            "name": self.name, "passed": bool(self.passed), "rel_error": _jf(self.rel_error),
            "budget": _jf(self.budget), "dtype": self.dtype, "condition": _jf(self.condition),
            "worst_entry": self.worst_entry, "worst_index": [int(i) for i in self.worst_index],
            "backend_value": _jf(self.backend_value), "kpref_value": _jf(self.kpref_value),
            "first_bad_step": None if self.first_bad_step is None else int(self.first_bad_step),
            "sweep": self.sweep,
            "step_errors": [_jf(e) for e in self.step_errors],
            "block_errors": {str(k): _jf(v) for k, v in self.block_errors.items()},
            "gate_errors": {str(k): _jf(v) for k, v in self.gate_errors.items()},
            "note": self.note,
        }


def _jf(value):
    value = float(value)
    return value if np.isfinite(value) else ("nan" if np.isnan(value) else ("inf" if value > 0 else "-inf"))


class Report:
    """What :func:`check_backend` found: one :class:`OperatorCheck` per operator the backend offers.

    ``report.passed`` is True when every checked operator passed;
    ``report[name]`` is one operator's check; ``str(report)`` has one line per
    operator, its name first; :meth:`to_json` gives a plain dict;
    :meth:`raise_if_failed` raises ``AssertionError`` with the failing lines
    and what to look at next.

    Attributes
    ----------
    checks : OrderedDict name → OperatorCheck
    skipped : list of str
        Operators the backend does not offer.
    cell : str
        ``repr`` of the cell.
    shape : (B, T, S)
    num_params : int
    n_vectors : int
    """

    def __init__(self, checks, skipped, cell, shape, num_params, n_vectors):
        self.checks = checks
        self.skipped = skipped
        self.cell = cell
        self.shape = shape
        self.num_params = num_params
        self.n_vectors = n_vectors

    @property
    def passed(self):
        return all(c.passed for c in self.checks.values())

    @property
    def failed(self):
        """Names of the operators that failed."""
        return [n for n, c in self.checks.items() if not c.passed]

    def __getitem__(self, name):
        return self.checks[name]

    def __contains__(self, name):
        return name in self.checks

    def __str__(self):
        return "\n".join(c.line() for c in self.checks.values())

    def __repr__(self):
        verdict = "passed" if self.passed else f"FAILED {self.failed}"
        return f"<kpref backend Report for {self.cell}, shape {self.shape}: {verdict}>"

    def to_json(self):
        """Plain JSON-serializable dict of everything in the report."""
        out = {
            "passed": bool(self.passed), "cell": self.cell, "shape": [int(s) for s in self.shape],
            "num_params": int(self.num_params), "n_vectors": int(self.n_vectors),
            "skipped": list(self.skipped),
            "operators": OrderedDict((n, c.to_json()) for n, c in self.checks.items()),
        }
        json.dumps(out, allow_nan=False)  # guard: the dict is plain JSON
        return out

    def raise_if_failed(self):
        """Raise ``AssertionError`` naming every failed operator, with what to check; else return ``self``."""
        if self.passed:
            return self
        B, T, S = self.shape
        lines = [f"backend differs from kpref for {self.cell} at B={B}, T={T}, S={S} "
                 f"({self.n_vectors} random inputs per operator); failed: "
                 f"{', '.join(self.failed)}"]
        lines += ["  " + c.line() for c in self.checks.values() if not c.passed]
        lines.append("what to check:")
        lines += [f"  {n}: {_HINTS[n]}" for n in self.failed]
        raise AssertionError("\n".join(lines))


# --------------------------------------------------------------------- helpers
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
    """"trial b, step t, unit s" (and ``of h``/``of c`` for an LSTM's ``[h, c]`` state)."""
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
    name, idx = cell.param_block_of(int(index))
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


def _declared_dtype(backend):
    d = backend.get("dtype") if isinstance(backend, dict) else getattr(backend, "dtype", None)
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


def _operators_of(backend):
    """name → callable for the operators the backend offers (checked)."""
    if hasattr(backend, "keys") and hasattr(backend, "__getitem__"):
        keys = list(backend.keys())
        unknown = sorted(str(k) for k in keys if k not in OPERATORS and k != "dtype")
        if unknown:
            raise ValueError(f"backend: expected keys among {list(OPERATORS)} (and 'dtype'), got unknown {unknown}")
        ops = OrderedDict((n, backend[n]) for n in OPERATORS if n in keys and backend[n] is not None)
        backend = dict(backend)
    else:
        ops = OrderedDict((n, getattr(backend, n)) for n in OPERATORS if getattr(backend, n, None) is not None)
    for n, f in ops.items():
        if not callable(f):
            raise TypeError(f"backend {n}: expected a callable, got {type(f).__name__}")
    if not ops:
        raise ValueError(f"backend: expected at least one of {list(OPERATORS)}, got none")
    return ops, _declared_dtype(backend)


def _answer_array(name, value, shape):
    """The backend's answer as a float ndarray of exactly ``shape`` (its dtype kept)."""
    arr = np.asarray(_torch_free_array(f"backend {name} output", value))
    if arr.dtype.kind != "f":
        raise TypeError(f"backend {name}: expected a real floating array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"backend {name}: expected an answer of shape {tuple(shape)}, got shape {arr.shape}")
    return arr


_rel = norm_ratio   # ‖err‖ / ‖ref‖, shared with verify


def _perturbed(a, rng):
    """``a ⊙ (1 + δ ξ)``, ``ξ ~ U[-1, 1]``: a rounding-like relative perturbation of size ``δ``."""
    return a * (1.0 + _PERTURBATION * rng.uniform(-1.0, 1.0, a.shape))


def _reference_operators(lin):
    B, T, S = lin.shape

    def traj(Y):
        return Y.reshape(B, T, S)

    return {
        "simulate": lambda: lin.z.copy(),
        "P": lambda q: traj(lin.P.matvec(q.ravel())),
        "P_adjoint": lambda w: traj(lin.P.H.matvec(w.ravel())),
        "J": lambda d: traj(lin.J_theta.matvec(d)),
        "J_adjoint": lambda w: lin.J_theta.H.matvec(w.ravel()),
        "K": lambda w: traj(lin.K.matvec(w.ravel())),
        "grad": lambda e: lin.grad(e),
    }


def reference_backend(cell, theta, x, h0=None):
    """kpref's own operators in the backend format of :func:`check_backend` (a dict of callables).

    A template for writing a backend, and the reference a backend's tests can
    also be run against (``check_backend(reference_backend(...), ...)`` passes
    with errors of exactly 0).
    """
    return _reference_operators(linearize(cell, theta, x, h0))


# ------------------------------------------------------------------- checking
def check_backend(backend, cell, theta, x, h0=None, *, rtol=None, n_vectors=3, rng=0):
    """Compare a backend's trajectory, operators and gradient with kpref's.

    Parameters
    ----------
    backend : mapping or object
        Any subset of the callables ``simulate``, ``P``, ``P_adjoint``, ``J``,
        ``J_adjoint``, ``K``, ``grad`` (see the module notes for their
        contract), built by the caller for this ``(cell, theta, x, h0)``;
        optionally ``dtype``, the precision it computes in.
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

    Returns
    -------
    Report

    Raises
    ------
    ValueError, TypeError
        For a malformed problem or backend (unknown operator names, an answer
        of the wrong shape or a non-float dtype). A wrong *number* is never an
        exception here: it is a FAIL in the report (``report.raise_if_failed()``
        turns it into an ``AssertionError``).

    Notes
    -----
    The error measure, the budget ``C·ε·(T + N + S)·max(1, κ_op)`` (``κ_op``
    measured with kpref on perturbed data) and the decoding of locations are
    described in :mod:`kpref.testing._backend`.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    ops, declared = _operators_of(backend)
    if rtol is not None:
        rtol = check_positive_float("rtol", rtol)
    n_vectors = check_positive_int("n_vectors", n_vectors)
    rng = as_generator(rng)
    lin = linearize(cell, theta, x, h0)
    B, T, S = lin.shape
    p = lin.num_params
    reference = _reference_operators(lin)
    # the same problem at rounding-like perturbed data (θ̃, x̃, h̃0): measures each answer's condition
    perturbed = _reference_operators(linearize(cell, _perturbed(lin.theta, rng), _perturbed(lin.x, rng),
                                               _perturbed(lin.h0, rng)))
    shapes = {"traj": (B, T, S), "param": (p,)}
    checks = OrderedDict()
    for name, fn in ops.items():
        in_space, out_space, sweep = _SPEC[name]
        worst, condition = None, 0.0
        step_err = np.zeros(T) if out_space == "traj" else None
        block_err = OrderedDict((n, 0.0) for n in cell.param_shapes) if out_space == "param" else None
        gate_rows = _gate_rows(cell) if out_space == "param" else {}
        gate_err = OrderedDict((n, 0.0) for n in gate_rows)
        dtype = declared
        for _ in range(1 if in_space is None else n_vectors):
            if in_space is None:
                ref, ref_perturbed, got = reference[name](), perturbed[name](), fn()
            else:
                u = rng.standard_normal(shapes[in_space])
                ref, ref_perturbed = reference[name](u), perturbed[name](_perturbed(u, rng))
                got = fn(u.copy())
            condition = max(condition, _rel(ref_perturbed - ref, ref) / _PERTURBATION)
            got = _answer_array(name, got, shapes[out_space])
            if declared is None:
                dtype = got.dtype if dtype is None or np.finfo(got.dtype).eps > np.finfo(dtype).eps else dtype
            got64 = got.astype(np.float64)
            diff = got64 - ref
            finite = np.isfinite(got64)
            if not finite.all():
                diff = np.where(finite, diff, np.inf)
            err = _rel(diff, ref)
            if worst is None or err > worst[0] or (np.isnan(err) and not np.isnan(worst[0])):
                worst = (err, diff, ref, got64)
            if out_space == "traj":
                for t in range(T):
                    den = np.linalg.norm(ref[:, t])
                    e_t = _rel(diff[:, t], ref[:, t]) if den > 0 else _rel(diff[:, t], ref)
                    step_err[t] = max(step_err[t], e_t)
            else:
                for bname, sl in cell.param_slices().items():
                    den = np.linalg.norm(ref[sl])
                    e_b = _rel(diff[sl], ref[sl]) if den > 0 else _rel(diff[sl], ref)
                    block_err[bname] = max(block_err[bname], e_b)
                for gname, idx in gate_rows.items():
                    gate_err[gname] = max(gate_err[gname], _rel(diff[idx], ref[idx]))
        err, diff, ref, got64 = worst
        eps = float(np.finfo(dtype).eps)
        budget = rtol if rtol is not None else (
            _BUDGET_CONSTANT * eps * (T + cell.input_size + cell.state_size) * max(1.0, condition))
        passed = bool(err <= budget)
        absdiff = np.abs(np.nan_to_num(diff, nan=np.inf))
        flat = int(np.argmax(absdiff))
        index = np.unravel_index(flat, diff.shape)
        if out_space == "traj":
            where = describe_state_index(cell, *index)
        else:
            where = describe_param_index(cell, index[0])
        first_bad = None
        if out_space == "traj":
            order = range(T - 1, -1, -1) if sweep == "backward" else range(T)
            first_bad = next((t for t in order if not step_err[t] <= budget), None)
        notes = []
        if not np.isfinite(got64).all():
            notes.append(f"{int((~np.isfinite(got64)).sum())} non-finite entries in the backend's answer")
        if rtol is None and budget >= _LOOSE_BUDGET:
            notes.append(f"budget >= {_LOOSE_BUDGET}: the problem is too ill-conditioned (condition {condition:.3g}) "
                         f"for {np.dtype(dtype).name} to be checked; use float64 or a shorter T")
        checks[name] = OperatorCheck(
            name=name, passed=passed, rel_error=float(err), budget=float(budget), dtype=np.dtype(dtype).name,
            condition=float(condition), worst_entry=where, worst_index=tuple(int(i) for i in index),
            backend_value=float(got64[index]), kpref_value=float(ref[index]), first_bad_step=first_bad,
            step_errors=[float(e) for e in step_err] if step_err is not None else [],
            block_errors=dict(block_err) if block_err is not None else {}, gate_errors=dict(gate_err),
            sweep=sweep, note="; ".join(notes),
        )
    skipped = [n for n in OPERATORS if n not in ops]
    return Report(checks, skipped, repr(cell), (B, T, S), p, n_vectors)

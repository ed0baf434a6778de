r"""Comparing one operator of another implementation with kpref's: the engine under every check.

:func:`compare_operator` calls a backend's callable on random inputs, converts
each answer (NumPy, torch, JAX, nested lists), compares it with kpref's
float64 answer and returns an :class:`OperatorCheck`: the norm-wise relative
error, its budget, the worst entry decoded into names, every time step over
budget and named hints for the classic mistakes. :func:`kpref.testing.check_backend`
runs it once per operator slot, :func:`kpref.testing.check_operator` once for any
operator; both gather the checks in a :class:`Report`.

The error measure, the budget ``C·ε·L·max(1, κ)`` (``L`` the longest rounding
chain, ``κ`` the answer's condition measured by kpref on perturbed data) and
the decoding of locations are described in :mod:`kpref.testing._backend`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..interop._names import describe_value, to_numpy
from ._metrics import norm_ratio

__all__ = ["OperatorCheck", "Report", "Space", "compare_operator", "steps_text", "BUDGET_CONSTANT", "PERTURBATION"]

BUDGET_CONSTANT = 4.0
PERTURBATION = 2.0**-20
LOOSE_BUDGET = 0.1


# ------------------------------------------------------------------- spaces
class Space:
    """The shape of an operator's input or output and how to name an entry of it.

    Parameters
    ----------
    shape : tuple of int
    describe : callable index tuple → str
    time_axis : int or None
        The axis of time steps (per-step errors and localization), if any.
    groups : dict name → flat indices, optional
        Named groups of entries whose error is reported separately
        (parameter blocks).
    subgroups : dict name → flat indices, optional
        Finer groups (the gate rows of stacked blocks).
    """

    def __init__(self, shape, describe, time_axis=None, groups=None, subgroups=None):
        self.shape = tuple(int(n) for n in shape)
        self.describe = describe
        self.time_axis = time_axis
        self.groups = groups or {}
        self.subgroups = subgroups or {}

    @property
    def size(self):
        return int(np.prod(self.shape))

    @classmethod
    def axes(cls, sizes):
        """A space from an ordered mapping axis name → size; an axis named 'time' or 't' is the time axis."""
        names, shape = list(sizes), tuple(sizes.values())
        time = next((i for i, n in enumerate(names) if str(n).lower() in ("time", "t", "step")), None)
        return cls(shape, lambda index: ", ".join(f"{n} {i}" for n, i in zip(names, index)), time)


# ------------------------------------------------------------------ results
@dataclass
class OperatorCheck:
    """The result of comparing one operator of a backend with kpref (one line of a :class:`Report`).

    Attributes
    ----------
    name : str
        Operator name.
    passed : bool
    rel_error : float
        Worst norm-wise relative error over the inputs.
    budget : float
        The threshold (the conditioning-scaled budget, or the caller's ``rtol``).
    dtype : str
        Precision the budget assumed.
    condition : float
        ``κ_op``, the measured relative condition number of the answer.
    worst_entry : str
        The entry of largest absolute error, decoded into names.
    worst_index : tuple of int
        Its array index in the answer.
    backend_value, kpref_value : float
        The two answers at that entry.
    first_bad_step : int or None
        First time step (in sweep order) whose per-step relative error exceeds
        the budget; ``None`` if none does or the answer has no time axis.
    bad_steps : list of int
        Every time step over budget (ascending).
    step_errors : list of float
        Per-step relative errors (worst over the inputs), for answers with a time axis.
    block_errors : dict
        Parameter block → relative error, for parameter answers.
    gate_errors : dict
        ``'block[gate]'`` → relative error of that gate's rows of a stacked
        block (GRU, LSTM): a dropped gate shows as one gate with error exactly 1.
    hints : list of str
        Named diagnoses of classic mistakes (see :func:`compare_operator`).
    note : str
        Anything a reader must know (non-finite answers, a loose budget,
        parameters set aside, an exception the backend raised).
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
    bad_steps: list = field(default_factory=list)
    hints: list = field(default_factory=list)

    def line(self):
        """One line: the name first, then verdict, error, budget, location, hints."""
        verdict = "PASS" if self.passed else "FAIL"
        cmp = "<=" if self.passed else ">"
        text = (f"{self.name:<17} {verdict}  rel.error {self.rel_error:.2e} {cmp} budget {self.budget:.2e} "
                f"[{self.dtype}, condition {self.condition:.2g}]  worst: {self.worst_entry} (backend {self.backend_value:.6g}, "
                f"kpref {self.kpref_value:.6g})")
        if not self.passed and self.first_bad_step is not None:
            order = " (backward in time)" if self.sweep == "backward" else ""
            text += f"; first step over budget{order}: t={self.first_bad_step}"
            text += f"; over budget: {steps_text(self.bad_steps, len(self.step_errors))}"
        if not self.passed and self.block_errors:
            text += "; by block: " + ", ".join(f"{k} {v:.1e}" for k, v in self.block_errors.items())
        if not self.passed and self.gate_errors:
            worst = sorted(self.gate_errors.items(), key=lambda kv: -np.nan_to_num(kv[1], nan=np.inf))[:4]
            text += "; worst gates: " + ", ".join(f"{k} {v:.1e}" for k, v in worst)
        for hint in self.hints:
            text += f"; hint: {hint}"
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
            "bad_steps": [int(t) for t in self.bad_steps],
            "sweep": self.sweep,
            "step_errors": [_jf(e) for e in self.step_errors],
            "block_errors": {str(k): _jf(v) for k, v in self.block_errors.items()},
            "gate_errors": {str(k): _jf(v) for k, v in self.gate_errors.items()},
            "hints": list(self.hints),
            "note": self.note,
        }


def _jf(value):
    value = float(value)
    return value if np.isfinite(value) else ("nan" if np.isnan(value) else ("inf" if value > 0 else "-inf"))


def steps_text(steps, T):
    """``[0]`` of 20 → ``'t = 0 only (1 of 20)'``; runs are written ``a..b``."""
    steps = sorted(int(t) for t in steps)
    if not steps:
        return f"none (0 of {T})"
    runs, start = [], steps[0]
    for prev, cur in zip(steps, steps[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}..{prev}")
            start = cur
    only = " only" if len(steps) == 1 else ""
    return f"t = {', '.join(runs)}{only} ({len(steps)} of {T})"


class Report:
    """What :func:`check_backend` or :func:`check_operator` found: one :class:`OperatorCheck` per operator.

    ``report.passed`` is True when every checked operator passed;
    ``report[name]`` is one operator's check; ``str(report)`` has one line per
    operator, its name first, then the operators not provided; :meth:`to_json`
    gives a plain dict; :meth:`raise_if_failed` raises ``AssertionError`` with
    the failing lines and what to look at next.

    Attributes
    ----------
    checks : OrderedDict name → OperatorCheck
    skipped : list of str
        Operators the backend does not offer.
    cell : str
        ``repr`` of the cell (or of the reference operator).
    shape : tuple
        ``(B, T, S)`` (or the operator's shape).
    num_params : int
    n_vectors : int
    not_provided : dict name → str
        Operators the backend does not offer that look misspelled: the
        closest attribute or key it does have.
    set_aside : list of str
        The backend's parameters that are not the cell's (a readout), never
        mixed into a comparison.
    hints : dict name → str
        What to check for each operator, used by :meth:`raise_if_failed`.
    """

    def __init__(self, checks, skipped, cell, shape, num_params, n_vectors, *, not_provided=None,
                 set_aside=None, hints=None):
        self.checks = checks
        self.skipped = skipped
        self.cell = cell
        self.shape = shape
        self.num_params = num_params
        self.n_vectors = n_vectors
        self.not_provided = dict(not_provided or {})
        self.set_aside = list(set_aside or [])
        self.hints = dict(hints or {})

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
        lines = [c.line() for c in self.checks.values()]
        for name, near in self.not_provided.items():
            lines.append(f"{name:<17} not provided (closest: {near!r}; misspelled?)")
        if self.set_aside:
            lines.append(f"set aside (not parameters of {self.cell}): {', '.join(self.set_aside)}")
        return "\n".join(lines)

    def __repr__(self):
        verdict = "passed" if self.passed else f"FAILED {self.failed}"
        return f"<kpref backend Report for {self.cell}, shape {self.shape}: {verdict}>"

    def to_json(self):
        """Plain JSON-serializable dict of everything in the report."""
        out = {
            "passed": bool(self.passed), "cell": self.cell, "shape": [int(s) for s in self.shape],
            "num_params": int(self.num_params), "n_vectors": int(self.n_vectors),
            "skipped": list(self.skipped), "not_provided": dict(self.not_provided),
            "set_aside": list(self.set_aside),
            "operators": OrderedDict((n, c.to_json()) for n, c in self.checks.items()),
        }
        json.dumps(out, allow_nan=False)  # guard: the dict is plain JSON
        return out

    def raise_if_failed(self):
        """Raise ``AssertionError`` naming every failed operator, with what to check; else return ``self``."""
        if self.passed:
            return self
        dims = ", ".join(f"{k}={v}" for k, v in zip("BTS", self.shape)) if len(self.shape) == 3 else f"shape {self.shape}"
        lines = [f"backend differs from kpref for {self.cell} at {dims} "
                 f"({self.n_vectors} random inputs per operator); failed: "
                 f"{', '.join(self.failed)}"]
        lines += ["  " + c.line() for c in self.checks.values() if not c.passed]
        lines.append("what to check:")
        lines += [f"  {n}: {self.hints.get(n, 'compare the operator on one input vector')}" for n in self.failed]
        raise AssertionError("\n".join(lines))


# --------------------------------------------------------------- answers
def as_answer(name, value, space, *, includes_h0=False):
    """A backend's answer as a real floating ndarray of exactly ``space.shape`` (its dtype kept).

    Raises ``TypeError``/``ValueError`` naming the operator and what came back.
    """
    if isinstance(value, tuple) and value and all(hasattr(v, "shape") for v in value):
        raise TypeError(
            f"backend {name}: expected an array of shape {space.shape}, got {describe_value(value)}; "
            "torch.func.jvp and jax.jvp return (output, tangent) and vjp returns (output, pullback): "
            "return the tangent (or the pullback's result), not the tuple")
    if hasattr(value, "keys") and hasattr(value, "__getitem__"):
        raise TypeError(f"backend {name}: expected an array of shape {space.shape}, got {describe_value(value)}")
    if value is None:
        raise TypeError(f"backend {name}: expected an array of shape {space.shape}, got None (a missing return?)")
    try:
        arr = to_numpy(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"backend {name}: expected an array of shape {space.shape}, got {describe_value(value)} "
                        f"that does not convert to a NumPy array ({exc})") from exc
    if arr.dtype.kind != "f":
        raise TypeError(f"backend {name}: expected a real floating array, got dtype {arr.dtype} "
                        f"({describe_value(value)})")
    if arr.shape != space.shape:
        extra = ""
        if (includes_h0 is False and len(space.shape) == 3 and arr.shape[::2] == space.shape[::2]
                and arr.shape[1] == space.shape[1] + 1):
            extra = " (T+1 steps: includes h_0? pass includes_h0=True)"
        raise ValueError(f"backend {name}: expected an answer of shape {space.shape}, got shape {arr.shape} "
                         f"({describe_value(value)}){extra}")
    return arr


def perturbed(a, rng):
    """``a ⊙ (1 + δ ξ)``, ``ξ ~ U[-1, 1]``: a rounding-like relative perturbation of size ``δ``."""
    return a * (1.0 + PERTURBATION * rng.uniform(-1.0, 1.0, np.shape(a)))


def budget_of(dtype, chain, condition):
    """``C · ε(dtype) · chain · max(1, κ)``."""
    return BUDGET_CONSTANT * float(np.finfo(dtype).eps) * chain * max(1.0, condition)


# ------------------------------------------------------------ the engine
@dataclass
class Sample:
    """One input and the answers to it (kept for the hints)."""

    u: object
    ref: np.ndarray
    got: np.ndarray
    diff: np.ndarray
    err: float


def _per_axis_errors(space, diff, ref):
    """Per-step relative errors (a norm-scaled floor when a step's reference is 0)."""
    T = space.shape[space.time_axis]
    d = np.moveaxis(diff, space.time_axis, 0).reshape(T, -1)
    r = np.moveaxis(ref, space.time_axis, 0).reshape(T, -1)
    out = np.empty(T)
    for t in range(T):
        out[t] = norm_ratio(d[t], r[t]) if np.linalg.norm(r[t]) > 0 else norm_ratio(d[t], ref)
    return out


def _group_errors(groups, diff, ref, floor_to_whole=True):
    out = OrderedDict()
    flat_d, flat_r = diff.reshape(-1), ref.reshape(-1)
    for gname, idx in groups.items():
        den = np.linalg.norm(flat_r[idx])
        out[gname] = norm_ratio(flat_d[idx], flat_r[idx]) if den > 0 or not floor_to_whole else norm_ratio(flat_d[idx], flat_r)
    return out


def compare_operator(name, call, draw, reference, space, *, n_vectors, rng, chain, declared=None, rtol=None,
                     perturbed_reference=None, sweep=None, convert=None, alternatives=None, notes=()):
    """Compare one backend operator with kpref's on random inputs: one :class:`OperatorCheck`.

    Parameters
    ----------
    name : str
    call : callable u → raw answer
        The backend's operator (already adapted to take kpref's input ``u``).
    draw : callable rng → u, or None
        Draws one random input (None: the operator takes no input; called once).
    reference : callable u → float64 array of ``space.shape``
    space : Space
        The output space.
    chain : int
        ``L``, the longest rounding chain of a correct implementation per entry.
    declared : numpy dtype or None
        The backend's declared precision (else the coarsest dtype of its answers).
    rtol : float or None
        Replaces the budget.
    perturbed_reference : callable u → array, optional
        kpref's answer at rounding-like perturbed data and input: measures ``κ``.
        Without it ``κ`` is measured from the input's perturbation alone.
    sweep : {'forward', 'backward', None}
        Direction in which the first step over budget is searched.
    convert : callable raw → ndarray, optional
        Converts an answer (default :func:`as_answer` to ``space``).
    alternatives : dict label → (callable u → array, hint), optional
        kpref's answer under a classic mistake (e.g. ``weight_hh`` transposed):
        when a failing answer is far closer to one of them than to kpref's,
        that hint is added.

    Returns
    -------
    OperatorCheck

    Notes
    -----
    Hints that need no alternative: only ``t = 0`` over budget (an initial
    state ignored or hard-wired to 0); a gate of a
    parameter answer whose error is exactly 1 (the backend's answer is 0
    there: a dropped gate); float64 answers wrong by float32-sized errors
    (computed in float32 and not declared).
    """
    convert = convert or (lambda raw: as_answer(name, raw, space))
    samples, condition, dtype, extra_notes = [], 0.0, declared, list(notes)
    for _ in range(1 if draw is None else n_vectors):
        u = None if draw is None else draw(rng)
        ref = reference(u)
        if perturbed_reference is not None:
            ref_p = perturbed_reference(u)
        else:
            ref_p = reference(perturbed(u, rng)) if u is not None else ref
        condition = max(condition, norm_ratio(ref_p - ref, ref) / PERTURBATION)
        try:
            raw = call(u)
        except Exception as exc:  # the backend's own failure is a FAIL in the report, named
            return _raised(name, exc, space, declared, rtol, chain, condition, sweep)
        got = convert(raw)
        if declared is None:
            dtype = got.dtype if dtype is None or np.finfo(got.dtype).eps > np.finfo(dtype).eps else dtype
        got64 = got.astype(np.float64)
        diff = got64 - ref
        finite = np.isfinite(got64)
        if not finite.all():
            diff = np.where(finite, diff, np.inf)
        samples.append(Sample(u, ref, got64, diff, norm_ratio(diff, ref)))
    budget = rtol if rtol is not None else budget_of(dtype, chain, condition)
    worst = max(samples, key=lambda s: (np.isnan(s.err), s.err))
    check = _localize(name, worst, samples, space, budget, sweep)
    check.dtype, check.condition = np.dtype(dtype).name, float(condition)
    check.passed = bool(worst.err <= budget)
    if not np.isfinite(worst.got).all():
        extra_notes.append(f"{int((~np.isfinite(worst.got)).sum())} non-finite entries in the backend's answer")
    if rtol is None and budget >= LOOSE_BUDGET:
        extra_notes.append(f"budget >= {LOOSE_BUDGET}: the problem is too ill-conditioned (condition {condition:.3g}) "
                           f"for {np.dtype(dtype).name} to be checked; use float64 or a shorter T")
    if not check.passed:
        check.hints = _hints(check, worst, space, declared, chain, condition, alternatives or {})
    check.note = "; ".join(extra_notes)
    return check


def _raised(name, exc, space, declared, rtol, chain, condition, sweep):
    dtype = declared if declared is not None else np.dtype(np.float64)
    budget = rtol if rtol is not None else budget_of(dtype, chain, condition)
    return OperatorCheck(
        name=name, passed=False, rel_error=float("nan"), budget=float(budget), dtype=np.dtype(dtype).name,
        condition=float(condition), worst_entry="(no answer)", worst_index=(), backend_value=float("nan"),
        kpref_value=float("nan"), sweep=sweep, note=f"the backend raised {type(exc).__name__}: {exc}")


def _localize(name, worst, samples, space, budget, sweep):
    """The decoded worst entry, per-step and per-group errors (worst over the samples)."""
    absdiff = np.abs(np.nan_to_num(worst.diff, nan=np.inf))
    index = np.unravel_index(int(np.argmax(absdiff)), worst.diff.shape)
    step_err, bad, first = [], [], None
    if space.time_axis is not None:
        step_err = np.max([_per_axis_errors(space, s.diff, s.ref) for s in samples], axis=0)
        bad = [t for t in range(len(step_err)) if not step_err[t] <= budget]
        order = range(len(step_err) - 1, -1, -1) if sweep == "backward" else range(len(step_err))
        first = next((t for t in order if not step_err[t] <= budget), None)
    groups = OrderedDict()
    for key, table in (("groups", space.groups), ("subgroups", space.subgroups)):
        errs = [_group_errors(table, s.diff, s.ref, floor_to_whole=(key == "groups")) for s in samples]
        groups[key] = OrderedDict((g, max(e[g] for e in errs)) for g in table)
    return OperatorCheck(
        name=name, passed=False, rel_error=float(worst.err), budget=float(budget), dtype="", condition=0.0,
        worst_entry=space.describe(index), worst_index=tuple(int(i) for i in index),
        backend_value=float(worst.got[index]), kpref_value=float(worst.ref[index]), first_bad_step=first,
        step_errors=[float(e) for e in step_err], block_errors=dict(groups["groups"]),
        gate_errors=dict(groups["subgroups"]), sweep=sweep, bad_steps=list(bad))


def _hints(check, worst, space, declared, chain, condition, alternatives):
    hints = []
    T = len(check.step_errors)
    if T > 1 and check.bad_steps == [0]:
        hints.append("only t = 0 is wrong: the initial state h0 (ignored, or hard-wired to zero?)")
    dropped = [g for g, e in check.gate_errors.items() if e == 1.0 and np.all(_rows_zero(worst.got, space, g))]
    if dropped:
        gates = sorted({g[g.index("[") + 1:-1] for g in dropped})
        hints.append(f"the backend's answer is exactly 0 on the rows of gate(s) {', '.join(gates)} "
                     f"({', '.join(dropped)}): a missing gate (never used in its step)")
    if declared is None and check.dtype == "float64" and np.isfinite(check.rel_error):
        budget32 = budget_of(np.float32, chain, condition)
        if check.rel_error <= budget32:
            hints.append(f"errors are float32-sized ({check.rel_error:.1e} <= float32 budget {budget32:.1e}): "
                         "computed in float32 and returned as float64? declare dtype='float32'")
    for label, (alt, hint) in alternatives.items():
        try:
            alt_ref = alt(worst.u)
        except Exception:  # an alternative that does not apply to this operator is no diagnosis
            continue
        if norm_ratio(worst.got - alt_ref, alt_ref) <= max(check.budget, 1e-3 * check.rel_error):
            hints.append(hint)
    return hints


def _rows_zero(got, space, group):
    return got.reshape(-1)[space.subgroups[group]] == 0.0

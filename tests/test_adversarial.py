"""A reusable table of bad values tried against every public callable with a shape contract (issue 14).

``TABLE`` maps a public callable (``"kpref.linearize"``, ``"Linearization.grad"``,
``"GRU.state_jvp"`` …) to an :class:`Entry`: a function building a *good* call
(keyword arguments) and, for each argument, its kind. ``BAD[kind]`` is the list
of bad values of that kind (NaN, inf, int, complex, object, wrong rank and size,
negative, zero, huge, wrong type …), each a function of the good value. Every
(callable, argument, bad value) triple must raise ``ValueError`` or
``TypeError`` whose message names the argument (or ``MemoryError`` naming it,
for a huge size) — never a silent result, never a raw third-party message.

The good call itself must succeed (the table is not vacuous), and
:func:`test_every_public_callable_is_in_the_table` fails when a public callable
of ``kpref``, ``kpref.analysis``, ``kpref.koopman`` or ``kpref.tasks`` (or a
public method of a cell or a ``Linearization``) is neither in ``TABLE`` nor in
``EXEMPT`` with a reason: a new public function must be added here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy.sparse.linalg import aslinearoperator

import kpref
from kpref import analysis, koopman, tasks

# ------------------------------------------------------------------ bad values


def _with(g, value):
    a = np.array(g, dtype=np.float64, copy=True)
    a.flat[a.size // 2] = value
    return a


def _grow_last(g):
    g = np.asarray(g)
    return np.concatenate([g, np.zeros(g.shape[:-1] + (1,))], axis=-1)


def _grow_first(g):
    g = np.asarray(g)
    return np.concatenate([g, g[:1]], axis=0)


ARRAY = [
    ("nan", lambda g: _with(g, np.nan)),
    ("inf", lambda g: _with(g, np.inf)),
    ("-inf", lambda g: _with(g, -np.inf)),
    ("int", lambda g: np.asarray(g).astype(np.int64)),
    ("bool", lambda g: np.asarray(g) > 0),
    ("complex", lambda g: np.asarray(g) + 0.5j),
    ("object", lambda g: np.asarray(g).astype(object)),
    ("str", lambda g: "abc"),
    ("str-array", lambda g: np.full(np.shape(g), "a")),
    ("none", lambda g: None),
    ("rank+1", lambda g: np.asarray(g)[None]),
    ("rank-1", lambda g: np.asarray(g).ravel()[:-1] if np.ndim(g) == 1 else np.asarray(g)[0]),
    ("size-last", _grow_last),
    ("size-first", _grow_first),
    ("empty", lambda g: np.zeros((0,) + np.shape(g)[1:])),
    ("scalar", lambda g: 1.0),
    ("dict", lambda g: {"a": 1.0}),
]
POSINT = [
    ("negative", lambda g: -1),
    ("zero", lambda g: 0),
    ("float", lambda g: 2.5),
    ("integral-float", lambda g: float(g)),
    ("bool", lambda g: True),
    ("str", lambda g: "3"),
    ("nan", lambda g: math.nan),
    ("none", lambda g: None),
    ("complex", lambda g: 2 + 0j),
    ("huge", lambda g: 10**15),
    ("overflow", lambda g: 2**70),
    ("array", lambda g: np.array([g, g])),
]
NONNEGINT = [v for v in POSINT if v[0] != "zero"]
POSFLOAT = [
    ("nan", lambda g: math.nan),
    ("inf", lambda g: math.inf),
    ("negative", lambda g: -abs(g)),
    ("zero", lambda g: 0.0),
    ("str", lambda g: "1.0"),
    ("complex", lambda g: 1j),
    ("bool", lambda g: True),
    ("none", lambda g: None),
    ("array", lambda g: np.array([g, g])),
]
MEMORY = [
    ("nan", lambda g: math.nan),
    ("inf", lambda g: math.inf),
    ("negative", lambda g: -1),
    ("zero", lambda g: 0),
    ("str", lambda g: "1e9"),
    ("bool", lambda g: True),
    ("list", lambda g: [1]),
]
RNG = [
    ("negative", lambda g: -1),
    ("float", lambda g: 0.5),
    ("str", lambda g: "0"),
    ("bool", lambda g: True),
    ("legacy", lambda g: np.random.RandomState(0)),
    ("array", lambda g: np.array([1, 2])),
]
CHOICE = [
    ("unknown", lambda g: "bogus"),
    ("int", lambda g: 1),
    ("none", lambda g: None),
    ("case", lambda g: g.upper() if isinstance(g, str) and g.upper() != g else "BOGUS"),
]
BOOL = [("int", lambda g: 1), ("str", lambda g: "yes"), ("none", lambda g: None), ("array", lambda g: np.array([True]))]
CELL = [("str", lambda g: "GRU"), ("class", lambda g: kpref.GRU), ("none", lambda g: None), ("int", lambda g: 3),
        ("other-size", lambda g: kpref.GRU(g.input_size + 1, g.hidden_size))]
OPERATOR = [
    ("nan", lambda g: _with(np.eye(np.shape(g)[0], np.shape(g)[1]), np.nan)),
    ("inf", lambda g: _with(np.eye(np.shape(g)[0], np.shape(g)[1]), np.inf)),
    ("int", lambda g: np.eye(np.shape(g)[0], np.shape(g)[1], dtype=np.int64)),
    ("complex", lambda g: np.eye(np.shape(g)[0], np.shape(g)[1]) * 1j),
    ("complex-linop", lambda g: aslinearoperator(np.eye(np.shape(g)[0], np.shape(g)[1]) * 1j)),
    ("object", lambda g: np.eye(np.shape(g)[0], np.shape(g)[1]).astype(object)),
    ("str", lambda g: "K"),
    ("none", lambda g: None),
    ("rank3", lambda g: np.zeros((2, 2, 2))),
    ("empty", lambda g: np.zeros((0, 0))),
    ("linearization", lambda g: _fx().lin),
]
SQUARE_OPERATOR = OPERATOR + [("non-square", lambda g: np.ones((np.shape(g)[0], np.shape(g)[0] + 1)))]
STEP_POINT = [("other-cell", lambda g: _fx().lstm_point), ("str", lambda g: "pt"), ("none", lambda g: None),
              ("tuple", lambda g: (g.theta, g.h, g.x))]
LIN = [("str", lambda g: "lin"), ("none", lambda g: None), ("operator", lambda g: g.K), ("array", lambda g: np.eye(3))]
CALLABLE = [("none", lambda g: None), ("array", lambda g: np.eye(3)), ("str", lambda g: "matmat")]
SHAPE = [("negative", lambda g: (-1,) + tuple(g[1:])), ("zero", lambda g: (0,) + tuple(g[1:])),
         ("float", lambda g: (2.5,) + tuple(g[1:])), ("wrong-product", lambda g: (g[0] + 1,) + tuple(g[1:])),
         ("str", lambda g: "shape"), ("none", lambda g: None), ("empty", lambda g: ())]
AXIS = [("unknown", lambda g: "space"), ("out-of-range", lambda g: 3), ("negative", lambda g: -1),
        ("float", lambda g: 1.0), ("none", lambda g: None), ("bool", lambda g: True)]
PATH = [("int", lambda g: 3), ("none", lambda g: None), ("missing", lambda g: "/nonexistent/kpref/x.npz"),
        ("array", lambda g: np.zeros(3))]
MAPPING = [("none", lambda g: None), ("list", lambda g: [1.0]), ("array", lambda g: np.zeros(3)),
           ("missing-key", lambda g: dict(list(g.items())[1:])),
           ("extra-key", lambda g: {**g, "bogus": np.zeros(1)})]
RANK = [("negative", lambda g: -1), ("zero", lambda g: 0), ("nan", lambda g: math.nan), ("big-float", lambda g: 1.5),
        ("str", lambda g: "all"), ("bool", lambda g: True), ("complex", lambda g: 1j)]
REAL = [("nan", lambda g: math.nan), ("inf", lambda g: math.inf), ("str", lambda g: "x"), ("none", lambda g: None),
        ("complex", lambda g: 1j)]
SEQ_OF_CHOICES = [("str", lambda g: "K"), ("unknown", lambda g: ("bogus",)), ("none", lambda g: None),
                  ("empty", lambda g: ())]

BAD = {"array": ARRAY, "posint": POSINT, "nonnegint": NONNEGINT, "posfloat": POSFLOAT, "memory": MEMORY,
       "rng": RNG, "choice": CHOICE, "bool": BOOL, "cell": CELL, "operator": OPERATOR,
       "square_operator": SQUARE_OPERATOR, "step_point": STEP_POINT, "lin": LIN, "callable": CALLABLE,
       "shape": SHAPE, "axis": AXIS, "path": PATH, "mapping": MAPPING, "rank": RANK, "real": REAL,
       "choices": SEQ_OF_CHOICES}


# ------------------------------------------------------------------- fixtures
class _Field(kpref.VectorField):
    """A damped linear field for ODECell: f = −z + A z + U x."""

    param_shapes = OrderedDict(A=(4, 4), U=(4, 3))

    def f(self, z, x, p):
        return -z + z @ p["A"].T + x @ p["U"].T

    def jvp_z(self, z, x, p, v):
        return -v + v @ p["A"].T

    def vjp_z(self, z, x, p, w):
        return -w + w @ p["A"]

    def jvp_params(self, z, x, p, d):
        return z @ d["A"].T + x @ d["U"].T

    def vjp_params(self, z, x, p, w):
        return {"A": w.T @ z, "U": w.T @ x}


@functools.lru_cache(maxsize=None)
def _fx():
    """One small problem shared by every entry (built once)."""
    rng = np.random.default_rng(0)

    class F:
        pass

    f = F()
    f.cell = kpref.GRU(3, 4)
    f.theta = f.cell.init_params(rng)
    f.x = rng.standard_normal((2, 5, 3))
    f.h0 = 0.1 * rng.standard_normal((2, 4))
    f.lin = kpref.linearize(f.cell, f.theta, f.x, f.h0)
    f.z = np.array(f.lin.z)
    f.e = rng.standard_normal(f.lin.shape)
    f.target = rng.standard_normal((2, 5, 2))
    f.w_out = rng.standard_normal((2, 4))
    f.b_out = rng.standard_normal(2)
    f.mask = np.ones((2, 5))
    f.pt = f.cell.point(f.theta, rng.standard_normal((3, 4)), rng.standard_normal((3, 3)))
    lstm = kpref.LSTM(3, 2)
    f.lstm_point = lstm.point(lstm.init_params(0), rng.standard_normal((3, 4)), rng.standard_normal((3, 3)))
    f.V = rng.standard_normal((2, 3, 4))
    f.dtheta = rng.standard_normal((2, f.cell.num_params))
    G = rng.standard_normal((40, 6))
    f.psd = G @ G.T
    f.general = rng.standard_normal((40, 30))
    f.readout = kpref.init_readout(f.cell, 2, 0)
    f.trajs = rng.standard_normal((3, 12, 2))
    f.trajs_b = rng.standard_normal((3, 12, 2))
    f.weights = rng.standard_normal((2, 6, 5))
    f.state_dict = f.cell.params_to_torch(f.theta)
    f.params = {k: np.array(v) for k, v in f.cell.unflatten(f.theta).items()}
    return f


@dataclass
class Entry:
    """A good call (``call(**kwargs)``) and the kind of each argument tried with bad values."""

    call: object
    good: object                      # () -> dict of keyword arguments
    kinds: dict
    skip: dict = field(default_factory=dict)   # argument -> {bad-value names that are valid there (reason)}
    names: dict = field(default_factory=dict)  # argument -> the name the message must contain


def _cell_entries(label, factory):
    """The public methods of a cell with a shape contract."""
    def c():
        return factory()

    def pt_of(cell):
        rng = np.random.default_rng(1)
        return cell.point(cell.init_params(0), 0.1 * rng.standard_normal((3, cell.state_size)),
                          rng.standard_normal((3, cell.input_size)))

    def blk(cell, k=2):
        return np.random.default_rng(2).standard_normal((k, 3, cell.state_size))

    cell0 = c()
    entries = {
        f"{label}.step": Entry(lambda theta, h, x: cell0.step(theta, h, x),
                               lambda: dict(theta=cell0.init_params(0), h=blk(cell0, 1)[0],
                                            x=np.ones((3, cell0.input_size))),
                               {"theta": "array", "h": "array", "x": "array"}),
        f"{label}.point": Entry(lambda theta, h, x: cell0.point(theta, h, x),
                                lambda: dict(theta=cell0.init_params(0), h=blk(cell0, 1)[0],
                                             x=np.ones((3, cell0.input_size))),
                                {"theta": "array", "h": "array", "x": "array"}),
        f"{label}.state_jvp": Entry(lambda pt, V: cell0.state_jvp(pt, V), lambda: dict(pt=pt_of(cell0), V=blk(cell0)),
                                    {"pt": "step_point", "V": "array"}, skip={"V": K_FREE}),
        f"{label}.state_vjp": Entry(lambda pt, W: cell0.state_vjp(pt, W), lambda: dict(pt=pt_of(cell0), W=blk(cell0)),
                                    {"pt": "step_point", "W": "array"}, skip={"W": K_FREE}),
        f"{label}.param_jvp": Entry(lambda pt, dtheta: cell0.param_jvp(pt, dtheta),
                                    lambda: dict(pt=pt_of(cell0), dtheta=np.ones((2, cell0.num_params))),
                                    {"pt": "step_point", "dtheta": "array"}, skip={"dtheta": K_FREE}),
        f"{label}.param_vjp": Entry(lambda pt, W: cell0.param_vjp(pt, W), lambda: dict(pt=pt_of(cell0), W=blk(cell0)),
                                    {"pt": "step_point", "W": "array"}, skip={"W": K_FREE}),
        f"{label}.state_jacobian": Entry(lambda pt: cell0.state_jacobian(pt), lambda: dict(pt=pt_of(cell0)),
                                         {"pt": "step_point"}),
        f"{label}.param_jacobian": Entry(lambda pt: cell0.param_jacobian(pt), lambda: dict(pt=pt_of(cell0)),
                                         {"pt": "step_point"}),
        f"{label}.init_params": Entry(lambda rng, g: cell0.init_params(rng, g), lambda: dict(rng=0, g=1.5),
                                      {"rng": "rng", "g": "posfloat"}, skip={"g": {"none"}}),
        f"{label}.check_theta": Entry(lambda theta: cell0.check_theta(theta), lambda: dict(theta=cell0.init_params(0)),
                                      {"theta": "array"}),
        f"{label}.unflatten": Entry(lambda theta: cell0.unflatten(theta), lambda: dict(theta=cell0.init_params(0)),
                                    {"theta": "array"}),
        f"{label}.flatten": Entry(lambda params: cell0.flatten(params),
                                  lambda: dict(params=dict(cell0.unflatten(cell0.init_params(0)))),
                                  {"params": "mapping"}),
        f"{label}.param_block_of": Entry(lambda index: cell0.param_block_of(index), lambda: dict(index=1),
                                         {"index": "nonnegint"}),
        f"{label}.params_to_torch": Entry(lambda theta, suffix: cell0.params_to_torch(theta, suffix),
                                          lambda: dict(theta=cell0.init_params(0), suffix=""),
                                          {"theta": "array", "suffix": "choice"}, skip={"suffix": {"case"}}),
        f"{label}.params_from_torch": Entry(lambda state_dict: cell0.params_from_torch(state_dict),
                                            lambda: dict(state_dict=cell0.params_to_torch(cell0.init_params(0))),
                                            {"state_dict": "mapping"}),
    }
    return entries


K_FREE = {"size-first"}                        # the number k of vectors in a block is free
TRAJ_FREE = {"size-first", "size-last"}        # any number of trajectories, any dimension D
CELL_NAMES = ("cell", "theta", "x")            # another cell: θ or x no longer fit it, and the message says so
#: a delay or stride longer than the trajectories: the message states the steps needed
DELAY_NAMES = {"n_delays": ("n_delays", "time steps"), "stride": ("stride", "time steps")}


def _fn(f):
    """Call ``f`` with keyword arguments, the table's form."""
    return lambda **kw: f(**kw)


def _table():
    f = _fx
    T = {
        # ---------------------------------------------------------- kpref
        "kpref.simulate": Entry(_fn(kpref.simulate), lambda: dict(cell=f().cell, theta=f().theta, x=f().x, h0=f().h0),
                                {"cell": "cell", "theta": "array", "x": "array", "h0": "array"},
                                skip={"h0": {"none"}}, names={"cell": CELL_NAMES}),
        "kpref.linearize": Entry(_fn(kpref.linearize),
                                 lambda: dict(cell=f().cell, theta=f().theta, x=f().x, h0=f().h0, strategy="auto",
                                              adjoint="discrete", memory_limit=None),
                                 {"cell": "cell", "theta": "array", "x": "array", "h0": "array", "strategy": "choice",
                                  "adjoint": "choice", "memory_limit": "memory"}, skip={"h0": {"none"}},
                                 names={"cell": CELL_NAMES}),
        "kpref.Linearization": Entry(_fn(kpref.Linearization),
                                     lambda: dict(cell=f().cell, theta=f().theta, x=f().x, h0=f().h0, z=f().z,
                                                  strategy="auto", adjoint="discrete", memory_limit=None),
                                     {"cell": "cell", "theta": "array", "x": "array", "h0": "array", "z": "array",
                                      "strategy": "choice", "adjoint": "choice", "memory_limit": "memory"},
                                     # another h0, θ or x makes z not the trajectory: refused naming z
                                     names={"h0": ("h0", "z"), "theta": ("theta", "z"), "x": ("x", "z"),
                                            "cell": CELL_NAMES},
                                     skip={"h0": {"none"}}),
        "kpref.mse_loss": Entry(_fn(kpref.mse_loss),
                                lambda: dict(z=f().z, target=f().target, w_out=f().w_out, b_out=f().b_out,
                                             mask=f().mask, reduction="mean", cell=f().cell),
                                {"z": "array", "target": "array", "w_out": "array", "b_out": "array", "mask": "array",
                                 "reduction": "choice", "cell": "cell"},
                                # mse_loss reads only the cell's sizes: another cell of the same sizes is valid
                                skip={"b_out": {"none"}, "mask": {"none", "bool"}, "cell": {"none", "other-size"}},
                                names={"z": ("z", "target"), "w_out": ("w_out", "target")}),
        "kpref.todense": Entry(_fn(kpref.todense), lambda: dict(op=f().lin.K, memory_limit=None, block=16),
                               {"op": "operator", "memory_limit": "memory", "block": "posint"},
                               skip={"block": {"huge", "overflow"}}),      # a block larger than n is n
        "kpref.init_readout": Entry(_fn(kpref.init_readout), lambda: dict(cell=f().cell, output_size=2, rng=0),
                                    {"cell": "cell", "output_size": "posint", "rng": "rng"},
                                    skip={"cell": {"other-size"}}),
        "kpref.loss_and_gradient": Entry(_fn(kpref.loss_and_gradient),
                                         lambda: dict(cell=f().cell, theta=f().theta, readout=f().readout, x=f().x,
                                                      target=f().target, mask=f().mask, h0=f().h0, reduction="mean"),
                                         {"cell": "cell", "theta": "array", "x": "array", "target": "array",
                                          "mask": "array", "h0": "array", "reduction": "choice"},
                                         skip={"mask": {"none", "bool"}, "h0": {"none"}},
                                         names={"cell": CELL_NAMES, "target": ("target", "readout")}),
        "kpref.train": Entry(_fn(kpref.train),
                             lambda: dict(cell=f().cell, x=f().x, target=f().target, mask=f().mask, h0=f().h0,
                                          theta=f().theta, rng=0, steps=1, learning_rate=1e-3, optimizer="adam"),
                             {"cell": "cell", "x": "array", "target": "array", "mask": "array", "h0": "array",
                              "theta": "array", "rng": "rng", "steps": "nonnegint", "learning_rate": "posfloat",
                              "optimizer": "choice"},
                             # the readout is drawn for target's O: any O is valid; steps=0 is a documented
                             # evaluation-only run (the loss of the initial parameters, one checkpoint at step 0)
                             skip={"mask": {"none", "bool"}, "h0": {"none"}, "theta": {"none"}, "target": {"size-last"}},
                             names={"cell": CELL_NAMES}),
        "kpref.load_checkpoint": Entry(_fn(kpref.load_checkpoint), None, {"path": "path"}),
        "Linearization.grad": Entry(lambda e: f().lin.grad(e), lambda: dict(e=f().e), {"e": "array"}),
        "Linearization.apply_A": Entry(lambda t, V: f().lin.apply_A(t, V),
                                       lambda: dict(t=1, V=np.ones((2, 2, 4))), {"t": "nonnegint", "V": "array"},
                                       skip={"V": K_FREE}),
        "Linearization.apply_At": Entry(lambda t, W: f().lin.apply_At(t, W),
                                        lambda: dict(t=1, W=np.ones((2, 2, 4))), {"t": "nonnegint", "W": "array"},
                                        skip={"W": K_FREE}),
        "Linearization.state_jacobians": Entry(lambda memory_limit: f().lin.state_jacobians(memory_limit),
                                               lambda: dict(memory_limit=None), {"memory_limit": "memory"}),
        "Linearization.kronecker_factors": Entry(lambda memory_limit: f().lin.kronecker_factors(memory_limit),
                                                 lambda: dict(memory_limit=None), {"memory_limit": "memory"}),
        "Linearization.propagate_forward_in_time": Entry(lambda Q: f().lin.propagate_forward_in_time(Q),
                                                         lambda: dict(Q=np.ones((2, 5, 2, 4))), {"Q": "array"},
                                                         skip={"Q": K_FREE}),
        "Linearization.propagate_backward_in_time": Entry(lambda W: f().lin.propagate_backward_in_time(W),
                                                          lambda: dict(W=np.ones((2, 5, 2, 4))), {"W": "array"},
                                                          skip={"W": K_FREE}),
        # ------------------------------------------------- operator products
        **{f"Linearization.{op}.{m}": Entry(
            (lambda op, m: lambda x: getattr(getattr(f().lin, op), m)(x))(op, m),
            (lambda op, m: lambda: dict(x=np.ones(getattr(f().lin, op).shape[0 if m.startswith("r") else 1])))(op, m),
            {"x": "array"}, names={"x": (f"{op}", "P*", "J_theta*", "P_inv*")},
            skip={"x": {"none"}} if False else {})
           for op in ("P", "P_inv", "J_theta", "K", "NTK") for m in ("matvec", "rmatvec")},
        # ---------------------------------------------------------- analysis
        "analysis.spectrum": Entry(_fn(analysis.spectrum),
                                   lambda: dict(op=f().psd, k=3, which="LA", method="dense", tol=1e-10, rng=0,
                                                memory_limit=None),
                                   {"op": "square_operator", "k": "posint", "which": "choice", "method": "choice",
                                    "tol": "posfloat", "rng": "rng", "memory_limit": "memory"},
                                   skip={"k": {"none"}, "op": {"linearization"}}),
        "analysis.spectrum(lanczos)": Entry(_fn(analysis.spectrum),
                                            lambda: dict(op=f().psd, k=2, method="lanczos", block_size=4,
                                                         max_basis=16, rng=0),
                                            {"op": "square_operator", "k": "posint", "block_size": "posint",
                                             "max_basis": "posint", "rng": "rng"},
                                            skip={"block_size": {"none"}, "max_basis": {"none"}}),
        "analysis.singular_values": Entry(_fn(analysis.singular_values),
                                          lambda: dict(op=f().general, k=3, method="dense", tol=1e-10, rng=0,
                                                       memory_limit=None),
                                          {"op": "operator", "k": "posint", "method": "choice", "tol": "posfloat",
                                           "rng": "rng", "memory_limit": "memory"}, skip={"k": {"none"}}),
        "analysis.participation_ratio": Entry(_fn(analysis.participation_ratio),
                                              lambda: dict(op=f().psd, method="hutchinson", n_probes=6, rng=0,
                                                           memory_limit=None),
                                              {"op": "square_operator", "method": "choice", "n_probes": "posint",
                                               "rng": "rng", "memory_limit": "memory"},
                                              skip={"n_probes": {"none"}}),
        "analysis.effective_rank": Entry(_fn(analysis.effective_rank),
                                         lambda: dict(op=f().general, method="hutch++", n_probes=6, rng=0,
                                                      memory_limit=None),
                                         {"op": "operator", "method": "choice", "n_probes": "posint", "rng": "rng",
                                          "memory_limit": "memory"}, skip={"n_probes": {"none"}}),
        "analysis.variance_rank": Entry(_fn(analysis.variance_rank), lambda: dict(op=f().general, q=0.9),
                                        {"op": "operator", "q": "posfloat"}),
        "analysis.trace": Entry(_fn(analysis.trace),
                                lambda: dict(op=f().psd, method="xtrace", n_probes=6, rng=0, memory_limit=None),
                                {"op": "square_operator", "method": "choice", "n_probes": "posint", "rng": "rng",
                                 "memory_limit": "memory"}, skip={"n_probes": {"none"}}),
        "analysis.frobenius_norm": Entry(_fn(analysis.frobenius_norm),
                                         lambda: dict(op=f().general, method="exact", memory_limit=None),
                                         {"op": "operator", "method": "choice", "memory_limit": "memory"}),
        "analysis.alignment": Entry(_fn(analysis.alignment),
                                    lambda: dict(A=f().general, B=f().general * 2.0, method="exact"),
                                    {"A": "operator", "B": "operator", "method": "choice"}),
        "analysis.partial_trace": Entry(_fn(analysis.partial_trace),
                                        lambda: dict(op=f().lin.K, shape=f().lin.shape, axis="batch",
                                                     reduction="sum"),
                                        {"op": "square_operator", "shape": "shape", "axis": "axis",
                                         "reduction": "choice"}, names={"op": ("op", "shape")}),
        "analysis.marginal_sum": Entry(_fn(analysis.marginal_sum),
                                       lambda: dict(op=f().lin.K, shape=f().lin.shape, axis="time", reduction="mean"),
                                       {"op": "square_operator", "shape": "shape", "axis": "axis",
                                        "reduction": "choice"}, names={"op": ("op", "shape")}),
        "analysis.effective_dimension": Entry(_fn(analysis.effective_dimension),
                                              lambda: dict(op=f().lin.K, shape=f().lin.shape, axis="hidden",
                                                           method="hutchinson", n_probes=5, rng=0),
                                              {"op": "operator", "shape": "shape", "axis": "axis", "method": "choice",
                                               "n_probes": "posint", "rng": "rng"},
                                              names={"op": ("op", "shape")}, skip={"n_probes": {"none"}}),
        "analysis.effective_dimensions": Entry(_fn(analysis.effective_dimensions),
                                               lambda: dict(lin=f().lin, operators=("K",), axes=("time",),
                                                            method="exact", memory_limit=None),
                                               {"lin": "lin", "operators": "choices", "axes": "choices",
                                                "method": "choice", "memory_limit": "memory"}),
        "analysis.lyapunov_spectrum": Entry(_fn(analysis.lyapunov_spectrum),
                                            lambda: dict(lin=f().lin, k=2, transient=1, rng=None, init="identity"),
                                            {"lin": "lin", "k": "posint", "transient": "nonnegint", "rng": "rng",
                                             "init": "choice"}, skip={"k": {"none"}}),
        "analysis.kaplan_yorke_dimension": Entry(_fn(analysis.kaplan_yorke_dimension),
                                                 lambda: dict(exponents=np.array([0.5, -0.2, -1.0])),
                                                 # any number of exponents; −∞ is one (a singular Jacobian)
                                                 {"exponents": "array"},
                                                 skip={"exponents": {"size-first", "size-last", "rank-1", "-inf"}}),
        "analysis.block_lanczos": Entry(_fn(analysis.block_lanczos),
                                        lambda: dict(matmat=lambda X: f().psd @ X, n=40, k=2, which="LA",
                                                     block_size=4, max_basis=16, tol=1e-10, max_restarts=50, rng=0,
                                                     memory_limit=None),
                                        {"matmat": "callable", "n": "posint", "k": "posint", "which": "choice",
                                         "block_size": "posint", "max_basis": "posint", "tol": "posfloat",
                                         "max_restarts": "nonnegint", "rng": "rng", "memory_limit": "memory"},
                                        # max_restarts is a bound, not an allocation: a huge one is valid
                                        skip={"block_size": {"none"}, "max_basis": {"none"},
                                              "max_restarts": {"huge"}},
                                        names={"n": ("n", "matmat")}),
        # ----------------------------------------------------------- koopman
        "koopman.delay_embed": Entry(_fn(koopman.delay_embed), lambda: dict(trajectories=f().trajs, n_delays=2, stride=1),
                                     {"trajectories": "array", "n_delays": "nonnegint", "stride": "posint"},
                                     skip={"trajectories": TRAJ_FREE}, names=DELAY_NAMES),
        "koopman.snapshot_pairs": Entry(_fn(koopman.snapshot_pairs), lambda: dict(trajectories=f().trajs),
                                        {"trajectories": "array"}, skip={"trajectories": TRAJ_FREE}),
        "koopman.dmd": Entry(_fn(koopman.dmd), lambda: dict(trajectories=f().trajs, rank=2, method="projected",
                                                            center=False, residual_tol=0.1),
                             {"trajectories": "array", "rank": "rank", "method": "choice", "center": "bool",
                              "residual_tol": "posfloat"}, skip={"trajectories": TRAJ_FREE}),
        "koopman.dmd_from_pairs": Entry(_fn(koopman.dmd_from_pairs),
                                        lambda: dict(X=f().trajs[0].T[:, :-1], Y=f().trajs[0].T[:, 1:], rank=2,
                                                     method="exact"),
                                        {"X": "array", "Y": "array", "rank": "rank", "method": "choice"},
                                        names={"X": ("X", "Y"), "Y": ("X", "Y")}),
        "koopman.koopman_spectrum": Entry(_fn(koopman.koopman_spectrum),
                                          lambda: dict(trajectories=f().trajs, n_delays=2, rank=None, stride=1),
                                          {"trajectories": "array", "n_delays": "nonnegint", "rank": "rank",
                                           "stride": "posint"}, skip={"trajectories": TRAJ_FREE}, names=DELAY_NAMES),
        "koopman.conjugacy_test": Entry(_fn(koopman.conjugacy_test),
                                        lambda: dict(trajs_a=f().trajs, trajs_b=f().trajs_b, n_delays=1, rank=2,
                                                     n_resamples=3, rng=0),
                                        {"trajs_a": "array", "trajs_b": "array", "n_delays": "nonnegint",
                                         "rank": "rank", "n_resamples": "posint", "rng": "rng"},
                                        skip={"trajs_a": {"size-first"}, "trajs_b": {"size-first"}},
                                        names={**DELAY_NAMES, "trajs_a": ("trajs_a", "trajs_b"),
                                               "trajs_b": ("trajs_a", "trajs_b")}),
        "koopman.gavish_donoho_omega": Entry(_fn(koopman.gavish_donoho_omega), lambda: dict(beta=0.5),
                                             {"beta": "posfloat"}),
        "koopman.select_rank": Entry(_fn(koopman.select_rank),
                                     lambda: dict(singular_values=np.array([3.0, 2.0, 1.0]), shape=(3, 5), rank=2),
                                     {"singular_values": "array", "shape": "shape", "rank": "rank"}),
        "koopman.spectral_distance": Entry(_fn(koopman.spectral_distance),
                                           lambda: dict(e1=np.array([0.5, 0.2]), e2=np.array([0.4, 0.1]),
                                                        method="matched", p=1),
                                           {"e1": "array", "e2": "array", "method": "choice", "p": "posfloat"},
                                           skip={"e1": {"complex"}, "e2": {"complex"}}),
        "koopman.trajectories_from_checkpoints": Entry(_fn(koopman.trajectories_from_checkpoints),
                                                       lambda: dict(weights=f().weights, n_components=2),
                                                       {"weights": "array", "n_components": "posint"},
                                                       skip={"n_components": {"none"},
                                                             "weights": {"size-first", "size-last"}}),
        "koopman.published_trajectories": Entry(_fn(koopman.published_trajectories),
                                                lambda: dict(T=4, eta=0.01, grid_size=2),
                                                {"T": "posint", "eta": "posfloat", "grid_size": "posint"}),
        # ------------------------------------------------------------- tasks
        "tasks.flip_flop": Entry(_fn(tasks.flip_flop),
                                 lambda: dict(batch_size=2, rng=0, n_bits=2, num_steps=5, p_flip=0.1, noise_std=0.1),
                                 {"batch_size": "posint", "rng": "rng", "n_bits": "posint", "num_steps": "posint",
                                  "p_flip": "posfloat", "noise_std": "posfloat"}, skip={"noise_std": {"zero"}}),
        "tasks.memory_pro": Entry(_fn(tasks.memory_pro), lambda: dict(batch_size=2, rng=0, fixation_steps=2,
                                                                      stimulus_steps=2, memory_steps=1,
                                                                      response_steps=2, grace_steps=1),
                                  {"batch_size": "posint", "rng": "rng", "fixation_steps": "nonnegint",
                                   "stimulus_steps": "posint", "memory_steps": "nonnegint",
                                   "response_steps": "posint", "grace_steps": "nonnegint"}),
        "tasks.multitask": Entry(_fn(tasks.multitask), lambda: dict(batch_size=2, rng=0, fixation_steps=2,
                                                                    stimulus_steps=2, memory_steps=1,
                                                                    response_steps=2, grace_steps=1),
                                 {"batch_size": "posint", "rng": "rng", "fixation_steps": "nonnegint"}),
        "tasks.generate": Entry(_fn(tasks.generate), lambda: dict(name="flip_flop", batch_size=2, rng=0),
                                {"name": "choice", "batch_size": "posint", "rng": "rng"}, names={"name": ("name", "task")}),
        # ------------------------------------------------------------- cells
        "kpref.GRU": Entry(_fn(kpref.GRU), lambda: dict(input_size=3, hidden_size=4, bias=True),
                           {"input_size": "posint", "hidden_size": "posint", "bias": "bool"}),
        "kpref.LSTM": Entry(_fn(kpref.LSTM), lambda: dict(input_size=3, hidden_size=4),
                            {"input_size": "posint", "hidden_size": "posint"}),
        "kpref.Elman": Entry(_fn(kpref.Elman), lambda: dict(input_size=3, hidden_size=4, nonlinearity="tanh"),
                             {"input_size": "posint", "hidden_size": "posint", "nonlinearity": "choice"}),
        "kpref.Linear": Entry(_fn(kpref.Linear), lambda: dict(input_size=3, hidden_size=4),
                              {"input_size": "posint", "hidden_size": "posint"}),
        "kpref.LeakyRNN": Entry(_fn(kpref.LeakyRNN), lambda: dict(input_size=3, hidden_size=4, alpha=0.5),
                                {"input_size": "posint", "hidden_size": "posint", "alpha": "posfloat"}),
        "kpref.RateODE": Entry(_fn(kpref.RateODE), lambda: dict(input_size=3, hidden_size=4, tau=1.0, dt=0.1,
                                                                method="rk4"),
                               {"input_size": "posint", "hidden_size": "posint", "tau": "posfloat", "dt": "posfloat",
                                "method": "choice"}),
        "kpref.ODECell": Entry(_fn(kpref.ODECell), lambda: dict(field=_Field(), input_size=3, state_size=4, dt=0.1,
                                                                method="euler"),
                               {"input_size": "posint", "state_size": "posint", "dt": "posfloat",
                                "method": "choice"}),
        "kpref.StepPoint": None,  # see EXEMPT
    }
    T.pop("kpref.StepPoint")
    T.update(_cell_entries("GRU", lambda: kpref.GRU(3, 4)))
    T.update(_cell_entries("LSTM", lambda: kpref.LSTM(3, 2)))
    T.update(_cell_entries("RateODE", lambda: kpref.RateODE(3, 4, method="midpoint")))
    return T


TABLE = _table()

#: Public callables deliberately not in the table, with the reason.
EXEMPT = {
    "GRU.param_slices": "takes no argument",
    "kpref.Cell": "abstract base class (its methods are tried through GRU, LSTM and RateODE)",
    "kpref.VectorField": "abstract base class a user subclasses; ODECell checks the field (check_field)",
    "kpref.StepPoint": "built by cell.point (in the table); a cell checks any point passed to it (step_point kind)",
    "kpref.Loss": "result container (NamedTuple) returned by mse_loss",
    "kpref.Checkpoint": "result container returned by train / load_checkpoint",
    "kpref.Readout": "result container (w_out, b_out) returned by init_readout",
    "kpref.TrainResult": "result container returned by train",
    "analysis.AxisReducedOperator": "built by partial_trace / marginal_sum (in the table); products tried in "
                                    "tests/test_reliability.py",
    "koopman.ConjugacyResult": "result container",
    "koopman.DMDResult": "result container",
    "tasks.FlipFlopTrials": "result container",
    "tasks.MemoryProTrials": "result container",
    "tasks.MultitaskTrials": "result container",
}


def _public_callables():
    names = set()
    for prefix, mod in (("kpref", kpref), ("analysis", analysis), ("koopman", koopman), ("tasks", tasks)):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and not inspect.ismodule(obj):
                names.add(f"{prefix}.{name}")
    for cls, label in ((kpref.Linearization, "Linearization"), (kpref.GRU, "GRU")):
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_") and inspect.isfunction(member):
                names.add(f"{label}.{name}")
    return names


def _covered(name):
    return name in TABLE or name in EXEMPT or any(k.startswith(name + "(") for k in TABLE)


def test_every_public_callable_is_in_the_table():
    missing = sorted(n for n in _public_callables() if not _covered(n))
    assert not missing, (f"public callables neither in TABLE nor in EXEMPT (add a row to tests/test_adversarial.py): "
                         f"{missing}")


def _cases():
    for label, entry in TABLE.items():
        for arg, kind in entry.kinds.items():
            for bad_name, _ in BAD[kind]:
                if bad_name in entry.skip.get(arg, ()):
                    continue
                yield pytest.param(label, arg, bad_name, id=f"{label}-{arg}-{bad_name}")


#: Open instances, each with its reason (strict xfail: a fix makes the test fail until the row is removed).
#: Empty: every instance found so far is fixed in the package (see /work/notes/rel2.md).
XFAIL = {}


def _mark(param):
    reason = XFAIL.get(param.id)
    return param if reason is None else pytest.param(*param.values, id=param.id,
                                                      marks=pytest.mark.xfail(reason=reason, strict=True))


CASES = [_mark(p) for p in _cases()]


@pytest.mark.parametrize("label", [k for k, e in TABLE.items() if e.good is not None])
def test_the_good_call_succeeds(label):
    """The table is not vacuous: with every argument good, the call works."""
    entry = TABLE[label]
    entry.call(**entry.good())


def _good_kwargs(entry):
    if entry.good is not None:
        return entry.good()
    return {}


@pytest.mark.parametrize("label, arg, bad_name", CASES)
def test_bad_value_is_refused_naming_the_argument(label, arg, bad_name):
    entry = TABLE[label]
    kwargs = _good_kwargs(entry)
    good = kwargs.get(arg)
    make = dict(BAD[entry.kinds[arg]])[bad_name]
    kwargs[arg] = make(good)
    names = entry.names.get(arg, (arg,))
    with np.errstate(all="ignore"):
        try:
            result = entry.call(**kwargs)
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert any(n in msg for n in names), f"{label}({arg}={bad_name}): message does not name {names}: {msg}"
            assert "Traceback" not in msg
            return
        except MemoryError as exc:
            msg = str(exc)
            assert bad_name in ("huge", "overflow") and any(n in msg for n in names), \
                f"{label}({arg}={bad_name}): MemoryError {msg!r}"
            return
        except Exception as exc:   # noqa: BLE001 - the point is to report any other exception type
            pytest.fail(f"{label}({arg}={bad_name}): {type(exc).__name__} instead of ValueError/TypeError: {exc}")
    pytest.fail(f"{label}({arg}={bad_name}): accepted silently, returned {type(result).__name__}")


def test_table_size():
    """The table tries at least this many bad inputs (reported in the notes of issue 14)."""
    assert len(CASES) >= 900
    assert set(XFAIL) <= {p.id for p in CASES}     # no stale row

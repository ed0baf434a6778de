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
    T.update(_more_entries())
    T.update(_rel3_entries())
    return T


# ------------------------------------------------ entries added by rel2 (issue 14)
TARGET = [("str", lambda g: "M"), ("none", lambda g: None), ("array", lambda g: np.eye(3)),
          ("operator", lambda g: aslinearoperator(np.eye(3)))]
SPECTRA = [v for v in ARRAY if v[0] not in ("complex", "size-first")]   # complex spectra; any number of replicates
BAD.update(target=TARGET, spectra=SPECTRA)
#: dottest's rtol: inf is documented ("report the residual, never fail") and 0 a valid strict threshold (the
#: residual of an exactly symmetric computation, e.g. a diagonal matrix, is exactly 0): the verdict on rtol=0 for
#: a general operator is the checker's AssertionError, not a bad input
RTOL_VALID = {"inf", "zero"}


def _spectra(shift=0.0):
    return np.array([[0.9, 0.5], [0.88, 0.52], [0.91, 0.49]]) + shift


def _target():
    return analysis.TraceTarget(40, matmat=lambda X: _fx().psd @ X)


def _more_entries():
    f = _fx
    import kpref.experiments as ex
    from kpref import testing as kt, training as ktr
    sweep = ex.sweep
    T = {
        "GRU.weight_sites": Entry(lambda pt: f().cell.weight_sites(pt), lambda: dict(pt=f().pt), {"pt": "step_point"}),
        "Linearization.K_blocks": Entry(lambda memory_limit: f().lin.K_blocks(memory_limit),
                                        lambda: dict(memory_limit=None), {"memory_limit": "memory"}),
        "analysis.eigenpairs": Entry(_fn(analysis.eigenpairs),
                                     lambda: dict(op=f().psd, k=3, which="LA", method="dense", tol=1e-10, rng=0,
                                                  memory_limit=None),
                                     {"op": "square_operator", "k": "posint", "which": "choice", "method": "choice",
                                      "tol": "posfloat", "rng": "rng", "memory_limit": "memory"},
                                     skip={"k": {"none"}, "op": {"linearization"}}),
        "analysis.singular_triplets": Entry(_fn(analysis.singular_triplets),
                                            lambda: dict(op=f().general, k=3, method="dense", tol=1e-10, rng=0,
                                                         memory_limit=None),
                                            {"op": "operator", "k": "posint", "method": "choice", "tol": "posfloat",
                                             "rng": "rng", "memory_limit": "memory"},
                                            skip={"k": {"none"}, "op": {"linearization"}}),
        "analysis.TraceTarget": Entry(_fn(analysis.TraceTarget), lambda: dict(dim=40, matmat=lambda X: f().psd @ X),
                                      {"dim": "posint", "matmat": "callable"}, skip={"matmat": {"none"}}),
        "analysis.direct_target": Entry(_fn(analysis.direct_target), None, {"chk": "target"}),
        "analysis.gram_target": Entry(_fn(analysis.gram_target), None, {"chk": "target"}),
        "analysis.hutchinson": Entry(_fn(analysis.hutchinson), lambda: dict(target=_target(), n_probes=6, rng=np.random.default_rng(0)),
                                     {"target": "target", "n_probes": "posint", "rng": "rng"}),
        "analysis.hutch_plus_plus": Entry(_fn(analysis.hutch_plus_plus),
                                          lambda: dict(target=_target(), n_probes=6, rng=np.random.default_rng(0)),
                                          {"target": "target", "n_probes": "posint", "rng": "rng"}),
        "analysis.xtrace": Entry(_fn(analysis.xtrace), lambda: dict(target=_target(), n_probes=6, rng=np.random.default_rng(0)),
                                 {"target": "target", "n_probes": "posint", "rng": "rng"}),
        "analysis.rademacher": Entry(_fn(analysis.rademacher), lambda: dict(rng=np.random.default_rng(0), n=5, k=2),
                                     {"rng": "rng", "n": "posint", "k": "posint"}),
        "analysis.misdirection": Entry(_fn(analysis.misdirection),
                                       lambda: dict(lin=f().lin, method="hutch++", n_probes=6, rng=0,
                                                    memory_limit=None),
                                       {"lin": "lin", "method": "choice", "n_probes": "posint", "rng": "rng",
                                        "memory_limit": "memory"}, skip={"n_probes": {"none"}}),
        "analysis.pp_star": Entry(_fn(analysis.pp_star), lambda: dict(lin=f().lin), {"lin": "lin"}),
        "analysis.propagator_singular_values": Entry(_fn(analysis.propagator_singular_values),
                                                     lambda: dict(lin=f().lin, memory_limit=None),
                                                     {"lin": "lin", "memory_limit": "memory"}),
        "analysis.unit_blocks": Entry(_fn(analysis.unit_blocks), lambda: dict(lin=f().lin, memory_limit=None),
                                      {"lin": "lin", "memory_limit": "memory"}),
        "analysis.reduced_gram": Entry(_fn(analysis.reduced_gram),
                                       lambda: dict(op=f().lin.K, shape=f().lin.shape, keep="hidden",
                                                    reduction="partial_trace", memory_limit=None),
                                       # A has prod(shape) rows and any number of columns (documented; J_θ's
                                       # reduced Gram is tr_c NTK; tests/test_kpflow_definitions.py uses (n, 3))
                                       {"op": "operator", "shape": "shape", "keep": "axis",
                                        "reduction": "choice", "memory_limit": "memory"},
                                       names={"op": ("op", "shape")}),
        "analysis.operator_effective_rank": Entry(_fn(analysis.operator_effective_rank),
                                                  lambda: dict(op=f().lin.K, shape=f().lin.shape, keep="hidden",
                                                               q=0.95, reduction="partial_trace", memory_limit=None),
                                                  # any number of columns, as reduced_gram; keep=None is
                                                  # documented: every axis kept (variance_rank of A)
                                                  {"op": "operator", "shape": "shape", "keep": "axis",
                                                   "q": "posfloat", "reduction": "choice", "memory_limit": "memory"},
                                                  names={"op": ("op", "shape")}, skip={"keep": {"none"}}),
        # ----------------------------------------------------------- koopman
        "koopman.distance_matrix": Entry(_fn(koopman.distance_matrix),
                                         lambda: dict(spectra_a=_spectra(), spectra_b=_spectra(0.01),
                                                      method="matched", p=1),
                                         {"spectra_a": "spectra", "spectra_b": "spectra", "method": "choice",
                                          "p": "posfloat"}, skip={"spectra_b": {"none"}}),
        "koopman.within_between": Entry(_fn(koopman.within_between),
                                        lambda: dict(spectra_a=_spectra(), spectra_b=_spectra(0.01),
                                                     method="matched", p=1),
                                        {"spectra_a": "spectra", "spectra_b": "spectra", "method": "choice",
                                         "p": "posfloat"}),
        "koopman.compare_systems": Entry(_fn(koopman.compare_systems),
                                         lambda: dict(spectra_a=_spectra(), spectra_b=_spectra(0.01),
                                                      alpha=0.05, quantile=0.9, n_permutations=9, n_bootstrap=9,
                                                      rng=0),
                                         {"spectra_a": "spectra", "spectra_b": "spectra", "alpha": "posfloat",
                                          "quantile": "posfloat", "n_permutations": "posint",
                                          "n_bootstrap": "posint", "rng": "rng"}),
        "koopman.shifted_spectrum": Entry(_fn(koopman.shifted_spectrum),
                                          lambda: dict(eigenvalues=np.array([0.9, 0.5]), delta=0.1),
                                          {"eigenvalues": "spectra", "delta": "real"},
                                          skip={"eigenvalues": {"size-last", "rank-1"}}),
        "koopman.linear_replicate_spectra": Entry(_fn(koopman.linear_replicate_spectra),
                                                  lambda: dict(eigenvalues=np.array([0.9, 0.5]), n_replicates=2,
                                                               noise=0.01, n_trajectories=2, T=8, condition=2.0,
                                                               rng=0),
                                                  {"eigenvalues": "spectra", "n_replicates": "posint",
                                                   "n_trajectories": "posint", "T": "posint", "condition": "posfloat",
                                                   "rng": "rng"},
                                                  skip={"eigenvalues": {"size-last", "rank-1"}}),
        "koopman.calibration_rates": Entry(_fn(koopman.calibration_rates),
                                           lambda: dict(eigenvalues=np.array([0.9, 0.5]), delta=0.05, noise=0.01,
                                                        n_replicates=4, n_trials=1, n_permutations=9,
                                                        n_bootstrap=9, rng=0, T=8, n_trajectories=2),
                                           {"eigenvalues": "spectra", "delta": "real", "n_replicates": "posint",
                                            "n_trials": "posint", "n_permutations": "posint",
                                            "n_bootstrap": "posint", "rng": "rng"},
                                           skip={"eigenvalues": {"size-last", "rank-1"}}),
        "koopman.replicate_spectra": Entry(_fn(koopman.replicate_spectra),
                                           lambda: dict(trajectories=f().trajs, n_delays=2, rank=2, stride=1),
                                           {"trajectories": "array", "n_delays": "nonnegint", "rank": "rank",
                                            "stride": "posint"}, skip={"trajectories": TRAJ_FREE},
                                           names=DELAY_NAMES),
        "koopman.load_spectra": Entry(_fn(koopman.load_spectra), None, {"path": "path"}),
        "koopman.uncalibrated_margin_rule": Entry(_fn(koopman.uncalibrated_margin_rule),
                                                  lambda: dict(distance=0.1, spread=0.05, spectral_radius=0.9,
                                                               margin=0.05),
                                                  {"distance": "real", "spread": "real", "spectral_radius": "real",
                                                   "margin": "posfloat"}),
        # ------------------------------------------------------------- kpref
        "kpref.ButcherTableau": Entry(_fn(kpref.ButcherTableau),
                                      lambda: dict(name="heun", order=2, a=((0.0, 0.0), (1.0, 0.0)), b=(0.5, 0.5),
                                                   c=(0.0, 1.0)),
                                      {"order": "posint", "b": "array", "c": "array"},
                                      skip={"order": {"huge", "overflow"}}),
        "kpref.RateField": Entry(_fn(kpref.RateField), lambda: dict(input_size=3, hidden_size=4, tau=1.0, bias=True),
                                 {"input_size": "posint", "hidden_size": "posint", "tau": "posfloat",
                                  "bias": "bool"}),
        "kpref.NamedOperator": Entry(_fn(kpref.NamedOperator),
                                     lambda: dict(name="M", shape=(3, 3), matmat=lambda X: X, rmatmat=lambda Y: Y),
                                     # matmat is opaque until called: another valid shape cannot be told apart
                                     {"shape": "shape", "matmat": "callable", "rmatmat": "callable"},
                                     skip={"shape": {"wrong-product"}}),
        # ------------------------------------------------------------- tasks
        "tasks.low_rank_forecast": Entry(_fn(tasks.low_rank_forecast),
                                         lambda: dict(batch_size=2, rng=0, num_steps=5, dim=6, latent_dim=2,
                                                      input_dim=6, target_dim=6, noise_std=0.1, task_rng=0),
                                         {"batch_size": "posint", "rng": "rng", "num_steps": "posint",
                                          "dim": "posint", "latent_dim": "posint", "input_dim": "posint",
                                          "target_dim": "posint", "noise_std": "posfloat", "task_rng": "rng"},
                                         skip={"noise_std": {"zero"}}),
        "tasks.memory_pro_accuracy": Entry(_fn(tasks.memory_pro_accuracy),
                                           lambda: dict(y=_mp().target + 0.01, target=_mp().target, tolerance=0.3),
                                           {"y": "array", "target": "array", "tolerance": "posfloat"},
                                           names={"y": ("y", "target"), "target": ("y", "target")}),
        # ----------------------------------------------------------- testing
        "testing.dottest": Entry(_fn(kt.dottest), lambda: dict(op=f().general, rng=0, n_pairs=2, rtol=1e-13),
                                 {"op": "operator", "rng": "rng", "n_pairs": "posint", "rtol": "posfloat"},
                                 skip={"op": {"linearization"}, "rtol": RTOL_VALID}),
        "testing.dottest_pair": Entry(_fn(kt.dottest_pair),
                                      lambda: dict(forward=lambda u: f().general @ u,
                                                   adjoint=lambda w: f().general.T @ w, in_shape=(30,),
                                                   out_shape=(40,), rng=0, n_pairs=2, rtol=1e-13),
                                      {"forward": "callable", "adjoint": "callable", "in_shape": "shape",
                                       "out_shape": "shape", "rng": "rng", "n_pairs": "posint", "rtol": "posfloat"},
                                      skip={"rtol": RTOL_VALID}),
        "testing.as_operator": Entry(_fn(kt.as_operator),
                                     lambda: dict(fn=lambda v: 2.0 * v, shape=(2, 5, 4), adjoint=lambda v: 2.0 * v),
                                     # the answers' shape is checked at each product (fn is opaque until called)
                                     {"fn": "callable", "shape": "shape"}, skip={"shape": {"wrong-product"}}),
        "testing.check_operator": Entry(_fn(kt.check_operator),
                                        lambda: dict(fn=lambda v: f().lin.K.matvec(np.ravel(v)),
                                                     reference=f().lin.K, n_vectors=2, rng=0),
                                        {"fn": "callable", "n_vectors": "posint", "rng": "rng"},
                                        ),
        "testing.reference_backend": Entry(_fn(kt.reference_backend),
                                           lambda: dict(cell=f().cell, theta=f().theta, x=f().x, h0=f().h0),
                                           {"cell": "cell", "theta": "array", "x": "array", "h0": "array"},
                                           skip={"h0": {"none"}}, names={"cell": CELL_NAMES}),
        "testing.check_backend": Entry(_fn(kt.check_backend),
                                       lambda: dict(backend=kt.reference_backend(f().cell, f().theta, f().x, f().h0),
                                                    cell=f().cell, theta=f().theta, x=f().x, h0=f().h0,
                                                    n_vectors=1, rng=0),
                                       {"theta": "array", "x": "array", "n_vectors": "posint", "rng": "rng"},
                                       names={"theta": ("theta", "backend"), "x": ("x", "backend")}),
        "testing.describe_param_index": Entry(_fn(kt.describe_param_index), lambda: dict(cell=f().cell, index=3),
                                              {"index": "nonnegint"}),
        "testing.describe_state_index": Entry(_fn(kt.describe_state_index),
                                              lambda: dict(cell=f().cell, b=0, t=1, s=2),
                                              {"b": "nonnegint", "t": "nonnegint", "s": "nonnegint"}),
        "testing.check_field": Entry(_fn(kt.check_field),
                                     lambda: dict(cell=kpref.ODECell(_Field(), 3, 4, 0.1, "euler"), rng=0,
                                                  num_rows=2, rtol=1e-10),
                                     {"rng": "rng", "num_rows": "posint", "rtol": "posfloat"}),
        # ---------------------------------------------------------- training
        "training.GD": Entry(_fn(ktr.GD), lambda: dict(size=3, learning_rate=0.1),
                             {"size": "posint", "learning_rate": "posfloat"}),
        "training.SGD": Entry(_fn(ktr.SGD), lambda: dict(size=3, learning_rate=0.1, momentum=0.5, dampening=0.0,
                                                         nesterov=False),
                              {"size": "posint", "learning_rate": "posfloat", "nesterov": "bool"}),
        "training.Adam": Entry(_fn(ktr.Adam), lambda: dict(size=3, learning_rate=0.1, betas=(0.9, 0.999), eps=1e-8),
                               {"size": "posint", "learning_rate": "posfloat", "eps": "posfloat"}),
        "training.clip_grad_norm": Entry(_fn(ktr.clip_grad_norm),
                                         lambda: dict(blocks=[np.ones(3), np.ones((2, 2))], max_norm=1.0),
                                         {"max_norm": "posfloat"}),
        "training.pool_batches": Entry(_fn(ktr.pool_batches),
                                       lambda: dict(x=f().x, target=f().target, mask=f().mask, batch_size=1),
                                       {"x": "array", "target": "array", "mask": "array", "batch_size": "posint"},
                                       # pool_batches knows no cell: any input size I and output size O is valid
                                       skip={"mask": {"none", "bool"}, "x": {"size-last"}, "target": {"size-last"}},
                                       names={"x": ("x", "target"), "target": ("x", "target"),
                                              "batch_size": ("batch_size",)}),
        "training.trivial_loss": Entry(_fn(ktr.trivial_loss),
                                       lambda: dict(target=f().target, mask=f().mask, reduction="mean"),
                                       {"target": "array", "mask": "array", "reduction": "choice"},
                                       skip={"mask": {"none", "bool"}, "target": {"size-first", "size-last"}},
                                       names={"target": ("target", "mask")}),
        "training.load_run": Entry(_fn(ktr.load_run), None, {"directory": "path"}),
        # ------------------------------------------------------------ interop
        "interop.torch.params_to_torch": Entry(_fn(kpref.interop.torch.params_to_torch),
                                               lambda: dict(cell=f().cell, theta=f().theta, suffix=""),
                                               {"theta": "array", "suffix": "choice"}, skip={"suffix": {"case"}}),
        "interop.torch.params_from_torch": Entry(_fn(kpref.interop.torch.params_from_torch),
                                                 lambda: dict(cell=f().cell, state_dict=f().state_dict),
                                                 {"state_dict": "mapping"}),
        "interop.torch.match_names": Entry(_fn(kpref.interop.torch.match_names),
                                           lambda: dict(cell=f().cell, keys=list(f().state_dict)),
                                           {"keys": "choices"}),
        # ------------------------------------------------------------- sweep
        "sweep.did_not_learn": Entry(_fn(sweep.did_not_learn), lambda: dict(final_loss=0.1, trivial=1.0),
                                     {"final_loss": "real", "trivial": "posfloat"}),
    }
    return T


# ------------------------------------------------ entries added by rel3 (issue 14: every public module)
EIGEN_NAME = [("taken", lambda g: "dense"), ("auto", lambda g: "auto"), ("int", lambda g: 1), ("none", lambda g: None),
              ("empty", lambda g: "")]
OUT_PATH = [("int", lambda g: 3), ("none", lambda g: None), ("missing-folder", lambda g: "/nonexistent/kpref/x.png"),
            ("array", lambda g: np.zeros(3))]
CHECKED_OP = [("str", lambda g: "M"), ("none", lambda g: None), ("array", lambda g: np.eye(3)),
              ("operator", lambda g: aslinearoperator(np.eye(3)))]
MODULE = [("str", lambda g: "GRUCell"), ("none", lambda g: None), ("int", lambda g: 3), ("array", lambda g: np.eye(3)),
          ("kpref-cell", lambda g: kpref.GRU(3, 4))]
LEVELS = [("one", lambda g: (2,)), ("str", lambda g: "2"), ("none", lambda g: None), ("zero", lambda g: (0, 2)),
          ("float", lambda g: (1.5, 2)), ("huge", lambda g: (2, 10**15))]
SWEEP_CONFIG = [("none", lambda g: None), ("dict", lambda g: g.as_dict()), ("str", lambda g: "quick"),
                ("experiment-config", lambda g: __import__("kpref.experiments", fromlist=["x"]).ExperimentConfig()),
                ("unchecked", lambda g: __import__("dataclasses").replace(g, hidden_size=-1))]
ROWS = [("none", lambda g: None), ("str", lambda g: "rows"), ("list-of-str", lambda g: ["a"]),
        ("array", lambda g: np.zeros(3))]
RECORDS = [("none", lambda g: None), ("list", lambda g: []), ("str", lambda g: "records")]
FOLDER = [("int", lambda g: 3), ("none", lambda g: None), ("array", lambda g: np.zeros(3))]
#: an unchecked config is refused naming its bad field (config.checked()'s message)
CONFIG_NAMES = ("config", "hidden_size")
RULE = [("float", lambda g: np.asarray(g, dtype=float)), ("negative", lambda g: -np.ones_like(g)),
        ("out-of-range", lambda g: np.asarray(g) + 5), ("short", lambda g: np.asarray(g)[:1]),
        ("none", lambda g: None), ("str", lambda g: "rule")]
BAD.update(rule=RULE)
CELL_NAME_SEQ = [("str", lambda g: "gru"), ("unknown", lambda g: ("bogus",)), ("empty", lambda g: ()),
                 ("int", lambda g: 3), ("none", lambda g: None)]
BAD.update(cell_names=CELL_NAME_SEQ)
KEPT_AXES = [("none", lambda g: None), ("str", lambda g: "batch"), ("out-of-range", lambda g: (5,)),
             ("negative", lambda g: (-1,)), ("float", lambda g: (0.5,)), ("all", lambda g: (0, 1, 2)),
             ("repeated", lambda g: (0, 0))]
BAD.update(kept_axes=KEPT_AXES)
BAD.update(sweep_config=SWEEP_CONFIG, rows=ROWS, records=RECORDS, folder=FOLDER)
BAD.update(eigen_name=EIGEN_NAME, out_path=OUT_PATH, checked_op=CHECKED_OP, module=MODULE, levels=LEVELS)


def _register_then_remove(name, fn):
    """register_eigen_method on a process-wide registry: the row removes what it registered."""
    from kpref.analysis import EIGEN_METHODS
    try:
        analysis.register_eigen_method(name, fn)
    finally:
        if isinstance(name, str) and name.startswith("rel3-") and name in EIGEN_METHODS:
            del EIGEN_METHODS[name]


@functools.lru_cache(maxsize=None)
def _tmpdir():
    import tempfile
    return tempfile.mkdtemp(prefix="kpref-adversarial-")


def _ode_problem():
    rng = np.random.default_rng(3)
    cell = kpref.RateODE(2, 3, dt=0.2, method="rk4")
    return dict(cell=cell, theta=cell.init_params(rng), x=rng.standard_normal((1, 3, 2)),
                h0=0.1 * rng.standard_normal((1, 3)), e=rng.standard_normal((1, 3, 3)), levels=(1, 2))


def _torch_gru():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch.nn.GRUCell(3, 4).double()


def _rel3_entries():
    f = _fx
    import kpref.experiments as ex
    from kpref import operators as kop, testing as kt
    from kpref.experiments import interference as itf
    sweep = ex.sweep
    lin_f = lambda: f().lin   # noqa: E731
    T = {
        "analysis.register_eigen_method": Entry(_register_then_remove,
                                                lambda: dict(name=f"rel3-{np.random.default_rng().integers(2**62)}",
                                                             fn=lambda chk, k, which, tol, rng, memory_limit: None),
                                                {"name": "eigen_name", "fn": "callable"}),
        "analysis.gram_variance_rank": Entry(_fn(analysis.gram_variance_rank),
                                             lambda: dict(D=f().psd, q=0.9),
                                             # any size of D is valid (a reduced Gram of any kept axes)
                                             {"D": "array", "q": "posfloat"},
                                             skip={"D": {"size-first", "size-last"}}),
        "koopman.SubsetEigenvalues": Entry(lambda embedded: koopman.SubsetEigenvalues(embedded)(np.array([0, 1]), 2),
                                           lambda: dict(embedded=f().trajs), {"embedded": "array"},
                                           skip={"embedded": TRAJ_FREE}),
        "koopman.plot_replicate_spectra": Entry(_fn(koopman.plot_replicate_spectra),
                                                lambda: dict(systems={"a": _spectra(), "b": _spectra(0.01)},
                                                             path=f"{_tmpdir()}/r.png", zoom=(0.4, 1.0, -0.2, 0.2)),
                                                {"systems": "mapping", "path": "out_path"},
                                                # one system left is a valid figure
                                                skip={"systems": {"missing-key"}}),
        "koopman.plot_within_between": Entry(_fn(koopman.plot_within_between),
                                             lambda: dict(pairs={"a vs b": koopman.within_between(_spectra(),
                                                                                                 _spectra(0.01))},
                                                          path=f"{_tmpdir()}/w.png"),
                                             {"pairs": "mapping", "path": "out_path"},
                                             skip={"pairs": {"missing-key"}}),    # dict of one pair: empty dict
        "testing.symmetric_residual": Entry(_fn(kt.symmetric_residual),
                                            lambda: dict(u=np.ones(3), w=np.ones(4), Au=np.ones(4), Aw=np.ones(3)),
                                            {"u": "array", "w": "array", "Au": "array", "Aw": "array"},
                                            names={"u": ("u", "Aw"), "w": ("w", "Au"), "Au": ("Au",), "Aw": ("Aw",)}),
        "testing.complex_step": Entry(_fn(kt.complex_step),
                                      lambda: dict(f=lambda z: z * z, x=np.ones(3), dx=np.ones(3), h=1e-30),
                                      {"f": "callable", "x": "array", "dx": "array", "h": "posfloat"},
                                      names={"x": ("x", "dx")}),
        "testing.richardson": Entry(_fn(kt.richardson),
                                    lambda: dict(f=lambda z: np.sin(z), x=np.ones(3), dx=np.ones(3), h=0.01, levels=3),
                                    {"f": "callable", "x": "array", "dx": "array", "h": "posfloat",
                                     "levels": "posint"}, names={"x": ("x", "dx")}),
        "testing.taylor_test": Entry(_fn(kt.taylor_test),
                                     lambda: dict(f=lambda z: np.sin(z), x=np.ones(3), dx=np.ones(3),
                                                  derivative=np.cos(np.ones(3)), n_steps=18),
                                     {"f": "callable", "x": "array", "dx": "array", "derivative": "array",
                                      "n_steps": "posint"},
                                     names={"x": ("x", "dx", "derivative"), "dx": ("dx",)}),
        "testing.verify_cell": Entry(_fn(kt.verify_cell),
                                     lambda: dict(name="GRU", cell=kpref.GRU(2, 3), rng=np.random.default_rng(0),
                                                  B=1, T=2),
                                     {"cell": "cell", "rng": "rng", "B": "posint", "T": "posint"},
                                     # verify_cell builds its own problem for the cell given: any cell is valid
                                     skip={"cell": {"other-size"}}),
        "testing.continuous_adjoint_order": Entry(_fn(kt.continuous_adjoint_order), _ode_problem,
                                                  {"theta": "array", "x": "array", "h0": "array", "e": "array",
                                                   "levels": "levels"},
                                                  skip={"h0": {"none"}},
                                                  names={"x": ("x", "e"), "e": ("e",)}),
        "operators.as_operator": Entry(_fn(kop.as_operator), lambda: dict(name="A", op=f().general),
                                       {"op": "operator"}, skip={"op": {"linearization"}},
                                       names={"op": ("A",)}),
        "operators.CheckedOperator": Entry(_fn(kop.CheckedOperator),
                                           lambda: dict(name="A", op=aslinearoperator(f().general)),
                                           {"op": "operator"}, names={"op": ("A", "op")}),
        "operators.check_mask": Entry(_fn(kop.check_mask), lambda: dict(mask=f().mask, B=2, T=5, O=2),
                                      {"mask": "array", "B": "posint", "T": "posint", "O": "posint"},
                                      # O is only a dimension for a (B, T) mask: nothing is allocated
                                      skip={"mask": {"none", "bool"}, "O": {"huge"}},
                                      names={"B": ("B", "mask"), "T": ("T", "mask"), "O": ("O", "mask")}),
        "operators.mask_weights": Entry(_fn(kop.mask_weights), lambda: dict(mask=f().mask, B=2, T=5, O=2),
                                        {"mask": "array", "B": "posint", "T": "posint", "O": "posint"},
                                        skip={"mask": {"none", "bool"}},
                                        names={"B": ("B", "mask"), "T": ("T", "mask"), "O": ("O", "mask")}),
        "interop.torch.backend": Entry(lambda model, x: kpref.interop.torch.backend(model, x),
                                       lambda: dict(model=_torch_gru(), x=f().x), {"model": "module", "x": "array"},
                                       skip={"x": {"size-first"}}),     # any number of trials (h0: zeros)
        "interop.torch.cell_of": Entry(lambda module: kpref.interop.torch.cell_of(module),
                                       lambda: dict(module=_torch_gru()), {"module": "module"}),
        "interop.jax.backend": Entry(lambda step, x: kpref.interop.jax.backend(step, _jax_params(), x, cell=f().cell),
                                     lambda: dict(step=_jax_step(), x=f().x), {"step": "callable", "x": "array"},
                                     skip={"x": {"size-first"}}),     # any number of trials (h0: zeros)
        "experiments.interference.transition_point": Entry(_fn(itf.transition_point),
                                                           lambda: dict(series=np.linspace(1.0, 0.0, 6),
                                                                        threshold=0.5),
                                                           {"series": "array", "threshold": "posfloat"},
                                                           skip={"series": {"size-first", "size-last", "rank-1"}}),
        "sweep.trivial_loss": Entry(_fn(sweep.trivial_loss), lambda: dict(target=f().target, mask=f().mask),
                                    {"target": "array", "mask": "array"},
                                    skip={"mask": {"none", "bool"}, "target": {"size-first", "size-last"}},
                                    names={"target": ("target", "mask")}),
        # ----------------------------------------- K's per-unit blocks (kpref/analysis/_unit_blocks.py: kblk2's)
        "analysis.BlockDiagonalOperator(matvec)": Entry(lambda x: _kblocks().reduced((0,), "partial_trace").matvec(x),
                                                        lambda: dict(x=np.ones(20)), {"x": "array"},
                                                        names={"x": ("x", "partial_trace")}),
        "analysis.BlockDiagonalOperator(rmatvec)": Entry(
            lambda x: _kblocks().reduced((0,), "partial_trace").rmatvec(x), lambda: dict(x=np.ones(20)),
            {"x": "array"}, names={"x": ("x", "partial_trace")}),
        "analysis.KBlocks(matmat)": Entry(lambda X: _kblocks().matmat(X), lambda: dict(X=np.ones((40, 2))),
                                          {"X": "array"}, skip={"X": {"size-last"}}),     # any number k of columns
        "analysis.KBlocks(block)": Entry(lambda u: _kblocks().block(u), lambda: dict(u=1), {"u": "nonnegint"}),
        "analysis.KBlocks(eigenvalues)": Entry(lambda k, which: _kblocks().eigenvalues(k, which),
                                               lambda: dict(k=3, which="LA"), {"k": "posint", "which": "choice"},
                                               skip={"k": {"none"}}),       # None: all (documented)
        "analysis.KBlocks(eigenpairs)": Entry(lambda k: _kblocks().eigenpairs(k), lambda: dict(k=3), {"k": "posint"}),
        "analysis.KBlocks(reduced)": Entry(lambda axes, kind, reduction: _kblocks().reduced(axes, kind, reduction),
                                           lambda: dict(axes=(0,), kind="partial_trace", reduction="sum"),
                                           {"axes": "kept_axes", "kind": "choice", "reduction": "choice"}),
        "analysis.KBlocks(with_memory_limit)": Entry(lambda memory_limit: _kblocks().with_memory_limit(memory_limit),
                                                     lambda: dict(memory_limit=None), {"memory_limit": "memory"}),
        "cells.njit": Entry(_fn(kpref.cells.njit), lambda: dict(func=_jit_me), {"func": "callable"},
                            skip={"func": {"none"}}),   # njit(None, nogil=...) is the decorator-factory form
        "strategies.cell_names": Entry(_fn(_strategies().cell_names), lambda: dict(), {}),
        "strategies.finite_arrays": Entry(_fn(_strategies().finite_arrays), lambda: dict(shape=(2, 3), bound=1.0),
                                          {"shape": "shape", "bound": "posfloat"},
                                          skip={"shape": {"wrong-product"}}),   # any shape is valid
        "strategies.trajectory_vectors": Entry(_fn(_strategies().trajectory_vectors),
                                               lambda: dict(shape=(2, 3, 4), bound=1.0),
                                               {"shape": "shape", "bound": "posfloat"},
                                               skip={"shape": {"wrong-product"}}),
        "strategies.cells": Entry(_fn(_strategies().cells), lambda: dict(names=("gru",), max_input=3, max_hidden=5),
                                  {"names": "cell_names", "max_input": "posint", "max_hidden": "posint"},
                                  skip={"names": {"none"}}),      # None: every built-in cell (documented)
        "strategies.problems": Entry(_fn(_strategies().problems),
                                     lambda: dict(names=None, max_batch=3, max_time=6, max_input=3, max_hidden=5,
                                                  scale=1.0),
                                     {"names": "cell_names", "max_batch": "posint", "max_time": "posint",
                                      "max_input": "posint", "max_hidden": "posint", "scale": "posfloat"},
                                     skip={"names": {"none"}}),      # None: every built-in cell (documented)
        # a byte count, nothing allocated: a huge size is a valid question (its answer is huge)
        "experiments.dense_bytes": Entry(_fn(ex.dense_bytes), lambda: dict(B=2, T=5, S=4, p=10),
                                         {"B": "posint", "T": "posint", "S": "posint", "p": "posint"},
                                         skip={k: {"huge"} for k in "BTSp"}),
        "experiments.run_local": Entry(lambda **kw: list(ex.run_local(**kw)),
                                       lambda: dict(fn=abs, items=[(-1.0,)], jobs=1),
                                       {"fn": "callable", "jobs": "posint"}),
        "experiments.worker_blas_threads": Entry(_fn(ex.worker_blas_threads), lambda: dict(jobs=2),
                                                 {"jobs": "posint"}),
        "experiments.checkpoint_schedule": Entry(_fn(ex.checkpoint_schedule), lambda: dict(steps=10, num_checkpoints=3),
                                                 {"steps": "posint", "num_checkpoints": "posint"},
                                                 skip={"steps": {"huge"}}),     # a schedule of 3 marks, any length
        "experiments.make_cell": Entry(_fn(ex.make_cell), lambda: dict(name="gru", input_size=3, hidden_size=4),
                                       {"name": "choice", "input_size": "posint", "hidden_size": "posint"},
                                       names={"name": ("name", "cell")}),
        "experiments.participation_ratio": Entry(_fn(ex.participation_ratio), lambda: dict(M=f().psd),
                                                 {"M": "array"}, skip={"M": {"size-first", "size-last"}}),
        "experiments.effective_rank_dense": Entry(_fn(ex.effective_rank_dense), lambda: dict(X=f().general),
                                                  {"X": "array"}, skip={"X": {"size-first", "size-last"}}),
        "experiments.pca_dimension": Entry(_fn(ex.pca_dimension), lambda: dict(h=f().z), {"h": "array"},
                                           skip={"h": {"size-first", "size-last"}}),
        "experiments.leading_lyapunov": Entry(_fn(ex.leading_lyapunov), lambda: dict(lin=lin_f(), rng=0),
                                              {"lin": "lin", "rng": "rng"}),
        "experiments.propagator_summaries": Entry(_fn(ex.propagator_summaries), lambda: dict(lin=lin_f()),
                                                  {"lin": "lin"}),
        # ------------------------------------------------------------ experiments (report layer)
        "experiments.ExperimentConfig": Entry(lambda **kw: ex.ExperimentConfig.quick(**kw).checked(),
                                              lambda: dict(hidden_size=4, batch_size=2, steps=3, num_checkpoints=2,
                                                           learning_rate=0.01, method="auto", seed=0),
                                              {"hidden_size": "posint", "batch_size": "posint", "steps": "posint",
                                               "num_checkpoints": "posint", "learning_rate": "posfloat",
                                               "method": "choice", "seed": "nonnegint"},
                                              names={"steps": ("steps", "num_checkpoints")},
                                              skip={"seed": {"huge"}}),     # any seed >= 0 is valid
        "experiments.factor_summaries": Entry(_fn(ex.factor_summaries),
                                              lambda: dict(F=np.ones((40, 3)), shape=(2, 5, 4)),
                                              {"F": "array", "shape": "shape"},
                                              skip={"F": {"size-last"}},      # any number p of columns
                                              names={"F": ("F",), "shape": ("shape", "F")}),
        "experiments.operator_summaries": Entry(_fn(ex.operator_summaries),
                                                lambda: dict(lin=lin_f(), method="randomized", n_probes=6, rng=0),
                                                {"lin": "lin", "method": "choice", "n_probes": "posint",
                                                 "rng": "rng"}),
        "experiments.subtask_flows": Entry(_fn(ex.subtask_flows),
                                           lambda: dict(lin=lin_f(), e=f().e, rule=np.array([0, 1]), R=2),
                                           {"lin": "lin", "e": "array", "rule": "rule", "R": "posint"},
                                           names={"R": ("R", "rule")}),
        "experiments.subtask_losses": Entry(_fn(ex.subtask_losses),
                                            lambda: dict(y=f().target + 0.1, target=f().target, mask=f().mask,
                                                         rule=np.array([0, 1]), R=2),
                                            {"y": "array", "target": "array", "rule": "rule", "R": "posint"},
                                            names={"R": ("R", "rule"), "target": ("target", "y")}),
        "experiments.subtask_operator_alignment": Entry(_fn(ex.subtask_operator_alignment),
                                                        lambda: dict(lin=lin_f(), rule=np.array([0, 1]), R=2,
                                                                     used="randomized", extra={}, n_probes=4,
                                                                     rng=np.random.default_rng(0)),
                                                        {"lin": "lin", "rule": "rule", "R": "posint",
                                                         "used": "choice", "n_probes": "posint", "rng": "rng"},
                                                        names={"R": ("R", "rule")}),
        "experiments.read_report": Entry(_fn(ex.read_report), None, {"out": "path"}),
        "experiments.summary_table": Entry(_fn(ex.summary_table), None, {"report": "records"}),
        "experiments.write_figures": Entry(lambda runs=[{"experiment": "collapse", "cell": "gru", "g": 1.0}],
                                                  artifacts=[{}], out=_tmpdir(): ex.write_figures(
                                               runs, artifacts, out), None,
                                           {"runs": "rows", "artifacts": "rows", "out": "folder"}),
        "experiments.interference.interference_matrix": Entry(_fn(itf.interference_matrix),
                                                              lambda: dict(lin=lin_f(), rule=np.array([0, 1]),
                                                                           operator="K", method="hutchinson",
                                                                           n_probes=4, rng=0),
                                                              {"lin": "lin", "rule": "rule", "operator": "choice",
                                                               "method": "choice", "n_probes": "posint",
                                                               "rng": "rng"},
                                                              skip={"n_probes": {"none"}}),   # None: 30 (documented)
        "experiments.interference.subtask_components": Entry(_fn(itf.subtask_components),
                                                             lambda: dict(lin=lin_f(), e=f().e, rule=np.array([0, 1])),
                                                             {"lin": "lin", "e": "array", "rule": "rule"}),
        "experiments.interference.cumulative_alignment_callback": Entry(
            _fn(itf.cumulative_alignment_callback),
            lambda: dict(cell=f().cell, x=f().x, target=f().target, mask=f().mask, rule=np.array([0, 1])),
            {"cell": "cell", "x": "array", "target": "array", "mask": "array", "rule": "rule"},
            # any output size O (the readout is drawn for it)
            skip={"mask": {"none", "bool"}, "cell": {"other-size"}, "target": {"size-last"}},
            names={"cell": CELL_NAMES, "target": ("target", "x")}),
        # -------------------------------------------------------- sweep (SweepConfig.checked is the record's check)
        "sweep.SweepConfig": Entry(lambda **kw: sweep.SweepConfig.quick(**kw).checked(),
                                   lambda: dict(hidden_size=4, batch_size=2, steps=3, learning_rate=0.01,
                                                num_checkpoints=2, cells=("gru",), seeds=(0,), tasks=("memory_pro",),
                                                method="auto", optimizer="adam"),
                                   {"hidden_size": "posint", "batch_size": "posint", "steps": "posint",
                                    "learning_rate": "posfloat", "num_checkpoints": "posint", "cells": "choices",
                                    "seeds": "choices", "tasks": "choices", "method": "choice",
                                    "optimizer": "choice"},
                                   names={"num_checkpoints": ("num_checkpoints",), "seeds": ("seeds",),
                                          "steps": ("steps", "num_checkpoints")}),
        "sweep.run_one": Entry(_fn(sweep.run_one),
                               lambda: dict(config_dict=_sweep_config().as_dict(),
                                            spec={"task": "memory_pro", "cell": "gru", "g": 1.0, "seed": 0}),
                               {"config_dict": "records", "spec": "mapping"}),
        "sweep.train_kwargs": Entry(_fn(sweep.train_kwargs), lambda: dict(config=_sweep_config()),
                                    {"config": "sweep_config"}, names={"config": CONFIG_NAMES}),
        "sweep.task_batch": Entry(_fn(sweep.task_batch),
                                  lambda: dict(config=_sweep_config(), task="memory_pro", seed=0, pool=False),
                                  {"config": "sweep_config", "task": "choice", "seed": "nonnegint", "pool": "bool"},
                                  names={"config": CONFIG_NAMES},
                                  # the seed is a key, nothing is allocated from it
                                  skip={"seed": {"huge"}}),
        "sweep.checkpoint_summaries": Entry(_fn(sweep.checkpoint_summaries),
                                            lambda: dict(lin=lin_f(), config=_sweep_config(), rng=0),
                                            {"lin": "lin", "config": "sweep_config", "rng": "rng"},
                                            names={"config": CONFIG_NAMES}),
        "sweep.run_id": Entry(_fn(sweep.run_id), lambda: dict(spec={"task": "memory_pro", "cell": "gru", "g": 1.0,
                                                                   "seed": 0}),
                              {"spec": "mapping"}),
        "sweep.markdown_table": Entry(_fn(sweep.markdown_table), lambda: dict(rows=[], when="last"),
                                      {"rows": "rows", "when": "choice"}),
        "sweep.summary_table": Entry(_fn(sweep.summary_table), lambda: dict(rows=[]), {"rows": "rows"}),
        "sweep.summary_rows": Entry(_fn(sweep.summary_rows), lambda: dict(config=_sweep_config(), records={}),
                                    {"config": "sweep_config", "records": "records"},
                                    names={"config": CONFIG_NAMES}),
        "sweep.completed_runs": Entry(_fn(sweep.completed_runs), lambda: dict(config=_sweep_config(), out=_tmpdir()),
                                      {"config": "sweep_config", "out": "folder"}, names={"config": CONFIG_NAMES}),
        "sweep.write_figures": Entry(_fn(sweep.write_figures),
                                     lambda: dict(config=_sweep_config(), rows=[], out=_tmpdir()),
                                     {"config": "sweep_config", "rows": "rows", "out": "folder"},
                                     names={"config": CONFIG_NAMES}),
    }
    return T


def _jax_step():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def step(h, x, p):       # torch's GRUCell in jax.numpy (kpref's names)
        gi = x @ p["weight_ih"].T + p["bias_ih"]
        gh = h @ p["weight_hh"].T + p["bias_hh"]
        H = h.shape[1]
        r = 1 / (1 + jnp.exp(-(gi[:, :H] + gh[:, :H])))
        z = 1 / (1 + jnp.exp(-(gi[:, H:2 * H] + gh[:, H:2 * H])))
        n = jnp.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - z) * n + z * h
    return step


def _jax_params():
    return {k: np.array(v) for k, v in _fx().cell.unflatten(_fx().theta).items()}


def _kblocks():
    return analysis.unit_blocks(_fx().lin)


def _jit_me(a):
    return a + 1.0


def _strategies():
    import kpref.strategies
    return kpref.strategies


def _sweep_config():
    from kpref.experiments import sweep
    return sweep.SweepConfig.quick(hidden_size=4, batch_size=2, steps=3, num_checkpoints=2, cells=("gru",),
                                   seeds=(0,), gains=(1.0,))


@functools.lru_cache(maxsize=None)
def _mp():
    return tasks.memory_pro(2, 0, fixation_steps=1, stimulus_steps=2, memory_steps=1, response_steps=2,
                            grace_steps=0)


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
    # ---- added by rel2
    "GRU.continuous_adjoint": "takes no argument",
    "kpref.AdjointStrategy": "abstract base class (strategies are chosen through linearize(adjoint=...), in the table)",
    "kpref.ContinuousAdjoint": "takes no argument (chosen through linearize(adjoint='continuous'))",
    "kpref.DiscreteAdjoint": "takes no argument (chosen through linearize(adjoint='discrete'))",
    "kpref.GradientResult": "result container returned by loss_and_gradient",
    "kpref.KroneckerSite": "result container returned by kronecker_factors / weight_sites",
    "kpref.RungeKuttaStepper": "built by ODECell / RateODE from a checked field, tableau and dt (its docstring: "
                               "'dt checked by the caller'); ODECell and RateODE are in the table",
    "analysis.EigenPairs": "result container", "analysis.LanczosResult": "result container",
    "analysis.SingularTriplets": "result container", "analysis.TraceEstimate": "result container",
    "analysis.UnitSite": "result container",
    "koopman.CalibrationRates": "result container", "koopman.SystemComparison": "result container",
    "koopman.WithinBetween": "result container",
    "koopman.SpectrumOptions": "options record checked by SpectrumOptions.checked, which replicate_spectra and "
                               "koopman_spectrum call (both in the table)",
    "tasks.LowRankForecastTrials": "result container",
    "testing.OperatorCheck": "result container", "testing.Report": "result container",
    "testing.run_verify": "the verify command (python -m kpref verify), tested in tests/test_verify*.py",
    "training.Checkpoint": "result container", "training.Readout": "result container",
    "training.Run": "result container returned by load_run", "training.TrainResult": "result container",
    "training.Optimizer": "abstract base class (GD, SGD, Adam are in the table)",
    "training.PoolBatches": "built by pool_batches (in the table)",
    "interop.torch.TorchBackend": "built by interop.torch.backend", "interop.jax.JaxBackend": "built by interop.jax.backend",
    # ---- added by rel3: runners and command lines (their inputs are the checked records in the table)
    **{f"sweep.{n}": "runner: the good call trains a grid of networks (minutes) into a folder it owns, with "
                     "worker processes; its config goes through SweepConfig.checked (row sweep.SweepConfig), "
                     "each run through run_one (row sweep.run_one) and "
                     "SweepConfig.checked (row sweep.SweepConfig) and each function it calls is in the table; "
                     "the folder it owns is tested in tests/test_sweep.py"
       for n in ("run_sweep",)},
    **{f"{m}.{n}": "command line: argparse parses the strings (add_arguments declares them) and main maps every "
                   "user mistake to a one-line message and exit status 2 (tests/test_report*.py, tests/test_sweep.py)"
       for m in ("sweep", "experiments") for n in ("main", "add_arguments")},
    **{f"experiments.{n}": "runner: trains networks (minutes); its config goes through ExperimentConfig.checked "
                           "(row experiments.ExperimentConfig) and the summaries it calls are in the table; "
                           "interrupts and folder ownership are tested in tests/test_report_runs.py"
       for n in ("run_report", "run_collapse", "run_alignment")},
    **{f"experiments.interference.{n}": "runner: trains one network per seed (minutes) from a SweepConfig dict "
                                        "(SweepConfig.checked, in the table); tests/test_interference.py"
       for n in ("run_interference", "run_interference_one")},
    "experiments.available_cells": "takes no argument",
    "experiments.ReportFolderError": "exception class (a ValueError raised by read_report / run_report)",
}


#: Table label prefix of each public module (the default is its dotted path without "kpref.").
_PREFIX = {"kpref": "kpref", "kpref.experiments.sweep": "sweep"}


def _public_modules():
    """Every public module of kpref with an ``__all__``: each subpackage (found by walking the package, so
    a new one is enumerated without editing this list), each public submodule, and each module an
    ``__all__`` re-exports (``kpref.experiments.sweep``), in a fixed order (kpref first)."""
    import importlib
    import pkgutil

    found, order = {}, [("kpref", kpref)]
    for info in pkgutil.walk_packages(kpref.__path__, "kpref."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            order.append((info.name, None))
    i = 0
    while i < len(order):
        name, mod = order[i]
        i += 1
        mod = importlib.import_module(name) if mod is None else mod
        if name in found or any(mod is m for m in found.values()) or not hasattr(mod, "__all__"):
            continue
        found[name] = mod
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if inspect.ismodule(obj) and obj.__name__.startswith("kpref."):
                order.append((f"{name}.{attr}", obj))    # by its public path (kpref.experiments.sweep)
    return [(_PREFIX.get(n, n[len("kpref."):]), m) for n, m in found.items()]


def _public_callables():
    names = set()
    seen = set()     # a name re-exported elsewhere (kpref.train is kpref.training.train) is covered once
    for prefix, mod in _public_modules():
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and not inspect.ismodule(obj) and id(obj) not in seen:
                seen.add(id(obj))
                names.add(f"{prefix}.{name}")
    for cls, label in ((kpref.Linearization, "Linearization"), (kpref.GRU, "GRU")):
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_") and inspect.isfunction(member):
                names.add(f"{label}.{name}")
    return names


def _covered(name):
    return name in TABLE or name in EXEMPT or any(k.startswith(name + "(") for k in TABLE)


def test_every_exemption_has_a_reason():
    """An exemption is a design reason (no argument, a result container, a runner whose inputs have rows), never
    a to-do: an untried callable needs a row (issue 14)."""
    todo = {k: v for k, v in EXEMPT.items() if "OPEN" in v or "not tried" in v or not v.strip()}
    assert not todo, f"exemptions without a reason (give them a TABLE row): {todo}"
    both = sorted(k for k in EXEMPT if k in TABLE)
    assert not both, f"in both TABLE and EXEMPT: {both}"


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
#: Empty: every instance found so far is fixed at its source. A new finding goes here as
#: "label-arg-bad": "reason" until it is fixed, so that the fix is noticed (XPASS fails strict).
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

r"""The KPFlow experiments: dynamic collapse (1) and multi-task alignment (2).

Notes
-----
**Experiment 1 — dynamic collapse.** A cell (GRU, Elman, …) with recurrent
weights drawn at gain ``g`` (``cell.init_params(g=g)``) and a linear readout
are trained with Adam on one fixed memory-pro batch (:func:`kpref.train`,
kpref's own gradients). At every checkpoint, on the training batch:

* ``loss`` (and, once per run, ``trivial_loss``: the loss of the batch-mean
  predictor, and ``did_not_learn``: final loss ≥ 0.5 × trivial);
* ``effective_rank`` of ``K``, ``P`` and ``NTK`` (SPEC §6): for an operator
  ``X`` with singular values ``σ``, ``erank(X) = PR(X Xᵀ) = (Σσ²)² / Σσ⁴``;
* ``effective_dimensions``: per operator and per axis ``a`` of
  ``(batch, time, hidden)``, the participation ratio of the partial trace
  (SPEC §5) of ``X Xᵀ`` over the two other axes,
  ``PR(M) = (tr M)² / tr(M²)``;
* ``pca_dimension``: the participation ratio of the covariance eigenvalues of
  the hidden states ``h`` (first ``cell.hidden_size`` state entries) over all
  trials and steps;
* ``lyapunov``: the leading Lyapunov exponent of the linearized flow along the
  training trials, ``(1/(T·dt)) Σ_t log ‖A_t v_{t-1}‖`` with ``v`` renormalized
  each step (:func:`kpref.analysis.lyapunov_spectrum`, ``k = 1``: the
  one-vector case of the repeated-QR method of SPEC §6), averaged over
  trials; ``v_{-1}`` is a seeded random unit vector per trial.

The KPFlow papers' finding: ``erank(K)`` stays far below ``erank(P)``; larger
``g`` starts more chaotic (larger leading exponent) yet training collapses the
dynamics to few dimensions.

**Experiment 2 — multi-task alignment.** The same model is trained on
:func:`kpref.tasks.multitask` (``R`` memory-pro rules, one-hot rule input).
With ``e = ∂L/∂z`` and ``Π_a`` the projection onto the trials of rule ``a``,
``e_a = Π_a e`` is the error signal of sub-task ``a`` alone and
``f_a = −NTK e_a`` its hidden-state gradient flow (SPEC §4: the change of the
whole trajectory, on every trial, that a gradient step on sub-task ``a``
alone would cause). At every checkpoint, for every pair ``(a, b)``:

* ``flow_alignment[a][b] = ⟨f_a, f_b⟩ / (‖f_a‖ ‖f_b‖)``;
* ``operator_alignment[a][b] = cos(Θ_a, Θ_b)`` (SPEC §6) of the sub-task
  operators ``Θ_a = (P J_θ)ᵀ Π_a (P J_θ)`` (p × p: the parameter-space kernel
  of sub-task ``a``); equivalently ``‖Π_a NTK Π_b‖_F² /
  (‖Π_a NTK Π_a‖_F ‖Π_b NTK Π_b‖_F)``, the cross-task block of the NTK;
* ``subspace_overlap[a][b] = cos(C_a, C_b)`` of the covariances ``C_a`` of the
  hidden states on the trials of rule ``a`` — the shared subspaces;
* ``subtask_loss[a]``: the loss restricted to the trials of ``a`` (with the
  same normalization as the total, so the sub-task losses sum to it).

Whether the alignment *anticipates* shared subspaces is summarized by
``anticipation``: the Pearson correlation, over the pairs ``a < b``, between
the flow alignment at the first checkpoint after step 0 and the subspace
overlap at the last checkpoint.

**Exact and randomized summaries.** With ``method='auto'`` every summary is
exact (dense, small) when the dense factors fit in ``dense_limit`` bytes
(default 512 MiB): ``J_θ`` and ``P J_θ`` (``n × p`` each, ``n = B·T·S``;
``K = J_θ J_θᵀ`` and ``NTK = (P J_θ)(P J_θ)ᵀ``, whose spectra are those of the
``p × p`` Gram matrices) and the per-trial blocks of ``P`` (``B`` blocks of
``(T·S)²``; ``P`` is block diagonal in the batch). Otherwise (the paper's
sizes) they are randomized estimates from the matrix-free operators, seeded:

* ``K`` excepted: for every cell with per-unit blocks of ``K`` (all the
  discrete built-in cells; :func:`kpref.analysis.unit_blocks`) its effective
  rank and effective dimensions are exact at every size, with error ``0``;
* effective ranks by :func:`kpref.analysis.effective_rank` with
  ``method='hutch++'`` (Meyer et al. 2021) and ``n_probes`` probes for each
  of ``tr(XᵀX)`` and ``tr((XᵀX)²)``;
* per-axis effective dimensions by :func:`kpref.analysis.effective_dimensions`
  with ``method='hutchinson'`` (``n_probes`` Rademacher probes ``Y = X ω``,
  U-statistic for ``tr(D_a²)``);
* ``‖Π_a NTK Π_b‖_F²`` by Hutchinson with probes supported on the trials of
  ``b`` (``n_probes`` per rule).

The flows, the loss, the PCA dimension and the Lyapunov exponent are always
exact. Each record says which ``method`` was used.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import analysis
from .. import tasks as _tasks
from .._identity import repeated_identity
from .._checks import (as_generator, as_real_array, check_choice, check_positive_float, check_positive_int,
                       check_size_memory, physical_memory)
from ..cells import GRU, LSTM, Elman, LeakyRNN
from ..operators import check_mask, linearize, mask_weights, mse_loss
from ..training._train import train

__all__ = [
    "ExperimentConfig",
    "available_cells",
    "make_cell",
    "participation_ratio",
    "effective_rank_dense",
    "factor_summaries",
    "propagator_summaries",
    "operator_summaries",
    "leading_lyapunov",
    "pca_dimension",
    "checkpoint_schedule",
    "dense_bytes",
    "subtask_flows",
    "subtask_losses",
    "run_collapse",
    "run_alignment",
]

AXES = analysis.AXIS_NAMES
OPERATORS = ("K", "P", "NTK")


# ------------------------------------------------------------------ config
@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes and training settings shared by both experiments.

    The defaults are the KPFlow paper's sizes (H = 256, B = 20 trials, T = 90
    steps) with 1000 Adam steps at η = 1e-2 (η = 1e-3 stays on the batch-mean
    plateau for g ≤ 1); :meth:`quick` gives the small settings of ``report --quick``.
    """

    hidden_size: int = 256
    batch_size: int = 20
    fixation_steps: int = 10
    stimulus_steps: int = 20
    memory_steps: int = 30
    response_steps: int = 30
    grace_steps: int = 5
    noise_std: float = 0.0
    steps: int = 1000
    num_checkpoints: int = 6
    # 1e-3 left 1000 full-batch Adam steps on the batch-mean plateau (loss = trivial loss 0.0858) for GRU and Elman
    # at g ≤ 1 (issue 16; reproduced at H = 64: GRU g = 0.5 and 1 stay at 0.0858; with 1e-2 they leave the plateau
    # between steps 250 and 500 and reach ~1e-5): validation/examples/learning_stall.py
    learning_rate: float = 1e-2
    seed: int = 0
    method: str = "auto"
    n_probes: int = 30
    dense_limit: int = 512 * 1024**2
    rules: tuple = ("memory_pro", "memory_anti", "delay_pro", "delay_anti")
    cells: tuple = ("gru", "elman")
    gains: tuple = (0.5, 1.0, 2.0)
    alignment_gain: float | None = None

    @classmethod
    def quick(cls, **overrides):
        """Small settings: H = 16, B = 12, T = 35 (5 + 10 + 10 + 10), 150 Adam steps, 4 checkpoints."""
        base = cls(hidden_size=16, batch_size=12, fixation_steps=5, stimulus_steps=10, memory_steps=10,
                   response_steps=10, grace_steps=2, steps=150, num_checkpoints=4, learning_rate=1e-2,
                   gains=(0.5, 2.0))
        return replace(base, **overrides)

    def checked(self):
        """Return the config with every field checked (ValueError/TypeError naming the field)."""
        for name in ("hidden_size", "batch_size", "fixation_steps", "stimulus_steps", "response_steps",
                     "steps", "n_probes", "dense_limit"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("memory_steps", self.memory_steps, minimum=0)
        check_positive_int("grace_steps", self.grace_steps, minimum=0)
        check_positive_int("num_checkpoints", self.num_checkpoints, minimum=2)
        check_positive_int("seed", self.seed, minimum=0)
        check_positive_float("learning_rate", self.learning_rate)
        check_choice("method", self.method, ("auto", "exact", "randomized"))
        if not self.cells:
            raise ValueError("cells: expected at least one cell name, got none")
        for i, c in enumerate(self.cells):
            check_choice(f"cells[{i}]", c, available_cells())
        if not self.gains:
            raise ValueError("g: expected at least one gain, got none")
        for i, g in enumerate(self.gains):
            check_positive_float(f"g[{i}]", g)
        if self.alignment_gain is not None:
            check_positive_float("alignment_gain", self.alignment_gain)
        if self.n_probes < 3:
            raise ValueError(f"n_probes: expected at least 3 (Hutch++ splits them in three), got {self.n_probes}")
        if self.num_checkpoints > self.steps + 1:
            raise ValueError(
                f"num_checkpoints: expected at most steps + 1 = {self.steps + 1}, got {self.num_checkpoints}")
        self.task_kwargs()  # timing checks of the task generators
        check_run_size(self.hidden_size, self.batch_size, self.steps,
                       self.fixation_steps + self.stimulus_steps + self.memory_steps + self.response_steps
                       + self.grace_steps, self.num_checkpoints)
        x = _tasks.multitask(1, 0, rules=tuple(self.rules), **self.task_kwargs()).x
        if self.method == "exact":                  # refuse up front, with the figure (SPEC §7)
            for name in self.cells:
                cell = make_cell(name, x.shape[2], self.hidden_size)   # the multitask cell is the larger one
                need = dense_bytes(self.batch_size, x.shape[1], cell.state_size, cell.num_params)
                if need > self.dense_limit:
                    raise ValueError(
                        f"method: 'exact' needs {need / 2**30:.3g} GiB of dense factors for cell {name!r} at "
                        f"H={self.hidden_size} (limit {self.dense_limit / 2**30:.3g} GiB); use 'auto' or "
                        f"'randomized'")
        return self

    def task_kwargs(self):
        kw = dict(fixation_steps=self.fixation_steps, stimulus_steps=self.stimulus_steps,
                  memory_steps=self.memory_steps, response_steps=self.response_steps,
                  grace_steps=self.grace_steps, noise_std=self.noise_std)
        _tasks.memory_pro(1, 0, **kw)
        return kw

    def as_dict(self):
        d = asdict(self)
        for k in ("rules", "cells", "gains"):
            d[k] = list(d[k])
        return d


# ------------------------------------------------------------------- cells
def _cell_classes():
    return {"gru": GRU, "elman": Elman, "lstm": LSTM, "leaky": LeakyRNN}


def available_cells():
    """Cell names the experiments know."""
    return tuple(_cell_classes())


def check_run_size(hidden_size, batch_size, steps, num_steps, num_checkpoints):
    """Refuse (ValueError naming the fields) sizes whose arrays could not fit in this machine's RAM.

    A cheap bound, before anything is built (no cell, no task batch): the
    loss history (``steps + 1``), the trajectory and its step caches
    (``17·B·T·S`` floats, ``S ≤ 2H``) and θ with Adam's moments and every
    checkpoint (``≤ 4H(H + 2)`` parameters, the LSTM's count without its
    few inputs). The report's ``--memory-limit`` check and each
    allocation's own check come later; this one catches what could never
    run, whatever the limit.
    """
    physical = physical_memory()
    if physical is None:                     # pragma: no cover - non-POSIX: the allocations check
        return
    H, B = int(hidden_size), int(batch_size)
    need = 8 * (int(steps) + 1) + 8 * 17 * B * int(num_steps) * 2 * H + 8 * 4 * H * (H + 2) * (3 + num_checkpoints)
    if need > physical:
        raise ValueError(
            f"hidden_size/batch_size/steps: a run needs about {need / 2**30:.3g} GiB of arrays (hidden_size={H}, "
            f"batch_size={B}, steps={steps}, {num_steps} time steps), more than this machine's "
            f"{physical / 2**30:.3g} GiB of RAM")


def make_cell(name, input_size, hidden_size):
    """The cell called ``name`` (``'gru'``, ``'elman'`` (tanh), ``'lstm'``, ``'leaky'``)."""
    name = check_choice("cell", name, available_cells())
    return _cell_classes()[name](input_size, hidden_size)


# --------------------------------------------------------- spectral pieces
# The experiments summarize *recorded* states and operators, and a recorded
# zero (a sub-task with no activity, states that stopped moving) is a result
# to report, not an error: here the participation ratio, effective rank and
# alignment of an all-zero argument are 0. kpref.analysis, whose functions
# these call otherwise, refuses it instead (0/0 is undefined there). Decided
# explicitly in issue 15; the report's figures and JSON show these zeros.
def participation_ratio(M):
    """``PR(M) = (tr M)² / tr(M²)`` of a symmetric PSD matrix by :func:`kpref.analysis.participation_ratio`;
    0 for ``M = 0`` (see the note above)."""
    M = as_real_array("M", M, (None, None))
    return float(analysis.participation_ratio(M)) if np.any(M) else 0.0


def effective_rank_dense(X):
    """``PR(X Xᵀ) = (Σσ²)² / Σσ⁴`` by :func:`kpref.analysis.effective_rank` (dense SVD); 0 for ``X = 0``."""
    X = as_real_array("X", X, (None, None))
    return float(analysis.effective_rank(X)) if np.any(X) else 0.0


def _axis_rows(A4, axis_index):
    """(B, T, S, m) → (n_axis, rest): the axis first, everything else flattened."""
    perm = ((0, 1, 2, 3), (1, 0, 2, 3), (2, 0, 1, 3))[axis_index]
    return np.ascontiguousarray(A4.transpose(perm)).reshape(A4.shape[perm[0]], -1)


def factor_summaries(F, shape):
    """Exact summaries of ``X = F Fᵀ`` (``K`` with ``F = J_θ``, ``NTK`` with ``F = P J_θ``).

    Returns ``(effective_rank, effective_dimensions, gram)``. The nonzero
    eigenvalues ``λ`` of ``X`` are those of ``G = Fᵀ F`` (p × p), so
    ``Σσ(X)² = Σλ² = ‖G‖_F²`` and ``Σσ(X)⁴ = Σλ⁴ = ‖G²‖_F²``; the partial
    traces of ``X Xᵀ = F G Fᵀ`` are contractions of ``F`` with ``F G``.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise TypeError(f"shape: expected the trajectory shape (B, T, S), got {shape!r}")
    B, T, S = (check_positive_int(f"shape[{i}]", n) for i, n in enumerate(shape))
    F = as_real_array("F", F, (B * T * S, None), ("B*T*S", "p"))
    G = F.T @ F
    G2 = G @ G
    s2, s4 = float(np.sum(G * G)), float(np.sum(G2 * G2))
    erank = s2 * s2 / s4 if s4 > 0.0 else 0.0
    F4 = F.reshape(B, T, S, -1)
    FG4 = (F @ G).reshape(B, T, S, -1)
    dims = {}
    for index, axis in enumerate(AXES):
        M = _axis_rows(F4, index) @ _axis_rows(FG4, index).T      # partial trace of F G Fᵀ
        dims[axis] = participation_ratio(0.5 * (M + M.T))
    return erank, dims, G


def _propagator_blocks(lin):
    """``P_b`` for every trial: (B, T·S, T·S), by one block product (P is block diagonal in b)."""
    B, T, S = lin.shape
    m = T * S
    return lin.P.matmat(repeated_identity(B, m).reshape(B * m, m)).reshape(B, m, m)


def propagator_summaries(lin):
    """Exact ``erank(P)`` and effective dimensions of ``P`` from its per-trial blocks."""
    _check_lin(lin)
    B, T, S = lin.shape
    Pb = _propagator_blocks(lin)
    s2 = float(np.sum(Pb * Pb))                             # Σσ² = Σ_b ‖P_b‖_F²
    Gb = np.matmul(Pb.transpose(0, 2, 1), Pb)
    s4 = float(np.sum(Gb * Gb))                             # Σσ⁴ = Σ_b ‖P_bᵀ P_b‖_F²
    erank = s2 * s2 / s4 if s4 > 0.0 else 0.0
    P4 = Pb.reshape(B, T, S, T * S)
    Yh, Yt = _axis_rows(P4, 2), _axis_rows(P4, 1)
    Mh, Mt = Yh @ Yh.T, Yt @ Yt.T
    Mb = np.diag(np.sum(Pb * Pb, axis=(1, 2)))  # off-diagonal (b ≠ b') blocks of P Pᵀ vanish
    dims = {"batch": participation_ratio(Mb), "time": participation_ratio(Mt), "hidden": participation_ratio(Mh)}
    return erank, dims


def _dense_factors(lin):
    J = lin.J_theta.matmat(np.eye(lin.num_params))
    return J, lin.P.matmat(J)


def _check_lin(lin):
    from ..operators._linearization import Linearization

    if not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")


def dense_bytes(B, T, S, p):
    """Bytes of the dense work of the exact summaries: ``J_θ``, ``P J_θ``, ``F G`` (n × p each), two p × p
    Gram matrices and the per-trial blocks of ``P`` (``B (T S)²``, plus two of them in flight)."""
    B, T, S, p = (check_positive_int(n, v) for n, v in (("B", B), ("T", T), ("S", S), ("p", p)))
    return 8 * (3 * B * T * S * p + 2 * p * p + B * (T * S) ** 2 + 2 * (T * S) ** 2)


def _exact_fits(lin, dense_limit):
    B, T, S = lin.shape
    return dense_bytes(B, T, S, lin.num_params) <= dense_limit


# ------------------------------------------------------ randomized pieces
def _k_blocks_or_none(lin):
    """``lin.K_blocks()``, or ``None`` for a cell whose ``K`` has no per-unit blocks (ODE cells)."""
    try:
        return lin.K_blocks()
    except NotImplementedError:
        return None


def _randomized_operator_summaries(lin, n_probes, rng):
    erank, dims, errors = {}, {}, {}
    exact = ()
    if _k_blocks_or_none(lin) is not None:       # K exact at any size through its per-unit blocks
        erank["K"] = float(analysis.effective_rank(lin.K))
        dims["K"] = analysis.effective_dimensions(lin, operators=("K",))["K"]
        errors["K"] = 0.0
        exact = ("K",)
    for name in OPERATORS:
        if name in exact:
            continue
        op = getattr(lin, name)
        value, error = analysis.effective_rank(op, method="hutch++", n_probes=n_probes, rng=rng, return_error=True)
        erank[name], errors[name] = float(value), float(error)
        dims[name] = analysis.effective_dimensions(lin, operators=(name,), method="hutchinson", n_probes=n_probes,
                                                   rng=rng)[name]
    return erank, dims, errors, exact


def operator_summaries(lin, *, method="auto", n_probes=30, dense_limit=512 * 1024**2, rng=None):
    """Effective ranks and per-axis effective dimensions of ``K``, ``P`` and ``NTK``.

    Returns ``(effective_rank, effective_dimensions, method_used, extra)``;
    ``extra`` holds the dense factor ``P J_θ`` (key ``"PJ"``) when exact, and
    the error estimates of the randomized effective ranks (key
    ``"effective_rank_error"``, from :func:`kpref.analysis.effective_rank`
    with ``return_error=True``) when randomized. ``K``'s summaries are exact
    in either mode when its cell has per-unit blocks
    (:func:`kpref.analysis.unit_blocks`): its error is then ``0.0`` and
    ``extra["exact"]`` is ``("K",)``.
    """
    _check_lin(lin)
    method = check_choice("method", method, ("auto", "exact", "randomized"))
    n_probes = check_positive_int("n_probes", n_probes, minimum=3)
    dense_limit = check_positive_int("dense_limit", dense_limit)
    rng = as_generator(rng)
    if method == "auto":
        method = "exact" if _exact_fits(lin, dense_limit) else "randomized"
    if method == "randomized":
        erank, dims, errors, exact = _randomized_operator_summaries(lin, n_probes, rng)
        return erank, dims, method, {"effective_rank_error": errors, "exact": exact}
    J, PJ = _dense_factors(lin)
    erank, dims = {}, {}
    erank["K"], dims["K"], _ = factor_summaries(J, lin.shape)
    erank["P"], dims["P"] = propagator_summaries(lin)
    erank["NTK"], dims["NTK"], _ = factor_summaries(PJ, lin.shape)
    return erank, dims, method, {"PJ": PJ}


def leading_lyapunov(lin, rng=None):
    """Leading Lyapunov exponent, averaged over the trials (per unit time: divided by ``cell.dt``).

    :func:`kpref.analysis.lyapunov_spectrum` with ``k = 1`` from a seeded
    random unit vector per trial.
    """
    return float(analysis.lyapunov_spectrum(lin, k=1, init="random", rng=as_generator(rng))[0])


def pca_dimension(h):
    """Participation ratio of the covariance eigenvalues of states ``h`` (B, T, H) over trials and steps."""
    h = as_real_array("h", h, (None, None, None), ("B", "T", "H"))
    Z = h.reshape(-1, h.shape[-1])
    Z = Z - Z.mean(axis=0)
    C = Z.T @ Z / max(Z.shape[0] - 1, 1)
    return participation_ratio(C)


def checkpoint_schedule(steps, num_checkpoints):
    """Checkpoint steps ``round(steps · (i/(n−1))²)``, i = 0 … n−1: dense early, where collapse happens."""
    steps = check_positive_int("steps", steps)
    num_checkpoints = check_positive_int("num_checkpoints", num_checkpoints, minimum=2)
    if num_checkpoints > steps + 1:
        raise ValueError(f"num_checkpoints: expected at most steps + 1 = {steps + 1} (one per step), "
                         f"got {num_checkpoints}")
    i = np.arange(num_checkpoints)
    marks = np.round(steps * (i / (num_checkpoints - 1)) ** 2).astype(int)
    out = sorted(set(int(s) for s in marks))
    # if rounding merged early marks, fill with the smallest unused steps
    s = 1
    while len(out) < num_checkpoints:
        if s not in out:
            out.append(s)
            out.sort()
        s += 1
    return out


def _principal_trajectories(h, k=3):
    """Projection of hidden states (B, T, H) on their top ``k`` principal axes: (B, T, k), and variance ratios."""
    Z = h.reshape(-1, h.shape[-1])
    mean = Z.mean(axis=0)
    U, s, Vt = np.linalg.svd(Z - mean, full_matrices=False)
    k = min(k, Vt.shape[0])
    var = s * s
    ratio = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    return ((h - mean) @ Vt[:k].T), ratio


def _seeds(seed, *keys):
    return np.random.default_rng([seed, *keys])


def _trivial_loss(target, mask):
    from ..training import trivial_loss      # the one home of the batch-mean predictor's loss

    return trivial_loss(target, mask)


def _did_not_learn(final_loss, trivial):
    from ._sweep import did_not_learn

    return did_not_learn(final_loss, trivial)


# -------------------------------------------------------------- experiment 1
def run_collapse(cell_name, g, config, *, progress=None, checkpoint_dir=None):
    """Experiment 1 for one cell and gain. Returns ``(record, artifacts)``.

    ``record`` is the JSON-ready run (``experiment``, ``cell``, ``g``,
    ``checkpoints`` …); ``artifacts`` holds arrays for the figures (loss
    curve, principal-component trajectories at the first and last
    checkpoints, stimulus angles). The task batch is drawn from
    ``[seed, 0]``, the initialization from ``[seed, 1]``, the probes of the
    randomized summaries from ``[seed, 2]`` and the Lyapunov start vectors
    from ``[seed, 3]`` (``numpy.random.default_rng`` seed sequences): the
    same config gives bitwise the same record (timings aside).
    ``progress`` and ``checkpoint_dir`` are passed to :func:`kpref.train`
    (``checkpoint_dir``: the ``.npz`` checkpoints are also written there).
    """
    config = config.checked()
    g = check_positive_float("g", g)
    kw = config.task_kwargs()
    batch = _tasks.memory_pro(config.batch_size, _seeds(config.seed, 0), **kw)
    cell = make_cell(cell_name, batch.x.shape[2], config.hidden_size)
    probe_rng = _seeds(config.seed, 2)
    marks = checkpoint_schedule(config.steps, config.num_checkpoints)
    checkpoints, pcs = [], {}
    t_start = time.perf_counter()
    analysis_seconds = [0.0]

    def on_checkpoint(ck):
        t0 = time.perf_counter()
        lin = linearize(cell, ck.theta, batch.x)
        erank, dims, used, extra = operator_summaries(lin, method=config.method, n_probes=config.n_probes,
                                                  dense_limit=config.dense_limit,
                                                  rng=probe_rng)
        h = lin.z[:, :, : cell.hidden_size]
        rec = {
            "step": ck.step,
            "loss": ck.loss,
            "effective_rank": erank,
            "effective_dimensions": dims,
            "pca_dimension": pca_dimension(h),
            "lyapunov": leading_lyapunov(lin, _seeds(config.seed, 3)),
            "method": used,
        }
        if "effective_rank_error" in extra:
            rec["effective_rank_error"] = extra["effective_rank_error"]
        checkpoints.append(rec)
        if ck.step in (marks[0], marks[-1]):
            pcs[ck.step] = _principal_trajectories(h)
        analysis_seconds[0] += time.perf_counter() - t0

    result = train(cell, batch.x, batch.target, mask=batch.mask, rng=_seeds(config.seed, 1), g=g,
                   steps=config.steps, learning_rate=config.learning_rate, checkpoint_steps=marks,
                   progress=progress, callback=on_checkpoint, checkpoint_dir=checkpoint_dir)
    angle = np.mod(np.arctan2(batch.x[:, config.fixation_steps, 2], batch.x[:, config.fixation_steps, 1]),
                   2 * np.pi)
    trivial = _trivial_loss(batch.target, batch.mask)
    record = {
        "experiment": "collapse",
        "cell": cell_name,
        "g": g,
        "task": "memory_pro",
        "trivial_loss": trivial,
        "did_not_learn": _did_not_learn(checkpoints[-1]["loss"], trivial),
        "hidden_size": config.hidden_size,
        "num_params": cell.num_params,
        "shape": list(batch.x.shape[:2]) + [cell.state_size],
        "steps": config.steps,
        "seconds": time.perf_counter() - t_start,
        "analysis_seconds": analysis_seconds[0],
        "checkpoints": checkpoints,
    }
    artifacts = {"losses": result.losses, "pcs": pcs, "angle": angle, "marks": marks}
    return record, artifacts


# -------------------------------------------------------------- experiment 2
def _cosine(a, b):
    """``⟨a, b⟩ / (‖a‖ ‖b‖)`` (Frobenius) by :func:`kpref.analysis.alignment`; 0 when either is zero."""
    if not (np.any(a) and np.any(b)):
        return 0.0
    a, b = np.reshape(a, (np.shape(a)[0], -1)), np.reshape(b, (np.shape(b)[0], -1))
    return float(analysis.alignment(a, b))


def _matrix_of(fn, R):
    return [[fn(a, b) for b in range(R)] for a in range(R)]


def _check_rule(rule, B, R):
    """``R`` (an int >= 1) and ``rule`` (B,) integer sub-task labels in [0, R)."""
    R = check_positive_int("R", R)
    # the sub-task results are R-vectors and R × R matrices (one loop pass per sub-task)
    check_size_memory(f"R={R}", 8 * R * R, what="the R x R sub-task matrices")
    arr = np.asarray(rule)
    if arr.dtype.kind not in "iu" or arr.shape != (B,):
        raise TypeError(f"rule: expected a ({B},) integer array of sub-task labels, got "
                        f"{arr.dtype} of shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= R):
        raise ValueError(f"rule: expected labels in [0, R={R}), got {arr.min()}..{arr.max()}")
    return np.array(arr, dtype=np.int64), R


def _subtask_operator_alignment(lin, rule, R, used, extra, n_probes, rng):
    _check_lin(lin)
    B, T, S = lin.shape
    rule, R = _check_rule(rule, B, R)
    check_choice("used", used, ("exact", "randomized"))
    if used == "exact" and (not isinstance(extra, dict) or "PJ" not in extra):
        raise TypeError(f"extra: expected operator_summaries' extra with the dense factor 'PJ' (used='exact'), "
                        f"got {extra!r:.80}")
    if used == "randomized":
        n_probes = check_positive_int("n_probes", n_probes)
        check_size_memory(f"n_probes={n_probes}", 2 * 8 * lin.size * n_probes, what="the probe blocks")
        rng = as_generator(rng)
    if used == "exact":
        PJ = extra["PJ"].reshape(B, T * S, -1)
        grams = [np.einsum("bik,bil->kl", PJ[rule == a], PJ[rule == a], optimize=True) for a in range(R)]
        cross = np.array([[float(np.sum(grams[a] * grams[b])) for b in range(R)] for a in range(R)])
    else:
        # cross[a, b] ≈ ‖Π_a NTK Π_b‖_F² by Hutchinson with Gaussian probes on the trials of b (drawn for those
        # trials only; the others are zero): Σ over the trials of a of ‖(NTK z)_trial‖², averaged over the probes
        cross = np.zeros((R, R))
        for b in range(R):
            Z = np.zeros((B, T, S, n_probes))
            Z[rule == b] = rng.standard_normal((int(np.count_nonzero(rule == b)), T, S, n_probes))
            Y = lin.NTK.matmat(Z.reshape(B * T * S, n_probes)).reshape(B, T * S * n_probes)
            per_trial = np.einsum("bi,bi->b", Y, Y)
            for a in range(R):
                cross[a, b] = float(np.sum(per_trial[rule == a])) / n_probes
        cross = 0.5 * (cross + cross.T)
    return _matrix_of(lambda a, b: float(cross[a, b] / np.sqrt(cross[a, a] * cross[b, b]))
                      if cross[a, a] > 0 and cross[b, b] > 0 else 0.0, R)


def subtask_flows(lin, e, rule, R):
    """Hidden-state gradient flows of the sub-tasks: column ``a`` is ``f_a = −NTK Π_a e`` (flattened).

    ``e`` (B, T, S) is the error signal of the whole loss and ``rule`` (B,)
    the sub-task of each trial; ``Π_a e`` keeps the trials of ``a``. One
    block product of the NTK with ``R`` vectors; ``Σ_a f_a = −NTK e``.
    """
    _check_lin(lin)
    e = as_real_array("e", e, lin.shape, ("B", "T", "S"))
    rule, R = _check_rule(rule, lin.shape[0], R)
    check_size_memory(f"R={R}", 2 * 8 * lin.size * R, what="the sub-task loads and flows")
    E = np.zeros((lin.size, R))
    for a in range(R):
        ea = e.copy()
        ea[rule != a] = 0.0                                       # e_a = Π_a e
        E[:, a] = ea.ravel()
    return -lin.NTK.matmat(E)                                     # f_a = −NTK e_a


def subtask_losses(y, target, mask, rule, R):
    """Mean-reduced MSE restricted to the trials of each sub-task, normalized like the total (they sum to it)."""
    target = as_real_array("target", target, (None, None, None), ("B", "T", "O"))
    y = as_real_array("y", y, target.shape, ("B", "T", "O"))
    rule, R = _check_rule(rule, target.shape[0], R)
    m = mask_weights(check_mask(mask, *target.shape), *target.shape)
    sq = m * (y - target) ** 2 / target.size
    return [float(np.sum(sq[rule == a])) for a in range(R)]


def _pearson(u, v):
    u, v = np.asarray(u, float), np.asarray(v, float)
    if u.size < 2 or u.std() == 0 or v.std() == 0:
        return None
    return float(np.corrcoef(u, v)[0, 1])


def run_alignment(cell_name, g, config, *, progress=None, checkpoint_dir=None):
    """Experiment 2 for one cell and gain on ``multitask``. Returns ``(record, artifacts)``.

    Seeds ``[seed, 10]`` (batch), ``[seed, 11]`` (initialization),
    ``[seed, 12]`` (probes); ``progress`` and ``checkpoint_dir`` as in
    :func:`run_collapse`.
    """
    config = config.checked()
    g = check_positive_float("g", g)
    rules = tuple(config.rules)
    R = len(rules)
    batch = _tasks.multitask(config.batch_size, _seeds(config.seed, 10), rules=rules, **config.task_kwargs())
    rule = batch.rule
    cell = make_cell(cell_name, batch.x.shape[2], config.hidden_size)
    probe_rng = _seeds(config.seed, 12)
    marks = checkpoint_schedule(config.steps, config.num_checkpoints)
    checkpoints = []
    t_start = time.perf_counter()

    def on_checkpoint(ck):
        lin = linearize(cell, ck.theta, batch.x)
        loss = mse_loss(lin.z, batch.target, ck.readout.w_out, ck.readout.b_out, mask=batch.mask, cell=cell)
        erank, dims, used, extra = operator_summaries(lin, method=config.method, n_probes=config.n_probes,
                                                      dense_limit=config.dense_limit, rng=probe_rng)
        flows = subtask_flows(lin, loss.e, rule, R)
        h = lin.z[:, :, : cell.hidden_size]
        covs = []
        for a in range(R):
            Za = h[rule == a].reshape(-1, h.shape[-1])
            Za = Za - Za.mean(axis=0)
            covs.append(Za.T @ Za / max(Za.shape[0] - 1, 1))
        sub_loss = subtask_losses(loss.y, batch.target, batch.mask, rule, R)
        checkpoints.append({
            "step": ck.step,
            "loss": ck.loss,
            "subtask_loss": {rules[a]: sub_loss[a] for a in range(R)},
            "effective_rank": erank,
            "effective_dimensions": dims,
            "flow_alignment": _matrix_of(lambda a, b: _cosine(flows[:, a], flows[:, b]), R),
            "operator_alignment": _subtask_operator_alignment(lin, rule, R, used, extra, config.n_probes,
                                                              probe_rng),
            "subspace_overlap": _matrix_of(lambda a, b: _cosine(covs[a], covs[b]), R),
            "pca_dimension": pca_dimension(h),
            "method": used,
            **({"effective_rank_error": extra["effective_rank_error"]} if "effective_rank_error" in extra else {}),
        })

    result = train(cell, batch.x, batch.target, mask=batch.mask, rng=_seeds(config.seed, 11), g=g,
                   steps=config.steps, learning_rate=config.learning_rate, checkpoint_steps=marks,
                   progress=progress, callback=on_checkpoint, checkpoint_dir=checkpoint_dir)
    pairs = [(a, b) for a in range(R) for b in range(a + 1, R)]
    early = checkpoints[1] if len(checkpoints) > 1 else checkpoints[0]
    final = checkpoints[-1]
    trivial = _trivial_loss(batch.target, batch.mask)
    record = {
        "experiment": "alignment",
        "cell": cell_name,
        "g": g,
        "task": "multitask",
        "trivial_loss": trivial,
        "did_not_learn": _did_not_learn(checkpoints[-1]["loss"], trivial),
        "rules": list(rules),
        "hidden_size": config.hidden_size,
        "num_params": cell.num_params,
        "shape": list(batch.x.shape[:2]) + [cell.state_size],
        "steps": config.steps,
        "seconds": time.perf_counter() - t_start,
        "anticipation": {
            "early_step": early["step"],
            "final_step": final["step"],
            "pearson_flow_alignment_vs_final_subspace_overlap": _pearson(
                [early["flow_alignment"][a][b] for a, b in pairs],
                [final["subspace_overlap"][a][b] for a, b in pairs]),
            "pearson_operator_alignment_vs_final_subspace_overlap": _pearson(
                [early["operator_alignment"][a][b] for a, b in pairs],
                [final["subspace_overlap"][a][b] for a, b in pairs]),
        },
        "checkpoints": checkpoints,
    }
    artifacts = {"losses": result.losses, "marks": marks}
    return record, artifacts

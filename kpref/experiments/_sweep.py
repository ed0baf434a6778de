r"""``python -m kpref sweep``: cells × g × seeds × tasks, one folder per run, resumable, on processes or Dask.

Notes
-----
**Runs.** A sweep is the product of ``cells``, gains ``g``, ``seeds`` and
``tasks``; each run trains one network (:func:`kpref.train`, kpref's own
gradients) on one fixed batch of its task and, at every checkpoint, records:

* ``loss`` and ``trivial_loss``: the loss of the batch-mean predictor
  ``ȳ[t, o] = Σ_b m y / Σ_b m`` under the same (masked, mean-reduced) MSE — the
  loss a network that learned nothing but the mean reaches;
* ``effective_rank`` of ``K``, ``P``, ``NTK``: ``PR(X Xᵀ) = (Σσ²)²/Σσ⁴`` (SPEC §6);
* ``effective_dimensions[reduction][op][axis]`` under both definitions:
  ``'partial_trace'`` (kpref) and ``'marginal'`` (the KPFlow package's
  ``effdim``), see :func:`kpref.analysis.effective_dimension`;
* ``operator_effective_rank[reduction][op][axis]``: the 95 %-variance rank over
  one kept axis (:func:`kpref.analysis.operator_effective_rank`; exact route
  only, ``None`` when the summaries are randomized);
* ``misdirection``: ``cos(NTK, P P*)`` (:func:`kpref.analysis.misdirection`).

Exact summaries (dense factors ``J_θ`` and ``P J_θ``, per-trial blocks of
``P``) are used when they fit ``dense_limit``; otherwise randomized ones
(Hutch++ effective ranks, Hutchinson effective dimensions and misdirection,
``n_probes`` probes, seeded). The record says which.

Each run's summary flags ``did_not_learn`` when its final loss is at least
half its trivial loss ("did not learn: final loss ≥ 0.5 × trivial"), and, for
memory-pro and the multitask, records the package's ``accuracy``
(:func:`kpref.tasks.memory_pro_accuracy` of the trained network on its
training batch).

**Seeds.** A run ``(cell, g, seed, task)`` draws its batch from
``default_rng([seed, 0, task_index])``, its cell parameters from
``[seed, 1]`` (``cell.init_params(g=g, g_convention=...)``), its readout from
``[seed, 1, 1]`` and its probes from ``[seed, 2]``, where ``task_index`` is the
task's position in :data:`SWEEP_TASKS` — never from the run's position in the
sweep, so a run gives bitwise the same record alone, in any sweep, on any
executor.

**Folders.** ``out/runs/<run id>/`` holds ``record.json`` (the numbers, no
timings: identical bit for bit whatever the executor), ``losses.npy`` and,
written last, ``manifest.json`` (the run's spec, the sweep's config hash,
the SHA-256 of each file, wall time, versions). Every file is written to a
temporary name and renamed, so a killed sweep leaves complete files or none;
a run is complete when its manifest exists, names this config and its files
match their hashes. Restarted, the sweep runs only the runs that are not
complete (an incomplete folder is cleared first). ``out/sweep.json``
(config), ``out/table.csv`` and ``out/summary.json`` (mean and spread over
seeds), ``effective_ranks_vs_g.png`` and ``effective_dimensions_vs_g.png`` are
rewritten from all complete runs at the end.

**Executors.** ``jobs=1`` runs in this process; ``jobs=N`` on ``N`` local
processes (:class:`concurrent.futures.ProcessPoolExecutor`, spawn);
``scheduler='tcp://HOST:PORT'`` on a Dask cluster (``dask.distributed``, the
optional ``dask`` extra). The workers compute and return records; this process
writes every folder, so a worker never needs the output file system. A Dask
worker that dies mid-run has its runs rescheduled by the scheduler.

**Training protocol.** :func:`train_kwargs` is the one place that turns a
config into keywords of :func:`kpref.train`: ``optimizer`` (``'adam'``,
``'sgd'`` with ``momentum``, ``'gd'``), ``clip_grad_norm``, ``loss_tolerance``;
with ``pool_size``/``minibatch_size`` (``sweep --pool-size 5000 --batch-size
500``, the paper's) :func:`run_one` adds ``batch_fn=kpref.training.pool_batches``
over a pool of noisy trials, and the fixed ``batch_size`` trials become the
evaluation batch (summaries, ``eval_loss``, trivial loss and the "did not
learn" flag are all on it). Every field is in the run's manifest
(``settings``). ``config.protocol`` (pairs) passes any further keyword of
:func:`kpref.train` through, refused with the keyword's name when this
``kpref.train`` does not accept it.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from .. import analysis
from .._atomic import atomic_write, file_sha256
from .. import tasks as _tasks
from .. import training as _training
from ..training import pool_batches
from .._checks import as_generator, check_bool, check_choice, check_positive_float, check_positive_int, check_real
from ..cells import simulate
from ..operators._linearization import linearize
from ..training._train import train
from ._executors import run_local
from ._experiments import (_propagator_blocks, check_run_size, available_cells, checkpoint_schedule, dense_bytes, make_cell,
                           participation_ratio)

__all__ = ["SweepConfig", "SWEEP_TASKS", "train_kwargs", "task_batch", "trivial_loss", "run_id", "run_one",
           "checkpoint_summaries", "run_sweep", "completed_runs", "summary_rows", "add_arguments", "main",
           "did_not_learn", "markdown_table", "summary_table", "write_figures"]

#: Tasks a sweep knows (the order fixes the batch seeds: never reorder, only append).
SWEEP_TASKS = ("memory_pro", "multitask", "flip_flop", "low_rank_forecast")
REDUCTIONS = ("partial_trace", "marginal")
OPERATORS = ("K", "P", "NTK")
AXES = ("batch", "time", "hidden")
#: "did not learn": final loss ≥ this fraction of the trivial loss.
DID_NOT_LEARN_FRACTION = 0.5
_FORMAT = "kpref-sweep-run-1"


# ------------------------------------------------------------------ config
@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the grid and every setting of its runs (defaults: the paper protocol at full batch).

    Default grid: GRU and Elman, 10 log-spaced gains in [1e-5, 5] (the
    paper's), seeds 0, 1, 2, memory-pro; H = 256, B = 20, T = 90, 1000 Adam
    steps at η = 1e-2.

    The paper's minibatch protocol: ``pool_size`` (e.g. 5000) noisy trials
    (noise ``pool_noise_std``) from which each step draws ``minibatch_size``
    (e.g. 500) distinct trials (:func:`kpref.training.pool_batches`); the
    fixed ``batch_size`` trials (noise ``noise_std``, default noiseless) are
    then the evaluation batch, on which every checkpoint's summaries,
    ``eval_loss`` and ``trivial_loss`` are measured. ``loss_tolerance`` stops
    a run early (on the training loss, as :func:`kpref.train`);
    ``optimizer='sgd'`` takes ``momentum``; ``clip_grad_norm`` clips.

    ``gains`` are the initial recurrent gains (``g_convention`` as in
    :meth:`kpref.Cell.init_params`; default ``'kpflow'``, the package's);
    memory-pro and the multitask use the package's layout (0/30/30/30
    steps, ``context_steps`` for the multitask) scaled by ``time_scale``.
    """

    cells: tuple = ("gru", "elman")
    gains: tuple = tuple(float(g) for g in np.round(np.logspace(-5, math.log10(5.0), 10), 8))   # the paper's
    seeds: tuple = (0, 1, 2)
    tasks: tuple = ("memory_pro",)
    hidden_size: int = 256
    batch_size: int = 20
    stimulus_steps: int = 30
    memory_steps: int = 30
    response_steps: int = 30
    context_steps: int = 30
    noise_std: float = 0.0
    g_convention: str = "kpflow"
    optimizer: str = "adam"
    steps: int = 1000
    learning_rate: float = 1e-2
    momentum: float = 0.0          # SGD only (torch's definition)
    clip_grad_norm: float | None = None      # global 2-norm clipping of the gradient (torch's definition)
    loss_tolerance: float | None = None      # stop after the first step whose training loss is ≤ this
    pool_size: int | None = None             # minibatch protocol: noisy trials in the pool (None: full batch)
    minibatch_size: int | None = None        # minibatch protocol: distinct pool trials per step
    pool_noise_std: float = 0.1 * math.sqrt(2.0)   # input noise of the pool's trials (the package's)
    num_checkpoints: int = 6
    method: str = "auto"
    n_probes: int = 30
    dense_limit: int = 512 * 1024**2
    protocol: tuple = ()           # ((keyword, value), ...) passed on to kpref.train

    @classmethod
    def quick(cls, **overrides):
        """Small settings for ``sweep --quick``: H = 12, B = 8, T = 30 (10/10/10), 120 steps, 2 seeds, 3 gains."""
        base = cls(hidden_size=12, batch_size=8, stimulus_steps=10, memory_steps=10, response_steps=10,
                   context_steps=5, steps=120, num_checkpoints=3, gains=(0.5, 1.0, 2.0), seeds=(0, 1))
        return replace(base, **overrides)

    def checked(self):
        """The config with every field checked (ValueError/TypeError naming the field)."""
        for name in ("hidden_size", "batch_size", "stimulus_steps", "response_steps", "steps", "n_probes",
                     "dense_limit"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("memory_steps", self.memory_steps, minimum=0)
        check_positive_int("context_steps", self.context_steps, minimum=0)
        check_positive_int("num_checkpoints", self.num_checkpoints, minimum=2)
        if self.num_checkpoints > self.steps + 1:
            raise ValueError(f"num_checkpoints: expected at most steps + 1 = {self.steps + 1}, "
                             f"got {self.num_checkpoints}")
        check_positive_float("learning_rate", self.learning_rate)
        if self.noise_std != 0.0:
            check_positive_float("noise_std", self.noise_std)
        check_choice("g_convention", self.g_convention, ("kpflow", "gaussian"))
        check_choice("optimizer", self.optimizer, ("adam", "gd", "sgd"))
        self._check_protocol()
        check_choice("method", self.method, ("auto", "exact", "randomized"))
        if self.n_probes < 3:
            raise ValueError(f"n_probes: expected at least 3 (Hutch++ splits them in three), got {self.n_probes}")
        for label, items in (("cells", self.cells), ("g", self.gains), ("seeds", self.seeds),
                             ("tasks", self.tasks)):
            if not isinstance(items, tuple) or not items:
                raise ValueError(f"{label}: expected a non-empty tuple, got {items!r}")
            if len(set(items)) != len(items):
                raise ValueError(f"{label}: expected distinct values, got {items!r}")
        for i, c in enumerate(self.cells):
            check_choice(f"cells[{i}]", c, available_cells())
        for i, g in enumerate(self.gains):
            check_positive_float(f"g[{i}]", g)
        for i, s in enumerate(self.seeds):
            check_positive_int(f"seeds[{i}]", s, minimum=0)
        for i, t in enumerate(self.tasks):
            check_choice(f"tasks[{i}]", t, SWEEP_TASKS)
        check_run_size(self.hidden_size, self.batch_size, self.steps,
                       self.context_steps + self.stimulus_steps + self.memory_steps + self.response_steps,
                       self.num_checkpoints)
        _train_kwargs(self)           # protocol keywords this kpref.train accepts
        return self

    def _check_protocol(self):
        if not isinstance(self.momentum, (int, float)) or isinstance(self.momentum, bool) or \
                not (0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum: expected a number in [0, 1), got {self.momentum!r}")
        if self.momentum != 0.0 and self.optimizer != "sgd":
            raise ValueError(f"momentum: only with optimizer 'sgd', got momentum={self.momentum!r} with "
                             f"optimizer {self.optimizer!r}")
        for name in ("clip_grad_norm", "loss_tolerance"):
            if getattr(self, name) is not None:
                check_positive_float(name, getattr(self, name))
        if (self.pool_size is None) != (self.minibatch_size is None):
            raise ValueError(f"pool_size: the minibatch protocol needs both pool_size and minibatch_size, got "
                             f"pool_size={self.pool_size!r}, minibatch_size={self.minibatch_size!r}")
        if self.pool_size is not None:
            check_positive_int("pool_size", self.pool_size)
            check_positive_int("minibatch_size", self.minibatch_size)
            if self.minibatch_size > self.pool_size:
                raise ValueError(f"minibatch_size: expected at most pool_size = {self.pool_size}, got "
                                 f"{self.minibatch_size}")
        if self.pool_noise_std != 0.0:
            check_positive_float("pool_noise_std", self.pool_noise_std)

    def as_dict(self):
        d = asdict(self)
        for k in ("cells", "gains", "seeds", "tasks"):
            d[k] = list(d[k])
        d["protocol"] = [list(p) for p in self.protocol]
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        for k in ("cells", "gains", "seeds", "tasks"):
            d[k] = tuple(d[k])
        d["protocol"] = tuple(tuple(p) for p in d.get("protocol", ()))
        return cls(**d)

    def run_settings(self):
        """Everything that decides a run's numbers (the grid axes excluded): its hash names the config."""
        d = self.as_dict()
        for k in ("cells", "gains", "seeds", "tasks"):
            d.pop(k)
        return d

    def settings_hash(self):
        text = json.dumps(self.run_settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def runs(self):
        """Every run spec ``{'cell', 'g', 'seed', 'task'}`` of the grid, in a fixed order."""
        return [{"task": t, "cell": c, "g": float(g), "seed": int(s)}
                for t in self.tasks for c in self.cells for g in self.gains for s in self.seeds]


def _config(config):
    """``config`` checked (:meth:`SweepConfig.checked`); anything but a SweepConfig refused naming it."""
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config: expected a kpref.experiments.sweep.SweepConfig, got {type(config).__name__}")
    return config.checked()


def _spec(spec):
    """A run spec ``{'task', 'cell', 'g', 'seed'}`` (as :meth:`SweepConfig.runs` makes them), checked."""
    if not isinstance(spec, dict) or set(spec) != {"task", "cell", "g", "seed"}:
        raise TypeError(f"spec: expected a dict with keys 'task', 'cell', 'g', 'seed' (SweepConfig.runs()), "
                        f"got {spec!r:.100}")
    check_choice("spec['task']", spec["task"], SWEEP_TASKS)
    check_choice("spec['cell']", spec["cell"], available_cells())
    check_positive_float("spec['g']", spec["g"])
    check_positive_int("spec['seed']", spec["seed"], minimum=0)
    return spec


def _rows(rows):
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"rows: expected a list of summary rows (dicts, from summary_rows), got {rows!r:.100}")
    return rows


def train_kwargs(config):
    """The keywords of :func:`kpref.train` for a config: the one place protocol options pass through.

    ``steps``, ``optimizer``, ``learning_rate`` (and ``momentum`` for SGD,
    ``clip_grad_norm``, ``loss_tolerance`` when set) from the config — the
    minibatch stream (``batch_fn``) is built per run by :func:`run_one` from
    ``pool_size``/``minibatch_size`` — then every
    ``(keyword, value)`` of ``config.protocol``; a keyword this ``kpref.train``
    does not accept is refused with its name.
    """
    return _train_kwargs(_config(config))


def _train_kwargs(config):
    """:func:`train_kwargs` of a config being checked (:meth:`SweepConfig.checked` calls it)."""
    kw = {"steps": config.steps, "optimizer": config.optimizer, "learning_rate": config.learning_rate}
    if config.optimizer == "sgd":
        kw["momentum"] = config.momentum
    for name in ("clip_grad_norm", "loss_tolerance"):
        if getattr(config, name) is not None:
            kw[name] = getattr(config, name)
    accepted = set(inspect.signature(train).parameters)
    reserved = {"cell", "x", "target", "mask", "rng", "g", "checkpoint_steps", "callback", "theta", "readout",
                "batch_fn", "momentum", "clip_grad_norm", "loss_tolerance"}
    for item in config.protocol:
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
            raise TypeError(f"protocol: expected (keyword, value) pairs, got {item!r}")
        key, value = item
        if key in reserved or key in kw:
            raise ValueError(f"protocol: {key!r} is set by the sweep itself, not through protocol")
        if key not in accepted:
            raise ValueError(f"protocol: kpref.train does not accept the keyword {key!r} in this kpref "
                             f"(it accepts {sorted(accepted - reserved)})")
        kw[key] = value
    return kw


# ------------------------------------------------------------------- tasks
def task_batch(config, task, seed, *, pool=False):
    """The fixed training batch ``(x, target, mask, rule)`` of a run (``mask``, ``rule`` may be None;
    ``rule`` (B,) is the sub-task of each trial of the multitask).

    With ``pool=True``: the minibatch protocol's pool, ``pool_size`` trials with noise ``pool_noise_std``,
    from a generator of its own (the fixed batch is the same with or without a pool)."""
    config = _config(config)
    check_choice("task", task, SWEEP_TASKS)
    seed = check_positive_int("seed", seed, minimum=0)
    pool = check_bool("pool", pool)
    if pool and config.pool_size is None:
        raise ValueError("pool: expected pool=False for a config without the minibatch protocol (pool_size=None)")
    key = [int(seed), 0, SWEEP_TASKS.index(task)] + ([1] if pool else [])
    rng = np.random.default_rng(key)
    B = config.pool_size if pool else config.batch_size
    noise = config.pool_noise_std if pool else config.noise_std
    layout = dict(fixation_steps=0, stimulus_steps=config.stimulus_steps, memory_steps=config.memory_steps,
                  response_steps=config.response_steps, grace_steps=0, noise_std=noise)
    if task == "memory_pro":
        b = _tasks.memory_pro(B, rng, **layout)
        return b.x, b.target, b.mask, None
    if task == "multitask":
        b = _tasks.multitask(B, rng, context_steps=config.context_steps, **layout)
        return b.x, b.target, b.mask, b.rule
    T = config.stimulus_steps + config.memory_steps + config.response_steps
    if task == "flip_flop":
        b = _tasks.flip_flop(B, rng, num_steps=T, noise_std=noise, p_flip=0.1)
        return b.x, b.target, None, None
    b = _tasks.low_rank_forecast(B, rng, num_steps=T, dim=20, latent_dim=4, input_dim=8, target_dim=8,
                                 noise_std=noise)
    return b.x, b.target, None, None


def trivial_loss(target, mask=None):
    """Loss of the batch-mean predictor (mean-reduced masked MSE): :func:`kpref.training.trivial_loss`."""
    return _training.trivial_loss(target, mask)


def did_not_learn(final_loss, trivial):
    """``final_loss ≥ 0.5 × trivial`` (the flag of the summary).

    ``final_loss`` a finite real ≥ 0 (a mean squared error), ``trivial`` the loss of the trivial
    predictor, finite and > 0; anything else is refused naming the argument (a NaN loss would
    otherwise read as "learned").
    """
    final_loss = check_real("final_loss", final_loss, minimum=0.0)
    trivial = check_positive_float("trivial", trivial)
    return bool(final_loss >= DID_NOT_LEARN_FRACTION * trivial)


# --------------------------------------------------------------- summaries
def _pr(D):
    """Participation ratio of a reduced Gram: :func:`kpref.experiments.participation_ratio` (0 for ``D = 0``,
    the experiments' documented convention for recorded zeros)."""
    return participation_ratio(D)


def _variance_rank(D, q=0.95):
    """95 %-variance rank of a reduced Gram: :func:`kpref.analysis.gram_variance_rank` (0 for ``D = 0``, as
    :func:`_pr`)."""
    return analysis.gram_variance_rank(D, q) if np.any(D) else 0


def _axis_grams(F4, FG4=None):
    """Reduced Grams of ``A Aᵀ`` over the other axes, for each axis and both reductions (module notes of
    :mod:`kpref.analysis._kpflow`), with ``A Aᵀ = F4 FG4ᵀ`` flattened: ``F4`` is (B, T, S, m); ``FG4``
    defaults to ``F4`` (``A = F``); for ``A = F Fᵀ`` (``K``, ``NTK``) pass ``FG4 = F G``, ``G = Fᵀ F``."""
    out = {r: {} for r in REDUCTIONS}
    perms = {"batch": (0, 1, 2, 3), "time": (1, 0, 2, 3), "hidden": (2, 0, 1, 3)}
    for axis, perm in perms.items():
        Y = np.ascontiguousarray(F4.transpose(perm))
        Z = Y if FG4 is None else np.ascontiguousarray(FG4.transpose(perm))
        n = Y.shape[0]
        D = Y.reshape(n, -1) @ Z.reshape(n, -1).T                   # Σ over the other axes on the diagonal
        out["partial_trace"][axis] = 0.5 * (D + D.T)
        Sy = Y.reshape(n, -1, Y.shape[-1]).sum(axis=1)             # the other axes summed first
        Sz = Z.reshape(n, -1, Z.shape[-1]).sum(axis=1)
        D = Sy @ Sz.T
        out["marginal"][axis] = 0.5 * (D + D.T)
    return out


def _factor_block(F, shape):
    """Effective rank and reduced Grams of ``X = F Fᵀ`` from the dense factor ``F`` (n × p):
    ``X Xᵀ = F G Fᵀ`` with ``G = Fᵀ F``."""
    B, T, S = shape
    G = F.T @ F
    G2 = G @ G
    s2, s4 = float(np.sum(G * G)), float(np.sum(G2 * G2))
    grams = _axis_grams(F.reshape(B, T, S, -1), (F @ G).reshape(B, T, S, -1))
    return (s2 * s2 / s4 if s4 > 0 else None), grams, G


def _propagator_block(lin):
    """Effective rank and reduced Grams of ``P Pᵀ`` from the per-trial blocks (P is block diagonal in b)."""
    B, T, S = lin.shape
    Pb = _propagator_blocks(lin)
    s2 = float(np.sum(Pb * Pb))
    Gb = np.matmul(Pb.transpose(0, 2, 1), Pb)
    s4 = float(np.sum(Gb * Gb))
    grams = {r: {"batch": np.zeros((B, B)), "time": np.zeros((T, T)), "hidden": np.zeros((S, S))}
             for r in REDUCTIONS}
    for b in range(B):                     # the columns of trial b touch only the rows of trial b
        g = _axis_grams(Pb[b].reshape(1, T, S, T * S))
        for r in REDUCTIONS:
            grams[r]["batch"][b, b] = g[r]["batch"][0, 0]
            grams[r]["time"] += g[r]["time"]
            grams[r]["hidden"] += g[r]["hidden"]
    return (s2 * s2 / s4 if s4 > 0 else None), grams, Pb, Gb


def checkpoint_summaries(lin, config, rng):
    """The operator summaries of one checkpoint (module notes): exact when the dense factors fit."""
    from ..operators._linearization import Linearization

    if not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    config = _config(config)
    rng = as_generator(rng)
    B, T, S = lin.shape
    method = config.method
    if method == "auto":
        method = "exact" if dense_bytes(B, T, S, lin.num_params) <= config.dense_limit else "randomized"
    erank, dims, oprank = {}, {r: {} for r in REDUCTIONS}, {r: {} for r in REDUCTIONS}
    if method == "exact":
        J = lin.J_theta.matmat(np.eye(lin.num_params))
        PJ = lin.P.matmat(J)
        grams = {}
        erank["K"], grams["K"], _ = _factor_block(J, lin.shape)
        erank["NTK"], grams["NTK"], G_ntk = _factor_block(PJ, lin.shape)
        erank["P"], grams["P"], Pb, Gb = _propagator_block(lin)
        for r in REDUCTIONS:
            for op in OPERATORS:
                dims[r][op] = {a: _pr(grams[op][r][a]) for a in AXES}
                oprank[r][op] = {a: _variance_rank(grams[op][r][a]) for a in AXES}
        # misdirection cos(NTK, P Pᵀ): tr(NTK P Pᵀ) = ‖Pᵀ PJ‖_F², ‖NTK‖_F = ‖G‖_F, ‖P Pᵀ‖_F² = Σ_b ‖P_bᵀP_b‖_F²
        PtF = lin.P.H.matmat(PJ)
        denom = math.sqrt(float(np.sum(G_ntk * G_ntk)) * float(np.sum(Gb * Gb)))
        misdirection = float(np.sum(PtF * PtF)) / denom if denom > 0 else None
        errors = None
    else:
        errors = {}
        for op in OPERATORS:
            value, err = analysis.effective_rank(getattr(lin, op), method="hutch++", n_probes=config.n_probes,
                                                 rng=rng, return_error=True)
            erank[op], errors[op] = float(value), float(err)
        for r in REDUCTIONS:
            d = analysis.effective_dimensions(lin, method="hutchinson", n_probes=config.n_probes, rng=rng,
                                              reduction=r)
            for op in OPERATORS:
                dims[r][op] = {a: float(d[op][a]) for a in AXES}
                oprank[r][op] = {a: None for a in AXES}
        misdirection = float(analysis.misdirection(lin, "hutchinson", n_probes=config.n_probes, rng=rng))
    out = {"effective_rank": erank, "effective_dimensions": dims, "operator_effective_rank": oprank,
           "misdirection": misdirection, "method": method}
    if errors is not None:
        out["effective_rank_error"] = errors
    return out


# --------------------------------------------------------------------- run
def run_id(spec):
    """Folder name of a run: ``<task>_<cell>_g<g>_s<seed>`` (``g`` with 6 significant digits)."""
    spec = _spec(spec)
    return f"{spec['task']}_{spec['cell']}_g{spec['g']:.6g}_s{spec['seed']}"


def run_one(config_dict, spec):
    """Train and summarize one run; returns ``(record, losses, seconds)`` (pure: no file is written).

    Top-level and picklable, so any executor can call it.
    """
    if not isinstance(config_dict, dict):
        raise TypeError(f"config_dict: expected SweepConfig.as_dict(), got {type(config_dict).__name__}")
    config = _config(SweepConfig.from_dict(config_dict))
    spec = _spec(spec)
    t0 = time.perf_counter()
    x, target, mask, _ = task_batch(config, spec["task"], spec["seed"])
    cell = make_cell(spec["cell"], x.shape[2], config.hidden_size)
    probe_rng = np.random.default_rng([spec["seed"], 2])
    theta0 = cell.init_params(np.random.default_rng([spec["seed"], 1]), g=spec["g"],
                              g_convention=config.g_convention)
    marks = checkpoint_schedule(config.steps, config.num_checkpoints)
    trivial = trivial_loss(target, mask)
    checkpoints = []

    def on_checkpoint(ck):
        lin = linearize(cell, ck.theta, x)
        rec = {"step": int(ck.step), "loss": float(ck.loss), "eval_loss": float(ck.eval_loss),
               "trivial_loss": trivial}
        rec.update(checkpoint_summaries(lin, config, probe_rng))
        checkpoints.append(rec)

    kw = train_kwargs(config)
    if config.pool_size is not None:          # the paper's protocol: minibatches from a pool of noisy trials
        px, pt, pm, _ = task_batch(config, spec["task"], spec["seed"], pool=True)
        kw["batch_fn"] = pool_batches(px, pt, pm, batch_size=config.minibatch_size)
    result = train(cell, x, target, mask=mask, theta=theta0, rng=np.random.default_rng([spec["seed"], 1, 1]),
                   checkpoint_steps=marks, callback=on_checkpoint, progress=False, **kw)
    final = checkpoints[-1]
    accuracy = None
    if spec["task"] in ("memory_pro", "multitask"):      # the package's accuracy, on the (noiseless) training batch
        z = simulate(cell, result.theta, x)
        y = z[:, :, : cell.output_size] @ result.readout.w_out.T + result.readout.b_out
        accuracy = _tasks.memory_pro_accuracy(y, target)
    record = {
        "format": _FORMAT,
        "spec": dict(spec),
        "settings_hash": config.settings_hash(),
        "num_params": cell.num_params,
        "shape": [int(s) for s in x.shape[:2]] + [cell.state_size],
        "trivial_loss": trivial,
        "final_loss": final["loss"],
        "final_eval_loss": final["eval_loss"],
        "steps_run": int(len(result.losses) - 1),
        "stop_reason": result.stop_reason,
        # judged on the evaluation batch, the one the trivial loss is of (= the training batch at full batch)
        "did_not_learn": did_not_learn(final["eval_loss"], trivial),
        "accuracy": accuracy,
        "checkpoints": checkpoints,
    }
    return _jsonable(record), np.asarray(result.losses), time.perf_counter() - t0


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


# ----------------------------------------------------------------- storage
def _atomic_bytes(path, data):
    """Write ``data`` atomically (:func:`kpref._atomic.atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(data))


def _record_bytes(record):
    return json.dumps(record, indent=1, sort_keys=True, allow_nan=False).encode()


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _versions():
    import numba
    import scipy

    from .. import __version__

    return {"kpref": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "numba": numba.__version__}


def write_run(out, config, spec, record, losses, seconds, executor):
    """Write one run's folder: data files first, the manifest last (each atomically)."""
    folder = os.path.join(out, "runs", run_id(spec))
    os.makedirs(folder, exist_ok=True)
    files = {"record.json": _record_bytes(record), "losses.npy": _npy_bytes(losses)}
    for name, data in files.items():
        _atomic_bytes(os.path.join(folder, name), data)
    manifest = {"format": _FORMAT, "spec": spec, "run_id": run_id(spec), "settings_hash": config.settings_hash(),
                "settings": config.run_settings(),
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                "seconds": seconds, "executor": executor, "versions": _versions()}
    _atomic_bytes(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return folder


def _is_complete(folder, config):
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format") != _FORMAT or manifest.get("settings_hash") != config.settings_hash():
            return False
        for name, digest in manifest["files"].items():
            if file_sha256(os.path.join(folder, name)) != digest:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def completed_runs(config, out):
    """``{run id: record}`` of the complete runs of this config in ``out``."""
    config = _config(config)
    if isinstance(out, bytes) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out: expected a folder path (str or os.PathLike), got {type(out).__name__}")
    done = {}
    for spec in config.runs():
        folder = os.path.join(out, "runs", run_id(spec))
        if _is_complete(folder, config):
            with open(os.path.join(folder, "record.json"), encoding="utf-8") as f:
                done[run_id(spec)] = json.load(f)
    return done


# --------------------------------------------------------------- executors
def _run_local(config_dict, pending, jobs):
    for index, result in run_local(run_one, [(config_dict, spec) for spec in pending], jobs):
        yield pending[index], result


def _run_dask(config_dict, pending, scheduler):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ValueError("--scheduler: needs dask.distributed (pip install 'kpref[dask]')") from None
    with Client(scheduler, set_as_default=False) as client:
        futures = {}
        for spec in pending:
            fut = client.submit(run_one, config_dict, spec, key=f"kpref-run-{run_id(spec)}-{os.getpid()}",
                                pure=False)
            futures[fut.key] = (fut, spec)
        for fut in as_completed([f for f, _ in futures.values()]):
            yield futures[fut.key][1], fut.result()


def run_sweep(config, out, *, jobs=1, scheduler=None, log=None, figures=True):
    """Run the missing or incomplete runs of a sweep and rewrite its table and figures.

    Returns ``{"executed": [run ids], "skipped": [run ids], "records": {run id: record}, "seconds"}``.
    """
    config = config.checked()
    jobs = check_positive_int("jobs", jobs)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    _atomic_bytes(os.path.join(out, "sweep.json"),
                  json.dumps({"config": config.as_dict(), "settings_hash": config.settings_hash()},
                             indent=1, sort_keys=True).encode())
    t0 = time.perf_counter()
    done = completed_runs(config, out)
    pending = [s for s in config.runs() if run_id(s) not in done]
    for spec in pending:                                        # clear incomplete folders
        folder = os.path.join(out, "runs", run_id(spec))
        if os.path.isdir(folder):
            shutil.rmtree(folder)
    if log is not None:
        print(f"sweep: {len(config.runs())} runs, {len(done)} complete, {len(pending)} to run "
              f"({'dask ' + scheduler if scheduler else f'{jobs} local process(es)'})", file=log, flush=True)
    executed = []
    config_dict = config.as_dict()
    stream = (_run_dask(config_dict, pending, scheduler) if scheduler
              else _run_local(config_dict, pending, jobs))
    executor = f"dask:{scheduler}" if scheduler else f"local:{jobs}"
    for spec, (record, losses, seconds) in stream:
        write_run(out, config, spec, record, losses, seconds, executor)
        executed.append(run_id(spec))
        if log is not None:
            c0, c1 = record["checkpoints"][0], record["checkpoints"][-1]
            flag = "  did not learn" if record["did_not_learn"] else ""
            print(f"[{len(done) + len(executed)}/{len(config.runs())}] {run_id(spec)}: eval loss "
                  f"{c0['eval_loss']:.3g} -> {c1['eval_loss']:.3g} (trivial {record['trivial_loss']:.3g}); erank K {c1['effective_rank']['K']:.3g}"
                  f" ({seconds:.1f} s){flag}", file=log, flush=True)
    records = completed_runs(config, out)
    rows = summary_rows(config, records)
    _write_table(out, rows)
    summary = {"settings_hash": config.settings_hash(), "rows": rows,
               "did_not_learn": sorted(r for r, rec in records.items() if rec["did_not_learn"]),
               "num_runs": len(records), "seconds_this_call": time.perf_counter() - t0}
    _atomic_bytes(os.path.join(out, "summary.json"),
                  json.dumps(_jsonable(summary), indent=1, sort_keys=True, allow_nan=False).encode())
    if figures and records:
        write_figures(config, rows, out)
    return {"executed": executed, "skipped": sorted(done), "records": records,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------- table, figures
def _metrics(ck):
    """Flat ``{name: value}`` of one checkpoint's headline numbers."""
    m = {"loss": ck["loss"], "eval_loss": ck["eval_loss"], "misdirection": ck["misdirection"]}
    for op in OPERATORS:
        m[f"erank_{op}"] = ck["effective_rank"][op]
    for r, short in (("partial_trace", "pt"), ("marginal", "mg")):
        for op in OPERATORS:
            for a in AXES:
                m[f"effdim_{short}_{op}_{a}"] = ck["effective_dimensions"][r][op][a]
                m[f"oprank_{short}_{op}_{a}"] = ck["operator_effective_rank"][r][op][a]
    return m


def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0, int(arr.size)


def summary_rows(config, records):
    """One row per (task, cell, g): mean and standard deviation over seeds, at the first and last checkpoint."""
    config = _config(config)
    if not isinstance(records, dict):
        raise TypeError(f"records: expected a dict run id -> record (completed_runs), got {type(records).__name__}")
    rows = []
    for task in config.tasks:
        for cell in config.cells:
            for g in config.gains:
                recs = [records[run_id({"task": task, "cell": cell, "g": float(g), "seed": int(s)})]
                        for s in config.seeds
                        if run_id({"task": task, "cell": cell, "g": float(g), "seed": int(s)}) in records]
                if not recs:
                    continue
                row = {"task": task, "cell": cell, "g": float(g), "n_seeds": len(recs),
                       "trivial_loss": _mean_std([r["trivial_loss"] for r in recs])[0],
                       "did_not_learn": sum(r["did_not_learn"] for r in recs)}
                for when, idx in (("first", 0), ("last", -1)):
                    metrics = [_metrics(r["checkpoints"][idx]) for r in recs]
                    for name in metrics[0]:
                        mean, std, _ = _mean_std([m[name] for m in metrics])
                        row[f"{name}_{when}"] = mean
                        row[f"{name}_{when}_std"] = std
                rows.append(row)
    return rows


def _write_table(out, rows):
    if not rows:
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    _atomic_bytes(os.path.join(out, "table.csv"), buf.getvalue().encode())


def write_figures(config, rows, out):
    """``effective_ranks_vs_g.png`` and ``effective_dimensions_vs_g.png`` (mean ± std over seeds)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    config = _config(config)
    rows = _rows(rows)
    if isinstance(out, bytes) or not isinstance(out, (str, os.PathLike)) or not os.path.isdir(out):
        raise ValueError(f"out: expected an existing folder, got {out!r:.100}")
    gains = sorted(float(g) for g in config.gains)

    def panel_fig(panels, name, log_y=()):
        groups = [(t, c) for t in config.tasks for c in config.cells]
        fig = Figure(figsize=(3.0 * len(panels), 2.6 * len(groups)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = np.atleast_2d(fig.subplots(len(groups), len(panels), squeeze=False))
        for i, (task, cell) in enumerate(groups):
            sel = sorted((r for r in rows if r["task"] == task and r["cell"] == cell), key=lambda r: r["g"])
            for j, (keys, title) in enumerate(panels):
                ax = axes[i, j]
                for key, style, label in keys:
                    for when, alpha in (("first", 0.45), ("last", 1.0)):
                        pts = [(r["g"], r[f"{key}_{when}"], r[f"{key}_{when}_std"] or 0.0) for r in sel
                               if r.get(f"{key}_{when}") is not None]
                        if not pts:
                            continue
                        g, m, s = (np.array(v, dtype=float) for v in zip(*pts))
                        ax.errorbar(g, m, yerr=s, fmt=style, alpha=alpha, ms=3, capsize=2,
                                    label=f"{label} ({'init' if when == 'first' else 'trained'})")
                ax.set_xscale("log")
                ax.set_xticks(gains, [f"{g:.3g}" for g in gains])
                ax.xaxis.set_minor_formatter(NullFormatter())
                if j in log_y:
                    ax.set_yscale("log")
                ax.set_xlabel("g", fontsize=8)
                ax.set_title(f"{task} {cell}: {title}", fontsize=8)
                ax.tick_params(labelsize=7)
                if i == 0:
                    ax.legend(fontsize=6)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        _atomic_bytes(os.path.join(out, name), buf.getvalue())

    panel_fig([([(f"erank_{op}", "o-", op)], f"effective rank {op}") for op in OPERATORS]
              + [([("misdirection", "s-", "cos(NTK, PP*)")], "misdirection")], "effective_ranks_vs_g.png",
              log_y=(0, 1, 2))
    panel_fig([([(f"effdim_pt_{op}_{a}", "o-", "partial trace"), (f"effdim_mg_{op}_{a}", "s--", "marginal")],
                f"effdim {op}, {a}") for op in ("K", "NTK") for a in ("time", "hidden")],
              "effective_dimensions_vs_g.png")


# -------------------------------------------------------------------- CLI
def _parse_gains(text):
    text = text.strip()
    if text.startswith("log:"):
        parts = text[4:].split(",")
        if len(parts) != 3:
            raise ValueError(f"--g: expected log:LOW,HIGH,N, got {text!r}")
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"--g: expected log:LOW,HIGH,N with numbers, got {text!r}") from None
        if not (lo > 0 and hi > lo and n >= 2):
            raise ValueError(f"--g: expected 0 < LOW < HIGH and N >= 2, got {text!r}")
        return tuple(float(g) for g in np.round(np.logspace(math.log10(lo), math.log10(hi), n), 8))
    from ._report import _parse_float, _parse_list

    return _parse_list("--g", text, _parse_float)


def add_arguments(parser):
    """Add the ``sweep`` options to an ``argparse`` (sub)parser."""
    parser.add_argument("--quick", action="store_true", help="small sizes (H=12, 120 steps, 3 gains, 2 seeds)")
    parser.add_argument("--out", default="kpref-sweep", help="output directory (default kpref-sweep)")
    parser.add_argument("--cells", default=None, help="comma-separated cells (default gru,elman)")
    parser.add_argument("--g", default=None, help="gains: a comma-separated list or log:LOW,HIGH,N")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick 0,1)")
    parser.add_argument("--tasks", default=None, help=f"comma-separated tasks from {','.join(SWEEP_TASKS)}")
    parser.add_argument("--hidden", default=None, help="hidden size H (default 256)")
    parser.add_argument("--batch", default=None, help="trials per batch B (default 20)")
    parser.add_argument("--steps", default=None, help="training steps (default 1000)")
    parser.add_argument("--checkpoints", default=None,
                        help="checkpoints summarized per run, first and last steps included (default 6, "
                             "at most steps + 1)")
    parser.add_argument("--lr", default=None, help="learning rate (default 0.01)")
    parser.add_argument("--g-convention", default=None, help="kpflow (default) or gaussian")
    parser.add_argument("--optimizer", default=None, help="adam (default), sgd or gd")
    parser.add_argument("--momentum", default=None, help="SGD momentum in [0, 1) (default 0)")
    parser.add_argument("--clip-grad-norm", default=None, help="clip the gradient's global 2-norm to this")
    parser.add_argument("--loss-tolerance", default=None, help="stop a run once its training loss is <= this")
    parser.add_argument("--pool-size", default=None,
                        help="minibatch protocol: noisy trials in the pool (with --batch-size; the paper: 5000)")
    parser.add_argument("--batch-size", default=None,
                        help="minibatch protocol: trials drawn from the pool per step (the paper: 500); "
                             "--batch is then the fixed evaluation batch")
    parser.add_argument("--pool-noise", default=None, help="input noise of the pool's trials (default 0.1*sqrt(2))")
    parser.add_argument("--method", default="auto", help="auto, exact or randomized summaries")
    parser.add_argument("--jobs", default="1", help="local worker processes (default 1)")
    parser.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a Dask scheduler")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def config_from_args(args):
    from ._report import _parse_float, _parse_int, _parse_list

    base = SweepConfig.quick() if args.quick else SweepConfig()
    o = {"method": args.method}
    if args.cells is not None:
        o["cells"] = _parse_list("--cells", args.cells, lambda n, s: s.lower())
    if args.g is not None:
        o["gains"] = _parse_gains(args.g)
    if args.seeds is not None:
        o["seeds"] = _parse_list("--seeds", args.seeds, _parse_int)
    if args.tasks is not None:
        o["tasks"] = _parse_list("--tasks", args.tasks, lambda n, s: s)
    if args.hidden is not None:
        o["hidden_size"] = _parse_int("--hidden", args.hidden)
    if args.batch is not None:
        o["batch_size"] = _parse_int("--batch", args.batch)
    if args.steps is not None:
        o["steps"] = _parse_int("--steps", args.steps)
        o["num_checkpoints"] = min(base.num_checkpoints, o["steps"] + 1)
    if args.checkpoints is not None:
        o["num_checkpoints"] = _parse_int("--checkpoints", args.checkpoints)
    if args.lr is not None:
        o["learning_rate"] = _parse_float("--lr", args.lr)
    if args.g_convention is not None:
        o["g_convention"] = args.g_convention
    if args.optimizer is not None:
        o["optimizer"] = args.optimizer
    def nonneg(flag, text):                   # 0 allowed (no momentum, noiseless pool); range checked by the config
        try:
            return 0.0 if float(text) == 0.0 else _parse_float(flag, text)
        except ValueError:
            raise ValueError(f"{flag}: expected a finite number >= 0, got {text!r}") from None

    for attr, fld, flag, parse in (("momentum", "momentum", "--momentum", nonneg),
                                   ("clip_grad_norm", "clip_grad_norm", "--clip-grad-norm", _parse_float),
                                   ("loss_tolerance", "loss_tolerance", "--loss-tolerance", _parse_float),
                                   ("pool_size", "pool_size", "--pool-size", _parse_int),
                                   ("batch_size", "minibatch_size", "--batch-size", _parse_int),
                                   ("pool_noise", "pool_noise_std", "--pool-noise", nonneg)):
        if getattr(args, attr) is not None:
            o[fld] = parse(flag, getattr(args, attr))
    try:
        return replace(base, **o).checked()
    except (ValueError, TypeError) as err:
        msg = str(err)
        for fld, opt in (("minibatch_size", "--batch-size"), ("pool_size", "--pool-size"),
                         ("pool_noise_std", "--pool-noise"), ("clip_grad_norm", "--clip-grad-norm"),
                         ("loss_tolerance", "--loss-tolerance"), ("momentum", "--momentum"),
                         ("optimizer", "--optimizer"), ("hidden_size/batch_size/steps", "--hidden/--batch/--steps"),
                         ("hidden_size", "--hidden"), ("batch_size", "--batch"), ("learning_rate", "--lr"),
                         ("g_convention", "--g-convention"), ("cells[", "--cells["), ("g[", "--g["),
                         ("seeds[", "--seeds["), ("tasks[", "--tasks["), ("steps", "--steps"),
                         ("num_checkpoints", "--checkpoints"), ("method", "--method")):
            if msg.startswith(fld):
                msg = opt + msg[len(fld):]
                break
        raise ValueError(msg) from None


def main(args, *, stdout=None, stderr=None):
    """Handle parsed ``sweep`` arguments. Returns the exit status."""
    from ._report import _parse_int, check_writable

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        config = config_from_args(args)
        jobs = _parse_int("--jobs", args.jobs)
        check_positive_int("--jobs", jobs)
        if args.scheduler is not None and not args.scheduler.startswith(("tcp://", "tls://", "inproc://")):
            raise ValueError(f"--scheduler: expected tcp://HOST:PORT, got {args.scheduler!r}")
        out = check_writable(args.out)
    except (ValueError, TypeError) as err:
        print(f"kpref sweep: error: {err}", file=stderr)
        return 2
    try:
        result = run_sweep(config, out, jobs=jobs, scheduler=args.scheduler, log=None if args.quiet else stderr)
    except ValueError as err:
        if str(err).startswith("--scheduler"):
            print(f"kpref sweep: error: {err}", file=stderr)
            return 2
        raise
    rows = summary_rows(config, result["records"])
    print(summary_table(rows), file=stdout)
    print(f"wrote {len(result['records'])} runs ({len(result['executed'])} this call) and the table in {out} "
          f"({result['seconds']:.0f} s)", file=stdout)
    return 0


def markdown_table(rows, when="last"):
    """A Markdown table of the summary rows (mean ± std over seeds) at the first or last checkpoint."""
    rows = _rows(rows)
    check_choice("when", when, ("first", "last"))
    def f(r, key):
        m, sd = r.get(f"{key}_{when}"), r.get(f"{key}_{when}_std")
        return "n/a" if m is None else (f"{m:.3g}" if not sd else f"{m:.3g} ± {sd:.2g}")

    cols = [("eval loss", "eval_loss"), ("erank K", "erank_K"), ("erank P", "erank_P"), ("erank NTK", "erank_NTK"),
            ("misdir.", "misdirection")]
    for op in ("K", "NTK"):
        for a in AXES:
            cols.append((f"dim {op} {a} pt", f"effdim_pt_{op}_{a}"))
            cols.append((f"dim {op} {a} mg", f"effdim_mg_{op}_{a}"))
    head = ["task", "cell", "g", "seeds", "trivial"] + [c for c, _ in cols] + ["did not learn"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [r["task"], r["cell"], f"{r['g']:.3g}", str(r["n_seeds"]), f"{r['trivial_loss']:.3g}"]
        vals += [f(r, key) for _, key in cols] + [f"{r['did_not_learn']}/{r['n_seeds']}"]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def summary_table(rows):
    """Text table: mean ± std over seeds of the trained values, both effective-dimension definitions."""
    rows = _rows(rows)
    def f(r, key):
        m, s = r.get(key), r.get(key + "_std")
        return "n/a" if m is None else (f"{m:.3g}" if not s else f"{m:.3g}±{s:.2g}")

    head = ("task", "cell", "g", "seeds", "eval loss", "trivial", "erank K", "erank P", "erank NTK",
            "dim_t K pt", "dim_t K mg", "dim_h K pt", "dim_h K mg", "dim_b K pt", "dim_b K mg", "flag")
    lines = []
    for r in rows:
        flag = f"did not learn ({r['did_not_learn']}/{r['n_seeds']})" if r["did_not_learn"] else ""
        lines.append((r["task"], r["cell"], f"{r['g']:.3g}", str(r["n_seeds"]), f(r, "eval_loss_last"),
                      f"{r['trivial_loss']:.3g}", f(r, "erank_K_last"), f(r, "erank_P_last"),
                      f(r, "erank_NTK_last"), f(r, "effdim_pt_K_time_last"), f(r, "effdim_mg_K_time_last"),
                      f(r, "effdim_pt_K_hidden_last"), f(r, "effdim_mg_K_hidden_last"),
                      f(r, "effdim_pt_K_batch_last"), f(r, "effdim_mg_K_batch_last"), flag))
    widths = [max(len(h), *(len(x[i]) for x in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in lines]
    out.append("(trained values, mean±std over seeds; pt: partial trace (kpref), mg: marginal sum (KPFlow); "
               "eval loss: on the fixed evaluation batch (the training batch at full batch); did not learn: final eval "
               "loss ≥ 0.5 × trivial)")
    return "\n".join(out)

r"""Multitask interference (the KPFlow papers' second application): sub-task blocks, cumulative alignment,
the transition point, and a driver for many runs.

Notes
-----
Trials of ``R`` sub-tasks share one batch; ``Π_a`` keeps the trials of
sub-task ``a`` (zero elsewhere), ``e = ∂L/∂z`` is the error signal.

**Interference matrix.** For ``X = K`` or ``X = NTK`` the sub-task blocks
``Π_a X Π_b`` say how much a gradient step on the trials of ``b`` moves the
trials of ``a``. :func:`interference_matrix` returns
``I[a, b] = ‖Π_a X Π_b‖_F²`` and its normalized form
``I[a, b] / √(I[a, a] I[b, b])``. Exact, from the dense factor ``F``
(``X = F Fᵀ``, ``F = J_θ`` or ``P J_θ``): ``‖Π_a F Fᵀ Π_b‖_F² = ⟨G_a, G_b⟩``
with ``G_a = (Π_a F)ᵀ (Π_a F)``; randomized: Hutchinson with ``n_probes``
Gaussian probes supported on the trials of ``b``,
``E ‖Π_a X Π_b ω‖² = ‖Π_a X Π_b‖_F²``.

**Cumulative alignment.** Under gradient flow the trajectory moves by
``dz/dτ = −NTK e = Σ_a δz_a`` with ``δz_a = −NTK Π_a e`` the component due
to sub-task ``a`` (SPEC §4). :func:`cumulative_alignment_callback` gives a
training callback that, at every step ``k`` (``checkpoint_every=1``),
computes the ``R`` components with one NTK product of ``R`` columns,
accumulates ``C_a^{(k)} = Σ_{j≤k} δz_a^{(j)}`` and records
``A^{(k)}[a, b] = cos(C_a^{(k)}, C_b^{(k)})`` and the per-step
``cos(δz_a^{(k)}, δz_b^{(k)})``. (With Adam the actual step is not the
gradient-flow step: the components are those of the flow at the current
parameters, which is what the papers track.)

**Transition point.** :func:`transition_point` fits one change of level to a
series ``s_0 … s_{n−1}`` (least squares over every split ``1 ≤ k < n`` into
two constant pieces) and returns the split ``k``, the two levels and
``gain = 1 − SSE_split / SSE_total`` (the fraction of the variance a change
at ``k`` explains). A series without a change has a small gain; the caller
decides the threshold (default reported as ``detected`` when ``gain ≥ 0.5``).

**Driver.** :func:`run_interference` trains one network per seed on the
multitask (sweep settings, :class:`kpref.experiments.sweep.SweepConfig`),
tracks the cumulative alignment at every step, and reports the transition
point of the mean off-diagonal cumulative alignment, on local processes
(``jobs``) like the sweep; the KPFlow paper runs 20 networks.
"""

from __future__ import annotations

import numpy as np

from .._checks import (as_generator, as_real_array, check_choice, check_positive_float, check_positive_int,
                       check_size_memory, readonly_copy)
from ..cells import Cell
from ..operators import check_mask
from ..operators._linearization import Linearization, linearize, mse_loss
from ..training._train import train
from ._experiments import checkpoint_schedule, make_cell
from ._sweep import SweepConfig, task_batch, train_kwargs, trivial_loss

__all__ = ["interference_matrix", "subtask_components", "cumulative_alignment_callback", "transition_point",
           "run_interference_one", "run_interference"]


def _check_rule(rule, B):
    rule = np.asarray(rule)
    if rule.shape != (B,) or rule.dtype.kind not in "iu":
        raise ValueError(f"rule: expected ({B},) integer sub-task indices, got shape {rule.shape} dtype {rule.dtype}")
    R = int(rule.max()) + 1
    if rule.min() < 0 or len(np.unique(rule)) != R:
        raise ValueError(f"rule: expected every index 0 … R−1 present, got {np.unique(rule)}")
    return rule, R


def _check_lin(lin):
    if not isinstance(lin, Linearization):
        raise TypeError(f"lin: expected a kpref Linearization (from kpref.linearize), got {type(lin).__name__}")
    return lin


def interference_matrix(lin, rule, operator="K", method="exact", n_probes=None, rng=None):
    """``I[a, b] = ‖Π_a X Π_b‖_F²`` for ``X`` = ``K`` or ``NTK`` and its normalized form (module notes).

    Returns ``(I, I_normalized)``, both (R, R).
    """
    B = _check_lin(lin).shape[0]
    rule, R = _check_rule(rule, B)
    check_choice("operator", operator, ("K", "NTK"))
    check_choice("method", method, ("exact", "hutchinson"))
    if method == "exact":
        F = lin.J_theta.matmat(np.eye(lin.num_params))
        if operator == "NTK":
            F = lin.P.matmat(F)
        F = F.reshape(B, -1, lin.num_params)
        grams = [np.einsum("bik,bil->kl", F[rule == a], F[rule == a], optimize=True) for a in range(R)]
        I = np.array([[float(np.sum(grams[a] * grams[b])) for b in range(R)] for a in range(R)])
    else:
        n_probes = check_positive_int("n_probes", 30 if n_probes is None else n_probes)
        check_size_memory(f"n_probes={n_probes}", 2 * 8 * lin.size * n_probes, what="the probe blocks")
        rng = as_generator(rng)
        X = getattr(lin, operator)
        I = np.zeros((R, R))
        for b in range(R):
            Z = rng.standard_normal(lin.shape + (n_probes,))
            Z[rule != b] = 0.0
            Y = X.matmat(Z.reshape(lin.size, n_probes)).reshape(lin.shape + (n_probes,))
            for a in range(R):
                I[a, b] = float(np.sum(Y[rule == a] ** 2)) / n_probes
        I = 0.5 * (I + I.T)              # ‖Π_a X Π_b‖_F = ‖Π_b X Π_a‖_F for symmetric X
    d = np.sqrt(np.diag(I))
    with np.errstate(divide="ignore", invalid="ignore"):
        N = np.where(np.outer(d, d) > 0, I / np.outer(d, d), 0.0)
    return I, N


def subtask_components(lin, e, rule):
    """``δz_a = −NTK Π_a e`` for every sub-task: (R, B, T, S), one NTK product with ``R`` columns."""
    B = _check_lin(lin).shape[0]
    e = as_real_array("e", e, lin.shape, ("B", "T", "S"))
    rule, R = _check_rule(rule, B)
    E = np.zeros(lin.shape + (R,))
    for a in range(R):
        E[rule == a, ..., a] = e[rule == a]
    Y = -lin.NTK.matmat(E.reshape(lin.size, R))
    return np.moveaxis(Y.reshape(lin.shape + (R,)), -1, 0)


def _cos_matrix(V):
    flat = V.reshape(V.shape[0], -1)
    n = np.linalg.norm(flat, axis=1)
    G = flat @ flat.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.outer(n, n) > 0, G / np.outer(n, n), 0.0)


class cumulative_alignment_callback:
    """A :func:`kpref.train` callback accumulating the sub-task components every step (module notes).

    Use with ``checkpoint_every=1``. After training: ``steps`` (k), ``cumulative`` (n, R, R),
    ``per_step`` (n, R, R) and ``subtask_loss`` (n, R).
    """

    def __init__(self, cell, x, target, mask, rule):
        # checked as kpref.train checks them (the callback linearizes and evaluates the loss on them each step);
        # copies it owns, so a caller changing its arrays during training changes nothing here
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
        x = as_real_array("x", x, (None, None, cell.input_size), ("B", "T", "N"))
        target = as_real_array("target", target, (x.shape[0], x.shape[1], None), ("B", "T", "O"))
        mask = check_mask(mask, *target.shape)
        self.cell, self.x, self.target = cell, readonly_copy(x), readonly_copy(target)
        self.mask = None if mask is None else readonly_copy(mask)
        self.rule, self.R = _check_rule(rule, x.shape[0])
        self.C = None
        self.steps, self.cumulative, self.per_step, self.subtask_loss = [], [], [], []

    def __call__(self, ck):
        lin = linearize(self.cell, ck.theta, self.x)
        loss = mse_loss(lin.z, self.target, ck.readout.w_out, ck.readout.b_out, mask=self.mask, cell=self.cell)
        dz = subtask_components(lin, loss.e, self.rule)
        self.C = dz.copy() if self.C is None else self.C + dz
        self.steps.append(int(ck.step))
        self.cumulative.append(_cos_matrix(self.C))
        self.per_step.append(_cos_matrix(dz))
        m = np.ones(self.target.shape) if self.mask is None else np.repeat(self.mask[:, :, None],
                                                                           self.target.shape[2], axis=2)
        sq = m * (loss.y - self.target) ** 2 / self.target.size
        self.subtask_loss.append([float(np.sum(sq[self.rule == a])) for a in range(self.R)])

    def result(self):
        return {"steps": np.array(self.steps), "cumulative": np.array(self.cumulative),
                "per_step": np.array(self.per_step), "subtask_loss": np.array(self.subtask_loss)}


def transition_point(series, *, threshold=0.5):
    """One change of level in ``series`` (module notes): ``{'index', 'before', 'after', 'gain', 'detected'}``."""
    s = as_real_array("series", series, (None,))
    if s.size < 3:
        raise ValueError(f"series: expected a 1-D series of at least 3 values, got shape {s.shape}")
    threshold = check_positive_float("threshold", threshold, upper=1.0)
    n = s.size
    c1, c2 = np.cumsum(s), np.cumsum(s * s)
    k = np.arange(1, n)
    left_sse = c2[k - 1] - c1[k - 1] ** 2 / k
    right_n = n - k
    right_sum = c1[-1] - c1[k - 1]
    right_sse = (c2[-1] - c2[k - 1]) - right_sum**2 / right_n
    sse = left_sse + right_sse
    best = int(np.argmin(sse))
    total = float(c2[-1] - c1[-1] ** 2 / n)
    gain = 1.0 - float(sse[best]) / total if total > 0 else 0.0
    idx = int(k[best])
    return {"index": idx, "before": float(c1[idx - 1] / idx), "after": float(right_sum[best] / right_n[best]),
            "gain": gain, "detected": bool(gain >= threshold)}


def run_interference_one(config_dict, seed, cell_name="gru", g=1.0):
    """Train one multitask network with the cumulative-alignment callback; returns a JSON-ready record."""
    config = SweepConfig.from_dict(config_dict)
    x, target, mask, rule = task_batch(config, "multitask", seed)
    cell = make_cell(cell_name, x.shape[2], config.hidden_size)
    theta = cell.init_params(np.random.default_rng([int(seed), 1]), g=g, g_convention=config.g_convention)
    cb = cumulative_alignment_callback(cell, x, target, mask, rule)
    kw = train_kwargs(config)
    res = train(cell, x, target, mask=mask, theta=theta, rng=np.random.default_rng([int(seed), 1, 1]),
                checkpoint_every=1, callback=cb, progress=False, **kw)
    out = cb.result()
    R = out["cumulative"].shape[1]
    off = ~np.eye(R, dtype=bool)
    series = out["cumulative"][:, off].mean(axis=1)
    tp = transition_point(series)
    lin = linearize(cell, res.theta, x)
    method = "exact" if lin.size * lin.num_params * 8 * 3 <= config.dense_limit else "hutchinson"
    rng_p = np.random.default_rng([int(seed), 2])
    I_K, N_K = interference_matrix(lin, rule, "K", method, n_probes=config.n_probes if method != "exact" else None,
                                   rng=rng_p)
    I_N, N_N = interference_matrix(lin, rule, "NTK", method,
                                   n_probes=config.n_probes if method != "exact" else None, rng=rng_p)
    return {"seed": int(seed), "cell": cell_name, "g": float(g), "losses": res.losses.tolist(),
            "trivial_loss": trivial_loss(target, mask), "mean_cumulative_alignment": series.tolist(),
            "transition": tp, "final_interference_K": N_K.tolist(), "final_interference_NTK": N_N.tolist(),
            "subtask_loss": out["subtask_loss"].tolist(), "method": method}


def run_interference(config, seeds=tuple(range(20)), *, cell_name="gru", g=1.0, jobs=1):
    """The 20-run driver (module notes): one :func:`run_interference_one` per seed, on ``jobs`` processes.

    With ``jobs > 1`` the processes are spawned: call it from a script under ``if __name__ == "__main__":``.
    Measured here (loaded 2-core machine): 20 GRU runs, H = 12, B = 8, 200 steps, ``jobs=2``: 330 s.
    """
    config = config.checked()
    jobs = check_positive_int("jobs", jobs)
    cd = config.as_dict()
    if jobs == 1:
        return [run_interference_one(cd, s, cell_name, g) for s in seeds]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_interference_one, [cd] * len(seeds), list(seeds), [cell_name] * len(seeds),
                             [g] * len(seeds)))

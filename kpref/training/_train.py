r"""Training a cell and its linear readout with kpref's own gradients (SPEC §4).

Notes
-----
The model is a cell ``h_t = F(h_{t-1}, x_t; θ)`` and a readout
``y = z_r W_outᵀ + b_out`` (``z_r`` the first ``cell.output_size`` state
entries). The loss is :func:`kpref.mse_loss` (``torch.nn.MSELoss`` semantics,
optional mask). Every gradient is kpref's own:

* ``∇_θ L = J_θᵀ P* e`` — :meth:`Linearization.grad` of the error signal
  ``e = ∂L/∂z`` (backpropagation through time as the adjoint recursion,
  exact for the discrete recurrence);
* ``∇_{W_out} L`` and ``∇_{b_out} L`` — from :func:`kpref.mse_loss`.

The parameters are one flat vector ``φ = [θ, vec(W_out), b_out]`` (C order),
updated by an optimizer of :mod:`kpref.training` (:class:`GD`, :class:`SGD`
with momentum, :class:`Adam`; ``torch.optim``'s definitions, written out in
their docstrings), after optional global-norm clipping of ``∇L`` over the
cell's parameter blocks and the readout (``torch.nn.utils.clip_grad_norm_``).

Update ``k`` uses batch ``k``: the fixed ``(x, target, mask)`` (full batch), or
``batch_fn(rng_k, k)`` (minibatches, :mod:`kpref.training` Notes).
``losses[k]`` is the loss at the parameters after ``k`` updates on batch
``k``, ``k = 0 … last``.

Checkpoints and run folders (manifest, atomic writes, validation) are
described in :mod:`kpref.training` (Run folders); resuming from a checkpoint
repeats exactly the arithmetic of an uninterrupted run, so the result is
bitwise identical, minibatch stream included.
"""

from __future__ import annotations

import json
import numbers
import os
import sys
import time
from typing import NamedTuple

import numpy as np

from .._checks import (DEFAULT_MEMORY_LIMIT, as_generator, as_real_array, check_choice, check_positive_float,
                       check_positive_int, check_real, check_size_memory)
from ..cells._cell import Cell
from ..cells._simulate import _run, check_problem
from ..operators import check_mask, linearize, mse_loss
from ._batches import fingerprint as _fingerprint, trivial_loss
from ._checkpoint import Checkpoint, Readout, _differences, _load, claim_run_dir, load_run, save_checkpoint
from ._optim import adam_update, make_optimizer
from ._optim import clip_grad_norm as _clip_grad_norm

__all__ = [
    "Readout",
    "Checkpoint",
    "TrainResult",
    "GradientResult",
    "init_readout",
    "loss_and_gradient",
    "train",
    "adam_update",
]


class TrainResult(NamedTuple):
    """Result of :func:`train`.

    ``theta`` and ``readout`` after the last update; ``losses`` (last + 1,),
    the training loss after ``k`` updates on batch ``k``; ``checkpoints``
    (list of :class:`Checkpoint`, in step order, including step 0 — or the
    resumed step — and the last step); ``config`` (the run's identity, as in
    the manifest); ``eval_loss`` (on the evaluation batch at the last step);
    ``trivial_loss`` (the batch-mean predictor's loss on the evaluation batch,
    :func:`kpref.training.trivial_loss`); ``stop_reason``: ``'steps'`` or
    ``'loss_tolerance'``.
    """

    theta: np.ndarray
    readout: Readout
    losses: np.ndarray
    checkpoints: list
    config: dict
    eval_loss: float = float("nan")
    trivial_loss: float = float("nan")
    stop_reason: str = "steps"


class GradientResult(NamedTuple):
    """Result of :func:`loss_and_gradient`."""

    loss: float
    grad_theta: np.ndarray
    grad_w_out: np.ndarray
    grad_b_out: np.ndarray
    lin: object


def init_readout(cell, output_size, rng=None):
    """Draw a readout as ``torch.nn.Linear`` does: every entry ``U(-1/√R, 1/√R)``, ``R = cell.output_size``.

    ``w_out`` (O·R uniforms) is drawn before ``b_out`` (O uniforms).
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell, got {type(cell).__name__}")
    O = check_positive_int("output_size", output_size)
    rng = as_generator(rng)
    R = cell.output_size
    check_size_memory(f"output_size={O}", 8 * O * (R + 1), what="the readout (O, R) and (O,)")
    bound = 1.0 / np.sqrt(R)
    w_out = rng.uniform(-bound, bound, size=(O, R))
    b_out = rng.uniform(-bound, bound, size=O)
    return Readout(w_out, b_out)


def _check_readout(cell, readout, O):
    if not isinstance(readout, tuple) or len(readout) != 2:
        raise TypeError(f"readout: expected a kpref.Readout(w_out, b_out), got {type(readout).__name__}")
    w = as_real_array("readout.w_out", readout[0], (O, cell.output_size), ("O", "R"))
    b = as_real_array("readout.b_out", readout[1], (O,), ("O",))
    return Readout(w, b)


def _loss_and_gradient(cell, theta, readout, x, target, mask, h0, reduction):
    lin = linearize(cell, theta, x, h0, strategy="matrix_free")
    loss = mse_loss(lin.z, target, readout.w_out, readout.b_out, mask=mask, reduction=reduction, cell=cell)
    return GradientResult(loss.value, lin.grad(loss.e), loss.grad_w_out, loss.grad_b_out, lin)


def loss_and_gradient(cell, theta, readout, x, target, *, mask=None, h0=None, reduction="mean"):
    """The loss and every gradient, as :func:`train` computes them at each step.

    Returns
    -------
    GradientResult
        ``loss`` (float), ``grad_theta = lin.grad(e)`` (p,), ``grad_w_out``
        (O, R), ``grad_b_out`` (O,) and ``lin``, the :class:`Linearization`
        at ``theta``.
    """
    theta, x, h0 = check_problem(cell, theta, x, h0)
    B, T, _ = x.shape
    target = as_real_array("target", target, (B, T, None), ("B", "T", "O"))
    readout = _check_readout(cell, readout, target.shape[2])
    mask = check_mask(mask, B, T, target.shape[2])
    check_choice("reduction", reduction, ("mean", "sum"))
    return _loss_and_gradient(cell, theta, readout, x, target, mask, h0, reduction)


# ------------------------------------------------------------------ helpers
def _cell_config(cell):
    return {
        "class": type(cell).__name__,
        "repr": repr(cell),
        "input_size": cell.input_size,
        "hidden_size": cell.hidden_size,
        "state_size": cell.state_size,
        "output_size": cell.output_size,
        "param_shapes": {k: list(v) for k, v in cell.param_shapes.items()},
    }


def _checkpoint_schedule(steps, checkpoint_every, checkpoint_steps):
    if checkpoint_every is not None and checkpoint_steps is not None:
        raise ValueError("checkpoint_every, checkpoint_steps: expected at most one of them, got both")
    marks = {0, steps}
    if checkpoint_every is not None:
        every = check_positive_int("checkpoint_every", checkpoint_every)
        marks.update(range(0, steps + 1, every))
    if checkpoint_steps is not None:
        if isinstance(checkpoint_steps, (str, bytes)) or not hasattr(checkpoint_steps, "__iter__"):
            raise TypeError(f"checkpoint_steps: expected a sequence of integers, got {checkpoint_steps!r}")
        for i, s in enumerate(checkpoint_steps):
            s = check_positive_int(f"checkpoint_steps[{i}]", s, minimum=0)
            if s > steps:
                raise ValueError(f"checkpoint_steps[{i}]: expected a step <= steps={steps}, got {s}")
            marks.add(s)
    return marks


def _rng_record(rng):
    """The JSON record of the generator as passed (before any draw), and the Generator."""
    if rng is None or isinstance(rng, np.random.Generator):
        gen = as_generator(rng)
        return {"seed": None, "state": _json_ready(gen.bit_generator.state)}, gen
    gen = as_generator(rng)
    return {"seed": int(rng), "state": None}, gen


def _json_ready(value):
    """Bit-generator states as JSON: arrays (Philox, MT19937, SFC64) become lists, NumPy ints become ints."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    return value


def _describe_batch_fn(batch_fn):
    describe = getattr(batch_fn, "describe", None)
    if callable(describe):
        return describe()
    fn = getattr(batch_fn, "__qualname__", None) or type(batch_fn).__qualname__
    return {"kind": "callable", "name": f"{getattr(batch_fn, '__module__', '?')}.{fn}"}


def _batch_rng(seed, step):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(step,)))


def _draw_batch(batch_fn, seed, step, N, O):
    out = batch_fn(_batch_rng(seed, step), step)
    if not isinstance(out, tuple) or len(out) not in (2, 3):
        raise TypeError(f"batch_fn: expected a tuple (x, target) or (x, target, mask) at step {step}, "
                        f"got {type(out).__name__}")
    xb = as_real_array(f"batch_fn(step={step}).x", out[0], (None, None, N), ("B", "T", "N"))
    B, T, _ = xb.shape
    yb = as_real_array(f"batch_fn(step={step}).target", out[1], (B, T, O), ("B", "T", "O"))
    mb = check_mask(out[2] if len(out) == 3 else None, B, T, O, name=f"batch_fn(step={step}).mask")
    return xb, yb, mb


def _progress_mode(progress):
    if progress is None:
        return "bar" if sys.stderr.isatty() else "lines"
    if isinstance(progress, str) and progress == "lines":
        return "lines"
    if isinstance(progress, (bool, np.bool_)):
        return "bar" if progress else None
    raise TypeError(f"progress: expected None, True, False or 'lines', got {progress!r}")


def _progress_bar(total, initial):
    from tqdm import tqdm  # application layer: imported only when a bar is shown

    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False, file=sys.stderr)


def _diverged(what, step, learning_rate):
    if step == 0:
        return FloatingPointError(f"train: {what} at the initial parameters (step 0); lower g or the input "
                                  "scale (lower learning_rate does not help here)")
    return FloatingPointError(f"train: {what} at step {step}; lower learning_rate (or clip with "
                              f"clip_grad_norm); learning_rate={learning_rate!r}")


# -------------------------------------------------------------------- train
def train(cell, x, target, *, mask=None, h0=None, theta=None, readout=None, rng=None, g=None, steps=100,
          optimizer="adam", learning_rate=1e-3, betas=(0.9, 0.999), eps=1e-8, reduction="mean",
          checkpoint_every=None, checkpoint_steps=None, checkpoint_dir=None, resume_from=None,
          progress=None, callback=None, momentum=0.0, dampening=0.0, nesterov=False, clip_grad_norm=None,
          loss_tolerance=None, batch_fn=None, batch_seed=None, overwrite=False, resume=False):
    """Train ``cell`` and a linear readout by GD, SGD with momentum or Adam, full batch or on minibatches.

    Parameters
    ----------
    cell : kpref cell
    x : (B, T, N) array
        The training batch; with ``batch_fn``, the fixed evaluation batch
        (e.g. noiseless trials) on which every checkpoint's ``eval_loss`` and
        the ``trivial_loss`` are measured.
    target : (B, T, O) array
    mask : (B, T) or (B, T, O) array of non-negative weights (or bool), optional
    h0 : (B, S) array, optional (zeros)
        Initial state of ``x``'s trials. Not allowed with ``batch_fn``
        (minibatches start from zeros).
    theta : (p,) array, optional
        Initial cell parameters; by default ``cell.init_params(rng, g=g)``.
    readout : Readout, optional
        Initial readout; by default :func:`init_readout` from ``rng`` (drawn
        after ``theta``).
    rng : None, int or numpy.random.Generator
        Seeds the initial parameters and, with ``batch_fn``, the
        ``batch_seed`` (drawn after them). Recorded in the run's
        configuration (the seed, or the generator's state).
    g : float, optional
        Recurrent gain passed to ``cell.init_params``. Refused together with
        ``theta`` (it would have no effect).
    steps : int
        Maximum number of updates (a resumed run continues up to ``steps``); ``0`` evaluates the
        initial parameters only (one loss, one checkpoint at step 0).
    optimizer : {'adam', 'gd', 'sgd'}
        :class:`kpref.training.Adam`, :class:`~kpref.training.GD` or
        :class:`~kpref.training.SGD` (torch's definitions, written out in
        :mod:`kpref.training`).
    learning_rate : float
        ``η`` of every optimizer.
    betas, eps : Adam's ``β₁, β₂`` (each in [0, 1)) and ``ε``; torch's defaults.
    momentum, dampening, nesterov : SGD's ``μ`` in [0, 1), ``τ`` in [0, 1] and
        Nesterov flag (torch's defaults 0, 0, False). Refused with another
        optimizer when not at their defaults.
    reduction : {'mean', 'sum'}
    clip_grad_norm : float, optional
        Before each update, scale ``∇L`` as
        ``torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)`` over the
        cell's parameter tensors (``cell.param_shapes``) and the readout's
        ``W_out`` and ``b_out``: ``∇L ← min(1, c / (‖∇L‖ + 1e-6)) ∇L`` with
        ``‖∇L‖`` the 2-norm of the per-tensor 2-norms.
    loss_tolerance : float, optional
        Stop after the first step ``k`` whose training loss ``losses[k] <=
        loss_tolerance`` (that step is checkpointed; ``losses`` then has
        ``k + 1`` entries and ``stop_reason`` is ``'loss_tolerance'``).
    batch_fn : callable, optional
        Minibatch training: update ``k`` uses ``batch_fn(rng_k, k)`` →
        ``(x_k, target_k)`` or ``(x_k, target_k, mask_k)`` (any B and T, the
        same N and O as ``x``, ``target``), where ``rng_k`` is a fresh
        ``numpy.random.Generator`` seeded by ``SeedSequence(batch_seed,
        spawn_key=(k,))``. ``batch_fn`` must be a pure function of its
        arguments; then the batch stream resumes bit for bit. Use
        :func:`kpref.training.pool_batches` for minibatches from a pool of
        noisy trials, or a function drawing fresh trials from ``rng_k``.
        Example (the KPFlow protocol)::

            pool = kpref.tasks.memory_pro(5000, 1, noise_std=0.1 * 2**0.5)
            ev = kpref.tasks.memory_pro(500, 2)          # noiseless evaluation batch
            train(cell, ev.x, ev.target, mask=ev.mask, rng=0, steps=10_000,
                  batch_fn=kpref.training.pool_batches(*pool, batch_size=500),
                  loss_tolerance=1e-3, checkpoint_every=500, checkpoint_dir="run")
    batch_seed : int, optional
        Seed of the minibatch stream (default: drawn from ``rng``). Only with
        ``batch_fn``.
    checkpoint_every : int, optional
        Checkpoint every that many steps (plus step 0 and the last step).
    checkpoint_steps : sequence of int, optional
        Explicit steps to checkpoint instead (plus 0 and the last).
    checkpoint_dir : path, optional
        The run's folder: ``manifest.json`` and
        ``checkpoint_<step>.npz`` (step zero-padded to 7 digits), each written
        atomically. A folder holding another run's files is refused unless
        ``overwrite=True`` (:mod:`kpref.training` Notes).
    overwrite : bool
        Delete another run's manifest and checkpoints in ``checkpoint_dir``.
    resume_from : path, optional
        A checkpoint of an earlier call with the same cell, data, optimizer
        and minibatch stream (checked; the loss at the checkpoint's step is
        recomputed and must agree bit for bit); training continues from its
        step and is bitwise identical to an uninterrupted run. ``theta``,
        ``readout``, ``g``, ``rng`` and ``batch_seed`` may be passed only if
        they agree with the run's recorded initialization.
    resume : bool
        With ``checkpoint_dir``: if the folder already holds checkpoints of
        this very run (same configuration, hence a reproducible ``rng``
        seed), continue from its latest checkpoint at or before ``steps``
        (validated with :func:`kpref.training.load_run`), else start fresh.
        ``result.checkpoints`` then starts at the resumed step. This is how a
        killed sweep restarts only what is missing.
    progress : None, bool or 'lines'
        ``True``: a tqdm bar; ``'lines'``: one line per checkpoint on stderr
        (step, loss, eval and trivial losses, elapsed time); ``False``:
        nothing. Default: a bar when stderr is a terminal, lines otherwise.
    callback : callable, optional
        ``callback(checkpoint)`` after each checkpoint is taken.

    Returns
    -------
    TrainResult

    Raises
    ------
    FloatingPointError
        When the loss, the state, a gradient or the parameters become
        non-finite (a diverging run; the message says to lower
        ``learning_rate``).
    """
    spec = _Spec.checked(cell, x, target, mask=mask, h0=h0, steps=steps, optimizer=optimizer,
                         learning_rate=learning_rate, betas=betas, eps=eps, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, reduction=reduction, checkpoint_every=checkpoint_every,
                         checkpoint_steps=checkpoint_steps, callback=callback, progress=progress,
                         overwrite=overwrite, clip_grad_norm=clip_grad_norm, loss_tolerance=loss_tolerance,
                         batch_fn=batch_fn, batch_seed=batch_seed)
    if not isinstance(resume, (bool, np.bool_)):
        raise TypeError(f"resume: expected a bool, got {resume!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume: expected a checkpoint_dir to resume from, got checkpoint_dir=None")
    if resume and resume_from is not None:
        raise ValueError("resume, resume_from: expected at most one of them, got both")
    opt = spec.make_optimizer()
    if resume_from is not None:
        state = _resume_state(spec, opt, resume_from, theta=theta, readout=readout, g=g, rng=rng)
    else:
        state = _fresh_state(spec, theta=theta, readout=readout, g=g, rng=rng)
    if checkpoint_dir is not None:
        checkpoint_dir = claim_run_dir(_as_path(checkpoint_dir, "checkpoint_dir"), state.config,
                                       state.config["init"]["rng"]["seed"], overwrite=bool(overwrite))
        if resume:  # the folder is this run's (claim_run_dir checked the configuration)
            done = [c for c in load_run(checkpoint_dir, name="checkpoint_dir").checkpoints if c.step <= spec.steps]
            if done:
                state = _resume_state(spec, opt, done[-1].path, theta=None, readout=None, g=None, rng=None)
    return _Trainer(spec, opt, state, checkpoint_dir).run()


class _Spec(NamedTuple):
    """The checked arguments of one :func:`train` call (everything but the initial state)."""

    cell: Cell
    x: np.ndarray
    target: np.ndarray
    mask: np.ndarray | None
    h0: np.ndarray
    steps: int
    optimizer: str
    hyperparameters: dict
    reduction: str
    marks: set
    callback: object
    mode: str | None
    clip: float | None
    tol: float | None
    batch_fn: object
    batch_seed: int | None
    identity: dict

    @classmethod
    def checked(cls, cell, x, target, *, mask, h0, steps, optimizer, learning_rate, betas, eps, momentum,
                dampening, nesterov, reduction, checkpoint_every, checkpoint_steps, callback, progress, overwrite,
                clip_grad_norm, loss_tolerance, batch_fn, batch_seed):
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
        _, x, h0_arg = check_problem(cell, np.zeros(cell.num_params), x, h0)
        B, T, _ = x.shape
        target = as_real_array("target", target, (B, T, None), ("B", "T", "O"))
        O = target.shape[2]
        mask = check_mask(mask, B, T, O)
        steps = check_positive_int("steps", steps, minimum=0)
        if 8 * (steps + 1) > DEFAULT_MEMORY_LIMIT:  # the loss history is allocated up front
            raise ValueError(f"steps: expected at most {DEFAULT_MEMORY_LIMIT // 8 - 1} (a loss history of steps + 1 "
                             f"float64 within {DEFAULT_MEMORY_LIMIT / 1024**3:.0f} GiB), got {steps}")
        optimizer = check_choice("optimizer", optimizer, ("adam", "gd", "sgd"))
        reduction = check_choice("reduction", reduction, ("mean", "sum"))
        marks = _checkpoint_schedule(steps, checkpoint_every, checkpoint_steps)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
        mode = _progress_mode(progress)
        if not isinstance(overwrite, (bool, np.bool_)):
            raise TypeError(f"overwrite: expected a bool, got {overwrite!r}")
        clip = None if clip_grad_norm is None else check_positive_float("clip_grad_norm", clip_grad_norm)
        tol = None if loss_tolerance is None else check_real("loss_tolerance", loss_tolerance, minimum=0.0)
        if batch_fn is not None:
            if not callable(batch_fn):
                raise TypeError(f"batch_fn: expected a callable batch_fn(rng, step), got {type(batch_fn).__name__}")
            if h0 is not None:
                raise ValueError("h0: expected None with batch_fn (minibatches start from zero states), got an array")
        if batch_seed is not None:
            if batch_fn is None:
                raise ValueError("batch_seed: expected None without batch_fn (it seeds the minibatch stream)")
            batch_seed = check_positive_int("batch_seed", batch_seed, minimum=0)
        hyper = _hyperparameters(optimizer, learning_rate, betas, eps, momentum, dampening, nesterov)
        p, R = cell.num_params, cell.output_size
        hyper = make_optimizer(optimizer, p + O * R + O, hyper).hyperparameters()  # checks them
        identity = {
            "cell": _cell_config(cell),
            "output_size": O,
            "optimizer": optimizer,
            "optimizer_hyperparameters": hyper,
            "reduction": reduction,
            "clip_grad_norm": clip,
            "data_sha256": _fingerprint(x, target, mask, h0_arg),
            "batches": None if batch_fn is None else {"fn": _describe_batch_fn(batch_fn)},
        }
        identity = json.loads(json.dumps(identity, sort_keys=True))  # JSON types (lists, not tuples)
        return cls(cell, x, target, mask, h0_arg, steps, optimizer, hyper, reduction, marks, callback, mode, clip,
                   tol, batch_fn, batch_seed, identity)

    @property
    def n_params(self):
        """``(p, O, R)``: cell parameters, outputs, readout width."""
        return self.cell.num_params, self.target.shape[2], self.cell.output_size

    def make_optimizer(self):
        p, O, R = self.n_params
        return make_optimizer(self.optimizer, p + O * R + O, self.hyperparameters)


def _hyperparameters(optimizer, learning_rate, betas, eps, momentum, dampening, nesterov):
    """The optimizer's hyperparameters; another optimizer's, away from their defaults, are refused."""
    if optimizer != "adam" and (tuple(betas) if isinstance(betas, (list, tuple)) else betas) != (0.9, 0.999):
        raise ValueError(f"betas: Adam's parameter, got {betas!r} with optimizer={optimizer!r}")
    if optimizer != "adam" and eps != 1e-8:
        raise ValueError(f"eps: Adam's parameter, got {eps!r} with optimizer={optimizer!r}")
    if optimizer != "sgd" and (momentum != 0.0 or dampening != 0.0 or nesterov is not False):
        raise ValueError(f"momentum, dampening, nesterov: SGD's parameters (optimizer='sgd'), got "
                         f"{momentum!r}, {dampening!r}, {nesterov!r} with optimizer={optimizer!r}")
    hyper = {"learning_rate": learning_rate}
    if optimizer == "adam":
        hyper.update(betas=betas, eps=eps)
    elif optimizer == "sgd":
        hyper.update(momentum=momentum, dampening=dampening, nesterov=nesterov)
    return hyper


class _State(NamedTuple):
    """Where training starts: the run's configuration, step, parameters ``φ`` and loss history."""

    config: dict
    start: int
    phi: np.ndarray
    losses_done: np.ndarray
    resumed: bool


def _fresh_state(spec, *, theta, readout, g, rng):
    cell, O = spec.cell, spec.target.shape[2]
    record, gen = _rng_record(rng)
    if theta is not None and g is not None:
        raise ValueError(f"g: expected None when theta is given (g scales only the drawn initialization), got {g!r}")
    theta0 = cell.init_params(gen, g=g) if theta is None else cell.check_theta(theta).copy()
    if readout is None:
        readout0 = init_readout(cell, O, gen)
    else:
        ro = _check_readout(cell, readout, O)
        readout0 = Readout(ro.w_out.copy(), ro.b_out.copy())
    config = dict(spec.identity)
    if spec.batch_fn is not None:
        seed = int(gen.integers(0, 2**63)) if spec.batch_seed is None else spec.batch_seed
        config["batches"] = {"fn": spec.identity["batches"]["fn"], "seed": seed}
    config["init"] = {"rng": record, "g": None if g is None else float(g), "theta_sha256": _fingerprint(theta0),
                      "readout_sha256": _fingerprint(readout0.w_out, readout0.b_out)}
    config = json.loads(json.dumps(config, sort_keys=True))
    phi = np.concatenate([theta0, readout0.w_out.ravel(), readout0.b_out])
    return _State(config, 0, phi, np.empty(0), False)


def _resume_state(spec, opt, resume_from, *, theta, readout, g, rng):
    ck = _load(_as_path(resume_from), "resume_from")
    mine = {k: ck.config.get(k) for k in spec.identity}
    mine["batches"] = None if ck.config.get("batches") is None else {"fn": ck.config["batches"]["fn"]}
    if mine != spec.identity:
        diff = _differences(mine, spec.identity)
        raise ValueError(f"resume_from: the checkpoint's run differs from this call in {'; '.join(diff)}; "
                         "resume with the same cell, data, optimizer and minibatches")
    if ck.step > spec.steps:
        raise ValueError(f"resume_from: checkpoint is at step {ck.step}, beyond steps={spec.steps}")
    _check_resume_args(spec.cell, ck.config["init"], ck.config, theta, readout, g, rng, spec.batch_seed,
                       spec.target.shape[2])
    opt.load_state_dict(dict(ck.optimizer_state), name="resume_from: optimizer state")
    phi = np.concatenate([ck.theta, ck.readout.w_out.ravel(), ck.readout.b_out])
    return _State(ck.config, ck.step, phi, ck.losses, True)


class _Trainer:
    """The loop of :func:`train`: batch ``k``, loss, checkpoint, gradient, clipping, ``opt.step``."""

    def __init__(self, spec, opt, state, checkpoint_dir):
        self.spec, self.opt, self.state, self.dir = spec, opt, state, checkpoint_dir
        self.phi = state.phi
        self.losses = np.empty(spec.steps + 1)
        self.losses[: len(state.losses_done)] = state.losses_done
        self.checkpoints = []
        self.trivial = trivial_loss(spec.target, spec.mask, spec.reduction)
        p, O, R = spec.n_params
        sizes = [int(np.prod(s)) for s in spec.cell.param_shapes.values()] + [O * R, O]
        self.offsets = np.cumsum([0] + sizes)  # the tensors of clip_grad_norm
        self.learning_rate = spec.hyperparameters["learning_rate"]
        self.t_start = time.perf_counter()

    def unpack(self, vec):
        p, O, R = self.spec.n_params
        return vec[:p], Readout(vec[p:p + O * R].reshape(O, R), vec[p + O * R:])

    def batch(self, step):
        s = self.spec
        if s.batch_fn is None:
            return s.x, s.target, s.mask, s.h0
        xb, yb, mb = _draw_batch(s.batch_fn, self.state.config["batches"]["seed"], step, s.x.shape[2],
                                 s.target.shape[2])
        return xb, yb, mb, np.zeros((xb.shape[0], s.cell.state_size))

    def forward(self, step, final):
        """``(loss, lin)`` at batch ``step`` (``lin`` None at the final step, which needs the loss only)."""
        s = self.spec
        th, ro = self.unpack(self.phi)
        xb, yb, mb, hb = self.batch(step)
        try:   # linearize and mse_loss raise FloatingPointError on overflow: the run's own diagnosis replaces it
            if final:
                z, lin = _run(s.cell, th, xb, hb), None
            else:
                lin = linearize(s.cell, th, xb, hb, strategy="matrix_free")
                z = lin.z
        except FloatingPointError as exc:
            raise _diverged("the state z became non-finite", step, self.learning_rate) from exc
        if not np.all(np.isfinite(z)):
            raise _diverged("the state z became non-finite", step, self.learning_rate)
        try:
            res = mse_loss(z, yb, ro.w_out, ro.b_out, mask=mb, reduction=s.reduction, cell=s.cell)
        except FloatingPointError as exc:
            raise _diverged("the loss overflowed", step, self.learning_rate) from exc
        if not np.isfinite(res.value):
            raise _diverged(f"the loss is {res.value!r}", step, self.learning_rate)
        return res, lin

    def eval_loss(self, step, loss):
        s = self.spec
        if s.batch_fn is None:
            return loss
        th, ro = self.unpack(self.phi)
        z = _run(s.cell, th, s.x, s.h0)
        if not np.all(np.isfinite(z)):
            raise _diverged("the state on the evaluation batch is non-finite", step, self.learning_rate)
        try:
            return mse_loss(z, s.target, ro.w_out, ro.b_out, mask=s.mask, reduction=s.reduction, cell=s.cell).value
        except FloatingPointError as exc:
            raise _diverged("the loss on the evaluation batch overflowed", step, self.learning_rate) from exc

    def checkpoint(self, step, loss):
        s = self.spec
        th, ro = self.unpack(self.phi)
        ev = self.eval_loss(step, loss)
        ck = Checkpoint(step, th.copy(), Readout(ro.w_out.copy(), ro.b_out.copy()), loss,
                        self.losses[: step + 1].copy(), self.opt.state_dict(), json.loads(json.dumps(self.state.config)),
                        None, ev, self.trivial)
        if self.dir is not None:
            path = os.path.join(self.dir, f"checkpoint_{step:07d}.npz")
            save_checkpoint(path, ck, s.optimizer)
            ck = ck._replace(path=path)
        self.checkpoints.append(ck)
        if s.mode == "lines":
            print(f"train: step {step}/{s.steps} loss {loss:.4e} eval {ev:.4e} trivial {self.trivial:.4e} "
                  f"({time.perf_counter() - self.t_start:.1f} s)", file=sys.stderr, flush=True)
        if s.callback is not None:
            s.callback(ck)
        return ev

    def update(self, step, res, lin):
        try:
            grad = np.concatenate([lin.grad(res.e), res.grad_w_out.ravel(), res.grad_b_out])
        except FloatingPointError as exc:
            raise _diverged(f"non-finite gradient (loss {res.value!r})", step, self.learning_rate) from exc
        if not np.all(np.isfinite(grad)):
            raise _diverged(f"non-finite gradient (loss {res.value!r})", step, self.learning_rate)
        if self.spec.clip is not None:
            _clip_grad_norm([grad[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])], self.spec.clip)
        self.phi = self.opt.step(self.phi, grad)
        if not np.all(np.isfinite(self.phi)):
            raise _diverged("the parameters became non-finite after the update", step + 1, self.learning_rate)

    def check_resumed_loss(self, loss):
        start, done = self.state.start, self.state.losses_done
        if loss != done[start]:
            raise ValueError(
                f"resume_from: the loss at step {start} recomputed from the checkpoint is {loss!r}, but the run "
                f"recorded {done[start]!r}: the data, the batch_fn or the cell differ from the run's")

    def run(self):
        s = self.spec
        stop_reason, last_eval = "steps", float("nan")
        bar = _progress_bar(s.steps, self.state.start) if s.mode == "bar" else None
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                for step in range(self.state.start, s.steps + 1):
                    final = step == s.steps
                    res, lin = self.forward(step, final)
                    loss = res.value
                    if step == self.state.start and self.state.resumed:
                        self.check_resumed_loss(loss)
                    self.losses[step] = loss
                    stop = final or (s.tol is not None and loss <= s.tol)
                    if stop and not final:
                        stop_reason = "loss_tolerance"
                    if step in s.marks or stop:
                        last_eval = self.checkpoint(step, loss)
                    if stop:
                        break
                    self.update(step, res, lin)
                    if bar is not None:
                        bar.update(1)
                        if step % 10 == 0:
                            bar.set_postfix(loss=f"{loss:.3e}")
        finally:
            if bar is not None:
                bar.close()
        th, ro = self.unpack(self.phi)
        return TrainResult(th.copy(), Readout(ro.w_out.copy(), ro.b_out.copy()), self.losses[: step + 1].copy(),
                           self.checkpoints, self.state.config, last_eval, self.trivial, stop_reason)


def _as_path(value, name="resume_from"):
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{name}: expected a path, got {type(value).__name__}")
    return os.fsdecode(value)


def _check_resume_args(cell, init, config, theta, readout, g, rng, batch_seed, O):
    """Arguments that would set the initialization must agree with the resumed run's."""
    if theta is not None:
        th = cell.check_theta(theta)
        if _fingerprint(th) != init["theta_sha256"]:
            raise ValueError("theta: differs from the initial theta of the run of resume_from (its SHA-256 is "
                             "recorded); pass theta=None when resuming")
    if readout is not None:
        ro = _check_readout(cell, readout, O)
        if _fingerprint(ro.w_out, ro.b_out) != init["readout_sha256"]:
            raise ValueError("readout: differs from the initial readout of the run of resume_from; pass "
                             "readout=None when resuming")
    if g is not None and (init["g"] is None or float(g) != init["g"]):
        raise ValueError(f"g: got {g!r} but the run of resume_from was initialized with g={init['g']!r}; pass "
                         "g=None when resuming")
    if rng is not None:
        seed = init["rng"]["seed"]
        if isinstance(rng, np.random.Generator) or seed is None or isinstance(rng, (bool, np.bool_)) \
                or not isinstance(rng, numbers.Integral) or int(rng) != seed:
            raise ValueError(f"rng: got {rng!r} but the run of resume_from was seeded with "
                             f"{'a generator' if seed is None else seed!r}; pass rng=None when resuming")
    if batch_seed is not None:
        recorded = (config.get("batches") or {}).get("seed")
        if batch_seed != recorded:
            raise ValueError(f"batch_seed: got {batch_seed!r} but the run of resume_from used {recorded!r}; pass "
                             "batch_seed=None when resuming")

r"""Training a cell and its linear readout with kpref's own gradients (SPEC §4).

Notes
-----
The model is a cell ``h_t = F(h_{t-1}, x_t; θ)`` and a readout
``y = z_r W_outᵀ + b_out`` (``z_r`` the first ``cell.output_size`` state
entries). The loss is :func:`kpref.mse_loss` (``torch.nn.MSELoss`` semantics,
optional 0/1 mask). Every gradient is kpref's own:

* ``∇_θ L = J_θᵀ P* e`` — :meth:`Linearization.grad` of the error signal
  ``e = ∂L/∂z`` (backpropagation through time as the adjoint recursion,
  exact for the discrete recurrence);
* ``∇_{W_out} L`` and ``∇_{b_out} L`` — from :func:`kpref.mse_loss`.

Training is full batch: the same ``(x, target, mask)`` at every step (draw
the batch once from a seeded task generator). The parameters are updated as
one flat vector ``φ = [θ, vec(W_out), b_out]`` (C order) by

* gradient descent: ``φ ← φ − η ∇L``;
* Adam (Kingma & Ba 2015), written out in NumPy as ``torch.optim.Adam``
  computes it (bias corrections applied to the step size and to ``√v``; no
  weight decay, no amsgrad), with step count ``k = 1, 2, …``::

      m ← β₁ m + (1 − β₁) g
      v ← β₂ v + (1 − β₂) g ⊙ g
      φ ← φ − (η / (1 − β₁ᵏ)) · m / (√v / √(1 − β₂ᵏ) + ε)

  defaults ``η = 1e-3``, ``β = (0.9, 0.999)``, ``ε = 1e-8`` (torch's).

``losses[k]`` is the loss at the parameters after ``k`` updates,
``k = 0 … steps``.

Checkpoints are ``.npz`` files (no pickle: ``np.load(..., allow_pickle=False)``
reads them) holding ``step``, ``theta``, ``w_out``, ``b_out``, ``loss``, the
loss history ``losses[0 … step]``, the optimizer state (``adam_m``,
``adam_v``, ``adam_count`` for Adam) and ``config``, a JSON string in a 0-d
unicode array: the cell (class, sizes, parameter layout), the optimizer and
its hyperparameters, the reduction, and the SHA-256 of the training data
(``x``, ``target``, ``mask``, ``h0``). Resuming from a checkpoint checks
that config against the call and then repeats exactly the arithmetic of an
uninterrupted run, so the result is bitwise identical.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import sys
from typing import NamedTuple

import numpy as np

from ..cells._cell import Cell
from .._checks import as_generator, as_real_array, check_choice, check_positive_float, check_positive_int
from ..operators import check_mask, linearize, mse_loss
from ..cells._simulate import _run, check_problem

__all__ = [
    "Readout",
    "Checkpoint",
    "TrainResult",
    "init_readout",
    "loss_and_gradient",
    "train",
    "load_checkpoint",
]

_FORMAT = "kpref-checkpoint-1"


class Readout(NamedTuple):
    """Linear readout ``y = z_r W_outᵀ + b_out``: ``w_out`` (O, R), ``b_out`` (O,)."""

    w_out: np.ndarray
    b_out: np.ndarray


class Checkpoint(NamedTuple):
    """A saved training state (see :func:`load_checkpoint`)."""

    step: int
    theta: np.ndarray
    readout: Readout
    loss: float
    losses: np.ndarray
    optimizer_state: dict
    config: dict
    path: str | None


class TrainResult(NamedTuple):
    """Result of :func:`train`.

    ``theta`` and ``readout`` after the last step, ``losses`` (steps + 1,),
    ``checkpoints`` (list of :class:`Checkpoint`, in step order, including
    step 0 — or the resumed step — and the last step) and ``config``.
    """

    theta: np.ndarray
    readout: Readout
    losses: np.ndarray
    checkpoints: list
    config: dict


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


_check_mask = check_mask   # the one mask check, shared with mse_loss and the experiments


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
    mask = _check_mask(mask, B, T, target.shape[2])
    check_choice("reduction", reduction, ("mean", "sum"))
    return _loss_and_gradient(cell, theta, readout, x, target, mask, h0, reduction)


# ------------------------------------------------------------------ helpers
def _fingerprint(*arrays):
    sha = hashlib.sha256()
    for a in arrays:
        if a is None:
            sha.update(b"none")
        else:
            sha.update(str(a.shape).encode())
            sha.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return sha.hexdigest()


def _cell_config(cell):
    return {
        "class": type(cell).__name__,
        "repr": repr(cell),
        "input_size": cell.input_size,
        "hidden_size": cell.hidden_size,
        "state_size": cell.state_size,
        "param_shapes": {k: list(v) for k, v in cell.param_shapes.items()},
    }


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    out = []
    for i, b in enumerate(betas):
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Real) or not 0.0 <= float(b) < 1.0:
            raise ValueError(f"betas[{i}]: expected a number in [0, 1), got {b!r}")
        out.append(float(b))
    return out


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


def _save(path, step, theta, readout, loss, losses, opt_state, config):
    tmp = path + ".tmp"
    arrays = dict(
        format=np.array(_FORMAT),
        step=np.array(step, dtype=np.int64),
        theta=theta,
        w_out=readout.w_out,
        b_out=readout.b_out,
        loss=np.array(loss, dtype=np.float64),
        losses=losses,
        config=np.array(json.dumps(config, sort_keys=True)),
    )
    for key, value in opt_state.items():
        arrays[key] = np.asarray(value)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, *, name="path"):
    """Read a checkpoint written by :func:`train` (``np.load`` with ``allow_pickle=False``).

    Returns
    -------
    Checkpoint
        ``step``, ``theta``, ``readout``, ``loss``, ``losses`` (step + 1,),
        ``optimizer_state`` (dict of arrays; empty for gradient descent),
        ``config`` (dict) and ``path``. ``name`` is the argument named in messages.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            need = {"format", "step", "theta", "w_out", "b_out", "loss", "losses", "config"}
            if not need <= files or str(data["format"]) != _FORMAT:
                raise ValueError(
                    f"{name}: expected a kpref checkpoint ({_FORMAT}) with {sorted(need)}, "
                    f"got {path!r} with {sorted(files)}"
                )
            opt = {k: data[k].copy() for k in sorted(files - need)}
            return Checkpoint(
                step=int(data["step"]),
                theta=data["theta"].copy(),
                readout=Readout(data["w_out"].copy(), data["b_out"].copy()),
                loss=float(data["loss"]),
                losses=data["losses"].copy(),
                optimizer_state=opt,
                config=json.loads(str(data["config"])),
                path=path,
            )
    except (OSError, EOFError) as exc:
        raise ValueError(f"{name}: expected a readable kpref checkpoint (.npz), got {path!r} ({exc})") from None


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", leave=False, file=sys.stderr)


def adam_update(phi, grad, m, v, count, learning_rate, beta1, beta2, eps):
    """One Adam step (module Notes); ``count`` is the 1-based step number. Returns new ``(phi, m, v)``."""
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * (grad * grad)
    bias_correction1 = 1.0 - beta1 ** count
    bias_correction2 = 1.0 - beta2 ** count
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    return phi - (learning_rate / bias_correction1) * (m / denom), m, v


# -------------------------------------------------------------------- train
def train(cell, x, target, *, mask=None, h0=None, theta=None, readout=None, rng=None, g=None, steps=100,
          optimizer="adam", learning_rate=1e-3, betas=(0.9, 0.999), eps=1e-8, reduction="mean",
          checkpoint_every=None, checkpoint_steps=None, checkpoint_dir=None, resume_from=None,
          progress=None, callback=None):
    """Train ``cell`` and a linear readout on a fixed batch by full-batch GD or Adam.

    Parameters
    ----------
    cell : kpref cell
    x : (B, T, N) array
    target : (B, T, O) array
    mask : (B, T) or (B, T, O) array of 0/1 (or bool), optional
    h0 : (B, S) array, optional (zeros)
    theta : (p,) array, optional
        Initial cell parameters; by default ``cell.init_params(rng, g=g)``.
    readout : Readout, optional
        Initial readout; by default :func:`init_readout` from ``rng`` (drawn
        after ``theta``).
    rng : None, int or numpy.random.Generator
        Seeds the initial parameters (the only randomness of training).
    g : float, optional
        Recurrent gain passed to ``cell.init_params`` (ignored when ``theta``
        is given).
    steps : int
        Total number of updates (a resumed run continues up to ``steps``).
    optimizer : {'adam', 'gd'}
    learning_rate, betas, eps : float
        ``η`` for both; ``β₁, β₂, ε`` for Adam (module Notes).
    reduction : {'mean', 'sum'}
    checkpoint_every : int, optional
        Checkpoint every that many steps (plus step 0 and the last step).
    checkpoint_steps : sequence of int, optional
        Explicit steps to checkpoint instead (plus 0 and the last).
    checkpoint_dir : path, optional
        Write each checkpoint to ``checkpoint_dir/checkpoint_<step>.npz``, the step zero-padded to 7 digits.
    resume_from : path, optional
        A checkpoint of an earlier call with the same data, cell and
        optimizer; training continues from its step and is bitwise identical
        to an uninterrupted run.
    progress : bool, optional
        Show a tqdm progress bar (default: when stderr is a terminal).
    callback : callable, optional
        ``callback(checkpoint)`` after each checkpoint is taken.

    Returns
    -------
    TrainResult

    Raises
    ------
    FloatingPointError
        When the loss or a gradient becomes non-finite (diverged training).
    """
    theta_arg = theta
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    _, x, h0 = check_problem(cell, np.zeros(cell.num_params), x, h0)
    B, T, _ = x.shape
    target = as_real_array("target", target, (B, T, None), ("B", "T", "O"))
    O = target.shape[2]
    mask = _check_mask(mask, B, T, O)
    steps = check_positive_int("steps", steps, minimum=0)
    optimizer = check_choice("optimizer", optimizer, ("adam", "gd"))
    learning_rate = check_positive_float("learning_rate", learning_rate)
    betas = _check_betas(betas)
    eps = check_positive_float("eps", eps)
    reduction = check_choice("reduction", reduction, ("mean", "sum"))
    marks = _checkpoint_schedule(steps, checkpoint_every, checkpoint_steps)
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    config = {
        "cell": _cell_config(cell),
        "output_size": O,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "betas": betas if optimizer == "adam" else None,
        "eps": eps if optimizer == "adam" else None,
        "reduction": reduction,
        "data_sha256": _fingerprint(x, target, mask, h0),
    }

    p = cell.num_params
    R = cell.output_size
    n_phi = p + O * R + O
    if resume_from is not None:
        ck = load_checkpoint(resume_from, name="resume_from")
        for key in config:
            if ck.config.get(key) != config[key]:
                raise ValueError(
                    f"resume_from: the checkpoint's {key!r} is {ck.config.get(key)!r} but this call has "
                    f"{config[key]!r}; resume with the same cell, data and optimizer"
                )
        if ck.step > steps:
            raise ValueError(f"resume_from: checkpoint is at step {ck.step}, beyond steps={steps}")
        start = ck.step
        theta = cell.check_theta(ck.theta)
        readout = _check_readout(cell, ck.readout, O)
        losses_done = ck.losses
        if optimizer == "adam":
            m, v = ck.optimizer_state["adam_m"].copy(), ck.optimizer_state["adam_v"].copy()
            count = int(ck.optimizer_state["adam_count"])
    else:
        start = 0
        rng = as_generator(rng)
        if theta_arg is None:
            theta = cell.init_params(rng, g=g)
        else:
            theta = cell.check_theta(theta_arg).copy()
        if readout is None:
            readout = init_readout(cell, O, rng)
        else:
            readout = _check_readout(cell, readout, O)
            readout = Readout(readout.w_out.copy(), readout.b_out.copy())
        losses_done = np.empty(0)
        if optimizer == "adam":
            m, v, count = np.zeros(n_phi), np.zeros(n_phi), 0

    phi = np.concatenate([theta, readout.w_out.ravel(), readout.b_out])
    losses = np.empty(steps + 1)
    losses[: len(losses_done)] = losses_done
    checkpoints = []
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _progress_bar(steps, start, bool(progress))

    def unpack(vec):
        return vec[:p], Readout(vec[p:p + O * R].reshape(O, R), vec[p + O * R:])

    def take_checkpoint(step, loss):
        th, ro = unpack(phi)
        opt = {}
        if optimizer == "adam":
            opt = {"adam_m": m.copy(), "adam_v": v.copy(), "adam_count": np.array(count, dtype=np.int64)}
        path = None
        if checkpoint_dir is not None:
            path = os.path.join(checkpoint_dir, f"checkpoint_{step:07d}.npz")
            _save(path, step, th, ro, loss, losses[: step + 1], opt, config)
        ck = Checkpoint(step, th.copy(), Readout(ro.w_out.copy(), ro.b_out.copy()), loss,
                        losses[: step + 1].copy(), opt, dict(config), path)
        checkpoints.append(ck)
        if callback is not None:
            callback(ck)

    beta1, beta2 = betas
    try:
        for step in range(start, steps + 1):
            th, ro = unpack(phi)
            if step == steps:
                # the last point needs the loss only
                z = _run(cell, th, x, h0)
                loss = mse_loss(z, target, ro.w_out, ro.b_out, mask=mask, reduction=reduction, cell=cell).value
                grad = None
            else:
                res = _loss_and_gradient(cell, th, ro, x, target, mask, h0, reduction)
                loss = res.loss
                grad = np.concatenate([res.grad_theta, res.grad_w_out.ravel(), res.grad_b_out])
                if not np.all(np.isfinite(grad)):
                    raise FloatingPointError(
                        f"train: non-finite gradient at step {step} (loss {loss!r}); lower learning_rate")
            if not np.isfinite(loss):
                raise FloatingPointError(f"train: loss is {loss!r} at step {step}; lower learning_rate")
            losses[step] = loss
            if step in marks:
                take_checkpoint(step, loss)
            if grad is None:
                break
            if optimizer == "gd":
                phi = phi - learning_rate * grad
            else:
                count += 1
                phi, m, v = adam_update(phi, grad, m, v, count, learning_rate, beta1, beta2, eps)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.3e}")
    finally:
        if bar is not None:
            bar.close()
    th, ro = unpack(phi)
    return TrainResult(th.copy(), Readout(ro.w_out.copy(), ro.b_out.copy()), losses, checkpoints, config)

r"""The readout loss of SPEC §4: ``mse_loss`` → :class:`Loss`, and the one check of a loss mask.

:func:`check_mask` is what every caller with a ``mask`` argument uses
(``mse_loss``, :func:`kpref.train`, the experiments' per-sub-task losses), so
a mask means the same thing everywhere: ``None`` (every entry counts), or
weights of shape (B, T) (one per trial and step, applied to every output) or
(B, T, O); bool masks are 0/1; weights are finite and non-negative.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..cells._cell import Cell
from .._checks import as_real_array, check_choice, check_finite_result, check_positive_int, check_size_memory

__all__ = ["Loss", "mse_loss", "check_mask", "mask_weights"]


def check_mask(mask, B, T, O, name="mask"):
    """``None``, or ``mask`` as a float64 (B, T) or (B, T, O) array of finite non-negative weights.

    Bool masks become 0/1. The shape is kept (a (B, T) mask stays (B, T):
    :func:`mask_weights` expands it). ``ValueError``/``TypeError`` name
    the argument (``name``), what it got and what was expected.
    """
    B, T, O = (check_positive_int(n, v) for n, v in (("B", B), ("T", T), ("O", O)))
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if arr.ndim == 2:
        arr = as_real_array(name, arr, (B, T), ("B", "T"))
    else:
        arr = as_real_array(name, arr, (B, T, O), ("B", "T", "O"))
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: expected non-negative weights, got minimum {arr.min()}")
    return arr


def mask_weights(mask, B, T, O):
    """The (B, T, O) weights of ``mask`` (ones for ``None``), checked by :func:`check_mask` (idempotent)."""
    mask = check_mask(mask, B, T, O)
    check_size_memory(f"B={B}, T={T}, O={O}", 8 * B * T * O, what="the (B, T, O) mask weights")
    if mask is None:
        return np.ones((B, T, O))
    if mask.ndim == 2:
        return np.repeat(mask[:, :, None], O, axis=2)
    return mask


class Loss(NamedTuple):
    """Result of :func:`mse_loss`."""

    value: float
    e: np.ndarray
    grad_w_out: np.ndarray
    grad_b_out: np.ndarray
    y: np.ndarray


def mse_loss(z, target, w_out, b_out=None, *, mask=None, reduction="mean", cell=None):
    r"""Mean-squared-error loss of the readout ``y = z_r W_outᵀ + b_out`` (SPEC §4).

    Parameters
    ----------
    z : (B, T, S) array
        Trajectory.
    target : (B, T, O) array
    w_out : (O, R) array
        Readout weights; ``R = S``, or ``R = cell.output_size`` when ``cell``
        is given (the readout then reads the first ``R`` state entries, e.g.
        ``h`` of an LSTM's ``[h, c]``).
    b_out : (O,) array, optional (zeros, and its gradient is still returned)
    mask : (B, T) or (B, T, O) array, optional
        Weights (0/1 or bool) multiplying each squared error; a (B, T) mask
        applies to every output. Values must be finite and non-negative.
    reduction : {'mean', 'sum'}
        ``torch.nn.MSELoss``'s: 'mean' divides by ``B·T·O`` — the number of
        all entries, masked or not, as SPEC §4 says — 'sum' does not.

    Returns
    -------
    Loss
        ``value`` (float), ``e = ∂L/∂z`` (B, T, S; zero on state entries the
        readout does not read), ``grad_w_out`` (O, R), ``grad_b_out`` (O,),
        and the readout ``y`` (B, T, O).

    Raises
    ------
    FloatingPointError
        If the loss or a gradient overflows to inf/NaN (every input being
        finite): a non-finite result is never returned.

    Notes
    -----
    With residual ``r = m ⊙ (y − target)`` and ``c = B·T·O`` ('mean') or 1::

        L = Σ m ⊙ (y − target)² / c
        ∂L/∂y = 2 r / c,   e = (∂L/∂y) W_out,   ∂L/∂W_out = Σ_{b,t} (∂L/∂y)_{bt} z_{r,bt}ᵀ
    """
    if cell is not None and not isinstance(cell, Cell):
        raise TypeError(f"cell: expected None or a kpref cell (e.g. kpref.GRU(...)), got {type(cell).__name__}")
    z = as_real_array("z", z, (None, None, None), ("B", "T", "S"))
    B, T, S = z.shape
    R = S if cell is None else cell.output_size
    if cell is not None and cell.state_size != S:
        raise ValueError(f"z: expected state size S={cell.state_size} for {cell!r}, got {S}")
    w_out = as_real_array("w_out", w_out, (None, R), ("O", "R"))
    O = w_out.shape[0]
    target = as_real_array("target", target, (B, T, O), ("B", "T", "O"))
    b_out = np.zeros(O) if b_out is None else as_real_array("b_out", b_out, (O,), ("O",))
    check_choice("reduction", reduction, ("mean", "sum"))
    m = mask_weights(check_mask(mask, B, T, O), B, T, O)
    zr = z[:, :, :R]
    with np.errstate(over="ignore", invalid="ignore"):   # an overflow is reported below, as an error
        y = zr @ w_out.T + b_out
        diff = y - target
        c = float(B * T * O) if reduction == "mean" else 1.0
        value = float(np.sum(m * diff * diff) / c)
        dy = (2.0 / c) * (m * diff)
        e = np.zeros((B, T, S))
        e[:, :, :R] = dy @ w_out
        grad_w = dy.reshape(-1, O).T @ zr.reshape(-1, R)
        grad_b = dy.reshape(-1, O).sum(axis=0)
    # finite inputs can still overflow (|y − target|² > 1.8e308): raise, never return inf
    for what, arr in (("value", value), ("y", y), ("e", e), ("grad_w_out", grad_w), ("grad_b_out", grad_b)):
        check_finite_result(f"mse_loss: {what}", arr, "the readout or the trajectory is too large "
                            "(in training, a sign of divergence: lower learning_rate)")
    return Loss(value, e, grad_w, grad_b, y)

"""A PyTorch (``torch.func``) backend of every built-in kpref cell, for :func:`kpref.testing.check_backend`.

This is the kind of implementation kpref exists to check: the trajectory is an
unrolled torch loop, and every operator slot comes from torch's automatic
differentiation (:func:`kpref.interop.torch.backend` on the step below; the
derivations are in :mod:`kpref.interop._autodiff`), not from kpref's
hand-derived products.

Steps: ``Elman``, ``GRU`` and ``LSTM`` call ``torch.nn.RNNCell``/``GRUCell``/
``LSTMCell`` through ``torch.func.functional_call`` (so kpref is checked
against torch's own cells); ``LeakyRNN``, ``Linear`` and ``RateODE`` (Euler,
midpoint, RK4 written out here, independently of :mod:`kpref.ode._ode`) are
written in torch. A user :class:`kpref.ODECell` has no torch counterpart.

Mutations (``mutation=``), deliberate bugs that :func:`check_backend` must
catch and locate:

* ``'transposed_weight_hh'``: every ``H×H`` block of ``weight_hh`` is used
  transposed (all operators);
* ``'adjoint_off_by_one'``: ``P_adjoint`` and ``grad`` (and so ``NTK``) run the backward sweep
  by hand with ``λ_t = w_t + A_tᵀ λ_{t+1}`` (the Jacobian of step ``t`` instead of
  ``t+1``; harmless, hence invisible, for ``Linear``, whose ``A_t = W`` for all ``t``);
* ``'gru_dropped_reset'`` (GRU only): ``n = tanh(W_in x + b_in + (W_hn h + b_hn))``,
  the reset gate ``r ⊙`` dropped (written-out GRU equations).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

import kpref
import kpref.interop.torch

__all__ = ["TorchBackend", "torch_step", "MUTATIONS", "supports", "sequence_module_simulate"]

MUTATIONS = ("transposed_weight_hh", "adjoint_off_by_one", "gru_dropped_reset")


def supports(cell):
    """Whether :class:`TorchBackend` has a torch step for ``cell``."""
    return isinstance(cell, (kpref.Elman, kpref.GRU, kpref.LSTM, kpref.LeakyRNN, kpref.Linear, kpref.RateODE))


def _transpose_blocks(w, H):
    """(G·H, H) → each H×H block transposed."""
    G = w.shape[0] // H
    return w.reshape(G, H, H).transpose(-1, -2).reshape(G * H, H)


def torch_step(cell, dtype, mutation=None):
    """``step(params, h, x) -> h'`` in torch for ``cell``; ``params`` maps kpref names to tensors, rows batched."""
    H = cell.hidden_size

    def prepare(params):
        if mutation == "transposed_weight_hh":
            params = dict(params)
            params["weight_hh"] = _transpose_blocks(params["weight_hh"], H)
        return params

    if isinstance(cell, kpref.GRU) and mutation == "gru_dropped_reset":
        def step(params, h, x):
            p = prepare(params)
            gi = x @ p["weight_ih"].T
            gh = h @ p["weight_hh"].T
            if cell.bias:
                gi = gi + p["bias_ih"]
                gh = gh + p["bias_hh"]
            u = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            # the mutation: correct is n = tanh(gi_n + r * gh_n) with r = sigmoid(gi_r + gh_r)
            n = torch.tanh(gi[:, 2 * H:] + gh[:, 2 * H:])
            return (1 - u) * n + u * h
        return step
    if mutation == "gru_dropped_reset":
        raise ValueError(f"mutation: 'gru_dropped_reset' needs a GRU, got {cell!r}")

    if isinstance(cell, kpref.Elman):
        module = torch.nn.RNNCell(cell.input_size, H, bias=cell.bias, nonlinearity=cell.nonlinearity, dtype=dtype)
        return lambda params, h, x: functional_call(module, prepare(params), (x, h))
    if isinstance(cell, kpref.GRU):
        module = torch.nn.GRUCell(cell.input_size, H, bias=cell.bias, dtype=dtype)
        return lambda params, h, x: functional_call(module, prepare(params), (x, h))
    if isinstance(cell, kpref.LSTM):
        module = torch.nn.LSTMCell(cell.input_size, H, bias=cell.bias, dtype=dtype)

        def step(params, hc, x):
            h_new, c_new = functional_call(module, prepare(params), (x, (hc[:, :H], hc[:, H:])))
            return torch.cat([h_new, c_new], dim=1)
        return step
    if isinstance(cell, (kpref.LeakyRNN, kpref.Linear)):
        alpha = getattr(cell, "alpha", None)

        def step(params, h, x):
            p = prepare(params)
            drive = x @ p["weight_ih"].T
            if cell.bias:
                drive = drive + p["bias"]
            if alpha is None:                      # Linear: h' = W h + U x + b
                return h @ p["weight_hh"].T + drive
            return (1 - alpha) * h + alpha * (torch.tanh(h) @ p["weight_hh"].T + drive)
        return step
    if isinstance(cell, kpref.RateODE):
        tau, dt, method = cell.tau, cell.dt, cell.method

        def step(params, h, x):
            p = prepare(params)
            drive = x @ p["weight_ih"].T
            if cell.bias:
                drive = drive + p["bias"]

            def f(z):
                return (-z + torch.tanh(z) @ p["weight_hh"].T + drive) / tau

            if method == "euler":
                return h + dt * f(h)
            if method == "midpoint":
                return h + dt * f(h + 0.5 * dt * f(h))
            k1 = f(h)
            k2 = f(h + 0.5 * dt * k1)
            k3 = f(h + 0.5 * dt * k2)
            k4 = f(h + dt * k3)
            return h + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        return step
    raise NotImplementedError(f"no torch step for {cell!r}")


class TorchBackend(kpref.interop.torch.TorchBackend):
    """The operators of ``(cell, theta, x, h0)`` by ``torch.func``: :func:`kpref.interop.torch.backend` on :func:`torch_step`.

    Parameters
    ----------
    cell : kpref cell (see :func:`supports`)
    theta : (p,) array
        kpref's flat layout; converted through :meth:`kpref.Cell.params_to_torch`.
    x : (B, T, N) array
    h0 : (B, S) array, optional
    dtype : torch.float64 or torch.float32
        Everything (θ, x, h0, the inputs) is cast to it; answers are torch
        tensors of that dtype (parameter answers: dicts in kpref's names).
    mutation : str, optional
        One of :data:`MUTATIONS` (see the module notes).
    """

    def __init__(self, cell, theta, x, h0=None, *, dtype=torch.float64, mutation=None):
        if mutation is not None and mutation not in MUTATIONS:
            raise ValueError(f"mutation: expected None or one of {MUTATIONS}, got {mutation!r}")
        step = torch_step(cell, dtype, mutation)
        params = {k: torch.as_tensor(v, dtype=dtype) for k, v in cell.params_to_torch(theta).items()}
        super().__init__(lambda h, x_, p: step(p, h, x_), cell, params, x, h0)
        self.mutation = mutation

    def _P_adjoint_by_hand(self, w):
        """λ_{T-1} = w_{T-1}, λ_t = w_t + A_{t'}ᵀ λ_{t+1} with t' = t (the bug; correct: t' = t + 1)."""
        T = self.shape[1]
        lam = [None] * T
        lam[T - 1] = w[:, T - 1]
        for t in range(T - 2, -1, -1):
            lam[t] = w[:, t] + self.A_adjoint(t, lam[t + 1])     # off by one: A_t, not A_{t+1}
        return torch.stack(lam, dim=1)

    def P_adjoint(self, w):
        if self.mutation == "adjoint_off_by_one":
            return self._P_adjoint_by_hand(self._traj_in(w))
        return super().P_adjoint(w)

    def grad(self, e):
        if self.mutation == "adjoint_off_by_one":
            return self._J_adjoint(self._P_adjoint_by_hand(self._traj_in(e)))
        return super().grad(e)


def sequence_module_simulate(cell, theta, x, h0=None, dtype=torch.float64):
    """The trajectory from ``torch.nn.RNN``/``GRU``/``LSTM`` (one layer, ``batch_first``), loaded by ``params_to_torch(theta, '_l0')``.

    Returns a ``simulate`` callable for ``check_backend`` (the state ``[h, c]``
    of an LSTM is assembled from ``output`` and the running cell state, which
    ``torch.nn.LSTM`` only returns at the end, so the LSTM loop feeds one step
    at a time).
    """
    N, H = cell.input_size, cell.hidden_size
    if isinstance(cell, kpref.Elman):
        module = torch.nn.RNN(N, H, nonlinearity=cell.nonlinearity, bias=cell.bias, batch_first=True)
    elif isinstance(cell, kpref.GRU):
        module = torch.nn.GRU(N, H, bias=cell.bias, batch_first=True)
    elif isinstance(cell, kpref.LSTM):
        module = torch.nn.LSTM(N, H, bias=cell.bias, batch_first=True)
    else:
        raise NotImplementedError(f"no torch.nn sequence module for {cell!r}")
    module = module.to(dtype)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cell.params_to_torch(theta, "_l0").items()})
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=dtype)
    B, T, _ = xt.shape
    h0t = (torch.zeros(B, cell.state_size, dtype=dtype) if h0 is None
           else torch.as_tensor(np.asarray(h0, dtype=np.float64), dtype=dtype))

    def simulate():
        with torch.no_grad():
            if isinstance(cell, kpref.LSTM):
                h, c, out = h0t[None, :, :H].contiguous(), h0t[None, :, H:].contiguous(), []
                for t in range(T):
                    _, (h, c) = module(xt[:, t:t + 1], (h, c))
                    out.append(torch.cat([h[0], c[0]], dim=1))
                return torch.stack(out, dim=1).numpy()
            return module(xt, h0t[None].contiguous())[0].numpy()

    return simulate

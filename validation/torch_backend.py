"""A PyTorch (``torch.func``) backend of every built-in kpref cell, for :func:`kpref.testing.check_backend`.

This is the kind of implementation kpref exists to check: the trajectory is an
unrolled torch loop, and every operator comes from torch's automatic
differentiation, not from kpref's hand-derived products:

* ``simulate()``: ``h_t = F(h_{t-1}, x_t)`` unrolled over ``t``;
* ``P(q)``: ``torch.func.jvp`` of the map ``q ↦ trajectory`` of the recurrence
  with an injection, ``h_t = F(h_{t-1}, x_t) + q_t``, at ``q = 0``: its tangent is
  ``v_t = A_t v_{t-1} + q_t``;
* ``P_adjoint(w)``: ``torch.func.vjp`` of the same map;
* ``J(dθ)``, ``J_adjoint(w)``: ``jvp``/``vjp`` with respect to ``θ`` of the step
  applied to every (trial, step) row at once with the previous states taken
  from the (detached) trajectory: the *immediate* parameter Jacobian ``G_t``
  of SPEC §3, ``h_{t-1}`` held fixed;
* ``K(w) = J(J_adjoint(w))`` (in torch, in the backend's dtype);
* ``grad(e)``: ``vjp`` of the whole trajectory with respect to ``θ``
  (PyTorch's backpropagation through time).

Steps: ``Elman``, ``GRU`` and ``LSTM`` call ``torch.nn.RNNCell``/``GRUCell``/
``LSTMCell`` through ``torch.func.functional_call`` (so kpref is checked
against torch's own cells); ``LeakyRNN``, ``Linear`` and ``RateODE`` (Euler,
midpoint, RK4 written out here, independently of :mod:`kpref.ode._ode`) are
written in torch. A user :class:`kpref.ODECell` has no torch counterpart.

Mutations (``mutation=``), deliberate bugs that :func:`check_backend` must
catch and locate:

* ``'transposed_weight_hh'``: every ``H×H`` block of ``weight_hh`` is used
  transposed (all operators);
* ``'adjoint_off_by_one'``: ``P_adjoint`` and ``grad`` run the backward sweep
  by hand with ``λ_t = w_t + A_tᵀ λ_{t+1}`` (the Jacobian of step ``t`` instead of
  ``t+1``; harmless, hence invisible, for ``Linear``, whose ``A_t = W`` for all ``t``);
* ``'gru_dropped_reset'`` (GRU only): ``n = tanh(W_in x + b_in + (W_hn h + b_hn))``,
  the reset gate ``r ⊙`` dropped (written-out GRU equations).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, jvp, vjp

import kpref

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


class TorchBackend:
    """The operators of ``(cell, theta, x, h0)`` by ``torch.func``, in the backend format of ``check_backend``.

    Parameters
    ----------
    cell : kpref cell (see :func:`supports`)
    theta : (p,) array
        kpref's flat layout; converted through :meth:`kpref.Cell.params_to_torch`.
    x : (B, T, N) array
    h0 : (B, S) array, optional
    dtype : torch.float64 or torch.float32
        Everything (θ, x, h0, the inputs) is cast to it; answers are NumPy
        arrays of that dtype.
    mutation : str, optional
        One of :data:`MUTATIONS` (see the module notes).
    """

    def __init__(self, cell, theta, x, h0=None, *, dtype=torch.float64, mutation=None):
        if mutation is not None and mutation not in MUTATIONS:
            raise ValueError(f"mutation: expected None or one of {MUTATIONS}, got {mutation!r}")
        self.cell, self.mutation = cell, mutation
        self.torch_dtype = dtype
        self.dtype = str(dtype).replace("torch.", "")
        x = np.asarray(x, dtype=np.float64)
        B, T, _ = x.shape
        self.shape = (B, T, cell.state_size)
        named = cell.params_to_torch(theta)
        self.theta = torch.cat([torch.as_tensor(named[n], dtype=dtype).reshape(-1) for n in cell.param_shapes])
        self.x = torch.as_tensor(x, dtype=dtype)
        self.h0 = (torch.zeros(B, cell.state_size, dtype=dtype) if h0 is None
                   else torch.as_tensor(np.asarray(h0, dtype=np.float64), dtype=dtype))
        self._step = torch_step(cell, dtype, mutation)
        self._slices = list(cell.param_slices().items())
        with torch.no_grad():
            self._z = self._trajectory(self.theta, torch.zeros(self.shape, dtype=dtype))
        # rows (b, t) of the immediate Jacobian: previous state h_{t-1} (detached) and input x_t
        h_prev = torch.cat([self.h0[:, None], self._z[:, :-1]], dim=1)
        self._h_rows = h_prev.reshape(B * T, -1).detach()
        self._x_rows = self.x.reshape(B * T, -1)

    # ----------------------------------------------------------- helpers
    def _params(self, theta):
        return {name: theta[sl].reshape(self.cell.param_shapes[name]) for name, sl in self._slices}

    def _trajectory(self, theta, q):
        """``h_t = F(h_{t-1}, x_t; θ) + q_t`` unrolled; returns (B, T, S)."""
        params = self._params(theta)
        h, out = self.h0, []
        for t in range(self.shape[1]):
            h = self._step(params, h, self.x[:, t]) + q[:, t]
            out.append(h)
        return torch.stack(out, dim=1)

    def _immediate(self, theta):
        """``F(h_{t-1}, x_t; θ)`` at every (trial, step) row with the previous states fixed: (B, T, S)."""
        return self._step(self._params(theta), self._h_rows, self._x_rows).reshape(self.shape)

    def _tensor(self, a):
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=self.torch_dtype)

    @staticmethod
    def _numpy(t):
        return t.detach().numpy().copy()

    def _zeros(self):
        return torch.zeros(self.shape, dtype=self.torch_dtype)

    # --------------------------------------------------------- operators
    def simulate(self):
        return self._numpy(self._z)

    def P(self, q):
        return self._numpy(jvp(lambda q_: self._trajectory(self.theta, q_), (self._zeros(),), (self._tensor(q),))[1])

    def _P_adjoint(self, w):
        if self.mutation == "adjoint_off_by_one":
            return self._P_adjoint_by_hand(w)
        _, pullback = vjp(lambda q_: self._trajectory(self.theta, q_), self._zeros())
        return pullback(w)[0]

    def _P_adjoint_by_hand(self, w):
        """λ_{T-1} = w_{T-1}, λ_t = w_t + A_{t'}ᵀ λ_{t+1} with t' = t (the bug; correct: t' = t + 1)."""
        B, T, S = self.shape
        params = self._params(self.theta)
        h_prev = self._h_rows.reshape(B, T, S)
        lam = [None] * T
        lam[T - 1] = w[:, T - 1]
        for t in range(T - 2, -1, -1):
            s = t   # off by one: A_{t+1} is the Jacobian at (h_t, x_{t+1}) = (h_prev[:, t+1], x[:, t+1])
            _, pullback = vjp(lambda h: self._step(params, h, self.x[:, s]), h_prev[:, s])
            lam[t] = w[:, t] + pullback(lam[t + 1])[0]
        return torch.stack(lam, dim=1)

    def P_adjoint(self, w):
        return self._numpy(self._P_adjoint(self._tensor(w)))

    def _J(self, dtheta):
        return jvp(self._immediate, (self.theta,), (dtheta,))[1]

    def _J_adjoint(self, w):
        _, pullback = vjp(self._immediate, self.theta)
        return pullback(w)[0]

    def J(self, dtheta):
        return self._numpy(self._J(self._tensor(dtheta)))

    def J_adjoint(self, w):
        return self._numpy(self._J_adjoint(self._tensor(w)))

    def K(self, w):
        return self._numpy(self._J(self._J_adjoint(self._tensor(w))))

    def grad(self, e):
        e = self._tensor(e)
        if self.mutation == "adjoint_off_by_one":
            return self._numpy(self._J_adjoint(self._P_adjoint_by_hand(e)))
        _, pullback = vjp(lambda th: self._trajectory(th, self._zeros()), self.theta)
        return self._numpy(pullback(e)[0])


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

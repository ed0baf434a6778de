r"""Every operator slot of :func:`kpref.testing.check_backend` from a step function and an autodiff system.

:class:`AutodiffBackend` writes the slots once, in terms of five primitives a
framework adapter supplies (``jvp``, ``vjp``, an array constructor, ``stack``,
``concat``); :mod:`kpref.interop.torch` supplies them with ``torch.func`` and
:mod:`kpref.interop.jax` with ``jax.jvp``/``jax.vjp``.

Notes
-----
With ``F`` the step, rows ``(b, t)`` at ``(h_{t-1}, x_t)`` (``h_{-1} = h0``)
and the trajectory map ``Z(θ, q)``: ``h_t = F(h_{t-1}, x_t; θ) + q_t``:

* ``simulate() = Z(θ, 0)``; ``P(q) = ∂_q Z · q`` (jvp), ``P_adjoint(w) = (∂_q Z)ᵀ w``
  (vjp); ``dz_dtheta``/``dz_dtheta_adjoint`` and ``grad``: the same with
  respect to ``θ`` (backpropagation through time by the framework);
* ``J``/``J_adjoint``: jvp/vjp with respect to ``θ`` of ``F`` applied to every
  row at once with the previous states taken from the trajectory (the
  immediate Jacobian ``G_t``, ``h_{t-1}`` held fixed); ``K = J J_adjoint``,
  ``NTK = P K P_adjoint``;
* ``P_inv(v)_t = v_t − A_t v_{t-1}``: one jvp of the row map in ``h`` on the
  shifted ``v``; ``P_inv_adjoint(w)_t = w_t − A_{t+1}ᵀ w_{t+1}``: one vjp,
  shifted back;
* ``A(t, v)``, ``A_adjoint(t, w)``, ``G(t, dθ)``, ``G_adjoint(t, w)``: jvp/vjp of
  the step at the rows of step ``t``.

The state is kpref's (``[h, c]`` concatenated for an LSTM). Parameters go in
and out as dicts keyed by the backend's own names in its own order
(``backend.params``; check_backend follows it); answers are the framework's
arrays in the backend's dtype, which sets the budget.
"""

from __future__ import annotations

import numpy as np

from ._names import match_names, params_from_torch, to_numpy
from ..cells._simulate import check_problem

__all__ = ["AutodiffBackend"]


class AutodiffBackend:
    """The slots, given a step ``f(h, x, params)`` and the framework primitives of a subclass.

    Attributes
    ----------
    cell, theta, x, h0 : the float64 problem (``problem`` is the tuple)
    params : dict key → array
        The backend's parameters in its own names and order.
    dtype : the framework's dtype
    """

    framework = "autodiff"

    # ------------------------------------------------ framework primitives
    def _jvp(self, f, primal, tangent, *args):
        """``∂₁f(primal, *args) · tangent`` (``f`` one of the stable maps below: adapters may cache on it)."""
        raise NotImplementedError

    def _vjp(self, f, primal, cotangent, *args):
        """``∂₁f(primal, *args)ᵀ · cotangent``."""
        raise NotImplementedError

    def _array(self, a):
        """A NumPy float64 array → the framework's array of ``self.dtype``."""
        raise NotImplementedError

    def _stack(self, arrays, axis):
        raise NotImplementedError

    def _concat(self, arrays, axis):
        raise NotImplementedError

    # ------------------------------------------------------------- set-up
    def _setup(self, step, cell, params, x, h0, dtype):
        self._step_fn = step
        self.cell = cell
        self.params = dict(params)
        self.dtype = dtype
        self._match = match_names(cell, list(self.params), "params")
        self.theta = params_from_torch(cell, {n: self.params[k] for n, k in self._match.keys.items()})
        # x and h0 checked as for any kpref problem (real, finite, (B, T, N) and (B, S)); copies the backend owns
        _, x, h0 = check_problem(cell, self.theta, to_numpy(x), None if h0 is None else to_numpy(h0))
        self.x, self.h0 = np.array(x, copy=True), np.array(h0, copy=True)
        B, T, N = self.x.shape
        S = cell.state_size
        self.problem = (cell, self.theta, self.x, self.h0)
        self.shape = (B, T, S)
        self._x = self._array(self.x)
        self._h0 = self._array(self.h0)
        self._z = self._trajectory(self.params, self._array(np.zeros(self.shape)))
        self._h_steps = self._concat([self._h0[:, None], self._z[:, :-1]], 1)   # (B, T, S): h_{t-1} of step t
        self._h_rows = self._h_steps.reshape(B * T, S)
        self._x_rows = self._x.reshape(B * T, N)

    def _tangent(self, d):
        """A parameter tangent (a dict in the backend's names, or flat in kpref's layout) → dict of arrays."""
        if hasattr(d, "keys"):
            return {k: self._array(np.asarray(d[k], dtype=np.float64)) if k in d else 0 * v
                    for k, v in self.params.items()}
        views = self.cell.unflatten(np.asarray(d, dtype=np.float64))
        out = {}
        for key, v in self.params.items():
            name = self._match.kpref_name(key)
            out[key] = self._array(views[name]) if name is not None else 0 * v
        return out

    def _traj_in(self, a):
        return self._array(np.asarray(to_numpy(a), dtype=np.float64))

    def _trajectory(self, params, q):
        h, out = self._h0, []
        for t in range(self.shape[1]):
            h = self._step_fn(h, self._x[:, t], params) + q[:, t]
            out.append(h)
        return self._stack(out, 1)

    def _rows(self, params, h_rows):
        """``F(h_{t-1}, x_t)`` at every row (b, t), as (B, T, S)."""
        return self._step_fn(h_rows, self._x_rows, params).reshape(self.shape)

    def _zero_traj(self):
        return 0 * self._z

    def as_dict(self):
        """The slots as a dict (with ``dtype`` and ``params``): replace one to test a variant."""
        from ..testing._backend import OPERATORS
        out = {name: getattr(self, name) for name in OPERATORS}
        out.update(dtype=str(self.dtype).replace("torch.", ""), params=self.params)
        return out

    def __repr__(self):
        B, T, S = self.shape
        return (f"<kpref {self.framework} backend of {self.cell!r}, B={B}, T={T}, S={S}, "
                f"{str(self.dtype).replace('torch.', '')}>")

    # ------------------------------------- the maps differentiated (first argument)
    def _traj_of_q(self, q, params):
        return self._trajectory(params, q)

    def _traj_of_params(self, params, q):
        return self._trajectory(params, q)

    def _rows_of_h(self, h, params):
        return self._rows(params, h)

    def _rows_of_params(self, params, h):
        return self._rows(params, h)

    def _step_of_h(self, h, x, params):
        return self._step_fn(h, x, params)

    def _step_of_params(self, params, h, x):
        return self._step_fn(h, x, params)

    # --------------------------------------------------------------- slots
    def simulate(self):
        return self._z

    def P(self, q):
        return self._jvp(self._traj_of_q, self._zero_traj(), self._traj_in(q), self.params)

    def P_adjoint(self, w):
        return self._vjp(self._traj_of_q, self._zero_traj(), self._traj_in(w), self.params)

    def P_inv(self, v):
        v = self._traj_in(v)
        B, T, S = self.shape
        shifted = self._concat([0 * v[:, :1], v[:, :-1]], 1)                      # v_{t-1}, v_{-1} = 0
        return v - self._jvp(self._rows_of_h, self._h_rows, shifted.reshape(B * T, S), self.params)

    def P_inv_adjoint(self, w):
        w = self._traj_in(w)
        B, T, S = self.shape
        At_w = self._vjp(self._rows_of_h, self._h_rows, w, self.params).reshape(B, T, S)   # A_t^T w_t
        # transposes: (P^-1 v)_t = v_t - A_t v_{t-1}
        return w - self._concat([At_w[:, 1:], 0 * w[:, :1]], 1)

    def _J(self, tangent):
        return self._jvp(self._rows_of_params, self.params, tangent, self._h_rows)

    def _J_adjoint(self, W):
        return self._vjp(self._rows_of_params, self.params, W, self._h_rows)

    def J(self, dtheta):
        return self._J(self._tangent(dtheta))

    def J_adjoint(self, w):
        return self._J_adjoint(self._traj_in(w))

    def K(self, w):
        return self._J(self._J_adjoint(self._traj_in(w)))

    def NTK(self, w):
        return self.P(self.K(self.P_adjoint(w)))

    def dz_dtheta(self, dtheta):
        return self._jvp(self._traj_of_params, self.params, self._tangent(dtheta), self._zero_traj())

    def dz_dtheta_adjoint(self, w):
        return self._vjp(self._traj_of_params, self.params, self._traj_in(w), self._zero_traj())

    def grad(self, e):
        return self.dz_dtheta_adjoint(e)

    def A(self, t, v):
        return self._jvp(self._step_of_h, self._h_steps[:, t], self._traj_in(v), self._x[:, t], self.params)

    def A_adjoint(self, t, w):
        return self._vjp(self._step_of_h, self._h_steps[:, t], self._traj_in(w), self._x[:, t], self.params)

    def G(self, t, dtheta):
        return self._jvp(self._step_of_params, self.params, self._tangent(dtheta), self._h_steps[:, t], self._x[:, t])

    def G_adjoint(self, t, w):
        return self._vjp(self._step_of_params, self.params, self._traj_in(w), self._h_steps[:, t], self._x[:, t])

r"""The continuous adjoint of an ODE cell, as an adjoint strategy for :func:`kpref.linearize`.

The loss ``Σ_t ⟨e_t, z_t⟩`` puts a point load ``e_t`` at the end of step
``t``. The adjoint solves ``dλ/ds = −J(z(s))ᵀ λ`` backward, jumps by ``e_t``
at step ends (``λ(t⁻) = λ(t⁺) + e_t``), and ``∇_θ L = ∫ Φ(z(s))ᵀ λ(s) ds``.
Over each step, in the reversed time ``σ = t_end − s``, the augmented system
``dλ/dσ = Jᵀ λ``, ``dμ/dσ = Φᵀ λ`` is integrated with the *same* tableau::

    Λ_i  = λ + Δt Σ_{j<i} a_ij l_j,   l_i = J(y_i)ᵀ Λ_i,   m_i = Φ(y_i)ᵀ Λ_i
    λ   ← λ + Δt Σ_i b_i l_i,         μ  ← μ + Δt Σ_i b_i m_i

with ``y_i`` the forward state at time ``t_end − c_i Δt``: the step's end
``z_t`` (``c = 0``), its start ``z_{t−1}`` (``c = 1``), and, for ``c = 1/2``
(midpoint, RK4), a forward half step of size ``Δt/2`` from ``z_{t−1}`` with
the same method (local error ``O(Δt^{order+1})``, so the global order is
kept). Tableaux with other nodes are refused. The result differs from the
exact discrete gradient ``J_θᵀ P* e`` by ``O(Δt^order)``: order 1, 2, 4 for
Euler, midpoint, RK4 (tested by refining ``dt`` with the input repeated and
the loads kept at the original sample times).

*Which adjoint to use.* The discrete adjoint is the exact gradient of what
was computed: use it to train, to check a gradient, and whenever the
operators (P, K, NTK) must be consistent with the gradient. The continuous
adjoint approximates the gradient of the continuous-time model's loss (the
``dt → 0`` limit); it is not the derivative of anything computed, so a
finite-difference check of it fails at the ``O(Δt^order)`` level. Use it to
reproduce an adjoint-ODE solver (neural-ODE style ``odeint_adjoint``) or to
study a continuous-time quantity independently of the discretization.
"""

from __future__ import annotations

import numpy as np

from ..operators._adjoint import AdjointStrategy

__all__ = ["ContinuousAdjoint"]

_NODES = (0.0, 0.5, 1.0)


class ContinuousAdjoint(AdjointStrategy):
    """The adjoint ODE solved backward with the cell's own tableau (ODE cells).

    Pass ``adjoint=ContinuousAdjoint()`` (or ``adjoint='continuous'``) to
    :func:`kpref.linearize`; :meth:`solve` is the same computation on explicit
    arrays.
    """

    name = "continuous"

    def check(self, cell):
        from ._ode import ODECell

        if not isinstance(cell, ODECell):
            raise ValueError(f"adjoint: ContinuousAdjoint needs an ODE cell (RateODE, ODECell), got "
                             f"{type(cell).__name__}; use adjoint='discrete'")
        bad = [c for c in cell.tableau.c if c not in _NODES]
        if bad:
            raise ValueError(f"adjoint: ContinuousAdjoint needs stage nodes c in {_NODES}, got {bad} for the "
                             f"tableau {cell.tableau.name!r}; use adjoint='discrete'")

    def gradient(self, lin, e):
        return self.solve(lin.cell, lin.theta, lin.x, lin.h0, lin.z, e)

    def midstep_state(self, cell, params, z_start, x_t):
        """The forward state half a step after ``z_start``: one step of size Δt/2 with the same method."""
        return cell.stepper.step(params, z_start, x_t, 0.5 * cell.dt)[0]

    def solve(self, cell, theta, x, h0, z, e):
        """``∫ (∂f/∂θ)ᵀ λ ds`` (p,) for checked float64 arrays (``z = simulate(cell, theta, x, h0)``)."""
        stepper, params = cell.stepper, cell._params(theta)
        tab, dt, field = stepper.tableau, stepper.dt, stepper.field
        B, T, S = z.shape
        s = tab.stages
        need_half = any(c == 0.5 for c in tab.c)
        Y = np.empty((T, B, s, S))                   # forward states at the stage times
        Lam = np.empty((T, B, s, S))                 # quadrature weights Δt b_i Λ_i
        lam = np.zeros((B, S))
        for t in reversed(range(T)):
            lam = lam + e[:, t]                      # jump: λ(t⁻) = λ(t⁺) + e_t
            x_t = np.ascontiguousarray(x[:, t])
            z_end = np.ascontiguousarray(z[:, t])
            z_start = np.ascontiguousarray(z[:, t - 1]) if t > 0 else h0
            z_half = self.midstep_state(cell, params, z_start, x_t) if need_half else None
            for i, c in enumerate(tab.c):
                Y[t, :, i] = z_end if c == 0.0 else (z_start if c == 1.0 else z_half)
            rows = np.ascontiguousarray(Y[t]).reshape(B * s, S)
            cache = tuple(np.ascontiguousarray(cc).reshape((B, s) + cc.shape[1:])
                          for cc in field.prepare_rows(rows, np.repeat(x_t, s, axis=0), params))
            slopes = []
            for i in range(tab.stages):
                Lam_i = lam                          # Λ_i = λ + Δt Σ_{j<i} a_ij l_j
                for j, a in tab.terms[i]:
                    Lam_i = Lam_i + (dt * a) * slopes[j]
                Lam[t, :, i] = (dt * tab.b[i]) * Lam_i
                ci = tuple(np.ascontiguousarray(cc[:, i]) for cc in cache)
                slopes.append(field.vjp_z_block(np.ascontiguousarray(Y[t, :, i]), x_t, params, ci,
                                                np.ascontiguousarray(Lam_i)[None])[0])  # l_i = J(y_i)ᵀ Λ_i
            lam = stepper._combine(lam, slopes)      # λ ← λ + Δt Σ_i b_i l_i
        # μ = Σ_steps Δt Σ_i b_i Φ(y_i)ᵀ Λ_i, in one call on all stage rows
        rows = Y.reshape(T * B * s, S)
        xs = np.repeat(np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * B, -1), s, axis=0)
        cache = field.prepare_rows(rows, xs, params)
        grads = field.vjp_params_block(rows, xs, params, cache, Lam.reshape(1, T * B * s, S))
        return cell._pack_block(grads, 1)[0]

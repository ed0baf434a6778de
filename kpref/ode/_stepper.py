r"""One explicit Runge–Kutta step of a vector field, with its exact discrete tangents and adjoints.

With the tableau ``(a, b, c)`` (:class:`~kpref.ode.ButcherTableau`) and
``k_i = f(Z_i, x; θ)`` the stage slopes, one step of size ``Δt`` is
``Z_i = h + Δt Σ_{j<i} a_ij k_j``, ``h' = h + Δt Σ_i b_i k_i``. Below
``J_i = ∂f/∂z (Z_i, x; θ)`` and ``Φ_i = ∂f/∂θ (Z_i, x; θ)``.

**State tangent** ``A v`` (``A = ∂h'/∂h``)::

    δZ_i = v + Δt Σ_{j<i} a_ij δk_j
    δk_i = J_i δZ_i
    A v  = v + Δt Σ_i b_i δk_i

**State adjoint** ``Aᵀ w`` (the tangent's statements transposed, last first)::

    k̄_i = Δt b_i w,   v̄ = w                    (transposes A v = v + Δt Σ b_i δk_i)
    for i = s, …, 1:
        Z̄_i  = J_iᵀ k̄_i                          (transposes δk_i = J_i δZ_i)
        v̄   += Z̄_i                               (transposes δZ_i = v + …)
        k̄_j += Δt a_ij Z̄_i,  j < i               (transposes δZ_i = … + Δt a_ij δk_j)
    Aᵀ w = v̄

**Parameter tangent** ``G δθ`` (``h`` fixed; θ enters every stage)::

    δZ_i = Δt Σ_{j<i} a_ij δk_j
    δk_i = J_i δZ_i + Φ_i δθ
    G δθ = Δt Σ_i b_i δk_i

**Parameter adjoint** ``Σ_rows Gᵀ w``: the same reverse sweep for ``k̄_i``
(without ``v̄``), then ``Gᵀ w = Σ_i Φ_iᵀ k̄_i``, summed over rows: one call of
the field's parameter adjoint on the ``s·M`` stacked stage rows ``(Z_i, x)``
with weights ``k̄_i`` (row-wise sums commute).

The *stage cache* of a point is the tuple ``(Z, *field_cache)``: the stage
states ``Z`` (M, s, S) and the field's ``prepare_rows`` arrays at every stage
row, each shaped (M, s, …).
"""

from __future__ import annotations

import numpy as np

__all__ = ["RungeKuttaStepper"]


class RungeKuttaStepper:
    """The step ``h' = h + Δt Σ_i b_i k_i`` of ``field`` with ``tableau``, and its four linear products.

    Parameters
    ----------
    field : VectorField
    tableau : ButcherTableau
    dt : float
        ``Δt`` (checked by the caller).

    Every method takes ``params`` (dict name → read-only array, what the
    field's methods receive); the products take the point's rows ``x``
    (M, N) and its stage ``cache`` (:meth:`prepare`). Parameter blocks are
    dicts name → (k, *shape), as the field's block hooks use them.
    """

    def __init__(self, field, tableau, dt):
        self.field = field
        self.tableau = tableau
        self.dt = dt

    # ----------------------------------------------------------- the step
    def step(self, params, h, x, dt=None):
        """One step of size ``dt`` (default ``Δt``; any dtype): ``(h', [Z_1, …, Z_s])``."""
        tab, field = self.tableau, self.field
        dt = self.dt if dt is None else dt
        slopes, stages = [], []
        for i in range(tab.stages):
            Z = h
            for j, a in tab.terms[i]:
                Z = Z + (dt * a) * slopes[j]
            stages.append(Z)
            slopes.append(field.f_rows(Z, x, params))
        out = h
        for b, k in zip(tab.b, slopes):
            if b != 0.0:
                out = out + (dt * b) * k
        return out, stages

    def prepare(self, params, h, x):
        """The stage cache: ``Z`` (M, s, S), then the field's cache at every stage row, each (M, s, …)."""
        s = self.tableau.stages
        M, S = h.shape
        _, stages = self.step(params, h, x)
        Z = np.ascontiguousarray(np.stack(stages, axis=1))
        field_cache = self.field.prepare_rows(Z.reshape(M * s, S), np.repeat(x, s, axis=0), params)
        return (Z,) + tuple(np.ascontiguousarray(c).reshape((M, s) + c.shape[1:]) for c in field_cache)

    @staticmethod
    def _stage(cache, i):
        """Stage ``i``'s rows: ``Z_i`` (M, S) and the field cache at ``Z_i``."""
        return np.ascontiguousarray(cache[0][:, i]), tuple(np.ascontiguousarray(c[:, i]) for c in cache[1:])

    @staticmethod
    def _stacked(cache, x):
        """All stage rows stacked in (m, i) order: ``Z`` (M·s, S), ``x`` (M·s, N), field cache."""
        M, s = cache[0].shape[:2]
        flat = tuple(np.ascontiguousarray(c).reshape((M * s,) + c.shape[2:]) for c in cache)
        return flat[0], np.repeat(x, s, axis=0), flat[1:]

    def _combine(self, start, slopes):
        """``start + Δt Σ_i b_i slopes_i`` (stages with ``b_i = 0`` skipped)."""
        out = start
        for b, dk in zip(self.tableau.b, slopes):
            if b != 0.0:
                out = out + (self.dt * b) * dk
        return out

    # ----------------------------------------------------- stage tangents
    def state_jvp(self, params, x, cache, V):
        """``A V`` for a block ``V`` (k, M, S). Linear in ``V``."""
        tab, dt, field = self.tableau, self.dt, self.field
        V = np.ascontiguousarray(V)
        dK = []
        for i in range(tab.stages):
            dZ = V                                   # δZ_i = v + Δt Σ_{j<i} a_ij δk_j
            for j, a in tab.terms[i]:
                dZ = dZ + (dt * a) * dK[j]
            Zi, ci = self._stage(cache, i)
            dK.append(field.jvp_z_block(Zi, x, params, ci, np.ascontiguousarray(dZ)))  # δk_i = J_i δZ_i
        return self._combine(V, dK)                  # A v = v + Δt Σ_i b_i δk_i

    def state_vjp(self, params, x, cache, W):
        """``Aᵀ W`` for a block ``W`` (k, M, S). Linear in ``W``."""
        tab, dt, field = self.tableau, self.dt, self.field
        W = np.ascontiguousarray(W)
        Kbar = [(dt * b) * W for b in tab.b]        # transposes: A v = v + Δt Σ_i b_i δk_i  (δk part)
        Vbar = W.copy()                              # transposes: A v = v + …                 (v part)
        for i in reversed(range(tab.stages)):
            Zi, ci = self._stage(cache, i)
            Zbar = field.vjp_z_block(Zi, x, params, ci, Kbar[i])  # transposes: δk_i = J_i δZ_i
            Vbar += Zbar                             # transposes: δZ_i = v + …
            for j, a in tab.terms[i]:
                Kbar[j] = Kbar[j] + (dt * a) * Zbar  # transposes: δZ_i = … + Δt a_ij δk_j
        return Vbar

    def param_jvp(self, params, x, cache, dparams, k):
        """``G δθ`` for ``k`` directions ``dparams`` (dict name → (k, *shape)) → (k, M, S). Linear in ``dparams``."""
        tab, dt, field = self.tableau, self.dt, self.field
        M, s, S = cache[0].shape
        Zs, xs, cs = self._stacked(cache, x)
        # Φ_i δθ at every stage in one call on the stacked rows
        phi = field.jvp_params_block(Zs, xs, params, cs, dparams).reshape(k, M, s, S)
        dK = []
        for i in range(tab.stages):
            dk = np.ascontiguousarray(phi[:, :, i])  # δk_i = Φ_i δθ + …
            if tab.terms[i]:
                dZ = 0.0                             # δZ_i = Δt Σ_{j<i} a_ij δk_j
                for j, a in tab.terms[i]:
                    dZ = dZ + (dt * a) * dK[j]
                Zi, ci = self._stage(cache, i)
                dk = dk + field.jvp_z_block(Zi, x, params, ci, np.ascontiguousarray(dZ))  # … + J_i δZ_i
            dK.append(dk)
        return self._combine(np.zeros((k, M, S)), dK)   # G δθ = Δt Σ_i b_i δk_i

    def param_vjp(self, params, x, cache, W):
        """``Σ_rows Gᵀ W`` for a block ``W`` (k, M, S) → dict name → (k, *shape). Linear in ``W``."""
        tab, dt, field = self.tableau, self.dt, self.field
        W = np.ascontiguousarray(W)
        k = W.shape[0]
        M, s, S = cache[0].shape
        Kbar = [(dt * b) * W for b in tab.b]        # transposes: G δθ = Δt Σ_i b_i δk_i
        for i in reversed(range(tab.stages)):
            if tab.terms[i]:
                Zi, ci = self._stage(cache, i)
                Zbar = field.vjp_z_block(Zi, x, params, ci, Kbar[i])  # transposes: δk_i = J_i δZ_i + …
                for j, a in tab.terms[i]:
                    Kbar[j] = Kbar[j] + (dt * a) * Zbar  # transposes: δZ_i = Δt Σ_{j<i} a_ij δk_j
        # transposes: δk_i = … + Φ_i δθ, every stage at once on the stacked rows
        stacked = np.ascontiguousarray(np.stack(Kbar, axis=2)).reshape(k, M * s, S)
        Zs, xs, cs = self._stacked(cache, x)
        return field.vjp_params_block(Zs, xs, params, cs, stacked)

r"""The K-P operators of a trajectory (SPEC §3) and the gradient by the adjoint (SPEC §4).

Notes
-----
For trials ``b`` and steps ``t = 0 … T-1`` (0-based here; SPEC counts from 1)
let ``A_t = ∂F/∂h`` and ``G_t = ∂F/∂θ`` at ``(h_{t-1}, x_t)`` with
``h_{-1} = h_0``. Trajectory vectors are ``(B, T, S)`` arrays flattened in C
order; the operators are

* ``P`` (propagate forward in time): ``v_0 = q_0``, ``v_t = A_t v_{t-1} + q_t``;
* ``P*`` (propagate backward in time): ``λ_{T-1} = w_{T-1}``,
  ``λ_t = w_t + A_{t+1}ᵀ λ_{t+1}`` — the adjoint of ``P`` for the Euclidean
  inner product, the same sweep run the other way;
* ``P⁻¹``: ``(P⁻¹ v)_t = v_t − A_t v_{t-1}`` (no sweep), adjoint
  ``(P⁻ᵀ w)_t = w_t − A_{t+1}ᵀ w_{t+1}``;
* ``J_θ``: ``(J_θ δθ)_{b,t} = G_{b,t} δθ``, ``J_θᵀ w = Σ_{b,t} G_{b,t}ᵀ w_{b,t}``;
* ``K = J_θ J_θᵀ`` and ``NTK = P K P*`` (symmetric PSD: ``.H`` is itself);
  ``K`` applies ``J_θ J_θᵀ`` through the cell's per-unit weight sites when it
  declares them (``k_route='unit_sites'``, :mod:`kpref.operators._unit_product`),
  else through ``J_θᵀ`` and ``J_θ``.

``A_0`` (the sensitivity to ``h_0``) does not enter ``P``; :meth:`apply_A`
still offers it (Lyapunov exponents start from ``h_0``).

The gradient of a loss ``L(z)`` with ``e = ∂L/∂z`` is ``∇_θ L = J_θᵀ P* e``:
backpropagation through time written as the adjoint recursion, exact for the
discrete recurrence. For ODE cells ``adjoint='continuous'`` replaces it by
the cell's continuous adjoint (an O(dt^order) approximation of the same
gradient; see :mod:`kpref.ode._adjoint`). The operators stay the exact discrete ones.

Internally a block of ``k`` trajectory vectors is held as ``(k, T, B, S)``,
so that ``(k, T·B, S)`` lines up with the step point's rows ``t·B + b`` (all
steps at once for ``J_θ``, ``J_θᵀ`` and ``P⁻¹``) and ``[:, t]`` is one step of
the sweeps.

Two strategies apply ``A_t``:

* ``'matrix_free'`` — the cell's hand-derived ``state_jvp``/``state_vjp``
  on the cached step point (memory O(B·T·S·gates));
* ``'materialized'`` — dense ``A_t`` (B·T·S² floats) built once, then
  batched mat-vecs; faster for many products at small S.

``'auto'`` materializes when ``S ≤ 32`` and the dense Jacobians take at most
``min(64 MiB, memory_limit/4)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..cells._cell import Cell, StepPoint
from .._checks import (as_real_array, check_choice, check_finite_result, check_memory, check_memory_limit,
                       freeze_arrays, readonly_copy)
from ._adjoint import AdjointStrategy, DiscreteAdjoint
from ._named import NamedOperator
from ._unit_product import UnitSiteProduct
from ._loss import Loss, mse_loss  # noqa: F401  (moved to _loss; importable from here as before)
from ..cells._cell import step_rows
from ..cells._simulate import check_problem
from .._jit import njit

__all__ = ["linearize", "Linearization", "KroneckerSite"]

_MATERIALIZE_MAX_STATE = 32
_MATERIALIZE_MAX_BYTES = 64 * 1024**2


def linearize(cell, theta, x, h0=None, *, strategy="auto", adjoint="discrete", memory_limit=None,
              k_route="auto"):
    """Simulate the trajectory and linearize it: the K-P operators at ``(θ, x, h0)``.

    Parameters
    ----------
    cell : kpref cell
    theta : (p,) array
    x : (B, T, N) array
    h0 : (B, S) array, optional (zeros)
    strategy : {'auto', 'matrix_free', 'materialized'}
        How ``A_t`` is applied (see the module notes).
    adjoint : {'discrete', 'continuous'} or AdjointStrategy
        Route of :meth:`Linearization.grad` (:mod:`kpref.operators._adjoint`).
        ``'discrete'`` (default, :class:`DiscreteAdjoint`) is the exact
        gradient of the discrete recurrence. ``'continuous'`` (cells declaring
        ``has_continuous_adjoint``: ODE cells) is ``cell.continuous_adjoint()``,
        the adjoint ODE (:class:`~kpref.ode.ContinuousAdjoint`): right for
        comparing with a continuous-time method, wrong by O(dt^order) as the
        gradient of what was actually simulated. An :class:`AdjointStrategy`
        instance is used as given (after its ``check(cell)``).
    memory_limit : int, optional
        Bytes any dense materialization may take (default 2 GiB).
    k_route : {'auto', 'unit_sites', 'jacobian'}
        How ``K`` (and so ``NTK = P K P*``) applies ``J_θ J_θᵀ``:
        ``'unit_sites'`` through the cell's per-unit weight sites, two large
        GEMMs per site for a whole block of columns
        (:mod:`kpref.operators._unit_product`; cells declaring
        ``has_unit_weight_sites``); ``'jacobian'`` through the cell's
        ``J_θᵀ`` and ``J_θ`` kernels, column by column (every cell; the route
        before issue 17). ``'auto'`` (default) takes ``'unit_sites'`` when the
        cell declares them. Both are exact (they agree to rounding).

    Returns
    -------
    Linearization
        An immutable snapshot (private read-only copies of θ, x, h0 and z).

    Raises
    ------
    FloatingPointError
        If the trajectory overflows to inf/NaN (every input being finite).
    """
    theta, x, h0 = check_problem(cell, theta, x, h0)
    strategy, adjoint, memory_limit, k_route = _check_options(cell, strategy, adjoint, memory_limit, k_route)
    z, cache = cell._run_prepared(theta, x, h0)     # the forward sweep and the cache of its rows, fused by some cells
    check_finite_result("linearize: the trajectory z", z, _DIVERGED_HINT)
    lin = Linearization.__new__(Linearization)
    lin._setup(cell, theta, x, h0, z, strategy, adjoint, memory_limit, k_route, cache=cache)
    return lin


_DIVERGED_HINT = "the recurrence diverged: lower the gain g, the weights or the input scale"


def _check_options(cell, strategy, adjoint, memory_limit, k_route):
    check_choice("strategy", strategy, ("auto", "matrix_free", "materialized"))
    adjoint = _adjoint_strategy(cell, adjoint)   # refuse before simulating
    check_choice("k_route", k_route, ("auto", "unit_sites", "jacobian"))
    has_sites = bool(cell.has_unit_weight_sites)     # declared on every Cell (default False)
    if k_route == "unit_sites" and not has_sites:
        raise ValueError(
            f"k_route: 'unit_sites' needs a cell declaring per-unit weight sites (has_unit_weight_sites), got "
            f"{type(cell).__name__}, which does not; use k_route='jacobian' (or 'auto')")
    if k_route == "auto":
        k_route = "unit_sites" if has_sites else "jacobian"
    return strategy, adjoint, check_memory_limit(memory_limit), k_route


#: One step of F recomputed from the given z agrees with z to this relative accuracy in float64
#: (a step is O(1) flops per entry, rounding ~1e-16 relative; 1e-10 leaves room for another
#: implementation's order of operations, and still catches any z that is not the trajectory).
_TRAJECTORY_RTOL = 1e-10


def _adjoint_strategy(cell, adjoint):
    """The :class:`AdjointStrategy` named or given by ``adjoint``, checked against ``cell``."""
    if isinstance(adjoint, AdjointStrategy):
        adjoint.check(cell)
        return adjoint
    check_choice("adjoint", adjoint, ("discrete", "continuous"))
    if adjoint == "discrete":
        return DiscreteAdjoint()
    if not cell.has_continuous_adjoint:
        raise ValueError(
            f"adjoint: 'continuous' needs an ODE cell (RateODE, ODECell), got {type(cell).__name__} "
            "(has_continuous_adjoint=False); use adjoint='discrete'"
        )
    return cell.continuous_adjoint()


class Linearization:
    """A trajectory and its linearization; the K-P operators as ``LinearOperator``\\ s.

    Build with :func:`linearize` (or ``Linearization(cell, theta, x, h0, z)``
    for a trajectory ``z`` computed elsewhere: every argument is checked, and
    ``z`` must satisfy ``z_t = F(z_{t-1}, x_t; θ)`` at every step to a relative
    1e-10). Attributes: ``cell``, ``theta``, ``x``,
    ``h0``, ``z`` (B, T, S), ``shape == (B, T, S)``, ``size == B*T*S``,
    ``num_params``, ``strategy`` (the one in use), ``k_route`` (how ``K`` applies
    ``J_θ J_θᵀ``: ``'unit_sites'`` or ``'jacobian'``, see :func:`linearize`), ``adjoint`` (the name of the
    gradient's route) and ``adjoint_strategy`` (its :class:`AdjointStrategy`); operators
    ``P``, ``P_inv``, ``J_theta``, ``K``, ``NTK`` (and ``P.H`` = ``P*``).

    A Linearization is an immutable snapshot: ``theta``, ``x``, ``h0`` and
    ``z`` are private read-only copies (changing the caller's arrays, e.g.
    ``theta -= lr * lin.grad(e)``, changes nothing here), and every array it
    hands out is read-only or a fresh copy.
    """

    def __init__(self, cell, theta, x, h0, z, *, strategy="auto", adjoint="discrete", memory_limit=None,
                 k_route="auto"):
        theta, x, h0 = check_problem(cell, theta, x, h0)
        B, T, _ = x.shape
        z = as_real_array("z", z, (B, T, cell.state_size), ("B", "T", "S"))
        strategy, adjoint, memory_limit, k_route = _check_options(cell, strategy, adjoint, memory_limit, k_route)
        h_prev = np.concatenate([h0[:, None], z[:, :-1]], axis=1).reshape(B * T, -1)
        stepped = cell._step(theta, h_prev, np.ascontiguousarray(x).reshape(B * T, -1)).reshape(z.shape)
        err = np.abs(stepped - z)
        bound = _TRAJECTORY_RTOL * np.maximum(1.0, np.abs(z))
        if not (err <= bound).all():
            b, t, s = (int(i) for i in np.unravel_index(np.argmax(err - bound), z.shape))
            raise ValueError(
                f"z: expected the trajectory of cell at (theta, x, h0), z_t = F(z_(t-1), x_t; theta), got "
                f"|z - F(z_prev, x)| = {err[b, t, s]:.3e} at trial {b}, step {t}, unit {s} (tolerance "
                f"{_TRAJECTORY_RTOL:g} relative); use kpref.linearize(cell, theta, x, h0) to compute it"
            )
        self._setup(cell, theta, x, h0, z, strategy, adjoint, memory_limit, k_route)

    def _setup(self, cell, theta, x, h0, z, strategy, adjoint, memory_limit, k_route="jacobian", cache=None):
        """Build from checked arrays (copied here: the snapshot owns its data); ``cache`` from
        ``cell._run_prepared`` (fresh arrays of this call), else computed one step at a time."""
        theta, x, h0, z = (readonly_copy(a) for a in (theta, x, h0, z))
        self.cell, self.theta, self.x, self.h0, self.z = cell, theta, x, h0, z
        self.adjoint_strategy = _adjoint_strategy(cell, adjoint)
        B, T, S = z.shape
        self.shape = (B, T, S)
        self.size = B * T * S
        self.num_params = cell.num_params
        self.adjoint = self.adjoint_strategy.name or type(self.adjoint_strategy).__name__
        self.memory_limit = memory_limit
        h_rows, x_rows = step_rows(x, h0, z)         # row t*B + b holds (h_{t-1}, x_t)
        h_rows.flags.writeable = False
        x_rows.flags.writeable = False
        if cache is None:
            cache = cell._prepare_by_step(theta, h_rows, x_rows, B)
        cache = freeze_arrays(cache)     # products only read it
        self.point = StepPoint(theta, h_rows, x_rows, cache, cell=cell)
        self._steps = [self.point.rows(t * B, (t + 1) * B) for t in range(T)]
        dense_bytes = 8 * B * T * S * S
        if strategy == "auto":
            strategy = ("materialized" if S <= _MATERIALIZE_MAX_STATE
                        and dense_bytes <= min(_MATERIALIZE_MAX_BYTES, self.memory_limit // 4) else "matrix_free")
        self.strategy = strategy
        self._A = None
        self._k_blocks = None
        self.k_route = k_route
        self._unit_product = None
        if strategy == "materialized":
            check_memory("linearize(strategy='materialized')", dense_bytes, self.memory_limit)
            self._A = cell._state_jacobian(self.point).reshape(T, B, S, S)
            self._A.flags.writeable = False
        n, p = self.size, self.num_params
        self.P = NamedOperator("P", (n, n), self._P_matmat, self._Pstar_matmat, "P*")
        self.P_inv = NamedOperator("P_inv", (n, n), self._Pinv_matmat, self._Pinv_rmatmat, "P_inv*")
        self.J_theta = NamedOperator("J_theta", (n, p), self._J_matmat, self._JT_matmat, "J_theta*")
        self.K = NamedOperator("K", (n, n), self._K_matmat, self._K_matmat, unit_blocks=self.K_blocks)
        self.NTK = NamedOperator("NTK", (n, n), self._NTK_matmat, self._NTK_matmat)

    # ------------------------------------------------------------ layouts
    def _to_internal(self, X):
        """(n, k) flat C-order over (b, t, s) → (k, T, B, S) contiguous."""
        B, T, S = self.shape
        k = X.shape[1]
        out = np.empty((k, T, B, S))
        _flat_to_internal(np.ascontiguousarray(X).reshape(B, T, S, k), out)
        return out

    def _to_flat(self, V):
        """(k, T, B, S) → (n, k)."""
        B, T, S = self.shape
        k = V.shape[0]
        out = np.empty((B, T, S, k))
        _internal_to_flat(np.ascontiguousarray(V), out)
        return out.reshape(self.size, k)

    # ------------------------------------------------------- one step of A
    def _A_step(self, t, V):
        """A_t V for V (k, B, S)."""
        if self._A is not None:
            return np.matmul(self._A[t], V.transpose(1, 2, 0)).transpose(2, 0, 1)
        return self.cell._state_jvp(self._steps[t], V)

    def _At_step(self, t, W):
        """A_tᵀ W for W (k, B, S)."""
        if self._A is not None:
            return np.matmul(self._A[t].transpose(0, 2, 1), W.transpose(1, 2, 0)).transpose(2, 0, 1)
        return self.cell._state_vjp(self._steps[t], W)

    def _check_step_block(self, name, t, V):
        B, T, S = self.shape
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)) or not 0 <= t < T:
            raise ValueError(f"t: expected an integer step index in [0, {T}), got {t!r}")
        return as_real_array(name, V, (None, B, S), ("k", "B", "S"))

    def apply_A(self, t, V):
        """``A_t V`` for a block ``V`` (k, B, S); ``A_t = ∂F/∂h`` at ``(h_{t-1}, x_t)``, t 0-based."""
        return self._A_step(t, self._check_step_block("V", t, V))

    def apply_At(self, t, W):
        """``A_tᵀ W`` for a block ``W`` (k, B, S)."""
        return self._At_step(t, self._check_step_block("W", t, W))

    def state_jacobians(self, memory_limit=None):
        """Dense ``A`` at every (trial, step): (B, T, S, S), memory-checked."""
        memory_limit = self.memory_limit if memory_limit is None else check_memory_limit(memory_limit)
        B, T, S = self.shape
        check_memory("state_jacobians", 8 * B * T * S * S, self.memory_limit if memory_limit is None else memory_limit)
        A = self._A if self._A is not None else self.cell._state_jacobian(self.point).reshape(T, B, S, S)
        return np.ascontiguousarray(A.transpose(1, 0, 2, 3))

    # ------------------------------------------------------------ sweeps
    def _check_internal_block(self, name, Q):
        B, T, S = self.shape
        return as_real_array(name, Q, (None, T, B, S), ("k", "T", "B", "S"))

    def propagate_forward_in_time(self, Q):
        """``P`` on a block ``Q`` (k, T, B, S) in the internal (time-major) layout: v_t = A_t v_{t-1} + q_t.

        ``Q`` is checked (shape, float, finite); ``lin.P`` takes flat (B·T·S, k) blocks instead.
        """
        return self._sweep_forward(self._check_internal_block("Q", Q))

    def propagate_backward_in_time(self, W):
        """``P*`` on a block ``W`` (k, T, B, S): λ_{T-1} = w_{T-1}, λ_t = w_t + A_{t+1}ᵀ λ_{t+1} (checked)."""
        return self._sweep_backward(self._check_internal_block("W", W))

    def _sweep_forward(self, Q):
        """``P`` on an internal block Q (k, T, B, S): v_t = A_t v_{t-1} + q_t."""
        V = np.empty_like(Q)
        V[:, 0] = Q[:, 0]
        for t in range(1, self.shape[1]):
            V[:, t] = self._A_step(t, V[:, t - 1]) + Q[:, t]
        return V

    def _sweep_backward(self, W):
        """``P*`` on an internal block W: λ_{T-1} = w_{T-1}, λ_t = w_t + A_{t+1}ᵀ λ_{t+1}."""
        L = np.empty_like(W)
        T = self.shape[1]
        L[:, T - 1] = W[:, T - 1]
        for t in range(T - 2, -1, -1):
            # transposes: v_{t+1} = A_{t+1} v_t + q_{t+1}
            L[:, t] = W[:, t] + self._At_step(t + 1, L[:, t + 1])
        return L

    def _A_all(self, V):
        """(A_t v_{t-1})_t for t ≥ 1 at once: (k, T-1, B, S)."""
        k, T, B, S = V.shape
        if self._A is not None:
            # A[t] (B,S,S) applied to V[:, t-1]
            return np.einsum("tbij,ktbj->ktbi", self._A[1:], V[:, :-1], optimize=True)
        pt = self.point.rows(B, T * B)
        return self.cell._state_jvp(pt, np.ascontiguousarray(V[:, :-1]).reshape(k, (T - 1) * B, S)).reshape(
            k, T - 1, B, S)

    def _At_all(self, W):
        """(A_{t+1}ᵀ w_{t+1})_t for t ≤ T-2 at once: (k, T-1, B, S)."""
        k, T, B, S = W.shape
        if self._A is not None:
            return np.einsum("tbji,ktbj->ktbi", self._A[1:], W[:, 1:], optimize=True)
        pt = self.point.rows(B, T * B)
        return self.cell._state_vjp(pt, np.ascontiguousarray(W[:, 1:]).reshape(k, (T - 1) * B, S)).reshape(
            k, T - 1, B, S)

    def _J(self, dtheta_rows):
        """J_θ on (k, p) → internal (k, T, B, S)."""
        B, T, S = self.shape
        k = dtheta_rows.shape[0]
        return self.cell._param_jvp(self.point, np.ascontiguousarray(dtheta_rows)).reshape(k, T, B, S)

    def _JT(self, W):
        """J_θᵀ on internal (k, T, B, S) → (k, p)."""
        B, T, S = self.shape
        k = W.shape[0]
        return self.cell._param_vjp(self.point, W.reshape(k, T * B, S))

    # ------------------------------------------------- operator products
    def _P_matmat(self, X):
        return self._to_flat(self._sweep_forward(self._to_internal(X)))

    def _Pstar_matmat(self, X):
        return self._to_flat(self._sweep_backward(self._to_internal(X)))

    def _Pinv_matmat(self, X):
        V = self._to_internal(X)
        out = V.copy()
        if V.shape[1] > 1:
            out[:, 1:] -= self._A_all(V)
        return self._to_flat(out)

    def _Pinv_rmatmat(self, X):
        W = self._to_internal(X)
        out = W.copy()
        if W.shape[1] > 1:
            # transposes: (P⁻¹v)_t = v_t − A_t v_{t-1}
            out[:, :-1] -= self._At_all(W)
        return self._to_flat(out)

    def _J_matmat(self, X):
        return self._to_flat(self._J(X.T))

    def _JT_matmat(self, X):
        return np.ascontiguousarray(self._JT(self._to_internal(X)).T)

    def _K_internal(self, W):
        """``K W = J_θ J_θᵀ W`` on an internal block (k, T, B, S), by :attr:`k_route`."""
        if self.k_route == "jacobian":
            return self._J(self._JT(W))
        k, T, B, S = W.shape
        prod = self._unit_site_product()
        return prod.apply(W.reshape(k, T * B, prod.parts, prod.units)).reshape(k, T, B, S)

    def _unit_site_product(self):
        """The :class:`UnitSiteProduct` of the cell's per-unit weight sites at every step, built once."""
        if self._unit_product is None:
            B, T, S = self.shape
            name = type(self.cell).__name__
            sites = self.cell._unit_weight_sites(self.point)           # declared hook, rows t·B + b
            for names, act, d in sites:
                ok = (np.ndim(act) == 2 and np.shape(act)[0] == T * B and np.ndim(d) == 4
                      and np.shape(d)[0] == T * B and np.shape(d)[1] * np.shape(d)[3] == S)
                if not ok or np.shape(d)[1:4:2] != np.shape(sites[0][2])[1:4:2]:
                    raise ValueError(
                        f"k_route='unit_sites': {name}._unit_weight_sites returned activity {np.shape(act)} and d "
                        f"{np.shape(d)} for site {tuple(names)}; expected (M, a) and (M, P, G, H) with "
                        f"M = {T * B} rows and P·H = {S}, the same (P, H) for every site")
            self._unit_product = UnitSiteProduct(sites, self.memory_limit, name)
        return self._unit_product

    def _K_matmat(self, X):
        return self._to_flat(self._K_internal(self._to_internal(X)))

    def _NTK_matmat(self, X):
        W = self._sweep_backward(self._to_internal(X))
        return self._to_flat(self._sweep_forward(self._K_internal(W)))

    # ------------------------------------------------- Kronecker core of K
    def kronecker_factors(self, memory_limit=None, *, steps=None):
        """K's exact structured form (SPEC §3): one :class:`KroneckerSite` per weight site.

        For a weight used as ``W a`` inside F (activity ``a``, with a column of
        ones when the site has a bias) and ``D = ∂F/∂(pre-activation)`` (S × o
        per row), the site's part of K is ``D (Gram(a) ⊗ I_o) Dᵀ`` with
        ``Gram(a) = a aᵀ`` over the B·T rows; K is the sum over sites. Rows of
        ``activity``, ``D`` and ``gram`` are ordered ``b·T + t`` like the
        trajectory vectors. Needs the cell's declared weight sites
        (``cell.has_weight_sites``, :meth:`~kpref.Cell.weight_sites`; every
        discrete built-in cell has them). ODE cells have none: θ enters every integrator
        stage, each at its own stage state, so ``∂F/∂W`` is a sum of terms with
        different activities and no single ``D (Gram(a) ⊗ I) Dᵀ`` factor exists;
        for them ``lin.K`` (exact, matrix-free) is the operator to use.

        ``steps=(t0, t1)`` restricts the rows to the steps ``t0 ≤ t < t1``
        (ordered ``b·(t1−t0) + (t − t0)``; ``gram`` is then the Gram of those
        rows only): the dense ``D`` of all ``B·T`` rows (``B·T·S·o`` floats)
        need never be held at once (see :func:`kpref.analysis.unit_blocks`).
        """
        memory_limit = self.memory_limit if memory_limit is None else check_memory_limit(memory_limit)
        if not self.cell.has_weight_sites:
            raise NotImplementedError(
                f"kronecker_factors: {type(self.cell).__name__} does not declare its weight sites "
                "(has_weight_sites=False; ODE cells have none: parameters enter every integrator stage); "
                "use lin.K, which is exact for every cell")
        B, T, S = self.shape
        t0, t1 = self._check_steps(steps)
        n_steps = t1 - t0
        order = np.arange(n_steps * B).reshape(n_steps, B).T.ravel()  # (b, t) → row t·B + b
        point = self.point if (t0, t1) == (0, T) else self.point.rows(t0 * B, t1 * B)
        sites, seen = [], set()
        for names, act, D in self.cell.weight_sites(point):
            check_memory("kronecker_factors", 8 * (D.size + (n_steps * B) ** 2), self.memory_limit
                         if memory_limit is None else memory_limit)
            if n_steps > 1 or id(D) in seen or not D.flags.c_contiguous:
                D = np.ascontiguousarray(D[order])    # a fresh copy: sites never share an array
            seen.add(id(D))                           # (one step: rows are already b-ordered)
            act = np.ascontiguousarray(act[order])
            sites.append(KroneckerSite(tuple(names), act, D, act @ act.T))
        return sites

    def _check_steps(self, steps):
        T = self.shape[1]
        if steps is None:
            return 0, T
        ok = (isinstance(steps, tuple) and len(steps) == 2
              and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in steps))
        if not ok or not 0 <= steps[0] < steps[1] <= T:
            raise ValueError(f"steps: expected a tuple (t0, t1) of integers with 0 <= t0 < t1 <= T={T}, got {steps!r}")
        return int(steps[0]), int(steps[1])

    def K_blocks(self, memory_limit=None):
        """K's per-unit blocks (:class:`kpref.analysis.KBlocks`), built once and cached.

        See :func:`kpref.analysis.unit_blocks` (the derivation is in its
        docstring). ``memory_limit`` (bytes, checked like every
        ``memory_limit``; default ``lin.memory_limit``) bounds the build's
        site arrays (checked before they are allocated) and every dense array
        the returned blocks form later; the cached blocks keep
        ``lin.memory_limit`` and another limit gets a view of them under it.

        Raises ``NotImplementedError`` naming the cell when K has no per-unit
        block structure (ODE cells, user vector fields, a cell whose weight
        sites couple units); ``MemoryError`` when the site arrays exceed
        the limit.
        """
        limit = self.memory_limit if memory_limit is None else check_memory_limit(memory_limit)
        if self._k_blocks is None:
            from ..analysis._unit_blocks import unit_blocks
            kb = unit_blocks(self, memory_limit=limit)
            self._k_blocks = kb if limit == self.memory_limit else kb.with_memory_limit(self.memory_limit)
        kb = self._k_blocks
        return kb if limit == kb.memory_limit else kb.with_memory_limit(limit)

    @property
    def K_kronecker(self):
        """K built from :meth:`kronecker_factors`: ``Σ_sites D (Gram ⊗ I) Dᵀ`` (equals ``K`` to rounding)."""
        sites = self.kronecker_factors()
        n = self.size

        def mm(X):
            k = X.shape[1]
            W = X.reshape(self.shape[0] * self.shape[1], self.shape[2], k)  # rows b·T + t
            out = np.zeros_like(W)
            for site in sites:
                U = np.einsum("rso,rsk->rok", site.D, W)          # Dᵀ w per row
                U = np.einsum("rq,qok->rok", site.gram, U)        # (Gram ⊗ I)
                out += np.einsum("rso,rok->rsk", site.D, U)       # D
            return out.reshape(n, k)

        return NamedOperator("K_kronecker", (n, n), mm, mm)

    # ---------------------------------------------------------- gradient
    def _check_traj(self, name, e):
        B, T, S = self.shape
        return as_real_array(name, e, (B, T, S), ("B", "T", "S"))

    def grad(self, e):
        """``∇_θ L`` for the error signal ``e = ∂L/∂z`` (B, T, S) → (p,), by ``adjoint_strategy``.

        ``J_θᵀ P* e`` with the default discrete adjoint (exact).
        """
        return self.adjoint_strategy.gradient(self, self._check_traj("e", e))

    def __repr__(self):
        B, T, S = self.shape
        return (f"Linearization({self.cell!r}, B={B}, T={T}, S={S}, p={self.num_params}, "
                f"strategy={self.strategy!r}, adjoint={self.adjoint!r}, k_route={self.k_route!r})")


class KroneckerSite(NamedTuple):
    """One weight site of K's Kronecker form (rows ordered b·T + t)."""

    params: tuple
    activity: np.ndarray   # (B·T, a): the site's input activity, with a ones column for a bias
    D: np.ndarray          # (B·T, S, o): ∂F/∂(site pre-activation)
    gram: np.ndarray       # (B·T, B·T): activity activityᵀ


# The two layouts of a block of trajectory vectors: flat (B, T, S, k), as users hold them, and internal
# (k, T, B, S), as the sweeps and the cells' kernels read them. NumPy's copy of these strided transposes costs up
# to ≈ 4 ns an entry at k = 10-30 (the innermost axis of one side has stride k on the other); these loops write
# contiguously and read each (b, t) row of S·k floats while it is in cache (measured at B = 20, T = 90, S = 256,
# k = 10: 23 → 7 ms in, 14 → 9 ms out). Pure copies.
@njit
def _flat_to_internal(X, out):
    """``out[j, t, b, s] = X[b, t, s, j]``."""
    B, T, S, k = X.shape
    for b in range(B):
        for t in range(T):
            for j in range(k):
                for s in range(S):
                    out[j, t, b, s] = X[b, t, s, j]


@njit
def _internal_to_flat(V, out):
    """``out[b, t, s, j] = V[j, t, b, s]`` (``j`` innermost when the rows are long enough to pay for it)."""
    k, T, B, S = V.shape
    for b in range(B):
        for t in range(T):
            if k >= 8:
                for s in range(S):
                    for j in range(k):
                        out[b, t, s, j] = V[j, t, b, s]
            else:
                for j in range(k):
                    for s in range(S):
                        out[b, t, s, j] = V[j, t, b, s]

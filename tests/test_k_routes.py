"""``lin.K`` through the per-unit weight sites (``k_route='unit_sites'``) against the Jacobian route and dense J Jᵀ.

Tolerances (derived, entrywise). ``K_ij = Σ_θ J_iθ J_jθ`` over the ``p``
parameters; each route forms the same sum in another order from entries of
``J`` that carry a few roundings each (chain-rule products, ≤ 8 ε relative),
so each is within ``(p + 8) ε Σ_θ |J_iθ| |J_jθ| ≤ (p + 8) ε √(K_ii K_jj)``
of the exact value (Cauchy–Schwarz with ``Σ_θ J_iθ² = K_ii``), and two routes
within twice that. For ``NTK = P K P*`` the difference of the ``K``'s is
carried by ``P``: ``|ΔNTK| ≤ |P| E_K |P|ᵀ`` plus the rounding of the dense
products and sweeps, ``γ (|P| |K| |P|ᵀ)`` with ``γ = 2 (n + 8) ε``
(``|fl(AB) − AB| ≤ γ_n |A||B|``). A dropped site changes entries at O(1)
relative to ``√(K_ii K_jj)``: far above these bounds (tested).
"""

import numpy as np
import pytest

import kpref
import kpref.strategies as kst
from kpref.testing import dottest

EPS = np.finfo(float).eps
STRUCTURED = ["elman_tanh", "elman_relu", "gru", "leaky", "linear", "lstm"]
WITHOUT = ["rate_euler", "rate_midpoint", "rate_rk4"]


def _data(cell, B=2, T=4, seed=0):
    rng = np.random.default_rng(seed)
    return (cell.init_params(rng), rng.standard_normal((B, T, cell.input_size)),
            0.3 * rng.standard_normal((B, cell.state_size)))


def _k_bound(K, p):
    """Entrywise bound on the difference of two float64 evaluations of K = J Jᵀ (module notes)."""
    d = np.sqrt(np.maximum(np.diag(K), 0.0))
    return 2.0 * (p + 8) * EPS * np.outer(d, d)


def check_k_routes(lin_sites, lin_jac):
    """Raise AssertionError unless ``K`` and ``NTK`` of the two routes agree with each other and with dense J Jᵀ."""
    assert lin_sites.k_route == "unit_sites" and lin_jac.k_route == "jacobian"
    n, p = lin_sites.size, lin_sites.num_params
    J = kpref.todense(lin_jac.J_theta)
    ref = J @ J.T
    bound = _k_bound(ref, p)
    Ks, Kj = kpref.todense(lin_sites.K), kpref.todense(lin_jac.K)
    for what, a, b in (("unit-site K vs dense J Jᵀ", Ks, ref), ("unit-site K vs Jacobian-route K", Ks, Kj)):
        excess = np.abs(a - b) - bound
        assert excess.max() <= 0.0, (f"{what}: |ΔK| exceeds its rounding bound by {excess.max():.3e} at "
                                     f"{np.unravel_index(np.argmax(excess), excess.shape)}")
    P = np.abs(kpref.todense(lin_sites.P))
    ntk_bound = P @ bound @ P.T + 2.0 * (n + 8) * EPS * (P @ np.abs(ref) @ P.T)
    Ns, Nj = kpref.todense(lin_sites.NTK), kpref.todense(lin_jac.NTK)
    excess = np.abs(Ns - Nj) - 2.0 * ntk_bound
    assert excess.max() <= 0.0, f"unit-site NTK vs Jacobian-route NTK: exceeds its bound by {excess.max():.3e}"


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", STRUCTURED)
def test_unit_site_route_agrees_with_the_jacobian_route_and_dense(name, bias):
    cell = kst.CELL_FACTORIES[name](2, 3, bias)
    args = _data(cell)
    lin = kpref.linearize(cell, *args)
    assert lin.k_route == "unit_sites"           # 'auto' takes it for every cell that declares the sites
    assert "k_route='unit_sites'" in repr(lin)
    check_k_routes(lin, kpref.linearize(cell, *args, k_route="jacobian"))


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_unit_site_K_passes_the_dot_test(name):
    """K symmetric: ⟨K x, y⟩ = ⟨x, K y⟩ to 1e-13 relative (kpref.testing.dottest), at a medium size."""
    cell = kst.CELL_FACTORIES[name](3, 16, True)
    lin = kpref.linearize(cell, *_data(cell, B=3, T=10, seed=1))
    assert lin.k_route == "unit_sites"
    assert dottest(lin.K, rng=0, rtol=1e-13) <= 1e-13
    assert dottest(lin.NTK, rng=1, rtol=1e-13) <= 1e-13


class _GRUDroppedSite(kpref.GRU):
    """A GRU whose declared per-unit sites lose the recurrent site's d (a deliberately wrong hook)."""

    def _unit_weight_sites(self, pt):
        (n0, a0, d0), (n1, a1, d1) = super()._unit_weight_sites(pt)
        return [(n0, a0, d0), (n1, a1, np.zeros_like(d1))]


class _LSTMDroppedPart(kpref.LSTM):
    """An LSTM whose declared per-unit sites lose the cell-state part of one site's d."""

    def _unit_weight_sites(self, pt):
        (n0, a0, d0), (n1, a1, d1) = super()._unit_weight_sites(pt)
        d1 = d1.copy()
        d1[:, 1] = 0.0
        return [(n0, a0, d0), (n1, a1, d1)]


@pytest.mark.parametrize("cls", [_GRUDroppedSite, _LSTMDroppedPart])
def test_the_route_check_catches_a_dropped_site(cls):
    cell = cls(2, 3)
    args = _data(cell)
    with pytest.raises(AssertionError, match="exceeds its rounding bound"):
        check_k_routes(kpref.linearize(cell, *args), kpref.linearize(cell, *args, k_route="jacobian"))


@pytest.mark.parametrize("name", WITHOUT)
def test_cells_without_unit_sites_keep_the_jacobian_route(name):
    cell = kst.CELL_FACTORIES[name](2, 3, True)
    args = _data(cell)
    assert kpref.linearize(cell, *args).k_route == "jacobian"
    with pytest.raises(ValueError, match=rf"k_route.*{type(cell).__name__}"):
        kpref.linearize(cell, *args, k_route="unit_sites")


def test_k_route_is_checked_and_chunks_columns_under_a_small_memory_limit():
    cell = kpref.GRU(2, 3)
    args = _data(cell)
    with pytest.raises(ValueError, match="k_route"):
        kpref.linearize(cell, *args, k_route="fast")
    # 8000 bytes: the sites fit, one column's scratch (8·3·3·(2·8 + 4) = 1440 bytes) fits 2000 once: one column a chunk
    small = kpref.linearize(cell, *args, memory_limit=8000)
    ref = kpref.linearize(cell, *args, k_route="jacobian")
    X = np.random.default_rng(3).standard_normal((small.size, 5))
    got, want = small.K @ X, ref.K @ X
    # |ΔK| ≤ 2(p + 8) ε max|K| entrywise (module notes, √(K_ii K_jj) ≤ max|K|), carried by X, plus the
    # rounding of the two products themselves (n ε |K||X| each)
    K = np.abs(kpref.todense(ref.K))
    tol = (2.0 * (cell.num_params + 8) * EPS * K.max() * np.abs(X).sum(axis=0)
           + 2.0 * small.size * EPS * (K @ np.abs(X)))
    assert np.all(np.abs(got - want) <= tol)
    with pytest.raises(MemoryError, match="unit weight sites"):
        kpref.linearize(cell, *args, memory_limit=500).K @ X


def test_a_hook_with_wrong_shapes_is_refused_naming_the_cell():
    class Broken(kpref.GRU):
        def _unit_weight_sites(self, pt):
            (n0, a0, d0), site = super()._unit_weight_sites(pt)
            return [(n0, a0, d0[:, :, :, :-1]), site]

    cell = Broken(2, 3)
    lin = kpref.linearize(cell, *_data(cell))
    with pytest.raises(ValueError, match=r"Broken\._unit_weight_sites"):
        lin.K @ np.ones(lin.size)

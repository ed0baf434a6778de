"""Multitask interference: sub-task blocks against dense Π_a X Π_b, the per-step components against the NTK,
the cumulative alignment callback, the transition-point detector, the driver."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kpref
from kpref.experiments import interference as itf
from kpref.experiments import sweep as sw

CFG = sw.SweepConfig(cells=("gru",), gains=(1.0,), seeds=(0,), tasks=("multitask",), hidden_size=3, batch_size=4,
                     stimulus_steps=2, memory_steps=1, response_steps=2, context_steps=1, steps=5,
                     num_checkpoints=2)


def _lin_rule(seed=0):
    x, target, mask, rule = sw.task_batch(CFG, "multitask", seed)
    cell = kpref.GRU(x.shape[2], 3)
    theta = cell.init_params(seed, g=1.0)
    return kpref.linearize(cell, theta, x), rule, cell, theta, x, target, mask


def _proj(rule, a, shape):
    m = np.zeros(shape)
    m[rule == a] = 1.0
    return np.diag(m.ravel())


@pytest.mark.parametrize("operator", ["K", "NTK"])
def test_interference_matrix_against_dense_blocks(operator):
    lin, rule, *_ = _lin_rule()
    X = kpref.todense(getattr(lin, operator))
    R = 4
    ref = np.array([[np.linalg.norm(_proj(rule, a, lin.shape) @ X @ _proj(rule, b, lin.shape)) ** 2
                     for b in range(R)] for a in range(R)])
    I, N = itf.interference_matrix(lin, rule, operator)
    assert np.allclose(I, ref, rtol=1e-10, atol=1e-12 * ref.max())
    assert np.allclose(np.diag(N), 1.0) and np.allclose(N, N.T)
    assert np.allclose(N, ref / np.sqrt(np.outer(np.diag(ref), np.diag(ref))), rtol=1e-10)
    # Hutchinson with 400 Gaussian probes: relative s.e. of a squared norm ≈ √(2/400) ≈ 7 %; 35 % > 4 s.e.
    Ih, _ = itf.interference_matrix(lin, rule, operator, "hutchinson", n_probes=400, rng=0)
    assert np.allclose(Ih, ref, rtol=0.35, atol=0.05 * ref.max())


def test_subtask_components_sum_to_the_flow_and_match_dense():
    lin, rule, cell, theta, x, target, mask = _lin_rule(1)
    e = np.random.default_rng(0).standard_normal(lin.shape)
    dz = itf.subtask_components(lin, e, rule)
    N = kpref.todense(lin.NTK)
    for a in range(4):
        ea = e * (rule == a)[:, None, None]
        assert np.allclose(dz[a].ravel(), -N @ ea.ravel(), atol=1e-12 * np.abs(N).max() * np.abs(e).sum())
    assert np.allclose(dz.sum(0).ravel(), -N @ e.ravel(), atol=1e-11 * np.abs(N).max() * np.abs(e).sum())


def test_cumulative_alignment_callback_every_step():
    lin, rule, cell, theta, x, target, mask = _lin_rule(2)
    cb = itf.cumulative_alignment_callback(cell, x, target, mask, rule)
    res = kpref.train(cell, x, target, mask=mask, theta=theta, rng=0, steps=4, learning_rate=1e-2,
                      checkpoint_every=1, callback=cb, progress=False)
    out = cb.result()
    assert list(out["steps"]) == [0, 1, 2, 3, 4]
    assert out["cumulative"].shape == (5, 4, 4)
    # the first cumulative matrix is the first per-step one; later ones are cosines of the running sums
    assert np.allclose(out["cumulative"][0], out["per_step"][0])
    C = 0
    for ck in res.checkpoints:
        l2 = kpref.linearize(cell, ck.theta, x)
        loss = kpref.mse_loss(l2.z, target, ck.readout.w_out, ck.readout.b_out, mask=mask, cell=cell)
        C = C + itf.subtask_components(l2, loss.e, rule)
    flat = C.reshape(4, -1)
    n = np.linalg.norm(flat, axis=1)
    assert np.allclose(out["cumulative"][-1], flat @ flat.T / np.outer(n, n), atol=1e-12)
    assert np.allclose(out["subtask_loss"].sum(axis=1), res.losses, rtol=1e-12)


@given(st.integers(3, 60), st.data())
def test_transition_point_finds_a_step(n, data):
    k = data.draw(st.integers(1, n - 1))
    lo, hi = data.draw(st.floats(-5, 5)), data.draw(st.floats(-5, 5))
    assume(abs(hi - lo) > 1e-3)
    s = np.where(np.arange(n) < k, lo, hi)
    tp = itf.transition_point(s)
    assert tp["index"] == k and tp["gain"] == pytest.approx(1.0) and tp["detected"]
    assert tp["before"] == pytest.approx(lo) and tp["after"] == pytest.approx(hi)


def test_transition_point_with_noise_and_without_a_change():
    rng = np.random.default_rng(0)
    s = np.where(np.arange(200) < 70, 0.9, 0.2) + 0.05 * rng.standard_normal(200)
    tp = itf.transition_point(s)
    assert abs(tp["index"] - 70) <= 2 and tp["detected"]
    flat = 0.5 + 0.05 * rng.standard_normal(200)
    # pure noise: the best split explains little of the variance (≈ 2 log n / n for the max over splits)
    assert not itf.transition_point(flat)["detected"]
    with pytest.raises(ValueError, match="series"):
        itf.transition_point([1.0, 2.0])


def test_driver_runs_and_is_deterministic():
    cfg = replace(CFG, steps=3)
    a = itf.run_interference(cfg, seeds=(0, 1))
    b = itf.run_interference(cfg, seeds=(0, 1))
    assert a == b and len(a) == 2
    r = a[0]
    assert len(r["losses"]) == 4 and len(r["mean_cumulative_alignment"]) == 4
    assert np.allclose(np.diag(r["final_interference_K"]), 1.0)
    assert set(r["transition"]) == {"index", "before", "after", "gain", "detected"}

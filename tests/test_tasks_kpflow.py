"""The KPFlow package's task variants (issue 16): memory-pro layout options and accuracy, the context-cued
multitask, flip-flop mix_anti, low_rank_forecast — timing, targets, seeding."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpref import tasks


def test_kpflow_memory_pro_layout_timing_and_targets():
    kw = dict(tasks.KPFLOW_MEMORY_PRO, noise_std=0.0)
    b = tasks.memory_pro(8, 0, angles="even", amplitude=2.0, **kw)
    assert b.x.shape == (8, 90, 3) and np.all(b.mask == 1.0)
    angle = 2 * np.pi * np.arange(8) / 8
    for i in range(8):
        # fixation input on for steps 0..59, off for the 30 response steps
        assert np.all(b.x[i, :60, 0] == 1.0) and np.all(b.x[i, 60:, 0] == 0.0)
        # stimulus on from step 0 (no fixation-only period) for 30 steps, amplitude 2
        np.testing.assert_allclose(b.x[i, :30, 1], 2 * np.cos(angle[i]), rtol=0, atol=1e-15)
        np.testing.assert_allclose(b.x[i, :30, 2], 2 * np.sin(angle[i]), rtol=0, atol=1e-15)
        assert np.all(b.x[i, 30:, 1:] == 0.0)
        assert np.all(b.target[i, :60, 0] == 1.0) and np.all(b.target[i, 60:, 0] == 0.0)
        np.testing.assert_allclose(b.target[i, 60:, 1], 2 * np.cos(angle[i]), atol=1e-15)
        assert np.all(b.target[i, :60, 1:] == 0.0)
    # even angles draw nothing: the generator is untouched
    g = np.random.default_rng(3)
    tasks.memory_pro(4, g, angles="even", **kw)
    assert g.uniform() == np.random.default_rng(3).uniform()


def test_kpflow_noise_scale_and_given_angles():
    b = tasks.memory_pro(200, 1, **tasks.KPFLOW_MEMORY_PRO)
    clean = tasks.memory_pro(200, 1, **dict(tasks.KPFLOW_MEMORY_PRO, noise_std=0.0))
    r = (b.x - clean.x).ravel()
    # 54 000 normals: the sample std is within 2 % of 0.1·√2 (relative s.e. 1/√(2n) ≈ 0.3 %)
    assert r.std() == pytest.approx(0.1 * np.sqrt(2), rel=0.02)
    th = np.array([0.0, np.pi / 2])
    c = tasks.memory_pro(2, 0, angles=th, **dict(tasks.KPFLOW_MEMORY_PRO, noise_std=0.0))
    np.testing.assert_allclose(c.x[:, 0, 1:], [[1, 0], [0, 1]], atol=1e-15)
    with pytest.raises(ValueError, match="angles"):
        tasks.memory_pro(3, 0, angles=th)
    with pytest.raises(ValueError, match="angles"):
        tasks.memory_pro(3, 0, angles="uniform")


def test_memory_pro_accuracy():
    b = tasks.memory_pro(10, 0, angles="even", **dict(tasks.KPFLOW_MEMORY_PRO, noise_std=0.0))
    assert tasks.memory_pro_accuracy(b.target, b.target) == 1.0
    y = b.target.copy()
    y[:3, -1, 1] += 0.99 * np.pi / 10           # within tolerance
    y[3:5, -1, 2] -= 1.01 * np.pi / 10          # outside
    y[5:, :-1, 1:] += 10.0                      # only the last step counts
    assert tasks.memory_pro_accuracy(y, b.target) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="target"):
        tasks.memory_pro_accuracy(y, b.target[:, :-1])


@given(st.integers(1, 9), st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_context_multitask_cues_rule_only_in_context(B, seed, C):
    kw = dict(fixation_steps=0, stimulus_steps=3, memory_steps=2, response_steps=3, grace_steps=0)
    m = tasks.multitask(B, seed, context_steps=C, **kw)
    T = C + 3 + 2 + 3
    assert m.x.shape == (B, T, 7)
    for i in range(B):
        r = m.rule[i]
        assert np.all(m.x[i, :C, 3 + r] == 1.0) and np.all(m.x[i, C:, 3:] == 0.0)
        assert np.all(np.delete(m.x[i, :C, 3:], r, axis=1) == 0.0)
        assert np.all(m.x[i, :C, 0] == 1.0) and np.all(m.x[i, :C, 1:3] == 0.0)
        assert np.all(m.target[i, :C, 0] == 1.0) and np.all(m.target[i, :C, 1:] == 0.0)
    # after the context period: the memory-pro trial of each rule, shifted by C steps
    plain = tasks.multitask(B, seed, **kw)
    np.testing.assert_array_equal(m.target[:, C:], plain.target)
    np.testing.assert_array_equal(m.x[:, C:, :3], plain.x[:, :, :3])
    np.testing.assert_array_equal(m.rule, plain.rule)


def test_context_multitask_noise_reaches_rule_inputs():
    kw = dict(fixation_steps=0, stimulus_steps=3, memory_steps=2, response_steps=3, grace_steps=0)
    m = tasks.multitask(8, 0, context_steps=4, noise_std=0.1, **kw)
    clean = tasks.multitask(8, 0, context_steps=4, **kw)
    assert np.all(m.x[:, :, 3:] != clean.x[:, :, 3:])


@given(st.integers(1, 6), st.integers(1, 3), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_flip_flop_mix_anti(B, n_bits, T, seed):
    plain = tasks.flip_flop(B, seed, n_bits=n_bits, num_steps=T, p_flip=0.2)
    mixed = tasks.flip_flop(B, seed, n_bits=n_bits, num_steps=T, p_flip=0.2, mix_anti=True)
    assert mixed.x.shape == (B, T, n_bits + 1) and mixed.target.shape == (B, T, n_bits)
    np.testing.assert_array_equal(mixed.x[:, :, :n_bits], plain.x)     # same pulses: drawn first
    anti = mixed.x[:, :, n_bits]
    assert np.all(np.abs(anti) == 1.0) and np.all(anti == anti[:, :1])   # one sign per trial, every step
    np.testing.assert_array_equal(mixed.target, plain.target * anti[:, :1, None])


def test_flip_flop_mix_anti_signs_are_balanced():
    anti = tasks.flip_flop(4000, 0, mix_anti=True, num_steps=2).x[:, 0, -1]
    # Binomial(4000, 1/2): the mean sign has s.e. 1/√4000 ≈ 0.016; 5 s.e.
    assert abs(anti.mean()) < 0.08


def _lrf_reference(B, seed, T, D, L, Nin, Nout, task_seed):
    """Step-by-step reading of the documented recurrence (module notes)."""
    g = np.random.default_rng(task_seed)
    Q, R = np.linalg.qr(g.standard_normal((L, L)))
    A = Q @ np.diag(np.sign(np.diag(R)))
    C = g.standard_normal((D, L))
    Wi, bi = g.standard_normal((Nin, D)), g.standard_normal(Nin)
    Wo, bo = g.standard_normal((Nout, D)), g.standard_normal(Nout)
    u = np.random.default_rng(seed).standard_normal((B, L))
    x, y = np.zeros((B, T, Nin)), np.zeros((B, T, Nout))
    for t in range(T):
        u_next = np.array([0.8 * ub + 0.2 * A @ ub for ub in u])
        for b in range(B):
            x[b, t] = np.sin(Wi @ (C @ u[b]) + bi)
            y[b, t] = np.sin(Wo @ (C @ u_next[b]) + bo)
        u = u_next
    return x, y, A


@given(st.integers(1, 4), st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 4))
def test_low_rank_forecast_against_the_recurrence(B, seed, T, L):
    D, Nin, Nout = 5, 3, 2
    lf = tasks.low_rank_forecast(B, seed, num_steps=T, dim=D, latent_dim=L, input_dim=Nin, target_dim=Nout,
                                 task_rng=7)
    x, y, A = _lrf_reference(B, seed, T, D, L, Nin, Nout, 7)
    np.testing.assert_allclose(lf.x, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lf.target, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(A.T @ A, np.eye(L), atol=1e-12)
    # target is the next step's read-out: shifting inputs by one step lines up when both maps are equal
    same = tasks.low_rank_forecast(B, seed, num_steps=T, dim=D, latent_dim=L, input_dim=Nin, target_dim=Nout,
                                   task_rng=7)
    np.testing.assert_array_equal(lf.x, same.x)


def test_low_rank_forecast_task_shared_trials_differ_and_refusals():
    a = tasks.low_rank_forecast(3, 1, num_steps=4)
    b = tasks.low_rank_forecast(3, 2, num_steps=4)
    assert a.x.shape == (3, 4, 100) and a.target.shape == (3, 4, 100)
    assert not np.array_equal(a.x, b.x)
    n = tasks.low_rank_forecast(3, 1, num_steps=4, noise_std=0.01)
    assert 0 < np.abs(n.x - a.x).max() < 1.0
    with pytest.raises(ValueError, match="latent_dim"):
        tasks.low_rank_forecast(2, 0, dim=3, latent_dim=4)
    assert tasks.generate("low_rank_forecast", 2, 0, num_steps=3).x.shape == (2, 3, 100)

"""Task generators: shapes, timing, targets, determinism by seed, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kpref import tasks

timings = st.fixed_dictionaries(
    dict(
        fixation_steps=st.integers(1, 5),
        stimulus_steps=st.integers(1, 5),
        memory_steps=st.one_of(st.integers(0, 5), st.tuples(st.integers(0, 3), st.integers(3, 6))),
        response_steps=st.integers(2, 6),
        grace_steps=st.integers(0, 1),
    )
)


def _reference_trial(angle, anti, delay, F, S, D, Tot, grace):
    """One trial written step by step from the documented period rules."""
    x = np.zeros((Tot, 3))
    y = np.zeros((Tot, 3))
    m = np.ones(Tot)
    go = F + S + D
    out = angle + (np.pi if anti else 0.0)
    for t in range(Tot):
        in_response = t >= go
        stimulus_on = (F <= t < F + S) or (delay and t >= F)
        x[t, 0] = 0.0 if in_response else 1.0
        if stimulus_on:
            x[t, 1:] = np.cos(angle), np.sin(angle)
        y[t, 0] = 0.0 if in_response else 1.0
        if in_response:
            y[t, 1:] = np.cos(out), np.sin(out)
        if go <= t < go + grace:
            m[t] = 0.0
    return x, y, m


def _decode(trials_x, F, S):
    """Angle from the stimulus channels at the first stimulus step, delay from the go cue."""
    angle = np.mod(np.arctan2(trials_x[:, F, 2], trials_x[:, F, 1]), 2 * np.pi)
    go = np.argmax(trials_x[:, :, 0] == 0.0, axis=1)
    return angle, go - F - S


@given(timing=timings, B=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), anti=st.booleans(),
       delay=st.booleans())
def test_memory_pro_matches_stepwise_definition(timing, B, seed, anti, delay):
    x, y, m = tasks.memory_pro(B, seed, anti=anti, delay=delay, **timing)
    F, S, R = timing["fixation_steps"], timing["stimulus_steps"], timing["response_steps"]
    mem = timing["memory_steps"]
    low, high = (mem, mem) if isinstance(mem, int) else mem
    T = F + S + high + R
    assert x.shape == (B, T, 3) and y.shape == (B, T, 3) and m.shape == (B, T)
    assert x.dtype == y.dtype == m.dtype == np.float64
    angle, D = _decode(x, F, S)
    assert np.all((low <= D) & (D <= high))
    for b in range(B):
        rx, ry, rm = _reference_trial(angle[b], anti, delay, F, S, int(D[b]), T, timing["grace_steps"])
        np.testing.assert_allclose(x[b], rx, rtol=0, atol=1e-15)
        np.testing.assert_allclose(y[b], ry, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(m[b], rm)


def test_reference_trial_catches_a_wrong_generator():
    # the checker above must fail on a generator whose stimulus runs one step too long
    x, y, m = tasks.memory_pro(3, 0, fixation_steps=2, stimulus_steps=3, memory_steps=2, response_steps=3,
                               grace_steps=0)
    x = x.copy()
    x[:, 5, 1:] = x[:, 4, 1:]
    angle, D = _decode(x, 2, 3)
    rx, _, _ = _reference_trial(angle[0], False, False, 2, 3, int(D[0]), x.shape[1], 0)
    assert not np.allclose(x[0], rx)


def test_default_timing_is_the_papers_90_steps():
    x, y, m = tasks.memory_pro(2, 0)
    assert x.shape == (2, 90, 3)
    # response period is the last 30 steps; grace period 5 steps masked out
    assert np.all(x[:, :60, 0] == 1) and np.all(x[:, 60:, 0] == 0)
    assert np.all(m[:, 60:65] == 0) and m.sum() == 2 * 85


def test_anti_target_is_opposite_and_on_unit_circle():
    kw = dict(fixation_steps=2, stimulus_steps=2, memory_steps=2, response_steps=3, grace_steps=0)
    pro = tasks.memory_pro(5, 7, **kw)
    anti = tasks.memory_pro(5, 7, anti=True, **kw)
    np.testing.assert_array_equal(pro.x, anti.x)  # same draws, same inputs
    np.testing.assert_allclose(anti.target[:, -1, 1:], -pro.target[:, -1, 1:], atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(pro.target[:, -1, 1:], axis=-1), 1.0, rtol=1e-15)


@pytest.mark.parametrize("make", [
    lambda s: tasks.memory_pro(4, s, memory_steps=(1, 4), noise_std=0.1),
    lambda s: tasks.flip_flop(4, s, noise_std=0.1),
    lambda s: tasks.multitask(5, s, memory_steps=(1, 4), noise_std=0.1),
])
def test_same_seed_bitwise_same_different_seed_different(make):
    a, b, c = make(3), make(np.random.default_rng(3)), make(4)
    for u, v, w in zip(a, b, c):
        assert u.tobytes() == v.tobytes()
    assert a.x.tobytes() != c.x.tobytes()


def test_generator_state_advances_so_consecutive_batches_differ():
    rng = np.random.default_rng(0)
    a = tasks.memory_pro(3, rng)
    b = tasks.memory_pro(3, rng)
    assert not np.array_equal(a.x, b.x)


def test_noise_is_added_with_documented_scale():
    clean = tasks.memory_pro(200, 1)
    noisy = tasks.memory_pro(200, 1, noise_std=0.5)
    diff = noisy.x - clean.x
    assert abs(diff.std() - 0.5) < 0.01 and abs(diff.mean()) < 0.01
    np.testing.assert_array_equal(clean.target, noisy.target)


def _flip_flop_reference(x_pulses):
    B, T, n = x_pulses.shape
    out = np.zeros_like(x_pulses)
    for b in range(B):
        for i in range(n):
            last = 0.0
            for t in range(T):
                if x_pulses[b, t, i] != 0.0:
                    last = x_pulses[b, t, i]
                out[b, t, i] = last
    return out


@given(B=st.integers(1, 4), n_bits=st.integers(1, 4), T=st.integers(1, 30),
       p=st.floats(0.01, 1.0, allow_nan=False, allow_subnormal=False), seed=st.integers(0, 2**32 - 1))
def test_flip_flop_target_is_last_pulse(B, n_bits, T, p, seed):
    x, y = tasks.flip_flop(B, seed, n_bits=n_bits, num_steps=T, p_flip=p)
    assert x.shape == y.shape == (B, T, n_bits) and x.dtype == np.float64
    assert set(np.unique(x)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(y, _flip_flop_reference(x))


def test_flip_flop_reference_catches_a_wrong_target():
    x, y = tasks.flip_flop(2, 0, num_steps=40, p_flip=0.2)
    wrong = y.copy()
    wrong[:, 1:] = y[:, :-1]  # one step late
    assert not np.array_equal(wrong, _flip_flop_reference(x))


def test_flip_flop_pulse_rate():
    x, _ = tasks.flip_flop(100, 0, num_steps=100, p_flip=0.1)
    rate = np.mean(x != 0)
    assert abs(rate - 0.1) < 0.01
    assert abs(np.mean(x[x != 0] > 0) - 0.5) < 0.03


@given(B=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       rules=st.lists(st.sampled_from(sorted(tasks.MEMORY_RULES)), min_size=1, max_size=4, unique=True))
def test_multitask_rules_inputs_and_targets(B, seed, rules):
    kw = dict(fixation_steps=2, stimulus_steps=2, memory_steps=(1, 3), response_steps=3, grace_steps=1)
    x, y, m, rule = tasks.multitask(B, seed, rules=tuple(rules), **kw)
    R = len(rules)
    assert x.shape[2] == 3 + R and y.shape[2] == 3 and rule.shape == (B,) and rule.dtype == np.int64
    counts = np.bincount(rule, minlength=R)
    assert counts.max() - counts.min() <= 1
    # rule one-hot held on for the whole trial
    onehot = np.zeros((B, R))
    onehot[np.arange(B), rule] = 1.0
    np.testing.assert_array_equal(x[:, :, 3:], np.broadcast_to(onehot[:, None, :], (B, x.shape[1], R)))
    angle, D = _decode(x, 2, 2)
    for b in range(B):
        anti, delay = tasks.MEMORY_RULES[rules[rule[b]]]
        rx, ry, rm = _reference_trial(angle[b], anti, delay, 2, 2, int(D[b]), x.shape[1], 1)
        np.testing.assert_allclose(x[b, :, :3], rx, atol=1e-15, rtol=0)
        np.testing.assert_allclose(y[b], ry, atol=1e-15, rtol=0)
        np.testing.assert_array_equal(m[b], rm)


def test_generate_dispatches_by_name():
    for name in tasks.TASK_NAMES:
        batch = tasks.generate(name, 4, 0)
        assert batch.x.shape[0] == 4
    np.testing.assert_array_equal(tasks.generate("memory_anti", 3, 2).target,
                                  tasks.memory_pro(3, 2, anti=True).target)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: tasks.generate("memory_prop", 3), ValueError, ["task", "memory_prop"]),
    (lambda: tasks.memory_pro(0), ValueError, ["batch_size"]),
    (lambda: tasks.memory_pro(2.0), TypeError, ["batch_size", "2.0"]),
    (lambda: tasks.memory_pro(2, stimulus_steps=0), ValueError, ["stimulus_steps"]),
    (lambda: tasks.memory_pro(2, memory_steps=(4, 2)), ValueError, ["memory_steps", "low <= high"]),
    (lambda: tasks.memory_pro(2, memory_steps=(1, 2, 3)), ValueError, ["memory_steps"]),
    (lambda: tasks.memory_pro(2, memory_steps=1.5), TypeError, ["memory_steps"]),
    (lambda: tasks.memory_pro(2, grace_steps=30), ValueError, ["grace_steps", "response_steps"]),
    (lambda: tasks.memory_pro(2, noise_std=-1.0), ValueError, ["noise_std"]),
    (lambda: tasks.memory_pro(2, noise_std=float("nan")), ValueError, ["noise_std"]),
    (lambda: tasks.memory_pro(2, anti=1), TypeError, ["anti"]),
    (lambda: tasks.memory_pro(2, rng=1.5), TypeError, ["rng"]),
    (lambda: tasks.flip_flop(2, p_flip=0.0), ValueError, ["p_flip"]),
    (lambda: tasks.flip_flop(2, n_bits=True), TypeError, ["n_bits"]),
    (lambda: tasks.multitask(2, rules=("memory_pro", "go")), ValueError, ["rules[1]", "'go'"]),
    (lambda: tasks.multitask(2, rules=()), ValueError, ["rules"]),
    (lambda: tasks.multitask(2, rules="memory_pro"), TypeError, ["rules"]),
    (lambda: tasks.multitask(2, rules=("memory_pro", "memory_pro")), ValueError, ["distinct"]),
])
def test_bad_input_is_refused_with_a_named_message(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value)

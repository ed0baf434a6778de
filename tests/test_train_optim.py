"""Optimizers and gradient clipping of kpref.training, checked against their formulas computed by hand.

No torch here: the first steps of Adam (both bias corrections), SGD with momentum, dampening and Nesterov,
and clip_grad_norm are written out from the equations of their docstrings. Where every quantity is a dyadic
rational (powers of two, small integers) the arithmetic is exact in binary floating point and the comparison
is bitwise; for Adam (square roots) the tolerance is derived below. The torch comparisons are at the end,
skipped without torch.
"""

import numpy as np
import pytest

import kpref
from kpref import tasks
from kpref.training import GD, SGD, Adam, clip_grad_norm, loss_and_gradient, train

EPS64 = np.finfo(float).eps


def _adam_by_hand(phi0, grads, lr, b1, b2, eps):
    """Adam's iterates from the bias-corrected moments, m̂_k = m_k / (1 − β₁ᵏ), v̂_k = v_k / (1 − β₂ᵏ).

    Written with the closed forms of the moments (sums over the gradient history), not the recursion:
    m_k = (1 − β₁) Σ_j β₁^{k−j} g_j, v_k = (1 − β₂) Σ_j β₂^{k−j} g_j², φ_k = φ_{k−1} − η m̂_k / (√v̂_k + ε).
    """
    phi, out = [float(p) for p in phi0], []
    for k in range(1, len(grads) + 1):
        for i in range(len(phi)):
            m = (1 - b1) * sum(b1 ** (k - j) * grads[j - 1][i] for j in range(1, k + 1))
            v = (1 - b2) * sum(b2 ** (k - j) * grads[j - 1][i] ** 2 for j in range(1, k + 1))
            m_hat, v_hat = m / (1 - b1 ** k), v / (1 - b2 ** k)
            phi[i] = phi[i] - lr * m_hat / (v_hat ** 0.5 + eps)
        out.append(list(phi))
    return np.array(out)


def test_adam_first_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8
    phi0 = np.array([1.0, -2.0, 0.5])
    grads = [np.array([2.0, -0.5, 1e-3]), np.array([-1.0, 0.25, 3.0]), np.array([0.5, 0.5, -2.0])]
    opt = Adam(3, learning_rate=lr, betas=(b1, b2), eps=eps)
    phi, got = phi0.copy(), []
    for g in grads:
        phi = opt.step(phi, g)
        got.append(phi)
    got = np.array(got)
    # step 1 in closed form: m̂₁ = g, v̂₁ = g², so φ₁ = φ₀ − η g / (|g| + ε) whatever β₁, β₂
    first = phi0 - lr * grads[0] / (np.abs(grads[0]) + eps)
    # tolerance: each route is O(10) correctly rounded operations on numbers of size ≤ |φ| + η, so the two
    # agree to ≤ 2·10·ε_mach relative to (|φ₀| + η) per step; 3 steps → 64 ε_mach·(|φ₀| + η) is a safe bound
    tol = 64 * EPS64 * (np.abs(phi0) + lr)
    assert np.all(np.abs(got[0] - first) <= tol)
    ref = _adam_by_hand(phi0, grads, lr, b1, b2, eps)
    assert np.all(np.abs(got - ref) <= tol), (got - ref)
    # the moments themselves, from the closed forms (state_dict)
    state = opt.state_dict()
    m3 = (1 - b1) * (b1 ** 2 * grads[0] + b1 * grads[1] + grads[2])
    v3 = (1 - b2) * (b2 ** 2 * grads[0] ** 2 + b2 * grads[1] ** 2 + grads[2] ** 2)
    assert int(state["count"]) == 3
    assert np.all(np.abs(state["m"] - m3) <= 8 * EPS64 * np.abs(m3).max())
    assert np.all(np.abs(state["v"] - v3) <= 8 * EPS64 * np.abs(v3).max())


def test_adam_check_catches_a_missing_bias_correction():
    # the by-hand reference must tell Adam from Adam without either bias correction
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8
    phi0 = np.array([1.0, -2.0, 0.5])
    grads = [np.array([2.0, -0.5, 1e-3]), np.array([-1.0, 0.25, 3.0])]
    ref = _adam_by_hand(phi0, grads, lr, b1, b2, eps)
    tol = 64 * EPS64 * (np.abs(phi0) + lr)
    for which in ("m", "v"):
        phi, m, v = phi0.copy(), np.zeros(3), np.zeros(3)
        for k, g in enumerate(grads, start=1):
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            m_hat = m if which == "m" else m / (1 - b1 ** k)
            v_hat = v if which == "v" else v / (1 - b2 ** k)
            phi = phi - lr * m_hat / (np.sqrt(v_hat) + eps)
        assert np.any(np.abs(phi - ref[-1]) > 1e3 * tol), which


def test_sgd_momentum_dampening_nesterov_by_hand_bitwise():
    # μ = 1/2, τ = 1/2, η = 1/4 and integer gradients: every operation is exact in binary, so bitwise
    mu, tau, lr = 0.5, 0.5, 0.25
    g1, g2, g3 = np.array([4.0, -8.0]), np.array([2.0, 6.0]), np.array([-4.0, 1.0])
    phi0 = np.array([1.0, 3.0])
    # b₁ = g₁; b_k = μ b_{k−1} + (1 − τ) g_k; φ ← φ − η b_k
    b1 = g1
    b2 = mu * b1 + (1 - tau) * g2
    b3 = mu * b2 + (1 - tau) * g3
    expect = [phi0 - lr * b1, phi0 - lr * b1 - lr * b2, phi0 - lr * b1 - lr * b2 - lr * b3]
    opt = SGD(2, learning_rate=lr, momentum=mu, dampening=tau)
    phi = phi0
    for g, e in zip((g1, g2, g3), expect):
        phi = opt.step(phi, g)
        assert phi.tobytes() == e.tobytes(), (phi, e)
    assert opt.state_dict()["momentum_buffer"].tobytes() == b3.tobytes()
    # Nesterov (τ = 0): d_k = g_k + μ b_k with b₁ = g₁, b_k = μ b_{k−1} + g_k
    opt = SGD(2, learning_rate=lr, momentum=mu, nesterov=True)
    c1 = g1
    c2 = mu * c1 + g2
    e1 = phi0 - lr * (g1 + mu * c1)
    e2 = e1 - lr * (g2 + mu * c2)
    p1 = opt.step(phi0, g1)
    p2 = opt.step(p1, g2)
    assert p1.tobytes() == e1.tobytes() and p2.tobytes() == e2.tobytes()
    # without momentum SGD is GD, bit for bit, and step() never writes into its argument
    phi = phi0.copy()
    assert SGD(2, learning_rate=lr).step(phi, g1).tobytes() == GD(2, learning_rate=lr).step(phi, g1).tobytes()
    assert phi.tobytes() == phi0.tobytes()


def test_sgd_check_catches_a_wrong_first_step():
    # torch starts the buffer at b₁ = g₁ (not (1 − τ) g₁): with dampening the two differ, and the check sees it
    mu, tau, lr = 0.5, 0.5, 0.25
    g1 = np.array([4.0, -8.0])
    opt = SGD(2, learning_rate=lr, momentum=mu, dampening=tau)
    got = opt.step(np.zeros(2), g1)
    assert got.tobytes() == (-lr * g1).tobytes()
    assert got.tobytes() != (-lr * (1 - tau) * g1).tobytes()


def test_state_dict_round_trip_and_impossible_states():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((4, 5))
    for make in (lambda: Adam(5, 0.1), lambda: SGD(5, 0.1, momentum=0.9), lambda: GD(5, 0.1)):
        a, phi = make(), np.ones(5)
        for g in grads[:2]:
            phi = a.step(phi, g)
        b = make()
        b.load_state_dict(a.state_dict())
        pa, pb = phi, phi.copy()
        for g in grads[2:]:
            pa, pb = a.step(pa, g), b.step(pb, g)
        assert pa.tobytes() == pb.tobytes()
        # the state returned is a copy
        s = a.state_dict()
        for k in s:
            if s[k].ndim:
                s[k][:] = 7.0
        assert a.step(pa, grads[0]).tobytes() == b.step(pb, grads[0]).tobytes()
    adam = Adam(3, 0.1)
    good = {"m": np.zeros(3), "v": np.ones(3), "count": np.array(2)}
    for bad, words in [
        (dict(good, v=-np.ones(3)), "second moment"),
        (dict(good, count=np.array(0)), "zero moments"),
        (dict(good, count=np.array(-1)), "count"),
        (dict(good, m=np.zeros(4)), "'m'"),
        (dict(good, m=np.full(3, np.nan)), "finite"),
        ({"m": np.zeros(3), "count": np.array(1)}, "state keys"),
    ]:
        with pytest.raises(ValueError, match=words):
            adam.load_state_dict(bad)
    with pytest.raises(ValueError, match="momentum_buffer"):
        SGD(3, 0.1, momentum=0.9).load_state_dict({"momentum_buffer": np.ones(3), "count": np.array(0)})


def test_clip_grad_norm_by_hand():
    # block norms 5 and 12, total 13: the coefficient is c = max_norm / (13 + 1e-6), as torch
    blocks = [np.array([3.0, 4.0]), np.array([[12.0]])]
    total = clip_grad_norm(blocks, 6.5)
    c = 6.5 / (13.0 + 1e-6)
    assert total == 13.0
    assert blocks[0].tobytes() == (np.array([3.0, 4.0]) * c).tobytes()
    assert blocks[1].tobytes() == (np.array([[12.0]]) * c).tobytes()
    # below the threshold (max_norm ≥ n + 1e-6) the gradient is unchanged, bit for bit; at max_norm = n exactly
    # torch's 1e-6 still scales it by 13 / (13 + 1e-6)
    blocks = [np.array([3.0, 4.0]), np.array([12.0])]
    assert clip_grad_norm(blocks, 14.0) == 13.0
    assert blocks[0].tobytes() == np.array([3.0, 4.0]).tobytes()
    assert clip_grad_norm(blocks, 13.0) == 13.0
    assert blocks[0].tobytes() == (np.array([3.0, 4.0]) * (13.0 / (13.0 + 1e-6))).tobytes()
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(blocks, -1.0)
    with pytest.raises(TypeError, match=r"blocks\[1\]"):
        clip_grad_norm([np.ones(2), [1.0]], 1.0)
    with pytest.raises(TypeError, match=r"blocks\[0\]"):
        clip_grad_norm([np.ones(2, dtype=int)], 1.0)
    with pytest.raises(ValueError, match=r"blocks\[0\].*finite"):
        clip_grad_norm([np.array([np.nan])], 1.0)
    with pytest.raises(TypeError, match="blocks"):
        clip_grad_norm(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="size"):
        Adam(10**30, 0.1)


def test_train_clips_the_global_norm_over_cell_and_readout():
    x, y, m = tasks.memory_pro(3, 0, fixation_steps=2, stimulus_steps=3, memory_steps=3, response_steps=4,
                               grace_steps=1)
    cell = kpref.GRU(3, 5)
    theta = cell.init_params(0, g=1.0)
    ro = kpref.init_readout(cell, 3, 1)
    res = loss_and_gradient(cell, theta, ro, x, y, mask=m)
    blocks = [res.grad_theta[a:a + int(np.prod(s))] for a, s in
              zip(np.cumsum([0] + [int(np.prod(s)) for s in cell.param_shapes.values()]),
                  cell.param_shapes.values())] + [res.grad_w_out, res.grad_b_out]
    norm = np.sqrt(sum(np.sum(b * b) for b in blocks))
    clip, lr = 0.25 * norm, 0.5
    out = train(cell, x, y, mask=m, theta=theta, readout=ro, steps=1, optimizer="gd", learning_rate=lr,
                clip_grad_norm=clip, progress=False)
    c = clip / (norm + 1e-6)
    # the two routes compute the norm in different orders: agreement to a few ε_mach relative to the step
    step = lr * c * res.grad_theta
    assert np.all(np.abs((theta - out.theta) - step) <= 16 * EPS64 * (np.abs(theta) + np.abs(step)))
    # and clipping changed the step (c = 1/4): the check can fail
    unclipped = lr * res.grad_theta
    assert np.max(np.abs((theta - out.theta) - unclipped)) > 0.5 * np.max(np.abs(unclipped))


def test_sgd_and_clipping_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((5, 6))
    for kw in (dict(momentum=0.9), dict(momentum=0.8, dampening=0.3), dict(momentum=0.7, nesterov=True)):
        p = torch.tensor(np.ones(6), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.05, **kw)
        ours, phi = SGD(6, 0.05, **kw), np.ones(6)
        for g in grads:
            p.grad = torch.tensor(g)
            opt.step()
            phi = ours.step(phi, g)
        np.testing.assert_allclose(phi, p.detach().numpy(), rtol=1e-14, atol=1e-15)
    a = torch.tensor(rng.standard_normal(4), requires_grad=True)
    b = torch.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    ga, gb = rng.standard_normal(4), rng.standard_normal((2, 3))
    a.grad, b.grad = torch.tensor(ga.copy()), torch.tensor(gb.copy())
    total_t = torch.nn.utils.clip_grad_norm_([a, b], 0.7)
    blocks = [ga.copy(), gb.copy()]
    total = clip_grad_norm(blocks, 0.7)
    assert abs(total - float(total_t)) <= 4 * EPS64 * total
    np.testing.assert_allclose(blocks[0], a.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(blocks[1], b.grad.numpy(), rtol=1e-15)

"""Training with kpref's own gradients: the gradient used, loss decrease, checkpoints, bitwise resume."""

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kpref
from kpref.testing import complex_step
from kpref import tasks
from kpref.training import (
    Adam,
    Readout,
    init_readout,
    load_checkpoint,
    loss_and_gradient,
    train,
)

QUICK = dict(fixation_steps=3, stimulus_steps=5, memory_steps=5, response_steps=6, grace_steps=1)


def _cells():
    return [("elman", lambda N, H: kpref.Elman(N, H)), ("gru", lambda N, H: kpref.GRU(N, H))]


def _problem(seed=0, B=4, H=6):
    x, y, m = tasks.memory_pro(B, seed, **QUICK)
    cell = kpref.Elman(3, H)
    theta = cell.init_params(seed, g=1.2)
    ro = init_readout(cell, 3, seed + 1)
    return cell, theta, ro, x, y, m


def _complex_loss(cell, theta, ro, x, y, m, h0):
    """The mean masked MSE written independently, evaluated in complex arithmetic."""
    z = kpref.simulate(cell, theta, x, h0, complex_step=True)
    out = z[:, :, : cell.output_size] @ ro.w_out.T + ro.b_out
    return np.sum(m[:, :, None] * (out - y) ** 2) / y.size


def _complex_step_directional(cell, theta, ro, x, y, m, d):
    h0 = np.zeros((x.shape[0], cell.state_size), dtype=complex)
    return float(complex_step(lambda th: _complex_loss(cell, th, ro, x.astype(complex), y, m, h0), theta, d))


def test_train_gradient_is_lin_grad_of_the_same_loss():
    cell, theta, ro, x, y, m = _problem()
    res = loss_and_gradient(cell, theta, ro, x, y, mask=m)
    # train linearizes matrix-free: bitwise the same as lin.grad of that linearization
    lin = kpref.linearize(cell, theta, x, strategy="matrix_free")
    loss = kpref.mse_loss(lin.z, y, ro.w_out, ro.b_out, mask=m, cell=cell)
    assert res.loss == loss.value
    assert res.grad_theta.tobytes() == lin.grad(loss.e).tobytes()
    # and equal to rounding to the materialized route
    lin_dense = kpref.linearize(cell, theta, x, strategy="materialized")
    g_dense = lin_dense.grad(loss.e)
    assert np.linalg.norm(g_dense - res.grad_theta) <= 1e-14 * np.linalg.norm(g_dense)
    assert res.grad_w_out.tobytes() == loss.grad_w_out.tobytes()
    # one gradient-descent step of train() moves θ by exactly -η ∇θ L
    eta = 0.05
    out = train(cell, x, y, mask=m, theta=theta, readout=ro, steps=1, optimizer="gd", learning_rate=eta,
                progress=False)
    assert out.theta.tobytes() == (theta - eta * res.grad_theta).tobytes()
    assert out.readout.w_out.tobytes() == (ro.w_out - eta * res.grad_w_out).tobytes()
    assert out.readout.b_out.tobytes() == (ro.b_out - eta * res.grad_b_out).tobytes()
    assert out.losses[0] == res.loss


@given(seed=st.integers(0, 2**16))
def test_gradient_matches_complex_step_of_an_independent_loss(seed):
    cell, theta, ro, x, y, m = _problem(seed)
    res = loss_and_gradient(cell, theta, ro, x, y, mask=m)
    d = np.random.default_rng(seed).standard_normal(theta.size)
    exact = _complex_step_directional(cell, theta, ro, x, y, m, d)
    got = res.grad_theta @ d
    assert abs(got - exact) <= 1e-12 * (np.linalg.norm(res.grad_theta) * np.linalg.norm(d))
    # and the real part of the complex loss is the loss
    assert abs(np.real(_complex_loss(cell, theta, ro, x, y, m, np.zeros((x.shape[0], 6)))) - res.loss) <= 1e-15


def test_complex_step_check_catches_a_wrong_gradient():
    cell, theta, ro, x, y, m = _problem(3)
    res = loss_and_gradient(cell, theta, ro, x, y, mask=m)
    d = np.random.default_rng(0).standard_normal(theta.size)
    wrong = res.grad_theta.copy()
    wrong[np.argmax(np.abs(d))] *= 1.001
    exact = _complex_step_directional(cell, theta, ro, x, y, m, d)
    assert abs(wrong @ d - exact) > 1e-12 * (np.linalg.norm(wrong) * np.linalg.norm(d))


TASKS = {
    "memory_pro": lambda: tasks.memory_pro(8, 0, **QUICK),
    "memory_anti": lambda: tasks.memory_pro(8, 0, anti=True, **QUICK),
    "delay_pro": lambda: tasks.memory_pro(8, 0, delay=True, **QUICK),
    "flip_flop": lambda: tuple(tasks.flip_flop(8, 0, n_bits=2, num_steps=20, p_flip=0.15)) + (None,),
    "multitask": lambda: tuple(tasks.multitask(8, 0, **QUICK))[:3],
}


@pytest.mark.parametrize("cell_name, make_cell", _cells())
@pytest.mark.parametrize("task", sorted(TASKS))
def test_loss_decreases_on_every_task(task, cell_name, make_cell):
    x, y, m = TASKS[task]()
    cell = make_cell(x.shape[2], 16)
    out = train(cell, x, y, mask=m, rng=1, g=1.0, steps=80, learning_rate=2e-2, progress=False)
    assert out.losses.shape == (81,)
    assert out.losses[-1] < 0.6 * out.losses[0], out.losses[[0, 20, 40, 60, 80]]


def test_gd_decreases_loss_monotonically_at_small_step():
    cell, theta, ro, x, y, m = _problem(1)
    out = train(cell, x, y, mask=m, theta=theta, readout=ro, steps=30, optimizer="gd", learning_rate=0.05,
                progress=False)
    assert np.all(np.diff(out.losses) < 0)


def test_same_seed_same_run_bitwise():
    x, y, m = tasks.memory_pro(4, 0, **QUICK)
    cell = kpref.Elman(3, 8)
    a = train(cell, x, y, mask=m, rng=5, g=1.5, steps=10, learning_rate=1e-2, progress=False)
    b = train(cell, x, y, mask=m, rng=np.random.default_rng(5), g=1.5, steps=10, learning_rate=1e-2,
              progress=False)
    c = train(cell, x, y, mask=m, rng=6, g=1.5, steps=10, learning_rate=1e-2, progress=False)
    assert a.theta.tobytes() == b.theta.tobytes() and a.losses.tobytes() == b.losses.tobytes()
    assert a.theta.tobytes() != c.theta.tobytes()


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_resume_is_bitwise_identical(tmp_path, optimizer):
    x, y, m = tasks.memory_pro(4, 2, **QUICK)
    cell = kpref.Elman(3, 8)
    kw = dict(mask=m, g=1.5, steps=17, optimizer=optimizer, learning_rate=2e-2, progress=False)
    full = train(cell, x, y, rng=3, checkpoint_every=5, checkpoint_dir=tmp_path / "full", **kw)
    assert [c.step for c in full.checkpoints] == [0, 5, 10, 15, 17]
    ckpt = tmp_path / "full" / "checkpoint_0000005.npz"
    assert ckpt.exists()
    # an rng that disagrees with the run's seed is refused, not ignored
    with pytest.raises(ValueError, match="rng: got 99"):
        train(cell, x, y, rng=99, resume_from=ckpt, **kw)
    resumed = train(cell, x, y, rng=3, resume_from=ckpt, checkpoint_every=5, checkpoint_dir=tmp_path / "res",
                    **kw)
    assert resumed.theta.tobytes() == full.theta.tobytes()
    assert resumed.readout.w_out.tobytes() == full.readout.w_out.tobytes()
    assert resumed.readout.b_out.tobytes() == full.readout.b_out.tobytes()
    assert resumed.losses.tobytes() == full.losses.tobytes()
    assert [c.step for c in resumed.checkpoints] == [5, 10, 15, 17]
    a = load_checkpoint(tmp_path / "full" / "checkpoint_0000015.npz")
    b = load_checkpoint(tmp_path / "res" / "checkpoint_0000015.npz")
    assert a.theta.tobytes() == b.theta.tobytes() and a.losses.tobytes() == b.losses.tobytes()
    for key in a.optimizer_state:
        assert a.optimizer_state[key].tobytes() == b.optimizer_state[key].tobytes()
    # extending a finished run continues it: 17 -> 25 equals a 25-step run
    longer = train(cell, x, y, rng=3, **dict(kw, steps=25))
    extended = train(cell, x, y, resume_from=tmp_path / "full" / "checkpoint_0000017.npz", **dict(kw, steps=25))
    assert extended.theta.tobytes() == longer.theta.tobytes()


def test_resume_check_catches_a_perturbed_state(tmp_path):
    # the bitwise comparison of the resume test must fail if the resumed state is off by one ulp. With GD the
    # state is the parameters only, so resuming equals a fresh run from the checkpoint's parameters, bit for bit,
    # and a fresh run from parameters one ulp away differs.
    x, y, m = tasks.memory_pro(4, 2, **QUICK)
    cell = kpref.Elman(3, 8)
    kw = dict(mask=m, learning_rate=2e-2, optimizer="gd", progress=False)
    full = train(cell, x, y, rng=3, g=1.5, steps=8, checkpoint_steps=[4], checkpoint_dir=tmp_path, **kw)
    ck = load_checkpoint(tmp_path / "checkpoint_0000004.npz")
    again = train(cell, x, y, theta=ck.theta, readout=ck.readout, steps=4, **kw)
    assert again.theta.tobytes() == full.theta.tobytes()
    nudged = train(cell, x, y, theta=np.nextafter(ck.theta, np.inf), readout=ck.readout, steps=4, **kw)
    assert nudged.theta.tobytes() != full.theta.tobytes()


def test_checkpoint_file_is_plain_npz_with_config(tmp_path):
    x, y, m = tasks.memory_pro(3, 0, **QUICK)
    cell = kpref.Elman(3, 5)
    out = train(cell, x, y, mask=m, rng=0, steps=4, checkpoint_steps=[2], checkpoint_dir=tmp_path,
                progress=False)
    files = sorted(os.listdir(tmp_path))
    assert files == ["checkpoint_0000000.npz", "checkpoint_0000002.npz", "checkpoint_0000004.npz", "manifest.json"]
    with np.load(tmp_path / "checkpoint_0000002.npz", allow_pickle=False) as data:
        assert {"theta", "w_out", "b_out", "loss", "losses", "step", "config", "adam_m", "adam_v",
                "adam_count"} <= set(data.files)
        assert all(data[k].dtype != object for k in data.files)
        config = json.loads(str(data["config"]))
        assert int(data["step"]) == 2 and float(data["loss"]) == out.losses[2]
        np.testing.assert_array_equal(data["losses"], out.losses[:3])
    assert config["cell"]["class"] == "Elman" and config["optimizer"] == "adam"
    ck = load_checkpoint(tmp_path / "checkpoint_0000004.npz")
    assert ck.theta.tobytes() == out.theta.tobytes() and ck.step == 4
    assert out.checkpoints[-1].path == str(tmp_path / "checkpoint_0000004.npz")


def test_callback_sees_every_checkpoint():
    x, y, m = tasks.memory_pro(3, 0, **QUICK)
    seen = []
    train(kpref.Elman(3, 5), x, y, mask=m, rng=0, steps=6, checkpoint_every=3, callback=seen.append,
          progress=False)
    assert [c.step for c in seen] == [0, 3, 6]


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    phi0 = rng.standard_normal(7)
    grads = rng.standard_normal((6, 7))
    p = torch.tensor(phi0.copy(), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    ours = Adam(7, learning_rate=1e-2, betas=(0.9, 0.99), eps=1e-8)
    phi = phi0.copy()
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        phi = ours.step(phi, g)
    ref = p.detach().numpy()
    np.testing.assert_allclose(phi, ref, rtol=1e-14, atol=1e-15)
    # the comparison would catch a missing bias correction (count stuck at 10**6)
    wrong = phi0.copy()
    bad = Adam(7, learning_rate=1e-2, betas=(0.9, 0.99), eps=1e-8)
    for g in grads:
        bad.load_state_dict(dict(bad.state_dict(), count=np.array(10**6)))
        wrong = bad.step(wrong, g)
    assert not np.allclose(wrong, ref, rtol=1e-6)


def test_readout_init_is_torch_linear_rule():
    cell = kpref.Elman(3, 25)
    ro = init_readout(cell, 4, 0)
    assert ro.w_out.shape == (4, 25) and ro.b_out.shape == (4,)
    assert np.abs(ro.w_out).max() <= 0.2 and np.abs(ro.b_out).max() <= 0.2


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(steps=-1), ValueError, ["steps"]),
    (dict(steps=2.5), TypeError, ["steps"]),
    (dict(optimizer="rmsprop"), ValueError, ["optimizer", "rmsprop"]),
    (dict(optimizer="gd", momentum=0.9), ValueError, ["momentum"]),
    (dict(optimizer="sgd", momentum=1.0), ValueError, ["momentum"]),
    (dict(optimizer="sgd", nesterov=True), ValueError, ["nesterov"]),
    (dict(optimizer="gd", betas=(0.5, 0.9)), ValueError, ["betas"]),
    (dict(clip_grad_norm=0.0), ValueError, ["clip_grad_norm"]),
    (dict(clip_grad_norm="1"), TypeError, ["clip_grad_norm"]),
    (dict(loss_tolerance=-1.0), ValueError, ["loss_tolerance"]),
    (dict(loss_tolerance=float("nan")), ValueError, ["loss_tolerance"]),
    (dict(batch_fn=3), TypeError, ["batch_fn"]),
    (dict(batch_seed=3), ValueError, ["batch_seed"]),
    (dict(batch_fn=lambda rng, k: None, h0=np.zeros((2, 5))), ValueError, ["h0"]),
    (dict(batch_fn=lambda rng, k: None), TypeError, ["batch_fn", "step 0"]),
    (dict(batch_fn=lambda rng, k: (np.zeros((2, 4, 3)), np.zeros((2, 4, 2)))), ValueError,
     ["batch_fn(step=0).target"]),
    (dict(theta=np.zeros(40), g=1.0), ValueError, ["g"]),
    (dict(progress="yes"), TypeError, ["progress"]),
    (dict(progress=np.zeros(3)), TypeError, ["progress"]),
    (dict(overwrite=1), TypeError, ["overwrite"]),
    (dict(steps=10**12), ValueError, ["steps", "GiB"]),
    (dict(learning_rate=0.0), ValueError, ["learning_rate"]),
    (dict(betas=(0.9, 1.0)), ValueError, ["betas[1]"]),
    (dict(mask=np.ones((4, 3))), ValueError, ["mask"]),
    (dict(readout=Readout(np.zeros((3, 4)), np.zeros(3))), ValueError, ["readout.w_out"]),
    (dict(theta=np.zeros(3)), ValueError, ["theta"]),
    (dict(checkpoint_every=2, checkpoint_steps=[1]), ValueError, ["checkpoint_every"]),
    (dict(checkpoint_steps=[99]), ValueError, ["checkpoint_steps[0]"]),
    (dict(resume_from="/nonexistent/ck.npz"), ValueError, ["resume_from", "/nonexistent/ck.npz"]),
    (dict(g=-1.0), ValueError, ["g"]),
    (dict(callback=3), TypeError, ["callback"]),
])
def test_bad_input(kwargs, exc, words):
    x, y, m = tasks.memory_pro(2, 0, **QUICK)
    kw = dict(rng=0, steps=3, progress=False)
    kw.update(kwargs)
    with pytest.raises(exc) as info:
        train(kpref.Elman(3, 5), x, y, **kw)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_bad_cell_target_and_mismatched_resume(tmp_path):
    x, y, m = tasks.memory_pro(2, 0, **QUICK)
    with pytest.raises(TypeError, match="cell"):
        train("gru", x, y)
    with pytest.raises(ValueError, match="target"):
        train(kpref.Elman(3, 5), x, y[:, :-1])
    with pytest.raises(TypeError, match="x"):
        train(kpref.Elman(3, 5), x.astype(int), y)
    train(kpref.Elman(3, 5), x, y, rng=0, steps=2, checkpoint_dir=tmp_path, progress=False)
    other = tasks.memory_pro(2, 1, **QUICK)
    with pytest.raises(ValueError, match="data_sha256"):
        train(kpref.Elman(3, 5), other.x, other.target, steps=4, resume_from=tmp_path / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="learning_rate"):
        train(kpref.Elman(3, 5), x, y, steps=4, learning_rate=0.5, resume_from=tmp_path / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="cell"):
        train(kpref.Elman(3, 6), x, y, steps=4, resume_from=tmp_path / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="beyond"):
        train(kpref.Elman(3, 5), x, y, steps=1, resume_from=tmp_path / "checkpoint_0000002.npz")
    np.savez(tmp_path / "junk.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="kpref checkpoint"):
        load_checkpoint(tmp_path / "junk.npz")


def test_divergence_is_reported():
    x, y, m = tasks.memory_pro(2, 0, **QUICK)
    cell = kpref.Elman(3, 5)
    with np.errstate(over="ignore"), pytest.raises(FloatingPointError, match="learning_rate"):
        train(cell, x, 1e200 * y, steps=3, optimizer="gd", learning_rate=1e3, progress=False, rng=0)

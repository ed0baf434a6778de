"""The training protocol of kpref.train: minibatches with bitwise resume, evaluation batch, trivial loss,
loss tolerance, SGD with momentum, progress lines."""

import os
import subprocess
import sys

import numpy as np
import pytest

import kpref
from kpref import tasks
from kpref.training import load_run, pool_batches, train, trivial_loss

QUICK = dict(fixation_steps=2, stimulus_steps=3, memory_steps=3, response_steps=4, grace_steps=1)


def _protocol(**over):
    ev = tasks.memory_pro(6, 0, **QUICK)
    pool = tasks.memory_pro(30, 1, noise_std=0.1 * 2 ** 0.5, **QUICK)
    kw = dict(mask=ev.mask, rng=4, g=1.0, steps=12, learning_rate=2e-2, batch_fn=pool_batches(*pool, batch_size=8),
              progress=False)
    kw.update(over)
    return kpref.GRU(3, 6), ev, pool, kw


@pytest.mark.parametrize("optimizer, extra", [("adam", {}), ("sgd", dict(momentum=0.9, nesterov=True)),
                                              ("gd", dict(clip_grad_norm=0.05))])
def test_minibatch_training_resumes_bitwise(tmp_path, optimizer, extra):
    cell, ev, pool, kw = _protocol(optimizer=optimizer, **extra)
    full = train(cell, ev.x, ev.target, checkpoint_every=4, checkpoint_dir=tmp_path / "full", **kw)
    resumed = train(cell, ev.x, ev.target, resume_from=tmp_path / "full" / "checkpoint_0000004.npz",
                    checkpoint_every=4, checkpoint_dir=tmp_path / "res", **dict(kw, rng=None))
    assert resumed.theta.tobytes() == full.theta.tobytes()
    assert resumed.readout.w_out.tobytes() == full.readout.w_out.tobytes()
    assert resumed.losses.tobytes() == full.losses.tobytes()
    assert [c.eval_loss for c in resumed.checkpoints] == [c.eval_loss for c in full.checkpoints[1:]]
    # the resume check can fail: another batch seed gives another stream and other parameters
    other = train(cell, ev.x, ev.target, batch_seed=full.config["batches"]["seed"] + 1, **kw)
    assert other.theta.tobytes() != full.theta.tobytes()
    assert other.losses[0] != full.losses[0]  # step 0: same parameters, another batch


def test_minibatches_are_fresh_seeded_draws_from_the_pool():
    cell, ev, pool, kw = _protocol(steps=5)
    seen = []
    inner = kw["batch_fn"]

    def spy(rng, step):
        out = inner(rng, step)
        seen.append((step, out[0].copy()))
        return out

    out = train(cell, ev.x, ev.target, **dict(kw, batch_fn=spy))
    assert [s for s, _ in seen] == list(range(6))
    # each batch is batch_size distinct pool trials, drawn with SeedSequence(batch_seed, spawn_key=(k,))
    seed = out.config["batches"]["seed"]
    for step, xb in seen:
        idx = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(step,))).choice(30, 8, replace=False)
        assert xb.tobytes() == pool.x[idx].tobytes()
    assert len({xb.tobytes() for _, xb in seen}) == 6
    # losses[k] is the loss of batch k at the parameters after k updates; eval_loss is on the fixed batch
    ck = out.checkpoints[-1]
    z = kpref.simulate(cell, ck.theta, ev.x)
    ev_loss = kpref.mse_loss(z, ev.target, ck.readout.w_out, ck.readout.b_out, mask=ev.mask, cell=cell).value
    assert ck.eval_loss == ev_loss == out.eval_loss
    last_x = seen[-1][1]
    idx = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(5,))).choice(30, 8, replace=False)
    zb = kpref.simulate(cell, ck.theta, last_x)
    assert out.losses[5] == kpref.mse_loss(zb, pool.target[idx], ck.readout.w_out, ck.readout.b_out,
                                           mask=pool.mask[idx], cell=cell).value
    assert out.config["batches"]["fn"] == {"kind": "callable", "name": f"{__name__}.{spy.__qualname__}"}


def test_pool_batches_describe_and_refusals():
    pool = tasks.memory_pro(10, 1, **QUICK)
    pb = pool_batches(*pool, batch_size=4)
    d = pb.describe()
    assert d["pool_size"] == 10 and d["batch_size"] == 4 and len(d["pool_sha256"]) == 64
    x = pool.x.copy()
    pb2 = pool_batches(x, pool.target, pool.mask, batch_size=4)
    x[0, 0, 0] += 1.0  # the pool is a copy
    assert pb2.describe() == d
    with pytest.raises(ValueError, match="batch_size"):
        pool_batches(*pool, batch_size=11)
    with pytest.raises(TypeError, match="batch_size"):
        pool_batches(*pool, batch_size=2.0)


def test_trivial_loss_by_hand():
    # targets 0 and 2 at one (t, o): the batch mean is 1 and the mean loss (1 + 1) / 2 = 1
    y = np.array([[[0.0]], [[2.0]]])
    assert trivial_loss(y) == 1.0
    assert trivial_loss(y, reduction="sum") == 2.0
    # a mask dropping the second trial: the masked mean is 0, the loss 0; a (B, T) mask acts on every output
    assert trivial_loss(y, np.array([[1.0], [0.0]])) == 0.0
    # weights: mean (1·0 + 3·2) / 4 = 1.5, loss (1·1.5² + 3·0.5²) / 2 = 1.5
    assert trivial_loss(y, np.array([[[1.0]], [[3.0]]])) == 1.5
    # it is the best input-independent predictor: any other per-(t, o) constant does worse
    rng = np.random.default_rng(0)
    y = rng.standard_normal((5, 4, 2))
    m = (rng.random((5, 4)) > 0.3).astype(float)
    best = trivial_loss(y, m)
    mean = (m[:, :, None] * y).sum(0) / np.maximum(m.sum(0), 1)[:, None]
    for _ in range(5):
        c = mean + 0.01 * rng.standard_normal(mean.shape)
        assert np.sum(m[:, :, None] * (c - y) ** 2) / y.size > best
    with pytest.raises(TypeError, match="target"):
        trivial_loss(np.zeros((2, 2, 2), dtype=int))


def test_trivial_loss_is_recorded_beside_the_loss(tmp_path):
    cell, ev, pool, kw = _protocol(steps=3)
    out = train(cell, ev.x, ev.target, checkpoint_dir=tmp_path, **kw)
    assert out.trivial_loss == trivial_loss(ev.target, ev.mask)
    assert all(c.trivial_loss == out.trivial_loss for c in load_run(tmp_path).checkpoints)


def test_loss_tolerance_stops_and_checkpoints_there(tmp_path):
    x, y, m = tasks.memory_pro(4, 2, **QUICK)
    cell = kpref.Elman(3, 6)
    kw = dict(mask=m, rng=1, g=1.0, optimizer="gd", learning_rate=0.05, progress=False)
    full = train(cell, x, y, steps=20, **kw)
    assert np.all(np.diff(full.losses) < 0) and full.stop_reason == "steps"
    tol = full.losses[7]
    out = train(cell, x, y, steps=20, loss_tolerance=tol, checkpoint_every=5, checkpoint_dir=tmp_path, **kw)
    assert out.stop_reason == "loss_tolerance"
    assert out.losses.tobytes() == full.losses[:8].tobytes()
    assert [c.step for c in out.checkpoints] == [0, 5, 7]
    assert load_run(tmp_path).steps == [0, 5, 7]
    # the check can fail: just above the tolerance the run goes one step further
    out2 = train(cell, x, y, steps=20, loss_tolerance=np.nextafter(tol, 0.0), **kw)
    assert len(out2.losses) == 9


def test_sgd_momentum_trains():
    x, y, m = tasks.memory_pro(8, 0, **QUICK)
    out = train(kpref.GRU(3, 16), x, y, mask=m, rng=1, steps=60, optimizer="sgd", momentum=0.9,
                learning_rate=0.05, progress=False)
    assert out.losses[-1] < 0.6 * out.losses[0]


def test_progress_lines_one_per_checkpoint(capsys):
    x, y, m = tasks.memory_pro(3, 0, **QUICK)
    train(kpref.Elman(3, 5), x, y, mask=m, rng=0, steps=6, checkpoint_every=3, progress="lines")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[0].startswith("train: step 0/6 loss ") and "trivial" in err[-1]
    train(kpref.Elman(3, 5), x, y, mask=m, rng=0, steps=6, checkpoint_every=3, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_defaults_to_lines_without_tqdm_when_stderr_is_not_a_terminal():
    code = ("import sys, kpref\n"
            "from kpref import tasks\n"
            "x, y, m = tasks.memory_pro(3, 0, fixation_steps=2, stimulus_steps=3, memory_steps=3, response_steps=4,"
            " grace_steps=1)\n"
            "kpref.train(kpref.Elman(3, 5), x, y, mask=m, rng=0, steps=4, checkpoint_every=2)\n"
            "print('tqdm' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    lines = [s for s in res.stderr.splitlines() if s.startswith("train: step")]
    assert len(lines) == 3, res.stderr


def test_resume_true_continues_this_runs_folder(tmp_path):
    cell, ev, pool, kw = _protocol(steps=10)
    full = train(cell, ev.x, ev.target, checkpoint_every=3, **kw)
    # a run "killed" after step 6 (its last checkpoint), restarted with the full call and resume=True
    train(cell, ev.x, ev.target, checkpoint_every=3, checkpoint_dir=tmp_path, **dict(kw, steps=6))
    again = train(cell, ev.x, ev.target, checkpoint_every=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert [c.step for c in again.checkpoints] == [6, 9, 10]
    assert again.theta.tobytes() == full.theta.tobytes() and again.losses.tobytes() == full.losses.tobytes()
    assert load_run(tmp_path).steps == [0, 3, 6, 9, 10]
    # finished: resuming redoes nothing but the last loss, and agrees
    done = train(cell, ev.x, ev.target, checkpoint_every=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert [c.step for c in done.checkpoints] == [10] and done.theta.tobytes() == full.theta.tobytes()
    # another configuration in that folder is still refused; an empty folder starts fresh
    with pytest.raises(ValueError, match="checkpoint_dir.*another run"):
        train(cell, ev.x, ev.target, checkpoint_dir=tmp_path, resume=True, **dict(kw, g=2.0))
    fresh = train(cell, ev.x, ev.target, checkpoint_dir=tmp_path / "new", resume=True, **kw)
    assert fresh.checkpoints[0].step == 0 and fresh.theta.tobytes() == full.theta.tobytes()
    with pytest.raises(ValueError, match="resume: expected a checkpoint_dir"):
        train(cell, ev.x, ev.target, resume=True, **kw)
    with pytest.raises(TypeError, match="resume"):
        train(cell, ev.x, ev.target, checkpoint_dir=tmp_path, resume=1, **kw)

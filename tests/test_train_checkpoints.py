"""Run folders and checkpoints of kpref.train: ownership, manifest, validated reads, refusals, divergence."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

import kpref
from kpref import tasks
from kpref.training import load_checkpoint, load_run, train

QUICK = dict(fixation_steps=2, stimulus_steps=3, memory_steps=3, response_steps=4, grace_steps=1)


def _data(seed=0, B=3):
    return tasks.memory_pro(B, seed, **QUICK)


def _run(d, **kw):
    x, y, m = _data()
    args = dict(mask=m, rng=0, g=1.2, steps=4, checkpoint_every=2, checkpoint_dir=d, progress=False,
                learning_rate=1e-2)
    args.update(kw)
    return train(kpref.Elman(3, 5), x, y, **args)


def _read(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _digest(arrays):
    """The documented digest: SHA-256 over sorted keys of key, dtype.str, str(shape), C-order bytes."""
    sha = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        for part in (key.encode(), a.dtype.str.encode(), str(a.shape).encode(), a.tobytes()):
            sha.update(part)
    return sha.hexdigest()


def _write(path, arrays, *, redigest=True):
    arrays = dict(arrays)
    if redigest:
        arrays.pop("digest", None)
        arrays["digest"] = np.array(_digest(arrays))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_run_folder_has_a_manifest_and_load_run_reads_it(tmp_path):
    out = _run(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "kpref-run-1" and manifest["kpref_version"] == kpref.__version__
    assert manifest["seed"] == 0 and manifest["config"] == out.config
    assert manifest["config"]["init"]["g"] == 1.2
    run = load_run(tmp_path)
    assert run.steps == [0, 2, 4] and run.config == out.config
    assert run.thetas().tobytes() == np.stack([c.theta for c in out.checkpoints]).tobytes()
    for a, b in zip(run.checkpoints, out.checkpoints):
        assert a.losses.tobytes() == b.losses.tobytes() and a.eval_loss == b.eval_loss
        assert a.trivial_loss == b.trivial_loss == out.trivial_loss
        for k in b.optimizer_state:
            assert a.optimizer_state[k].tobytes() == b.optimizer_state[k].tobytes()


def test_the_digest_check_is_the_documented_one(tmp_path):
    # the test's own digest reproduces the file's: a re-digested copy loads, so the refusals below that use
    # re-digested files test the semantic checks, not the digest
    _run(tmp_path)
    path = tmp_path / "checkpoint_0000002.npz"
    arrays = _read(path)
    assert str(arrays["digest"]) == _digest({k: v for k, v in arrays.items() if k != "digest"})
    _write(path, arrays)
    assert load_checkpoint(path).step == 2


def test_a_folder_of_another_run_is_refused_unless_overwrite(tmp_path):
    _run(tmp_path, steps=6)
    # g differing by 1e-7 is another run
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*another run.*init\.g.*overwrite=True"):
        _run(tmp_path, g=1.2 + 1e-7)
    with pytest.raises(ValueError, match="checkpoint_dir.*learning_rate"):
        _run(tmp_path, learning_rate=2e-2)
    assert load_run(tmp_path).steps == [0, 2, 4, 6]
    # the same run again is its own folder: accepted
    _run(tmp_path, steps=6)
    out = _run(tmp_path, g=1.3, overwrite=True)
    run = load_run(tmp_path)
    assert run.steps == [0, 2, 4] and run.config == out.config  # step 6 of the old run was deleted


def test_a_folder_with_checkpoints_but_no_manifest_is_refused(tmp_path):
    _run(tmp_path)
    os.unlink(tmp_path / "manifest.json")
    with pytest.raises(ValueError, match="checkpoint_dir.*without a manifest"):
        _run(tmp_path)
    with pytest.raises(ValueError, match="path.*manifest.json"):
        load_checkpoint(tmp_path / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="directory.*manifest.json"):
        load_run(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="directory.*not a readable kpref manifest"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="checkpoint_dir.*not a readable kpref manifest"):
        _run(tmp_path)
    _run(tmp_path, overwrite=True)
    assert load_run(tmp_path).steps == [0, 2, 4]
    # unrelated files are neither refused nor deleted
    (tmp_path / "notes.txt").write_text("mine")
    _run(tmp_path, g=1.1, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_checkpoint_copied_into_another_runs_folder_is_refused(tmp_path):
    _run(tmp_path / "a")
    _run(tmp_path / "b", g=1.3)
    shutil.copy(tmp_path / "a" / "checkpoint_0000002.npz", tmp_path / "b" / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="path: .*belongs to another run.*init"):
        load_checkpoint(tmp_path / "b" / "checkpoint_0000002.npz")
    with pytest.raises(ValueError, match="directory: .*belongs to another run"):
        load_run(tmp_path / "b")


def test_load_run_refuses_mixed_histories_and_misnamed_files(tmp_path):
    _run(tmp_path)
    path = tmp_path / "checkpoint_0000004.npz"
    arrays = _read(path)
    arrays["losses"] = arrays["losses"].copy()
    arrays["losses"][0] = np.nextafter(arrays["losses"][0], 1.0)
    _write(path, arrays)
    assert load_checkpoint(path).step == 4  # consistent on its own
    with pytest.raises(ValueError, match="directory.*disagrees.*mixes runs"):
        load_run(tmp_path)
    shutil.rmtree(tmp_path)
    _run(tmp_path)
    os.replace(tmp_path / "checkpoint_0000002.npz", tmp_path / "checkpoint_0000003.npz")
    with pytest.raises(ValueError, match="not the step of its name"):
        load_run(tmp_path)


def _mutations():
    def neg_step(a):
        a["step"] = np.array(-1, dtype=np.int64)

    def short_losses(a):
        a["losses"] = a["losses"][:-1]

    def loss_mismatch(a):
        a["loss"] = np.array(float(a["loss"]) * 2)

    def count(a):
        a["adam_count"] = np.array(7, dtype=np.int64)

    def negative_v(a):
        a["adam_v"] = -np.abs(a["adam_v"]) - 1.0

    def nan_theta(a):
        a["theta"] = a["theta"].copy()
        a["theta"][0] = np.nan

    def wrong_theta(a):
        a["theta"] = a["theta"][:-1]

    def int_theta(a):
        a["theta"] = a["theta"].astype(np.int64)

    def extra(a):
        a["sgd_momentum_buffer"] = np.zeros(3)

    def missing(a):
        del a["adam_m"]

    def bad_config(a):
        a["config"] = np.array("{}")

    def old_format(a):
        a["format"] = np.array("kpref-checkpoint-1")

    def no_format(a):
        del a["format"]

    def negative_loss(a):
        a["eval_loss"] = np.array(-1.0)

    return [
        (neg_step, "negative step"), (short_losses, r"'losses' of shape"), (loss_mismatch, "but losses"),
        (count, "after 7 updates at step 2"), (negative_v, "impossible optimizer state.*second moment"),
        (nan_theta, "non-finite values in 'theta'"), (wrong_theta, "'theta'"), (int_theta, "'theta'"),
        (extra, "does not write"), (missing, "impossible optimizer state.*state keys"),
        (bad_config, "not a kpref training configuration"), (old_format, "format 'kpref-checkpoint-1'"),
        (no_format, "not a kpref checkpoint"), (negative_loss, "negative loss"),
    ]


@pytest.mark.parametrize("mutate, words", _mutations(), ids=lambda v: getattr(v, "__name__", ""))
def test_inconsistent_checkpoints_are_refused(tmp_path, mutate, words):
    _run(tmp_path)
    path = tmp_path / "checkpoint_0000002.npz"
    arrays = _read(path)
    mutate(arrays)
    _write(path, arrays)
    with pytest.raises(ValueError, match="path: checkpoint .*" + words):
        load_checkpoint(path)
    x, y, m = _data()
    with pytest.raises(ValueError, match="resume_from: checkpoint .*" + words):
        train(kpref.Elman(3, 5), x, y, mask=m, steps=6, learning_rate=1e-2, resume_from=path, progress=False)


def _damage():
    def truncate(p):
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    def truncate_tail(p):
        data = p.read_bytes()
        p.write_bytes(data[:-30])

    def empty(p):
        p.write_bytes(b"")

    def text(p):
        p.write_text("hello")

    def npy(p):
        with open(p, "wb") as f:
            np.save(f, np.zeros(3))

    def flip(p):
        data = bytearray(p.read_bytes())
        data[len(data) // 3] ^= 0xFF
        p.write_bytes(bytes(data))

    def hand_edit(p):
        a = _read(p)
        a["theta"] = np.nextafter(a["theta"], np.inf)
        _write(p, a, redigest=False)

    def foreign(p):
        with open(p, "wb") as f:
            np.savez(f, theta=np.zeros(3))

    return [(truncate, "truncated or corrupt"), (truncate_tail, "truncated or corrupt"),
            (empty, "not one"), (text, "not one"), (npy, "not one"), (flip, "truncated or corrupt|digest"),
            (hand_edit, "digest.*hand-edited"), (foreign, "not a kpref checkpoint")]


@pytest.mark.parametrize("damage, words", _damage(), ids=lambda v: getattr(v, "__name__", ""))
def test_damaged_checkpoints_give_a_named_error(tmp_path, damage, words):
    _run(tmp_path)
    path = tmp_path / "checkpoint_0000002.npz"
    damage(path)
    for call, name in ((lambda: load_checkpoint(path), "path"), (lambda: load_run(tmp_path), "directory")):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(name + ":") and str(path) in msg, msg
        assert any(__import__("re").search(w, msg) for w in words.split("|")), msg
        for raw in ("BadZipFile", "KeyError", "JSONDecodeError", "zlib", "pickle"):
            assert raw not in msg, msg
    with pytest.raises(ValueError, match="resume_from"):
        x, y, m = _data()
        train(kpref.Elman(3, 5), x, y, mask=m, steps=6, resume_from=path, progress=False)


def test_missing_paths_and_wrong_types(tmp_path):
    with pytest.raises(ValueError, match="path: .*does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(TypeError, match="path"):
        load_checkpoint(3)
    with pytest.raises(ValueError, match="directory: .*not a folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir: expected a folder"):
        _run(tmp_path / "f")
    with pytest.raises(TypeError, match="resume_from"):
        _run(None, resume_from=3)


def test_resume_checks_theta_readout_g_rng_instead_of_ignoring_them(tmp_path):
    x, y, m = _data()
    cell = kpref.Elman(3, 5)
    theta0 = cell.init_params(7, g=0.9)
    ro0 = kpref.init_readout(cell, 3, 8)
    kw = dict(mask=m, steps=6, learning_rate=1e-2, progress=False)
    full = train(cell, x, y, theta=theta0, readout=ro0, checkpoint_steps=[3], checkpoint_dir=tmp_path, **kw)
    ck = tmp_path / "checkpoint_0000003.npz"
    same = train(cell, x, y, theta=theta0, readout=ro0, resume_from=ck, **kw)  # agreeing: accepted
    assert same.theta.tobytes() == full.theta.tobytes()
    with pytest.raises(ValueError, match="theta: differs"):
        train(cell, x, y, theta=theta0 + 1e-3, resume_from=ck, **kw)
    with pytest.raises(ValueError, match="readout: differs"):
        train(cell, x, y, readout=kpref.Readout(ro0.w_out, ro0.b_out + 1.0), resume_from=ck, **kw)
    with pytest.raises(ValueError, match="g: got 0.9"):
        train(cell, x, y, g=0.9, resume_from=ck, **kw)
    with pytest.raises(ValueError, match="rng: got"):
        train(cell, x, y, rng=np.random.default_rng(0), resume_from=ck, **kw)
    other = _data(5)
    with pytest.raises(ValueError, match="resume_from.*data_sha256"):
        train(cell, other.x, other.target, resume_from=ck, **dict(kw, mask=other.mask))


def test_resume_recomputes_the_loss_and_refuses_other_data(tmp_path):
    # a batch_fn with the same name but another behaviour cannot be told by its description: the loss at the
    # resumed step, recomputed, differs from the recorded one and the resume is refused
    x, y, m = _data()
    pool = tasks.memory_pro(20, 3, noise_std=0.1, **QUICK)
    pool2 = tasks.memory_pro(20, 4, noise_std=0.1, **QUICK)
    state = {"pool": pool}

    def batches(rng, step):
        idx = rng.choice(20, 5, replace=False)
        p = state["pool"]
        return p.x[idx], p.target[idx], p.mask[idx]

    kw = dict(mask=m, steps=4, learning_rate=1e-2, progress=False, batch_fn=batches)
    train(kpref.Elman(3, 5), x, y, rng=1, checkpoint_steps=[2], checkpoint_dir=tmp_path, **kw)
    state["pool"] = pool2
    with pytest.raises(ValueError, match="resume_from: the loss at step 2 recomputed"):
        train(kpref.Elman(3, 5), x, y, resume_from=tmp_path / "checkpoint_0000002.npz", **kw)
    state["pool"] = pool
    train(kpref.Elman(3, 5), x, y, resume_from=tmp_path / "checkpoint_0000002.npz", **kw)


@pytest.mark.parametrize("cell, lr", [(kpref.Linear(3, 5), 1e4), (kpref.Linear(3, 5), 1e2), (kpref.Elman(3, 5), 1e3)])
def test_divergence_raises_floating_point_error(cell, lr):
    x, y, m = _data()
    with pytest.raises(FloatingPointError, match="lower learning_rate"):
        train(cell, x, 1e150 * y if isinstance(cell, kpref.Elman) else y, steps=30, optimizer="gd",
              learning_rate=lr, rng=0, progress=False)


def test_non_finite_initial_state_is_not_blamed_on_the_learning_rate():
    x, y, m = _data()
    with pytest.raises(FloatingPointError, match="step 0.*lower g"):
        train(kpref.Linear(3, 5), 1e300 * x, y, steps=3, rng=0, g=50.0, progress=False)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.Philox, np.random.MT19937, np.random.SFC64])
def test_generator_seeds_are_recorded_and_reproduce_the_run(tmp_path, bit_generator):
    # a Generator (any bit generator) is recorded by its state: the manifest alone reproduces the run
    out = _run(tmp_path, rng=np.random.Generator(bit_generator(11)))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] is None
    gen = np.random.Generator(bit_generator())
    state = manifest["config"]["init"]["rng"]["state"]
    gen.bit_generator.state = {k: ({kk: np.asarray(vv, dtype=np.uint64) if isinstance(vv, list) else vv
                                    for kk, vv in v.items()} if isinstance(v, dict) else v)
                               for k, v in state.items()}
    again = _run(None, rng=gen)
    assert again.theta.tobytes() == out.theta.tobytes()

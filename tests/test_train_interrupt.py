"""SIGINT and SIGKILL a real training process at random moments: every file left is complete or absent.

The child trains with minibatches from a pool and checkpoints at every step (so most moments fall inside a
checkpoint write). After the signal: the manifest and every ``checkpoint_*.npz`` load and validate
(``load_run``); SIGINT leaves no ``.tmp`` file; SIGKILL may leave one ``.tmp`` (an interrupted write, ignored by
readers, removed by the next ``train`` in the folder). Every surviving checkpoint equals, bit for bit, the same
step of an uninterrupted in-process run, and resuming from the last one reproduces that run.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import kpref
from kpref import tasks
from kpref.training import load_run, pool_batches, train

QUICK = dict(fixation_steps=2, stimulus_steps=3, memory_steps=3, response_steps=4, grace_steps=1)
STEPS = 3000


def _setup():
    ev = tasks.memory_pro(4, 0, **QUICK)
    pool = tasks.memory_pro(16, 1, noise_std=0.1, **QUICK)
    kw = dict(mask=ev.mask, rng=3, g=1.1, learning_rate=1e-2, optimizer="sgd", momentum=0.9, clip_grad_norm=1.0,
              batch_fn=pool_batches(*pool, batch_size=6), progress=False)
    return kpref.Elman(3, 6), ev, kw


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {testdir!r})
    from test_train_interrupt import _setup, STEPS
    from kpref.training import train
    cell, ev, kw = _setup()
    said = []
    def ready(ck):
        if not said:
            print("ready", flush=True)
            said.append(1)
    train(cell, ev.x, ev.target, steps=STEPS, checkpoint_every=1, checkpoint_dir={folder!r}, callback=ready, **kw)
""")


def _interrupt(folder, sig, delay):
    code = CHILD.format(testdir=os.path.dirname(__file__), folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"ready", (line, proc.stderr.read()[-2000:])
        time.sleep(delay)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_training_leaves_complete_files_and_resumes_bitwise(tmp_path, sig):
    cell, ev, kw = _setup()
    rng = np.random.default_rng(2026)  # seeded moments: the test is reproducible
    for trial in range(2):
        folder = tmp_path / f"run{trial}"
        code = _interrupt(folder, sig, float(rng.uniform(0.0, 0.4)))
        assert code != 0, "the child finished before the signal: raise STEPS"
        names = sorted(os.listdir(folder))
        tmps = [n for n in names if n.endswith(".tmp")]
        if sig == signal.SIGINT:
            assert tmps == [], names
        else:
            assert len(tmps) <= 1, names
        run = load_run(folder)  # validates the manifest and every checkpoint
        assert run.steps == list(range(len(run.steps))), run.steps
        last = run.steps[-1]
        ref = train(cell, ev.x, ev.target, steps=last + 3, checkpoint_every=1, **kw)
        for ck in run.checkpoints:
            mine = ref.checkpoints[ck.step]
            assert ck.theta.tobytes() == mine.theta.tobytes() and ck.losses.tobytes() == mine.losses.tobytes()
            for k in mine.optimizer_state:
                assert ck.optimizer_state[k].tobytes() == mine.optimizer_state[k].tobytes()
        resumed = train(cell, ev.x, ev.target, steps=last + 3, checkpoint_dir=folder,
                        resume_from=run.checkpoints[-1].path, **dict(kw, rng=None))
        assert resumed.theta.tobytes() == ref.theta.tobytes()
        assert resumed.losses.tobytes() == ref.losses.tobytes()
        assert [n for n in os.listdir(folder) if n.endswith(".tmp")] == []  # the next train cleaned up

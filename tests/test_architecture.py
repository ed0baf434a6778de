"""One home per concept (issue 15 §2) and the package surface (§4), through the public API."""

import subprocess
import sys

import numpy as np
import pytest

import kpref
from kpref import analysis
from kpref import experiments as ex   # the application layer
from tests.helpers import rel


# ------------------------------------------------------------------ masks
def test_one_mask_check_for_mse_loss_train_and_subtask_losses():
    rng = np.random.default_rng(0)
    B, T, O = 3, 4, 2
    cell = kpref.Elman(2, 3)
    x, target = rng.standard_normal((B, T, 2)), rng.standard_normal((B, T, O))
    z = kpref.simulate(cell, cell.init_params(0), x)
    w = rng.standard_normal((O, 3))
    bad = np.ones((B, T))
    bad[0, 0] = -1.0
    for call in (lambda m: kpref.mse_loss(z, target, w, mask=m),
                 lambda m: kpref.train(cell, x, target, mask=m, steps=1, rng=0),
                 lambda m: ex.subtask_losses(z[:, :, :O], target, m, np.zeros(B, int), 1)):
        with pytest.raises(ValueError, match="mask: expected non-negative weights, got minimum -1.0"):
            call(bad)
        with pytest.raises(ValueError, match=r"mask: expected shape \(B, T\) = \(3, 4\)|mask: expected shape"):
            call(np.ones((B, T + 1)))
    # one meaning: a (B, T) mask weighs every output; the sub-task losses sum to the masked total
    mask = (rng.uniform(size=(B, T)) > 0.3).astype(float)
    y = z[:, :, :O]
    total = kpref.mse_loss(y, target, np.eye(O), mask=mask).value
    parts = ex.subtask_losses(y, target, mask, np.array([0, 1, 0]), 2)
    assert rel(sum(parts), total) <= 1e-14
    full = np.repeat(mask[:, :, None], O, axis=2)
    assert ex.subtask_losses(y, target, full, np.array([0, 1, 0]), 2) == parts


# ------------------------------------------------- experiments use kpref.analysis
def test_experiment_summaries_are_the_analysis_functions_with_zero_for_zero():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 3))
    M = A @ A.T
    assert ex.participation_ratio(M) == analysis.participation_ratio(M)
    assert ex.effective_rank_dense(A) == analysis.effective_rank(A)
    assert ex.AXES == analysis.AXIS_NAMES == ("batch", "time", "hidden")
    # the decided difference: a recorded zero is reported as 0 by the experiments, refused by analysis
    assert ex.participation_ratio(np.zeros((3, 3))) == 0.0 and ex.effective_rank_dense(np.zeros((2, 2))) == 0.0
    with pytest.raises(ValueError, match="zero operator"):
        analysis.participation_ratio(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="zero operator"):
        analysis.effective_rank(np.zeros((2, 2)))


# ------------------------------------------------------------------ surface
def test_types_the_api_returns_are_exported():
    cell = kpref.GRU(2, 3)
    theta = cell.init_params(0)
    x = np.zeros((1, 2, 2))
    lin = kpref.linearize(cell, theta, x)
    assert isinstance(lin, kpref.Linearization)
    assert isinstance(lin.K, kpref.NamedOperator)
    assert all(isinstance(s, kpref.KroneckerSite) for s in lin.kronecker_factors())
    assert isinstance(lin.adjoint_strategy, kpref.DiscreteAdjoint)
    assert isinstance(cell.point(theta, np.zeros((1, 3)), np.zeros((1, 2))), kpref.StepPoint)
    assert isinstance(kpref.RateODE(2, 3).field, kpref.RateField)
    assert isinstance(kpref.mse_loss(lin.z, np.zeros((1, 2, 1)), np.ones((1, 3))), kpref.Loss)
    for name in ("ButcherTableau", "ContinuousAdjoint", "AdjointStrategy", "RungeKuttaStepper", "TrainResult",
                 "Checkpoint", "Readout"):
        assert name in kpref.__all__ and hasattr(kpref, name)
    assert set(kpref.__all__) <= set(dir(kpref))


def test_import_kpref_does_not_import_matplotlib_or_tqdm():
    code = ("import sys, kpref, kpref.analysis, kpref.koopman, kpref.testing, kpref.tasks; "
            "bad = sorted(m for m in ('matplotlib', 'tqdm') if m in sys.modules); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_import_check_can_fail():
    """The same probe sees tqdm once the package itself imports it (a training progress bar)."""
    code = ("import sys, numpy as np, kpref; "
            "kpref.train(kpref.Elman(1, 2), np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), steps=1, rng=0, progress=True); "
            "sys.exit(1 if 'tqdm' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1

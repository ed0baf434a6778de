"""``python -m kpref verify``: passes on the real oracle, and fails (exit 1) when a derivative is wrong."""

import subprocess
import sys

import numpy as np

import kpref
from kpref.testing import run_verify, verify_cell


def test_verify_quick_passes_and_covers_every_builtin_cell():
    lines = []
    assert run_verify(quick=True, seed=3, out=lines.append) == 0
    table = "\n".join(lines)
    for label in ("Elman(tanh)", "Elman(relu)", "GRU", "LeakyRNN", "Linear", "LSTM",
                  "RateODE(euler)", "RateODE(midpoint)", "RateODE(rk4)"):
        assert label in table
    assert "FAIL" not in table and " 0 failed" in lines[-1]


def test_verify_flags_a_wrong_state_adjoint(monkeypatch):
    cell = kpref.GRU(2, 3)
    good = cell._state_vjp
    monkeypatch.setattr(cell, "_state_vjp", lambda pt, W: 1.001 * good(pt, W))
    rows = verify_cell("GRU(broken)", cell, np.random.default_rng(0), 2, 4)
    failed = {check for check, _, _, val, thr in rows if not val <= thr}
    assert "dot A/A^T" in failed and "dot P/P*, J/J^T, P_inv" in failed


def test_verify_flags_a_wrong_parameter_tangent(monkeypatch):
    cell = kpref.Elman(2, 3)
    good = cell._param_jvp
    monkeypatch.setattr(cell, "_param_jvp", lambda pt, d: good(pt, d) + 1e-6 * np.ones(1))
    rows = verify_cell("Elman(broken)", cell, np.random.default_rng(0), 2, 4)
    failed = {check for check, _, _, val, thr in rows if not val <= thr}
    assert {"dot G/G^T", "tangent vs complex step", "dz/dtheta = P J_theta"} <= failed


def test_verify_cli_exit_status_zero():
    out = subprocess.run([sys.executable, "-m", "kpref", "verify", "--quick"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout


def test_run_verify_exit_status_one_on_any_failure(monkeypatch):
    cell = kpref.Linear(2, 3)
    good = cell._state_vjp
    monkeypatch.setattr(cell, "_state_vjp", lambda pt, W: -good(pt, W))
    lines = []
    assert run_verify(quick=True, out=lines.append, cells=[("Linear(broken)", cell)]) == 1
    assert any("FAIL" in line and "Linear(broken)" in line for line in lines)

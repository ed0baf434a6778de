"""``python -m kpref verify``: passes on the real oracle, and every row fails (exit 1) when the path it
checks is wrong (one mutation per row: a row that cannot fail is a defect)."""

import subprocess
import sys

import numpy as np
import pytest

import kpref
from kpref.testing import run_verify, verify_cell

DISCRETE = ("Elman(tanh)", "Elman(relu)", "GRU", "LeakyRNN", "Linear", "LSTM")
ODE = ("RateODE(euler)", "RateODE(midpoint)", "RateODE(rk4)")


def _rows_by_check(lines):
    rows = {}
    for line in lines:
        for label in DISCRETE + ODE:
            if f" {label}" in line and line.rstrip().endswith(("pass", "FAIL")):
                rows.setdefault(label, []).append(line)
    return rows


def test_verify_quick_passes_and_covers_every_builtin_cell():
    lines = []
    assert run_verify(quick=True, seed=3, out=lines.append) == 0
    table = "\n".join(lines)
    assert "FAIL" not in table and " 0 failed" in lines[-1]
    rows = _rows_by_check(lines)
    for label in DISCRETE + ODE:
        text = "\n".join(rows[label])
        for check in ("dot A/A^T", "dot G/G^T", "dot P/P*, J/J^T, P_inv", "dot K, NTK", "dot materialized P, P_inv",
                      "P_inv P = I, P_inv* P* = I", "P, P* materialized = free",
                      "P_inv, P_inv* materialized = free", "NTK materialized = free"):
            assert check in text, (label, check)
        # the Kronecker core for every cell that has one, the continuous adjoint for every ODE cell
        assert ("K Kronecker = J J^T" in text) == (label in DISCRETE), label
        assert ("continuous adjoint order" in text) == (label in ODE), label
        if label != "Elman(relu)":
            for check in ("tangent vs complex step", "taylor |rate-2|", "dz/dtheta = P J_theta",
                          "grad = J^T P* e", "grad, masked mean loss"):
                assert check in text, (label, check)
        else:
            assert "tangent vs Richardson" in text


def _failed(cell, name="mutant", B=2, T=4):
    rows = verify_cell(name, cell, np.random.default_rng(0), B, T)
    return {check for check, _, _, val, thr in rows if not val <= thr}, {check for check, *_ in rows}


# ------------------------------------------------------- one mutation per row
def _scale_method(monkeypatch, obj, attr, factor):
    good = getattr(obj, attr)
    monkeypatch.setattr(obj, attr, lambda *a: factor * good(*a))


def test_rows_dot_A_and_P_fail_on_a_wrong_state_adjoint(monkeypatch):
    cell = kpref.GRU(2, 3)
    _scale_method(monkeypatch, cell, "_state_vjp", 1.001)
    failed, _ = _failed(cell)
    assert {"dot A/A^T", "dot P/P*, J/J^T, P_inv"} <= failed


def test_rows_dot_G_tangent_and_total_sensitivity_fail_on_a_wrong_parameter_tangent(monkeypatch):
    cell = kpref.Elman(2, 3)
    good = cell._param_jvp
    monkeypatch.setattr(cell, "_param_jvp", lambda pt, d: good(pt, d) + 1e-6 * np.ones(1))
    failed, _ = _failed(cell)
    assert {"dot G/G^T", "tangent vs complex step", "dz/dtheta = P J_theta"} <= failed


def test_rows_taylor_and_richardson_fail_on_a_wrong_state_tangent(monkeypatch):
    cell = kpref.LSTM(2, 3)
    _scale_method(monkeypatch, cell, "_state_jvp", 1.001)
    assert "taylor |rate-2| (h, theta)" in _failed(cell)[0]
    relu = kpref.Elman(2, 3, "relu")
    _scale_method(monkeypatch, relu, "_state_jvp", 1.001)
    assert "tangent vs Richardson" in _failed(relu)[0]


def test_row_dot_K_fails_on_an_asymmetric_K(monkeypatch):
    good = kpref.Linearization._K_matmat
    monkeypatch.setattr(kpref.Linearization, "_K_matmat", lambda self, X: good(self, X) + 1e-3 * np.roll(X, 1, 0))
    assert "dot K, NTK (symmetric)" in _failed(kpref.Elman(2, 3))[0]


def test_rows_of_the_materialized_path_fail_on_a_wrong_materialized_adjoint(monkeypatch):
    """A_t instead of A_tᵀ in the materialized backward sweep (the matrix-free path stays right)."""
    good = kpref.Linearization._At_step

    def wrong(self, t, W):
        if self._A is None:
            return good(self, t, W)
        return np.matmul(self._A[t], W.transpose(1, 2, 0)).transpose(2, 0, 1)

    monkeypatch.setattr(kpref.Linearization, "_At_step", wrong)
    failed, _ = _failed(kpref.GRU(2, 3))
    assert {"dot materialized P, P_inv", "P, P* materialized = free", "NTK materialized = free"} <= failed
    assert "dot P/P*, J/J^T, P_inv" not in failed


def test_row_materialized_P_inv_adjoint_fails_on_a_wrong_materialized_P_inv_transpose(monkeypatch):
    """The mutant verify --quick used to miss: the materialized P⁻ᵀ with A_{t+1} instead of A_{t+1}ᵀ."""
    good = kpref.Linearization._At_all

    def wrong(self, W):
        if self._A is None:
            return good(self, W)
        return np.einsum("tbij,ktbj->ktbi", self._A[1:], W[:, 1:], optimize=True)

    monkeypatch.setattr(kpref.Linearization, "_At_all", wrong)
    failed, _ = _failed(kpref.GRU(2, 3))
    assert {"P_inv, P_inv* materialized = free", "P_inv P = I, P_inv* P* = I"} <= failed
    assert "P, P* materialized = free" not in failed


def test_row_P_inv_fails_on_a_wrong_P_inv(monkeypatch):
    good = kpref.Linearization._A_all
    monkeypatch.setattr(kpref.Linearization, "_A_all", lambda self, V: 0.999 * good(self, V))
    assert "P_inv P = I, P_inv* P* = I" in _failed(kpref.Elman(2, 3))[0]


def test_row_gradient_fails_on_a_wrong_error_signal(monkeypatch):
    good = kpref.mse_loss

    def wrong(*a, reduction="mean", **k):
        loss = good(*a, reduction=reduction, **k)
        return loss._replace(e=1.001 * loss.e) if reduction == "sum" else loss

    monkeypatch.setattr(kpref, "mse_loss", wrong)
    failed, _ = _failed(kpref.GRU(2, 3))
    assert "grad = J^T P* e" in failed and "grad, masked mean loss" not in failed


@pytest.mark.parametrize("defect", ["mask ignored in e", "mask ignored in the value", "sum instead of mean"])
def test_row_masked_mean_loss_fails_on_a_wrong_masked_or_mean_loss(monkeypatch, defect):
    good = kpref.mse_loss

    def wrong(z, target, w_out, b_out=None, *, mask=None, reduction="mean", cell=None):
        loss = good(z, target, w_out, b_out, mask=mask, reduction=reduction, cell=cell)
        if mask is None:
            return loss
        if defect == "mask ignored in e":
            return loss._replace(e=good(z, target, w_out, b_out, reduction=reduction, cell=cell).e)
        if defect == "mask ignored in the value":
            return loss._replace(value=good(z, target, w_out, b_out, reduction=reduction, cell=cell).value)
        return good(z, target, w_out, b_out, mask=mask, reduction="sum", cell=cell)

    monkeypatch.setattr(kpref, "mse_loss", wrong)
    failed, _ = _failed(kpref.LeakyRNN(2, 3, alpha=0.3))
    assert failed == {"grad, masked mean loss"}


def test_row_kronecker_fails_on_a_wrong_kronecker_core(monkeypatch):
    good = kpref.Linearization.kronecker_factors

    def wrong(self, memory_limit=None):
        sites = good(self, memory_limit)
        return [sites[0]._replace(gram=1.001 * sites[0].gram)] + sites[1:]

    monkeypatch.setattr(kpref.Linearization, "kronecker_factors", wrong)
    assert _failed(kpref.LSTM(2, 3))[0] == {"K Kronecker = J J^T"}


def test_row_continuous_adjoint_fails_on_a_wrong_stage_state(monkeypatch):
    """RK4's c = 1/2 stages evaluated at the step's start instead of its middle: order 4 → 1."""
    monkeypatch.setattr(kpref.ContinuousAdjoint, "midstep_state", lambda self, cell, params, z_start, x_t: z_start)
    assert _failed(kpref.RateODE(2, 3, dt=0.1, method="rk4"))[0] == {"continuous adjoint order"}


def test_row_continuous_adjoint_fails_on_a_first_order_error_in_euler(monkeypatch):
    """A continuous adjoint off by 10 % (an O(1) error, not O(dt)) in Euler, whose own O(dt) deviation is
    5 %, 2.6 %, 1.3 % at dt/2, dt/4, dt/8: the deviation stops falling at rate 1."""
    good = kpref.ContinuousAdjoint.gradient
    monkeypatch.setattr(kpref.ContinuousAdjoint, "gradient", lambda self, lin, e: 1.1 * good(self, lin, e))
    assert _failed(kpref.RateODE(2, 3, dt=0.1, method="euler"))[0] == {"continuous adjoint order"}


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

"""kpref checking a PyTorch implementation: the ``torch.func`` backend of validation/torch_backend.py.

* A correct backend passes ``check_backend`` for every built-in cell, in
  float64 (errors of a few ε₆₄) and in float32 (errors of a few ε₃₂, far
  below the float32 budget, far above the float64 one).
* The ``torch.nn.RNN/GRU/LSTM`` sequence modules loaded by
  ``params_to_torch(theta, '_l0')`` give kpref's trajectory.
* Three deliberate bugs in a float64 backend are caught and located:
  the recurrent weight used transposed (everything fails, from the first step
  where ``W_hh`` acts; the parameter adjoint's worst block is ``weight_hh``),
  an off-by-one time index in the backward sweep (exactly ``P_adjoint``,
  ``NTK`` and ``grad`` fail, ``P_adjoint`` first at step ``T-2`` counting backward), and a
  GRU without its reset gate (the reset gate's rows of the parameter adjoint
  are wrong by exactly 100%).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kpref  # noqa: E402
import kpref.strategies as kst  # noqa: E402
from kpref.testing import OPERATORS, check_backend  # noqa: E402

from torch_backend import MUTATIONS, TorchBackend, sequence_module_simulate, supports  # noqa: E402

ALL_OPERATORS = list(OPERATORS)
EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _cells():
    kst.cell_names()
    return kst.CELL_FACTORIES


def _problem(cell, B=2, T=6, seed=0, zero_h0=False):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng)
    x = rng.uniform(-1.0, 1.0, (B, T, cell.input_size))
    h0 = np.zeros((B, cell.state_size)) if zero_h0 else rng.uniform(-0.5, 0.5, (B, cell.state_size))
    return theta, x, h0


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", sorted(_cells()))
def test_torch_backend_passes_in_float64_and_float32(name, bias):
    cell = _cells()[name](3, 4, bias)
    assert supports(cell)
    theta, x, h0 = _problem(cell)
    r64 = check_backend(TorchBackend(cell, theta, x, h0, dtype=torch.float64), cell, theta, x, h0)
    r32 = check_backend(TorchBackend(cell, theta, x, h0, dtype=torch.float32), cell, theta, x, h0)
    assert r64.passed, str(r64)
    assert r32.passed, str(r32)
    for c64, c32 in zip(r64.checks.values(), r32.checks.values()):
        assert c64.dtype == "float64" and c32.dtype == "float32"
        assert c64.rel_error <= 16 * EPS64 and c64.budget < 1e-12, c64.line()
        # float32 errors are float32-sized: above the float64 budget, far below their own
        assert 0.05 * EPS32 < c32.rel_error <= 16 * EPS32 and c32.rel_error < c32.budget / 5, c32.line()


@pytest.mark.parametrize("cell", [kpref.Elman(3, 4, "tanh"), kpref.Elman(3, 4, "relu"), kpref.GRU(3, 4),
                                  kpref.LSTM(3, 4), kpref.LSTM(3, 4, bias=False)], ids=repr)
def test_torch_sequence_modules_simulate_kprefs_trajectory(cell):
    theta, x, h0 = _problem(cell)
    report = check_backend({"simulate": sequence_module_simulate(cell, theta, x, h0)}, cell, theta, x, h0)
    assert report.passed and report["simulate"].rel_error <= 16 * EPS64, str(report)


@pytest.mark.parametrize("name, first_step", [("elman_tanh", 1), ("gru", 1), ("lstm", 1), ("leaky", 1),
                                              ("rate_rk4", 0)])
def test_transposed_recurrent_weight_is_caught_everywhere_from_the_step_where_it_acts(name, first_step):
    cell = _cells()[name](3, 4, True)
    theta, x, h0 = _problem(cell, zero_h0=True)
    report = check_backend(TorchBackend(cell, theta, x, h0, mutation="transposed_weight_hh"), cell, theta, x, h0)
    assert report.failed == ALL_OPERATORS, str(report)
    for check in report.checks.values():
        assert check.rel_error > 1e-3 and check.dtype == "float64"
    # h0 = 0: a discrete cell's first step does not see W_hh, its second does; an RK4 step's later
    # stages already evaluate W tanh(z) at z != 0
    assert report["simulate"].first_bad_step == first_step
    assert all(e <= 16 * EPS64 for e in report["simulate"].step_errors[:first_step])
    blocks = report["J_adjoint"].block_errors
    assert max(blocks, key=blocks.get) == "weight_hh", report["J_adjoint"].line()
    with pytest.raises(AssertionError, match="failed: " + ", ".join(OPERATORS)):
        report.raise_if_failed()


@pytest.mark.parametrize("name", ["elman_tanh", "gru", "lstm", "leaky", "rate_midpoint"])
def test_off_by_one_adjoint_is_caught_and_named(name):
    cell = _cells()[name](3, 4, True)
    T = 6
    theta, x, h0 = _problem(cell, T=T)
    report = check_backend(TorchBackend(cell, theta, x, h0, mutation="adjoint_off_by_one"), cell, theta, x, h0)
    assert report.failed == ["P_adjoint", "NTK", "grad"], str(report)     # NTK = P K P* uses the backend's P*
    check = report["P_adjoint"]
    assert check.rel_error > 1e-3 and check.sweep == "backward"
    assert check.first_bad_step == T - 2 and check.step_errors[T - 1] <= 16 * EPS64
    assert f"first step over budget (backward in time): t={T - 2}" in str(report)
    with pytest.raises(AssertionError, match=r"P_adjoint: the backward sweep .*off-by-one time index"):
        report.raise_if_failed()


def test_off_by_one_adjoint_is_harmless_and_passes_for_a_linear_cell():
    # A_t = W at every step: using A_t for A_{t+1} changes nothing, so nothing can catch it
    cell = kpref.Linear(3, 4)
    theta, x, h0 = _problem(cell)
    assert check_backend(TorchBackend(cell, theta, x, h0, mutation="adjoint_off_by_one"), cell, theta, x, h0).passed


def test_gru_without_its_reset_gate_is_caught_and_the_gate_named():
    cell = kpref.GRU(3, 4)
    theta, x, h0 = _problem(cell)
    report = check_backend(TorchBackend(cell, theta, x, h0, mutation="gru_dropped_reset"), cell, theta, x, h0)
    assert report.failed == ALL_OPERATORS, str(report)
    assert report["simulate"].first_bad_step == 0
    for name in ("J_adjoint", "grad"):
        gates = report[name].gate_errors
        # the backend never uses r: its gradient for every r row is exactly zero
        for block in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            assert gates[f"{block}[r]"] == 1.0
        assert "worst gates: " in report[name].line() and "[r] 1.0e+00" in report[name].line()


def test_mutation_names_are_checked():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    assert MUTATIONS == ("transposed_weight_hh", "adjoint_off_by_one", "gru_dropped_reset")
    with pytest.raises(ValueError, match="mutation: expected None or one of"):
        TorchBackend(cell, theta, x, h0, mutation="typo")
    with pytest.raises(ValueError, match="'gru_dropped_reset' needs a GRU"):
        TorchBackend(cell, theta, x, h0, mutation="gru_dropped_reset")

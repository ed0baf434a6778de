"""Cell capabilities are declared on the class (issue 15 §1), never inferred from names or sizes.

A user's cell that happens to be called ``LSTM`` and to have a state twice
its hidden size is not taken for kpref's LSTM; a cell that declares nothing
is refused clearly (weight sites, continuous adjoint) or checked by the
always-valid route (finite differences instead of the complex step).
"""

from collections import OrderedDict

import numpy as np
import pytest

import kpref
from kpref.testing import check_backend, reference_backend, verify_cell
from tests.helpers import readme_block


def _momentum():
    ns = {}
    exec(readme_block("class Momentum(kpref.Cell)"), ns)   # the README's custom cell (runs its verify too)
    return ns["Momentum"]


def _undeclared(base, name):
    """``base`` with every capability back at Cell's defaults, under the class name ``name``."""
    return type(name, (base,), {"analytic": False, "has_weight_sites": False,
                                "state_parts": kpref.Cell.state_parts, "gate_names": ()})


def test_builtin_declarations():
    assert kpref.GRU(2, 3).gate_names == ("r", "z", "n")
    assert kpref.LSTM(2, 3).gate_names == ("i", "f", "g", "o")
    assert kpref.LSTM(2, 3).state_parts == (("h", 3), ("c", 3))
    for cell in (kpref.Elman(2, 3), kpref.LeakyRNN(2, 3), kpref.Linear(2, 3), kpref.RateODE(2, 3)):
        assert cell.gate_names == () and cell.state_parts == (("h", 3),)
    assert kpref.Elman(2, 3).analytic and not kpref.Elman(2, 3, "relu").analytic
    assert all(c.has_weight_sites for c in (kpref.Elman(2, 3), kpref.GRU(2, 3), kpref.LSTM(2, 3),
                                            kpref.LeakyRNN(2, 3), kpref.Linear(2, 3)))
    ode = kpref.RateODE(2, 3)
    assert ode.analytic and not ode.has_weight_sites and ode.has_continuous_adjoint
    assert not kpref.GRU(2, 3).has_continuous_adjoint


def test_a_user_subclass_with_another_name_keeps_its_declarations():
    class MyGRU(kpref.GRU):
        pass
    cell = MyGRU(2, 3)
    assert cell.gate_names == ("r", "z", "n") and cell.analytic and cell.has_weight_sites


def _located_state_entry(cell, s, seed=0):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng)
    x = rng.uniform(-1, 1, (2, 4, cell.input_size))
    h0 = rng.uniform(-0.5, 0.5, (2, cell.state_size))
    ref = reference_backend(cell, theta, x, h0)

    def simulate():
        z = ref["simulate"]()
        z[1, 2, s] += 1e-6
        return z
    check = check_backend({"simulate": simulate}, cell, theta, x, h0)["simulate"]
    assert not check.passed
    return check.worst_entry


def test_state_parts_name_the_entries_of_a_two_part_state():
    Momentum = _momentum()
    assert _located_state_entry(Momentum(2, 3), 4) == "trial 1, step 2, unit 1 of v"
    assert _located_state_entry(Momentum(2, 3), 1) == "trial 1, step 2, unit 1 of q"


def test_a_user_cell_called_LSTM_with_state_2H_is_not_read_as_an_LSTM():
    """Before the declarations, the name in the MRO and ``state_size == 2H`` made this 'unit 1 of c'."""
    cell = _undeclared(_momentum(), "LSTM")(2, 3)
    assert cell.state_size == 2 * cell.hidden_size and cell.gate_names == ()
    assert _located_state_entry(cell, 4) == "trial 1, step 2, unit 4"


def test_an_ode_cell_whose_state_is_twice_its_output_has_one_part():
    class Oscillator(kpref.VectorField):
        """dq/ds = v, dv/ds = −q + W tanh(q) + U x (state [q, v], a readout of q)."""
        param_shapes = OrderedDict(W=(2, 2), U=(2, 1))

        def f(self, z, x, p):
            q, v = z[:, :2], z[:, 2:]
            return np.hstack([v, -q + np.tanh(q) @ p["W"].T + x @ p["U"].T])

        def jvp_z(self, z, x, p, dz):
            d = 1.0 - np.tanh(z[:, :2]) ** 2
            return np.hstack([dz[:, 2:], -dz[:, :2] + (d * dz[:, :2]) @ p["W"].T])

        def vjp_z(self, z, x, p, w):
            d = 1.0 - np.tanh(z[:, :2]) ** 2
            return np.hstack([-w[:, 2:] + d * (w[:, 2:] @ p["W"]), w[:, :2]])

        def jvp_params(self, z, x, p, dp):
            return np.hstack([np.zeros((z.shape[0], 2)), np.tanh(z[:, :2]) @ dp["W"].T + x @ dp["U"].T])

        def vjp_params(self, z, x, p, w):
            return {"W": w[:, 2:].T @ np.tanh(z[:, :2]), "U": w[:, 2:].T @ x}

    cell = kpref.ODECell(Oscillator(), 1, 4, 0.1, "rk4", output_size=2)
    assert cell.state_parts == (("h", 4),) and not cell.analytic   # the field did not declare analytic
    assert _located_state_entry(cell, 3) == "trial 1, step 2, unit 3"
    pt = cell.point(cell.init_params(0), np.zeros((1, 4)), np.zeros((1, 1)))
    with pytest.raises(NotImplementedError, match="weight_sites: ODECell declares no weight sites"):
        cell.weight_sites(pt)


def test_undeclared_capabilities_refuse_naming_the_cell():
    cell = _undeclared(_momentum(), "Undeclared")(2, 3)
    theta = cell.init_params(0)
    x = np.zeros((1, 3, 2))
    lin = kpref.linearize(cell, theta, x)
    with pytest.raises(NotImplementedError, match="weight_sites: Undeclared declares no weight sites"):
        cell.weight_sites(lin.point)
    with pytest.raises(NotImplementedError, match="kronecker_factors: Undeclared does not declare"):
        lin.kronecker_factors()
    with pytest.raises(NotImplementedError, match="continuous_adjoint: Undeclared declares no"):
        cell.continuous_adjoint()
    with pytest.raises(ValueError, match="adjoint: 'continuous' needs an ODE cell.*Undeclared"):
        kpref.linearize(cell, theta, x, adjoint="continuous")


def test_verify_uses_the_declared_route():
    """Not analytic → finite differences (no complex step, no Taylor rate); no sites → no Kronecker row."""
    checks = [r[0] for r in verify_cell("u", _undeclared(_momentum(), "U")(2, 3), np.random.default_rng(0), 2, 4)]
    assert "tangent vs Richardson" in checks and "tangent vs complex step" not in checks
    assert "K Kronecker = J J^T" not in checks
    checks = [r[0] for r in verify_cell("m", _momentum()(2, 3), np.random.default_rng(0), 2, 4)]
    assert "tangent vs complex step" in checks and "K Kronecker = J J^T" in checks


def test_a_declared_but_missing_weight_sites_hook_is_named():
    Momentum = _momentum()
    Broken = type("Broken", (Momentum,), {"_weight_sites": kpref.Cell._weight_sites})
    cell = Broken(2, 3)
    pt = cell.point(cell.init_params(0), np.zeros((2, 6)), np.zeros((2, 2)))
    with pytest.raises(NotImplementedError, match="Broken declares has_weight_sites but does not implement"):
        cell.weight_sites(pt)

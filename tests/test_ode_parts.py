"""The pieces of kpref.ode (issue 15 §3): validated tableaux, the VectorField ABC, the stepper,
the continuous adjoint as a strategy object, and check_field in kpref.testing."""

import numpy as np
import pytest

import kpref
from kpref.ode import METHODS, ButcherTableau, ContinuousAdjoint, RungeKuttaStepper, VectorField
from kpref.operators import AdjointStrategy, DiscreteAdjoint
from kpref.testing import check_field, dottest_pair
from tests.helpers import rel


def test_builtin_tableaux_are_consistent():
    for name, tab in METHODS.items():
        assert tab.name == name and sum(tab.b) == pytest.approx(1.0, abs=1e-15)
        for i in range(tab.stages):
            assert sum(tab.a[i]) == pytest.approx(tab.c[i], abs=1e-15)
            assert all(tab.a[i][j] == 0.0 for j in range(i, tab.stages))
    with pytest.raises(Exception):
        METHODS["rk4"].b = (1.0,)   # frozen


@pytest.mark.parametrize("kwargs, message", [
    (dict(b=(0.5, 0.4)), r"b: expected weights summing to 1 \(a consistent method\), got sum 0.9"),
    (dict(c=(0.0, 0.4)), r"c\[1\]: expected the row sum of a, sum_j a\[1\]\[j\] = 0.5, got 0.4"),
    (dict(a=((0.0, 0.1), (0.5, 0.0))), r"a\[0\]\[1\]: expected 0 \(an explicit method"),
    (dict(a=((0.0, 0.0),)), r"a: expected 2 rows"),
    (dict(b=(0.5, float("nan"))), r"b: expected finite real numbers"),
    (dict(order=0), r"order: expected a positive integer"),
])
def test_a_wrong_tableau_is_refused(kwargs, message):
    args = dict(name="mine", order=2, a=((0.0, 0.0), (0.5, 0.0)), b=(0.0, 1.0), c=(0.0, 0.5))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        ButcherTableau(**args)


HEUN = ButcherTableau("heun", 2, ((0.0, 0.0), (1.0, 0.0)), (0.5, 0.5), (0.0, 1.0))
RALSTON = ButcherTableau("ralston", 2, ((0.0, 0.0), (2.0 / 3.0, 0.0)), (0.25, 0.75), (0.0, 2.0 / 3.0))


def _problem(cell, seed=0, B=2, T=4):
    rng = np.random.default_rng(seed)
    return cell.init_params(rng, g=1.3), rng.standard_normal((B, T, cell.input_size)), \
        0.5 * rng.standard_normal((B, cell.state_size))


def test_a_user_tableau_integrates_with_exact_products():
    """ODECell(method=ButcherTableau) runs Heun's method: its products pass the verify checks."""
    cell = kpref.ODECell(kpref.ode.RateField(2, 3), 2, 3, 0.2, HEUN)
    assert cell.method == "heun" and cell.order == 2 and cell.tableau is HEUN
    rows = kpref.testing.verify_cell("Heun", cell, np.random.default_rng(1), 2, 5)
    assert all(val <= thr for _, _, _, val, thr in rows), rows


def test_stepper_is_the_cells_step():
    cell = kpref.RateODE(2, 3, dt=0.2, method="rk4")
    theta, x, h0 = _problem(cell)
    stepper = RungeKuttaStepper(cell.field, METHODS["rk4"], 0.2)
    params = cell.unflatten(theta)
    assert np.array_equal(stepper.step(params, h0, x[:, 0])[0], cell.step(theta, h0, x[:, 0]))


def test_continuous_adjoint_is_a_strategy_object():
    cell = kpref.RateODE(2, 3, dt=0.2, method="midpoint")
    theta, x, h0 = _problem(cell)
    e = np.random.default_rng(5).standard_normal((2, 4, 3))
    by_name = kpref.linearize(cell, theta, x, h0, adjoint="continuous")
    by_object = kpref.linearize(cell, theta, x, h0, adjoint=ContinuousAdjoint())
    assert by_name.adjoint == by_object.adjoint == "continuous"
    assert isinstance(by_object.adjoint_strategy, AdjointStrategy)
    assert np.array_equal(by_name.grad(e), by_object.grad(e))
    discrete = kpref.linearize(cell, theta, x, h0, adjoint=DiscreteAdjoint())
    assert np.array_equal(discrete.grad(e), kpref.linearize(cell, theta, x, h0).grad(e))
    # the two routes differ by O(dt^2), not by nothing (the strategy really is used)
    assert 0 < rel(by_name.grad(e), discrete.grad(e)) < 0.1
    with pytest.raises(ValueError, match="ContinuousAdjoint needs an ODE cell.*GRU"):
        kpref.linearize(kpref.GRU(2, 3), kpref.GRU(2, 3).init_params(0), x, adjoint=ContinuousAdjoint())
    with pytest.raises(ValueError, match=r"stage nodes c in \(0.0, 0.5, 1.0\), got \[0.666"):
        kpref.linearize(kpref.ODECell(kpref.ode.RateField(2, 3), 2, 3, 0.2, RALSTON), theta, x,
                        adjoint="continuous")
    with pytest.raises(ValueError, match="adjoint: expected one of"):
        kpref.linearize(cell, theta, x, adjoint="backward")


def test_a_user_adjoint_strategy_is_used_as_given():
    class Doubled(AdjointStrategy):
        name = "doubled"

        def gradient(self, lin, e):
            return 2.0 * DiscreteAdjoint().gradient(lin, e)
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    e = np.ones((2, 4, 3))
    lin = kpref.linearize(cell, theta, x, h0, adjoint=Doubled())
    assert lin.adjoint == "doubled"
    assert np.array_equal(lin.grad(e), 2.0 * kpref.linearize(cell, theta, x, h0).grad(e))


def test_vector_field_is_an_abc_naming_what_is_missing():
    assert VectorField.f.__isabstractmethod__

    class Half(VectorField):
        param_shapes = {"A": (2, 2)}

        def f(self, z, x, p):
            return z

        jvp_z = f
    with pytest.raises(TypeError, match="Half does not implement vjp_z, jvp_params, vjp_params"):
        Half()


def test_check_field_is_in_kpref_testing_and_the_cell_method_is_its_shim():
    cell = kpref.RateODE(2, 3, dt=0.1, method="rk4")
    assert check_field(cell, rng=4) == cell.check_field(rng=4)
    report = check_field(cell, rng=4)
    assert report["vjp_z"] <= 1e-14 and report["jvp_z"] <= 1e-8
    with pytest.raises(TypeError, match="cell: expected a kpref.ODECell"):
        check_field(kpref.GRU(2, 3))


def test_check_field_catches_a_wrong_adjoint_through_the_shared_dottest():
    class Wrong(kpref.ode.RateField):
        def vjp_z_block(self, z, x, params, cache, W):
            return 1.01 * super().vjp_z_block(z, x, params, cache, W)
    with pytest.raises(ValueError, match=r"Wrong\.vjp_z is not the adjoint of Wrong\.jvp_z: dottest"):
        kpref.ODECell(Wrong(2, 3), 2, 3, 0.1, "euler")
    # and the shared checker itself sees the same defect
    field, params = Wrong(2, 3), kpref.RateODE(2, 3).unflatten(kpref.RateODE(2, 3).init_params(0))
    z = np.random.default_rng(0).standard_normal((3, 3))
    x = np.zeros((3, 2))
    cache = field.prepare_rows(z, x, params)
    with pytest.raises(AssertionError):
        dottest_pair(lambda v: field.jvp_z_block(z, x, params, cache, v),
                     lambda w: field.vjp_z_block(z, x, params, cache, w), (1, 3, 3), (1, 3, 3), rng=0)

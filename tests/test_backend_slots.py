"""check_backend's slots beyond simulate/P/J/K/grad, its hints, check_operator and as_operator.

Each slot: kpref's own answer passes (error exactly 0) and one deliberately
wrong answer fails with the location the report names checked. Each hint
fires on the mistake it names and not on another one. Every slot fails a
float64 backend that is off by 1e-9 (test_backend.py), so none can pass a
wrong float64 backend.
"""

import numpy as np
import pytest

import kpref
from kpref.analysis import marginal_sum, partial_trace
from kpref.testing import OPERATORS, as_operator, check_backend, check_operator, reference_backend

from test_backend import _problem as problem_of   # (theta, x, h0) with h0 != 0


def _problem(cell, T=6):
    return problem_of(cell, T=T)


def _check(cell, name, fn, T=6, **kw):
    theta, x, h0 = _problem(cell, T=T)
    return check_backend({name: fn(kpref.linearize(cell, theta, x, h0))}, cell, theta, x, h0, **kw)[name]


def _traj(lin):
    return lambda Y: np.asarray(Y).reshape(lin.shape)


def test_reference_backend_offers_every_slot_and_passes_exactly():
    cell = kpref.LSTM(2, 3)
    theta, x, h0 = _problem(cell)
    rng = np.random.default_rng(1)
    loss = dict(target=rng.standard_normal((2, 6, 2)), w_out=rng.standard_normal((2, 3)), reduction="sum")
    report = check_backend(reference_backend(cell, theta, x, h0, loss=loss), cell, theta, x, h0, loss=loss)
    assert list(report.checks) == list(OPERATORS) + ["error_signal"] and report.skipped == []
    assert report.passed and all(c.rel_error == 0.0 for c in report.checks.values()), str(report)


# ------------------------------------------------------------ wrong answers
def test_P_inv_wrong_at_one_step_is_located_at_that_step_only():
    def wrong(lin):
        def P_inv(v):
            out = _traj(lin)(lin.P_inv.matvec(v.ravel()))
            out[:, 3] = v[:, 3]                      # the bug: no - A_3 v_2 at t = 3
            return out
        return P_inv
    check = _check(kpref.GRU(2, 3), "P_inv", wrong)
    assert not check.passed and check.bad_steps == [3] and check.first_bad_step == 3
    assert "over budget: t = 3 only (1 of 6)" in check.line()


def test_P_inv_adjoint_with_A_t_for_A_t_plus_1_is_named_off_by_one():
    def wrong(lin):
        def P_inv_adjoint(w):
            out = w.copy()
            for t in range(lin.shape[1] - 1):        # correct: A_{t+1}^T w_{t+1}
                out[:, t] -= lin.apply_At(t, w[None, :, t + 1])[0]
            return out
        return P_inv_adjoint
    check = _check(kpref.Elman(2, 3), "P_inv_adjoint", wrong)
    assert not check.passed and check.first_bad_step == 4 and check.bad_steps == [0, 1, 2, 3, 4]
    assert any("off-by-one time index" in h for h in check.hints), check.line()


def test_NTK_with_P_for_P_star_fails():
    check = _check(kpref.LeakyRNN(2, 3, alpha=0.5), "NTK",
                   lambda lin: lambda w: _traj(lin)(lin.P @ (lin.K @ (lin.P @ w.ravel()))))
    assert not check.passed and check.rel_error > 1e-2 and check.budget < 1e-12


def test_dz_dtheta_without_the_sweep_is_right_at_step_0_only():
    check = _check(kpref.GRU(2, 3), "dz_dtheta", lambda lin: lambda d: _traj(lin)(lin.J_theta.matvec(d)))
    assert not check.passed and check.step_errors[0] == 0.0 and check.bad_steps == [1, 2, 3, 4, 5]


def test_dz_dtheta_adjoint_without_the_sweep_fails_every_block():
    check = _check(kpref.Elman(2, 3), "dz_dtheta_adjoint", lambda lin: lambda w: lin.J_theta.H.matvec(w.ravel()))
    assert not check.passed and all(e > 1e-3 for e in check.block_errors.values())


def test_per_step_A_off_by_one_and_A_adjoint_untransposed_fail():
    def shifted(lin):
        T = lin.shape[1]
        return lambda t, v: lin.apply_A(min(t + 1, T - 1), v[None])[0]
    check = _check(kpref.Elman(2, 3), "A", shifted)
    assert not check.passed and check.bad_steps == [0, 1, 2, 3, 4]       # t = T-1 used A_{T-1}: right
    check = _check(kpref.GRU(2, 3), "A_adjoint", lambda lin: lambda t, w: lin.apply_A(t, w[None])[0])
    assert not check.passed and check.bad_steps == list(range(6))


def test_per_step_G_through_h_and_G_adjoint_with_a_wrong_gate():
    def total(lin):
        return lambda t, d: _traj(lin)(lin.P.matvec(lin.J_theta.matvec(d)))[:, t]
    check = _check(kpref.GRU(2, 3), "G", total)
    assert not check.passed and check.bad_steps == [1, 2, 3, 4, 5]
    cell = kpref.GRU(2, 3)
    sl = cell.param_slices()["weight_hh"]

    def wrong_gate(lin):
        ref = reference_backend(cell, lin.theta, lin.x, lin.h0)["G_adjoint"]

        def G_adjoint(t, w):
            g = ref(t, w)
            if t == 2:
                g[sl.start + 3 * 3:sl.start + 3 * 6] *= 2.0  # weight_hh rows 3..5: gate z
            return g
        return G_adjoint
    check = _check(cell, "G_adjoint", wrong_gate)
    assert not check.passed and check.bad_steps == [2]
    assert check.worst_entry.startswith("step 2, weight_hh[") and "(gate z, unit " in check.worst_entry
    assert max(check.gate_errors, key=check.gate_errors.get) == "weight_hh[z]"


def test_error_signal_with_the_wrong_reduction_fails_and_needs_its_loss():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    rng = np.random.default_rng(2)
    loss = dict(target=rng.standard_normal((2, 6, 1)), w_out=rng.standard_normal((1, 3)))
    z = kpref.simulate(cell, theta, x, h0)
    summed = lambda: kpref.mse_loss(z, reduction="sum", **loss).e        # noqa: E731  (the default is 'mean')
    check = check_backend({"error_signal": summed}, cell, theta, x, h0, loss=loss)["error_signal"]
    assert not check.passed and check.rel_error == pytest.approx(2 * 6 * 1 - 1)
    right = lambda: kpref.mse_loss(z, **loss).e                        # noqa: E731
    assert check_backend({"error_signal": right}, cell, theta, x, h0, loss=loss).passed
    with pytest.raises(ValueError, match="'error_signal' entry needs the loss"):
        check_backend({"error_signal": right}, cell, theta, x, h0)
    with pytest.raises(ValueError, match="loss: expected the keys target, w_out"):
        check_backend({"error_signal": right}, cell, theta, x, h0, loss={"target": loss["target"]})


# --------------------------------------------------------------------- hints
def test_hint_h0_when_only_step_0_is_wrong():
    def J_from_zero_h0(lin):
        ref = kpref.linearize(lin.cell, lin.theta, lin.x, np.zeros_like(lin.h0))
        return lambda d: np.concatenate([_traj(ref)(ref.J_theta.matvec(d))[:, :1],
                                         _traj(lin)(lin.J_theta.matvec(d))[:, 1:]], axis=1)
    check = _check(kpref.GRU(2, 3), "J", J_from_zero_h0)
    assert not check.passed and check.bad_steps == [0]
    assert "t = 0 only (1 of 6)" in check.line() and any("initial state h0" in h for h in check.hints)
    # a backend that ignores h0 altogether: every step differs, named by the h0 = 0 comparison
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell)
    ignores = reference_backend(cell, theta, x, np.zeros_like(h0))
    report = check_backend({"simulate": ignores["simulate"], "P": ignores["P"]}, cell, theta, x, h0)
    assert any("matches kpref with h0 = 0" in h for h in report["simulate"].hints)
    assert not any("only t = 0" in h for h in report["simulate"].hints)


@pytest.mark.parametrize("cell", [kpref.Elman(2, 3), kpref.GRU(2, 3), kpref.LSTM(2, 3)], ids=repr)
def test_hint_transposed_recurrent_weight(cell):
    theta, x, h0 = _problem(cell)
    H = cell.hidden_size
    sl = cell.param_slices()["weight_hh"]
    theta_t = theta.copy()
    theta_t[sl] = theta[sl].reshape(-1, H, H).transpose(0, 2, 1).ravel()
    wrong = reference_backend(cell, theta_t, x, h0)
    report = check_backend({n: wrong[n] for n in ("simulate", "P", "P_adjoint", "K")}, cell, theta, x, h0)
    assert report.failed == ["simulate", "P", "P_adjoint", "K"]
    for check in report.checks.values():
        assert [h for h in check.hints if "transposed recurrent weight" in h] == check.hints != [], check.line()
    assert report["P_adjoint"].first_bad_step == 4          # as for any wrong backward sweep: no off-by-one hint
    # another mistake (a scaled W_hh) is not called a transposition
    theta_s = theta.copy()
    theta_s[sl] *= 1.01
    other = check_backend({"simulate": reference_backend(cell, theta_s, x, h0)["simulate"]}, cell, theta, x, h0)
    assert not other.passed and other["simulate"].hints == []


def test_hint_missing_gate_in_a_parameter_answer():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell)
    ref = reference_backend(cell, theta, x, h0)
    rows = [np.arange(sl.start, sl.stop).reshape(cell.param_shapes[n])[:3].ravel()   # rows [r; z; n]: r first
            for n, sl in cell.param_slices().items()]

    def no_reset(e):
        g = ref["grad"](e)
        for idx in rows:
            g[idx] = 0.0
        return g
    check = check_backend({"grad": no_reset}, cell, theta, x, h0)["grad"]
    assert not check.passed and any("missing gate" in h and "gate(s) r " in h for h in check.hints), check.line()


def test_hint_float32_errors_in_float64_arrays():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    r32 = lambda a: np.asarray(a, np.float32).astype(np.float64)   # noqa: E731
    sim = reference_backend(cell, r32(theta), r32(x), r32(h0))["simulate"]
    check = check_backend({"simulate": lambda: r32(sim())}, cell, theta, x, h0)["simulate"]
    assert not check.passed and any("declare dtype='float32'" in h for h in check.hints)
    off = check_backend({"simulate": lambda: sim() * 1.01}, cell, theta, x, h0)["simulate"]
    assert not any("float32" in h for h in off.hints)


def test_trajectory_with_h0_first():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    z = kpref.simulate(cell, theta, x, h0)
    with_h0 = lambda: np.concatenate([h0[:, None], z], axis=1)      # noqa: E731
    with pytest.raises(ValueError, match=r"includes h_0\? pass includes_h0=True"):
        check_backend({"simulate": with_h0}, cell, theta, x, h0)
    report = check_backend({"simulate": with_h0}, cell, theta, x, h0, includes_h0=True)
    assert report.passed and "h_0 column rel. error 0.0e+00" in str(report)
    wrong_h0 = lambda: np.concatenate([0 * h0[:, None], z], axis=1)  # noqa: E731
    assert not check_backend({"simulate": wrong_h0}, cell, theta, x, h0, includes_h0=True).passed


# ------------------------------------------------------------------ bad input
def test_what_the_backend_returned_is_named():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    ref = reference_backend(cell, theta, x, h0)
    with pytest.raises(TypeError, match=r"backend P: .*got a tuple of 2 values .*return the tangent"):
        check_backend({"P": lambda q: (q, ref["P"](q))}, cell, theta, x, h0)
    with pytest.raises(TypeError, match=r"backend simulate: .*got a dict with keys \['z'\]"):
        check_backend({"simulate": lambda: {"z": ref["simulate"]()}}, cell, theta, x, h0)
    with pytest.raises(TypeError, match=r"backend P: .*got None"):
        check_backend({"P": lambda q: None}, cell, theta, x, h0)
    # a backend that raises: a FAIL naming the exception, the other operators still checked
    report = check_backend({"P": lambda q: 1 / 0, "simulate": ref["simulate"]}, cell, theta, x, h0)
    assert report.failed == ["P"] and "raised ZeroDivisionError" in report["P"].note
    # nested lists are answers too
    assert check_backend({"simulate": lambda: ref["simulate"]().tolist()}, cell, theta, x, h0).passed


def test_misspelled_attribute_is_listed_as_not_provided_with_the_closest_name():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    ref = reference_backend(cell, theta, x, h0)

    class Backend:
        def P(self, q):
            return ref["P"](q)

        def P_adjiont(self, w):
            return ref["P_adjoint"](w)

    report = check_backend(Backend(), cell, theta, x, h0)
    assert report.passed and list(report.checks) == ["P"]
    assert report.not_provided == {"P_adjoint": "P_adjiont"}
    assert "P_adjoint         not provided (closest: 'P_adjiont'; misspelled?)" in str(report)
    with pytest.raises(ValueError, match=r"unknown \['P_adjiont'\] \(closest to 'P_adjiont': 'P_adjoint'\)"):
        check_backend({"P": ref["P"], "P_adjiont": ref["P_adjoint"]}, cell, theta, x, h0)


# ------------------------------------------------------------ check_operator
def test_check_operator_partial_trace_passes_and_marginal_sum_fails_localized():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell)
    lin = kpref.linearize(cell, theta, x, h0)
    B, T, S = lin.shape
    reference = lambda l: partial_trace(l.K, l.shape, "batch")      # noqa: E731
    good, wrong = reference(lin), marginal_sum(lin.K, lin.shape, "batch")
    space = {"time": T, "unit": S}
    report = check_operator(lambda v: good.matvec(v.ravel()).reshape(T, S), reference, lin=lin, space=space,
                            adjoint=lambda v: good.rmatvec(v.ravel()).reshape(T, S))
    assert report.passed and list(report.checks) == ["partial_trace(K, batch)", "partial_trace(K, batch)*"]
    assert report["partial_trace(K, batch)"].condition > 0
    check = check_operator(lambda v: wrong.matvec(v.ravel()).reshape(T, S), reference, lin=lin,
                           space=space)["partial_trace(K, batch)"]
    assert not check.passed and check.worst_entry.startswith("time ") and ", unit " in check.worst_entry
    assert len(check.step_errors) == T and check.first_bad_step is not None


def test_check_operator_on_the_trajectory_space_with_float32_answers_and_bad_input():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    lin = kpref.linearize(cell, theta, x, h0)
    ntk = lambda v: lin.NTK.matvec(v.ravel()).reshape(lin.shape)    # noqa: E731
    report = check_operator(lambda v: ntk(v).astype(np.float32), lin.NTK, space=lin)
    assert report.passed and report["NTK"].dtype == "float32" and "input's perturbation only" in report["NTK"].note
    assert not check_operator(lambda v: 1.001 * ntk(v), lin.NTK, space=lin).passed
    with pytest.raises(TypeError, match="fn: expected a callable"):
        check_operator(np.eye(3), lin.NTK, space=lin)
    with pytest.raises(ValueError, match="needs lin="):
        check_operator(ntk, lambda l: l.NTK)
    with pytest.raises(ValueError, match=r"space: the input space \(4, 5\) has 20 entries"):
        check_operator(ntk, lin.NTK, space=(4, 5))


# --------------------------------------------------------------- as_operator
def test_as_operator_is_an_analysable_checked_operator():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell, T=4)
    lin = kpref.linearize(cell, theta, x, h0)
    shape = lin.shape
    K32 = lambda w: lin.K.matvec(w.ravel()).reshape(shape).astype(np.float32)   # noqa: E731
    op = as_operator(K32, shape, adjoint=K32, name="K32")
    dense = kpref.todense(op)
    assert dense.dtype == np.float64 and np.allclose(dense, kpref.todense(lin.K), rtol=1e-5, atol=1e-5)
    top = kpref.analysis.spectrum(op, 3)
    assert np.allclose(top, kpref.analysis.spectrum(lin.K, 3), rtol=1e-5)
    for route in (op, op.T, op.H, op.T.T):
        with pytest.raises(ValueError, match="expected a vector of length"):
            route.matvec(np.ones(5))
        with pytest.raises(ValueError):
            route.matvec(np.full(op.shape[0], np.nan))
    J = as_operator(lambda d: lin.J_theta.matvec(d).reshape(shape), shape, input_shape=(lin.num_params,))
    assert J.shape == (lin.size, lin.num_params)
    with pytest.raises(NotImplementedError, match="no adjoint given"):
        J.H.matvec(np.ones(lin.size))
    with pytest.raises(NotImplementedError, match="no adjoint given"):
        J.T.matvec(np.ones(lin.size))
    bad = as_operator(lambda w: w.ravel(), shape)
    with pytest.raises(ValueError, match=r"backend backend: expected an answer of shape"):
        bad.matvec(np.ones(lin.size))
    nan = as_operator(lambda w: np.full(shape, np.nan), shape)
    with pytest.raises(ValueError, match="backend backend answer"):
        nan.matvec(np.ones(lin.size))
    v = np.ones(lin.size)
    out = op.matvec(v)
    assert not np.shares_memory(out, v)
    with pytest.raises(ValueError, match="shape: expected a shape tuple"):
        as_operator(K32, (2, -1, 3))

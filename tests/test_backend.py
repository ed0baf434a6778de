"""check_backend (kpref.testing) and the torch-name parameter interop (Cell.params_from_torch / params_to_torch).

Every verdict is tested both ways: kpref's own operators pass (errors exactly
0), answers accurate to the backend's precision pass, and each kind of wrong
answer (a perturbed entry, an off-by-one adjoint, a wrong parameter block, the
total instead of the immediate Jacobian, a non-finite value, float32 accuracy
claimed as float64) fails, with the location the report names checked.
"""

import json
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kpref
import kpref.strategies as kst
from kpref.testing import (OPERATORS, OperatorCheck, Report, check_backend, describe_param_index,
                           describe_state_index, reference_backend)


def _problem(cell, B=2, T=5, seed=0):
    rng = np.random.default_rng(seed)
    theta = cell.init_params(rng)
    x = rng.uniform(-1.0, 1.0, (B, T, cell.input_size))
    h0 = rng.uniform(-0.5, 0.5, (B, cell.state_size))
    return theta, x, h0


def _all_cells(n=3, h=4):
    kst.cell_names()
    return {name: factory(n, h, True) for name, factory in kst.CELL_FACTORIES.items()}


def _wrapped(backend, transform):
    """``backend`` with every answer passed through ``transform(name, answer)``."""
    def wrap(name, fn):
        return lambda *args: transform(name, fn(*args))
    return {name: wrap(name, fn) for name, fn in backend.items()}


def _float32_backend(cell, theta, x, h0):
    """A correct float32 backend: kpref on float32-rounded data and inputs, answers rounded to float32."""
    r32 = lambda a: np.asarray(a, dtype=np.float32).astype(np.float64)
    ref = reference_backend(cell, r32(theta), r32(x), r32(h0))

    def wrap(fn):   # the step index t of A(t, v), G(t, dtheta), ... stays an int
        return lambda *args: np.asarray(fn(*(r32(a) if isinstance(a, np.ndarray) else a for a in args)),
                                        dtype=np.float32)
    return {name: wrap(fn) for name, fn in ref.items()}


# ----------------------------------------------------------------- passing
@settings(max_examples=15)
@given(kst.problems(max_batch=2, max_time=4, max_input=2, max_hidden=3))
def test_kpref_itself_passes_with_zero_error_for_every_cell(problem):
    cell, theta, x, h0 = problem
    report = check_backend(reference_backend(cell, theta, x, h0), cell, theta, x, h0, n_vectors=2)
    assert report.passed, str(report)
    assert list(report.checks) == list(OPERATORS) and report.skipped == []
    assert all(c.rel_error == 0.0 for c in report.checks.values())
    lines = str(report).splitlines()
    assert [line.split()[0] for line in lines] == list(OPERATORS)
    assert all(" PASS " in line for line in lines)
    assert report.raise_if_failed() is report


@pytest.mark.parametrize("name", sorted(_all_cells()))
def test_float32_accurate_answers_pass_in_float32_and_fail_claimed_as_float64(name):
    cell = _all_cells()[name]
    theta, x, h0 = _problem(cell, T=6)
    backend = _float32_backend(cell, theta, x, h0)
    report = check_backend(backend, cell, theta, x, h0)
    assert report.passed, str(report)
    for check in report.checks.values():
        assert check.dtype == "float32"
        assert 1e-9 < check.rel_error < check.budget / 10, check.line()   # really float32 errors, margin > 10
        assert 1e-7 < check.budget < 1e-3
    # the same numbers presented as float64 answers: the float64 budget (~1e-14) rejects them
    as64 = check_backend(_wrapped(backend, lambda n, a: a.astype(np.float64)), cell, theta, x, h0)
    assert as64.failed == list(OPERATORS), str(as64)
    assert all(c.dtype == "float64" and c.budget < 1e-12 for c in as64.checks.values())
    # ... and so does a declared dtype: answers in float64 arrays computed in float32
    declared = dict(_wrapped(backend, lambda n, a: a.astype(np.float64)), dtype="float32")
    assert check_backend(declared, cell, theta, x, h0).passed


def test_a_relative_error_of_1e_9_fails_in_float64_unless_rtol_allows_it():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell)
    off = _wrapped(reference_backend(cell, theta, x, h0), lambda n, a: a * (1 + 1e-9))
    report = check_backend(off, cell, theta, x, h0)
    assert report.failed == list(OPERATORS)
    for check in report.checks.values():
        assert check.rel_error == pytest.approx(1e-9, rel=1e-3)
    assert check_backend(off, cell, theta, x, h0, rtol=2e-9).passed
    assert all(c.budget == 2e-9 for c in check_backend(off, cell, theta, x, h0, rtol=2e-9).checks.values())


def test_a_relative_error_of_1e_3_fails_in_float32():
    cell = kpref.LSTM(2, 3)
    theta, x, h0 = _problem(cell)
    off = _wrapped(_float32_backend(cell, theta, x, h0), lambda n, a: (a * (1 + 1e-3)).astype(np.float32))
    assert check_backend(off, cell, theta, x, h0).failed == list(OPERATORS)


def test_an_object_backend_with_a_subset_of_operators():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    ref = reference_backend(cell, theta, x, h0)
    backend = types.SimpleNamespace(P=ref["P"], grad=ref["grad"], unrelated_attribute=1)
    report = check_backend(backend, cell, theta, x, h0)
    assert list(report.checks) == ["P", "grad"] and "P" in report and "K" not in report
    assert report.skipped == [n for n in OPERATORS if n not in ("P", "grad")]
    assert report.passed


# ----------------------------------------------------------- wrong answers
def test_off_by_one_adjoint_fails_P_adjoint_only_and_names_step_T_minus_2():
    cell = kpref.Elman(3, 4)
    T = 6
    theta, x, h0 = _problem(cell, T=T)
    lin = kpref.linearize(cell, theta, x, h0)

    def off_by_one_P_adjoint(w):
        lam = np.empty_like(w)
        lam[:, T - 1] = w[:, T - 1]
        for t in range(T - 2, -1, -1):
            lam[:, t] = w[:, t] + lin.apply_At(t, lam[None, :, t + 1])[0]   # the bug: A_t, not A_{t+1}
        return lam

    backend = dict(reference_backend(cell, theta, x, h0), P_adjoint=off_by_one_P_adjoint)
    report = check_backend(backend, cell, theta, x, h0)
    assert report.failed == ["P_adjoint"]
    check = report["P_adjoint"]
    assert check.rel_error > 1e-3 and check.first_bad_step == T - 2 and check.sweep == "backward"
    assert check.step_errors[T - 1] == 0.0
    assert f"first step over budget (backward in time): t={T - 2}" in check.line()
    with pytest.raises(AssertionError, match=r"failed: P_adjoint(.|\n)*P_adjoint: the backward sweep"):
        report.raise_if_failed()


@pytest.mark.parametrize("cell, where", [
    (kpref.Elman(2, 3), "trial 1, step 3, unit 2"),
    (kpref.LSTM(2, 3), "trial 1, step 3, unit 2 of c"),
    (kpref.LSTM(2, 3), "trial 0, step 2, unit 1 of h"),
])
def test_one_wrong_trajectory_entry_is_located(cell, where):
    theta, x, h0 = _problem(cell)
    b, t, s = (1, 3, 2 + 3) if where.endswith("of c") else ((1, 3, 2) if "of" not in where else (0, 2, 1))
    ref = reference_backend(cell, theta, x, h0)

    def simulate():
        z = ref["simulate"]()
        z[b, t, s] += 1e-6
        return z
    report = check_backend({"simulate": simulate}, cell, theta, x, h0)
    check = report["simulate"]
    assert not check.passed and check.worst_entry == where and check.worst_index == (b, t, s)
    assert check.first_bad_step == t
    assert check.backend_value - check.kpref_value == pytest.approx(1e-6, rel=1e-6)


@pytest.mark.parametrize("cell, block, rows, gate", [
    (kpref.GRU(2, 3), "bias_hh", slice(6, 9), "gate n"),
    (kpref.LSTM(2, 3), "weight_hh", slice(3, 6), "gate f"),
    (kpref.Elman(2, 3), "weight_ih", slice(0, 3), None),
])
def test_a_wrong_parameter_block_is_named_with_its_gate(cell, block, rows, gate):
    theta, x, h0 = _problem(cell)
    sl = cell.param_slices()[block]

    def wrong(name, g):
        g = g.copy()
        view = g[sl].reshape(cell.param_shapes[block])
        view[rows] *= 1.5
        return g
    report = check_backend(_wrapped(reference_backend(cell, theta, x, h0), lambda n, a: wrong(n, a)
                                    if n in ("J_adjoint", "grad") else a), cell, theta, x, h0)
    assert report.failed == ["J_adjoint", "grad"]
    for name in report.failed:
        check = report[name]
        assert check.worst_entry.startswith(block + "[")
        if gate:
            assert f"({gate}, unit " in check.worst_entry
        assert check.block_errors[block] > 1e-2
        assert all(e == 0.0 for b, e in check.block_errors.items() if b != block)
        if gate:
            key = f"{block}[{gate[-1]}]"
            assert check.gate_errors[key] == pytest.approx(0.5)
            assert all(e == 0.0 for k, e in check.gate_errors.items() if k != key)
            assert f"worst gates: {key} 5.0e-01" in check.line()
        else:
            assert check.gate_errors == {}
        assert "by block: " in check.line() and check.first_bad_step is None


def test_total_instead_of_immediate_parameter_jacobian_fails_J_from_step_1():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell, T=5)
    lin = kpref.linearize(cell, theta, x, h0)
    B, T, S = lin.shape
    backend = {"J": lambda d: lin.P.matvec(lin.J_theta.matvec(d)).reshape(B, T, S)}   # P J: through h_{t-1}
    check = check_backend(backend, cell, theta, x, h0)["J"]
    assert not check.passed and check.first_bad_step == 1 and check.step_errors[0] == 0.0


def test_gradient_without_the_backward_sweep_fails():
    cell = kpref.LeakyRNN(2, 3, alpha=0.5)
    theta, x, h0 = _problem(cell)
    lin = kpref.linearize(cell, theta, x, h0)
    report = check_backend({"grad": lambda e: lin.J_theta.H.matvec(e.ravel())}, cell, theta, x, h0)
    assert report.failed == ["grad"] and report["grad"].rel_error > 1e-2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_answers_fail_with_a_note_and_json_stays_plain(bad):
    cell = kpref.Linear(2, 3)
    theta, x, h0 = _problem(cell)

    def simulate():
        z = reference_backend(cell, theta, x, h0)["simulate"]()
        z[0, 1, 2] = bad
        return z
    report = check_backend({"simulate": simulate}, cell, theta, x, h0)
    check = report["simulate"]
    assert not report.passed and "1 non-finite entries" in check.note
    assert check.worst_entry == "trial 0, step 1, unit 2"
    data = report.to_json()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["operators"]["simulate"]["rel_error"] == "inf"


def test_the_budget_says_when_a_problem_is_too_ill_conditioned_for_float32():
    cell = kpref.Elman(2, 8)
    rng = np.random.default_rng(3)
    theta = cell.init_params(rng, g=4.0)
    x = rng.standard_normal((2, 60, 2))
    report = check_backend(_float32_backend(cell, theta, x, np.zeros((2, 8))), cell, theta, x, n_vectors=1)
    check = report["simulate"]
    assert check.condition > 1e3 and check.budget >= 0.1
    assert "too ill-conditioned" in check.note and "use float64" in check.note


# ------------------------------------------------------------- the report
def test_report_to_json_is_plain_and_reproducible():
    cell = kpref.GRU(2, 3)
    theta, x, h0 = _problem(cell)
    backend = _float32_backend(cell, theta, x, h0)
    a = check_backend(backend, cell, theta, x, h0, rng=5)
    b = check_backend(backend, cell, theta, x, h0, rng=5)
    assert a.to_json() == b.to_json()
    data = a.to_json()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["passed"] is True and data["shape"] == [2, 5, 3] and data["num_params"] == cell.num_params
    op = data["operators"]["grad"]
    assert set(op["block_errors"]) == set(cell.param_shapes) and op["first_bad_step"] is None
    assert set(op["gate_errors"]) == {f"{b}[{g}]" for b in cell.param_shapes for g in "rzn"}
    assert len(data["operators"]["P"]["step_errors"]) == 5
    assert isinstance(a["P"], OperatorCheck) and isinstance(a, Report)
    assert "passed" in repr(a)


def test_describe_indices():
    gru, lstm, elman = kpref.GRU(2, 3), kpref.LSTM(2, 3), kpref.Elman(2, 3)
    start = gru.param_slices()["weight_hh"].start
    assert describe_param_index(gru, start + 4 * 3 + 2) == "weight_hh[4, 2] (gate z, unit 1, column 2)"
    start = lstm.param_slices()["bias_ih"].start
    assert describe_param_index(lstm, start + 3 * 3 + 2) == "bias_ih[11] (gate o, unit 2)"
    assert describe_param_index(elman, 1) == "weight_ih[0, 1]"
    assert describe_state_index(lstm, 0, 1, 4) == "trial 0, step 1, unit 1 of c"
    assert describe_state_index(elman, 1, 0, 2) == "trial 1, step 0, unit 2"


# ------------------------------------------------------------ bad backends
def test_malformed_backends_are_refused_with_named_messages():
    cell = kpref.Elman(2, 3)
    theta, x, h0 = _problem(cell)
    ref = reference_backend(cell, theta, x, h0)
    with pytest.raises(ValueError, match=r"backend: expected keys among .* got unknown \['Pstar'\]"):
        check_backend({"Pstar": ref["P_adjoint"]}, cell, theta, x, h0)
    with pytest.raises(TypeError, match="backend P: expected a callable, got ndarray"):
        check_backend({"P": np.eye(3)}, cell, theta, x, h0)
    with pytest.raises(ValueError, match="backend: expected at least one of"):
        check_backend({}, cell, theta, x, h0)
    with pytest.raises(ValueError, match=r"backend P: expected an answer of shape \(2, 5, 3\), got shape \(30,\)"):
        check_backend({"P": lambda q: ref["P"](q).ravel()}, cell, theta, x, h0)
    with pytest.raises(TypeError, match="backend grad: expected a real floating array, got dtype int64"):
        check_backend({"grad": lambda e: np.zeros(cell.num_params, dtype=np.int64)}, cell, theta, x, h0)
    with pytest.raises(TypeError, match="backend dtype: expected a floating dtype"):
        check_backend({"P": ref["P"], "dtype": "int32"}, cell, theta, x, h0)
    with pytest.raises(TypeError, match="cell: expected a kpref cell"):
        check_backend(ref, "Elman", theta, x, h0)
    with pytest.raises(ValueError, match="rtol"):
        check_backend(ref, cell, theta, x, h0, rtol=-1.0)
    with pytest.raises(ValueError, match="n_vectors"):
        check_backend(ref, cell, theta, x, h0, n_vectors=0)
    with pytest.raises(ValueError, match="theta"):
        check_backend(ref, cell, theta[:-1], x, h0)


# ------------------------------------------------ params_from_torch / to_torch
@given(kst.cells(), st.sampled_from(["", "_l0"]), st.integers(0, 2**32 - 1))
def test_params_to_torch_and_back_is_the_identity(cell, suffix, seed):
    theta = cell.init_params(seed)
    named = cell.params_to_torch(theta, suffix)
    assert list(named) == [n + suffix for n in cell.param_shapes]
    for name, shape in cell.param_shapes.items():
        assert named[name + suffix].shape == shape and named[name + suffix].dtype == np.float64
    back = cell.params_from_torch(named)
    assert np.array_equal(back, theta)
    named[next(iter(named))][...] = 7.0     # copies: theta is not changed
    assert np.array_equal(cell.params_from_torch(cell.params_to_torch(theta)), theta)


def test_params_from_torch_accepts_float32_and_keeps_values_exactly():
    cell = kpref.GRU(2, 3)
    named = {k: v.astype(np.float32) for k, v in cell.params_to_torch(cell.init_params(0)).items()}
    theta = cell.params_from_torch(named)
    assert theta.dtype == np.float64
    assert np.array_equal(theta, np.concatenate([v.astype(np.float64).ravel() for v in named.values()]))


def test_params_from_torch_refuses_bad_state_dicts():
    cell = kpref.GRU(2, 3)
    good = cell.params_to_torch(cell.init_params(0), "_l0")
    with pytest.raises(ValueError, match=r"single-layer, unidirectional.*\['weight_hh_l1'\]"):
        cell.params_from_torch(dict(good, weight_hh_l1=good["weight_hh_l0"]))
    with pytest.raises(ValueError, match=r"single-layer, unidirectional.*'bias_ih_l0_reverse'"):
        cell.params_from_torch(dict(good, bias_ih_l0_reverse=good["bias_ih_l0"]))
    mixed = dict(good)
    mixed["bias_hh"] = mixed.pop("bias_hh_l0")
    with pytest.raises(ValueError, match="every key with the suffix '_l0' or none, got a mixture"):
        cell.params_from_torch(mixed)
    renamed = dict(good)
    renamed["rnn.bias_hh_l0"] = renamed.pop("bias_hh_l0")
    with pytest.raises(ValueError, match=r"unknown \['rnn.bias_hh_l0'\] and missing \['bias_hh_l0'\]"):
        cell.params_from_torch(renamed)
    with pytest.raises(ValueError, match=r"state_dict\['weight_ih_l0'\]: expected shape"):
        cell.params_from_torch(dict(good, weight_ih_l0=good["weight_ih_l0"].T))
    with pytest.raises(TypeError, match=r"state_dict\['bias_ih_l0'\]"):
        cell.params_from_torch(dict(good, bias_ih_l0=np.zeros(9, dtype=np.int64)))
    with pytest.raises(ValueError, match=r"state_dict\['bias_ih_l0'\]"):
        cell.params_from_torch(dict(good, bias_ih_l0=np.full(9, np.nan)))
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        cell.params_from_torch([("weight_ih", good["weight_ih_l0"])])
    with pytest.raises(TypeError, match="state_dict: expected string keys"):
        cell.params_from_torch({0: good["weight_ih_l0"]})
    with pytest.raises(ValueError, match="suffix: expected one of '', '_l0'"):
        cell.params_to_torch(cell.init_params(0), "_l1")


def _torch_module(torch, cell, sequence):
    N, H, bias = cell.input_size, cell.hidden_size, cell.bias
    if isinstance(cell, kpref.Elman):
        return (torch.nn.RNN(N, H, nonlinearity=cell.nonlinearity, bias=bias, batch_first=True) if sequence
                else torch.nn.RNNCell(N, H, bias=bias, nonlinearity=cell.nonlinearity))
    if isinstance(cell, kpref.GRU):
        return torch.nn.GRU(N, H, bias=bias, batch_first=True) if sequence else torch.nn.GRUCell(N, H, bias=bias)
    return torch.nn.LSTM(N, H, bias=bias, batch_first=True) if sequence else torch.nn.LSTMCell(N, H, bias=bias)


@pytest.mark.parametrize("cell", [kpref.Elman(3, 4, "tanh"), kpref.Elman(3, 4, "relu", bias=False),
                                  kpref.GRU(3, 4), kpref.GRU(3, 4, bias=False), kpref.LSTM(3, 4)],
                         ids=repr)
def test_params_from_torch_reads_torch_modules_and_matches_their_output(cell):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = _torch_module(torch, cell, sequence=True).double()
    theta = cell.params_from_torch(module.state_dict())          # torch tensors, '_l0' suffix
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    with torch.no_grad():
        out = module(torch.from_numpy(x))[0].numpy()
    z = kpref.simulate(cell, theta, x)
    assert np.max(np.abs(z[..., :cell.hidden_size] - out)) <= 1e-12 * max(1.0, np.max(np.abs(out)))
    # and back: kpref's theta loaded into a fresh module (strict) gives the same tensors
    fresh = _torch_module(torch, cell, sequence=True).double()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in cell.params_to_torch(theta, "_l0").items()})
    for key, value in module.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    # the single-step torch cell (no suffix), float32 tensors
    step = _torch_module(torch, cell, sequence=False)
    theta32 = cell.params_from_torch(step.state_dict())
    assert np.array_equal(theta32, np.concatenate([v.double().numpy().ravel() for v in step.state_dict().values()]))


def test_params_from_torch_refuses_multilayer_and_bidirectional_modules():
    torch = pytest.importorskip("torch")
    cell = kpref.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"single-layer, unidirectional.*weight_hh_l1"):
        cell.params_from_torch(torch.nn.LSTM(3, 4, num_layers=2).state_dict())
    with pytest.raises(ValueError, match=r"single-layer, unidirectional.*weight_hh_l0_reverse"):
        cell.params_from_torch(torch.nn.LSTM(3, 4, bidirectional=True).state_dict())

"""kpref.interop.torch: backends from torch.nn modules and torch step functions, checked by check_backend.

* Every torch.nn recurrent module (cells and single-layer sequence modules)
  passes in float64 (errors <= 1e-10; in fact a few eps) and float32 (within
  budget, with a margin).
* A step function with the parameters of a whole model (module prefixes,
  a readout, the user's own key order) passes, the readout set aside and named.
* Four seeded mutations fail, each named in the report by its hint.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kpref  # noqa: E402
from kpref.interop.torch import backend, cell_of, match_names, params_from_torch  # noqa: E402
from kpref.testing import OPERATORS, check_backend  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)


def _x(B=2, T=6, N=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (B, T, N)), rng


MODULES = {
    "RNNCell": lambda: torch.nn.RNNCell(3, 4), "RNNCell_relu": lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"),
    "GRUCell": lambda: torch.nn.GRUCell(3, 4), "LSTMCell": lambda: torch.nn.LSTMCell(3, 4, bias=False),
    "RNN": lambda: torch.nn.RNN(3, 4), "GRU": lambda: torch.nn.GRU(3, 4, batch_first=True),
    "LSTM": lambda: torch.nn.LSTM(3, 4, batch_first=True),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_torch_modules_pass_in_float64_and_float32(name):
    torch.manual_seed(0)
    module = MODULES[name]()
    x, rng = _x()
    cell = cell_of(module)
    h0 = rng.uniform(-0.5, 0.5, (2, cell.state_size))
    for dtype in (torch.float64, torch.float32):
        b = backend(module, x, h0, dtype=dtype)
        report = check_backend(b, *b.problem, n_vectors=2)
        assert report.passed and list(report.checks) == list(OPERATORS), str(report)
        for check in report.checks.values():
            if dtype == torch.float64:
                assert check.dtype == "float64" and check.rel_error <= 1e-10, check.line()
            else:
                assert check.dtype == "float32" and check.rel_error < check.budget / 5, check.line()
    assert next(module.parameters()).dtype == torch.float32          # the user's module is not changed


def test_cell_of_refuses_what_a_kpref_cell_is_not():
    with pytest.raises(ValueError, match="single-layer, unidirectional"):
        cell_of(torch.nn.GRU(3, 4, num_layers=2))
    with pytest.raises(TypeError, match="expected torch.nn.RNNCell"):
        cell_of(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="needs params= .* and cell="):
        backend(lambda h, x, p: h, np.zeros((1, 2, 3)))


# ------------------------------------------------ a whole model's parameters
def _gru_step(prefix, mutation=None):
    """A GRU step written out in torch on a state dict with module prefixes (rows batched)."""
    def step(h, x, p):
        W_ih, W_hh = p[prefix + "weight_ih_l0"], p[prefix + "weight_hh_l0"]
        H = h.shape[1]
        gi = x @ W_ih.T + p[prefix + "bias_ih_l0"]
        gh = h @ W_hh.T + p[prefix + "bias_hh_l0"]
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        u = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        if mutation == "dropped_reset_gate":
            n = torch.tanh(gi[:, 2 * H:] + gh[:, 2 * H:])            # correct: gi_n + r * gh_n
        else:
            n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        return (1 - u) * n + u * h
    return step


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(3, 4, batch_first=True)
        self.readout = torch.nn.Linear(4, 2)


def test_a_whole_models_state_dict_with_prefixes_a_readout_and_its_own_key_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(_Model()).double()
    state = model.state_dict()
    assert list(state)[:2] == ["0.rnn.weight_ih_l0", "0.rnn.weight_hh_l0"] and "0.readout.weight" in state
    reordered = dict(reversed(list(state.items())))                 # the user's own key order
    x, _ = _x()
    cell = kpref.GRU(3, 4)
    b = backend(_gru_step("0.rnn."), x, params=reordered, cell=cell)
    assert list(b.params) == list(reordered)
    report = check_backend(b, *b.problem, n_vectors=2)
    assert report.passed, str(report)
    assert report.set_aside == ["0.readout.bias", "0.readout.weight"]
    assert "set aside (not parameters of GRU(" in str(report) and "0.readout.weight" in str(report)
    assert "set aside (not the cell's): 0.readout.bias, 0.readout.weight" in report["grad"].note
    # the cell's theta is the module's, exactly
    assert np.array_equal(b.theta, params_from_torch(cell, {k[len("0.rnn."):]: v for k, v in state.items()
                                                             if k.startswith("0.rnn.")}))
    # the parameter answers are dicts of tensors in the user's names, readout included
    grad = b.grad(np.ones(b.shape))
    assert list(grad) == list(reordered) and isinstance(grad["0.readout.weight"], torch.Tensor)
    # a flat answer over every parameter in the model's own order (parameters_to_vector), readout included
    flat = lambda e: torch.cat([g.reshape(-1) for g in b.grad(e).values()])   # noqa: E731
    report = check_backend({"grad": flat, "params": b.params}, *b.problem, n_vectors=1)
    assert report.passed and report.set_aside == ["0.readout.bias", "0.readout.weight"], str(report)
    wrong = lambda e: torch.flip(flat(e), (0,))                                 # noqa: E731
    assert not check_backend({"grad": wrong, "params": b.params}, *b.problem, n_vectors=1).passed


def test_match_names_on_real_state_dicts():
    torch.manual_seed(0)
    cell = kpref.LSTM(3, 4)
    wrapped = torch.nn.Module()
    wrapped.cell = torch.nn.LSTMCell(3, 4)
    wrapped.head = torch.nn.Linear(4, 1)
    m = match_names(cell, list(wrapped.state_dict()))
    assert m.keys == {n: "cell." + n for n in cell.param_shapes} and m.extras == ["head.weight", "head.bias"]
    with pytest.raises(ValueError, match="another layer or direction"):
        match_names(cell, list(torch.nn.LSTM(3, 4, num_layers=2).state_dict()))
    with pytest.raises(ValueError, match=r"missing bias_hh \(closest key: 'bias_hx'\)"):
        match_names(cell, ["weight_ih", "weight_hh", "bias_ih", "bias_hx"])
    leaky = kpref.LeakyRNN(3, 4)       # 'bias' is also the readout's leaf name: the prefix decides
    m = match_names(leaky, ["rnn.weight_hh", "rnn.weight_ih", "rnn.bias", "fc.weight", "fc.bias"])
    assert m.keys["bias"] == "rnn.bias" and m.extras == ["fc.weight", "fc.bias"]


def test_answers_as_tensors_with_grad_on_any_device_and_dicts():
    cell = kpref.GRU(2, 3)
    rng = np.random.default_rng(0)
    theta, x = cell.init_params(rng), rng.standard_normal((2, 4, 2))
    lin = kpref.linearize(cell, theta, x)
    names = cell.params_to_torch(theta)

    def grad(e):           # a dict of float32 tensors that require grad, in prefixed torch names
        g = cell.unflatten(lin.grad(e))
        return {"rnn." + k + "_l0": torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in g.items()}
    report = check_backend({"grad": grad, "simulate": lambda: torch.tensor(lin.z, requires_grad=True)},
                           cell, theta, x)
    assert report.passed and report["grad"].dtype == "float32" and report["simulate"].dtype == "float64"
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 3\) \(a torch.Tensor float64 on cpu that requires grad"):
        check_backend({"simulate": lambda: torch.tensor(lin.z[:, :3], requires_grad=True)}, cell, theta, x)
    tangent_seen = []
    J = lambda d: (tangent_seen.append(d), lin.J_theta.matvec(cell.flatten(  # noqa: E731
        {k[len("m."):]: v for k, v in d.items() if k.startswith("m.")})).reshape(lin.shape))[1]
    declared = {"m." + k: v for k, v in names.items()} | {"fc.weight": np.zeros((1, 3))}
    report = check_backend({"J": J, "params": declared}, cell, theta, x, n_vectors=1)
    assert report.passed and list(tangent_seen[0]) == list(declared)
    assert np.array_equal(tangent_seen[0]["fc.weight"], np.zeros((1, 3)))


# ------------------------------------------------------------- mutations
def _problem():
    x, rng = _x(T=6)
    return x, rng.uniform(-0.5, 0.5, (2, 4))


def test_mutation_transposed_recurrent_weight_is_named():
    torch.manual_seed(0)
    module = torch.nn.RNNCell(3, 4, dtype=torch.float64)
    x, h0 = _problem()

    def step(h, x, p):        # the bug: h @ W_hh, not h @ W_hh.T
        return torch.tanh(x @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"] + p["bias_hh"])
    b = backend(step, x, h0, params=dict(module.named_parameters()), cell=cell_of(module))
    report = check_backend({k: v for k, v in b.as_dict().items() if k in ("simulate", "P", "J", "grad", "params")},
                           *b.problem)
    assert report.failed == ["simulate", "P", "J", "grad"], str(report)
    for check in report.checks.values():
        assert any("transposed recurrent weight" in h for h in check.hints), check.line()


def test_mutation_dropped_gate_is_named():
    torch.manual_seed(0)
    state = torch.nn.GRU(3, 4).double().state_dict()
    x, h0 = _problem()
    b = backend(_gru_step("", "dropped_reset_gate"), x, h0, params=state, cell=kpref.GRU(3, 4))
    report = check_backend({k: v for k, v in b.as_dict().items() if k in ("simulate", "J_adjoint", "grad", "params")},
                           *b.problem)
    assert report.failed == ["simulate", "J_adjoint", "grad"], str(report)
    for name in ("J_adjoint", "grad"):
        assert any("gate(s) r " in h and "missing gate" in h for h in report[name].hints), report[name].line()


def _off_by_one_sweeps(b):
    """P_adjoint and P_inv_adjoint written by hand from the backend's own A_adjoint, with A_t for A_{t+1}."""
    T = b.shape[1]

    def P_adjoint(w):
        lam = [None] * T
        lam[T - 1] = torch.as_tensor(w[:, T - 1])
        for t in range(T - 2, -1, -1):
            lam[t] = torch.as_tensor(w[:, t]) + b.A_adjoint(t, lam[t + 1])      # the bug: t, not t + 1
        return torch.stack(lam, dim=1)

    def P_inv_adjoint(w):
        out = torch.as_tensor(w).clone()
        for t in range(T - 1):
            out[:, t] -= b.A_adjoint(t, w[:, t + 1])                           # the bug: t, not t + 1
        return out
    return P_adjoint, P_inv_adjoint


def test_mutations_off_by_one_adjoint_and_wrong_P_inv_transpose_are_named():
    torch.manual_seed(0)
    x, h0 = _problem()
    b = backend(torch.nn.GRUCell(3, 4), x, h0, dtype=torch.float64)
    P_adjoint, P_inv_adjoint = _off_by_one_sweeps(b)
    report = check_backend({"P": b.P, "P_adjoint": P_adjoint, "P_inv": b.P_inv, "P_inv_adjoint": P_inv_adjoint},
                           *b.problem)
    assert report.failed == ["P_adjoint", "P_inv_adjoint"], str(report)
    for name in report.failed:
        check = report[name]
        assert check.first_bad_step == 4 and any("off-by-one time index" in h for h in check.hints), check.line()

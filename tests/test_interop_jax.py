"""kpref.interop.jax: a backend from a JAX step function, checked by check_backend.

A GRU step written in jax.numpy passes in float64 (errors <= 1e-10) and
float32 (within budget); four seeded mutations fail, each named in the
report. JAX compiles each differentiated map once per backend, so the
checks share one backend where they can.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import kpref  # noqa: E402
from kpref.interop.jax import backend  # noqa: E402
from kpref.testing import OPERATORS, check_backend  # noqa: E402

pytestmark = pytest.mark.slow   # XLA compiles each differentiated map: ~15 s of CPU for the file


def gru_step(h, x, p, mutation=None):
    """torch.nn.GRUCell's step in jax.numpy, rows batched; ``mutation`` seeds a bug."""
    H = h.shape[1]
    W_hh = p["weight_hh"]
    if mutation == "transposed_weight_hh":   # each HxH gate block used transposed
        W_hh = W_hh.reshape(3, H, H).transpose(0, 2, 1).reshape(3 * H, H)
    gi = x @ p["weight_ih"].T + p["bias_ih"]
    gh = h @ W_hh.T + p["bias_hh"]
    r = jax.nn.sigmoid(gi[:, :H] + gh[:, :H])
    u = jax.nn.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    reset = 1.0 if mutation == "dropped_reset_gate" else r
    n = jnp.tanh(gi[:, 2 * H:] + reset * gh[:, 2 * H:])
    return (1 - u) * n + u * h


def _problem(T=5):
    cell = kpref.GRU(3, 4)
    rng = np.random.default_rng(0)
    params = cell.params_to_torch(cell.init_params(rng))
    params["readout.weight"] = rng.standard_normal((2, 4))       # an extra parameter: set aside
    return cell, params, rng.uniform(-1, 1, (2, T, 3)), rng.uniform(-0.5, 0.5, (2, 4))


@pytest.fixture(scope="module")
def float64_backend():
    cell, params, x, h0 = _problem()
    return backend(gru_step, params, x, h0, cell=cell, dtype="float64")


def test_jax_gru_passes_in_float64(float64_backend):
    b = float64_backend
    report = check_backend(b, *b.problem, n_vectors=2)
    assert report.passed and list(report.checks) == list(OPERATORS), str(report)
    assert all(c.dtype == "float64" and c.rel_error <= 1e-10 for c in report.checks.values())
    assert report.set_aside == ["readout.weight"]


def test_jax_gru_passes_in_float32():
    cell, params, x, h0 = _problem()
    b = backend(gru_step, params, x, h0, cell=cell, dtype="float32")
    report = check_backend(b, *b.problem, n_vectors=1)
    assert report.passed, str(report)
    assert all(c.dtype == "float32" and c.rel_error < c.budget / 5 for c in report.checks.values()), str(report)


@pytest.mark.parametrize("mutation, failed, hint", [
    ("transposed_weight_hh", ["simulate", "P", "grad"], "transposed recurrent weight"),
    ("dropped_reset_gate", ["simulate", "P", "grad"], "missing gate"),
])
def test_jax_step_mutations_are_named(mutation, failed, hint):
    cell, params, x, h0 = _problem()
    b = backend(lambda h, x_, p: gru_step(h, x_, p, mutation), params, x, h0, cell=cell)
    report = check_backend({k: v for k, v in b.as_dict().items() if k in failed + ["params"]}, *b.problem,
                           n_vectors=1)
    assert report.failed == failed, str(report)
    named = [n for n in failed if any(hint in h for h in report[n].hints)]
    assert named == (failed if mutation == "transposed_weight_hh" else ["grad"]), str(report)


def test_jax_off_by_one_adjoint_and_wrong_P_inv_transpose_are_named(float64_backend):
    b = float64_backend
    T = b.shape[1]

    def P_adjoint(w):             # λ_t = w_t + A_tᵀ λ_{t+1}: the bug (correct: A_{t+1})
        lam = [None] * T
        lam[T - 1] = jnp.asarray(w[:, T - 1])
        for t in range(T - 2, -1, -1):
            lam[t] = w[:, t] + b.A_adjoint(t, lam[t + 1])
        return jnp.stack(lam, axis=1)

    def P_inv_adjoint(w):         # w_t − A_tᵀ w_{t+1}: the bug (correct: A_{t+1})
        return jnp.stack([w[:, t] - b.A_adjoint(t, w[:, t + 1]) for t in range(T - 1)] + [jnp.asarray(w[:, T - 1])],
                         axis=1)
    report = check_backend({"P_adjoint": P_adjoint, "P_inv_adjoint": P_inv_adjoint, "P_inv": b.P_inv},
                           *b.problem, n_vectors=1)
    assert report.failed == ["P_adjoint", "P_inv_adjoint"], str(report)
    for name in report.failed:
        assert any("off-by-one time index" in h for h in report[name].hints), report[name].line()


def test_jax_backend_refuses_bad_input():
    cell, params, x, h0 = _problem()
    with pytest.raises(ValueError, match="dtype: expected 'float64' or 'float32'"):
        backend(gru_step, params, x, cell=cell, dtype="float16")
    with pytest.raises(TypeError, match="step: expected a JAX step function"):
        backend("gru", params, x, cell=cell)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, \*, 3\) with N=3"):
        backend(gru_step, params, x[..., :2], cell=cell)

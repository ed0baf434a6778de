"""Bad input gets a clear error naming the argument, what it got and what it expected (SPEC §7)."""

import subprocess
import sys

import numpy as np
import pytest

import kpref


@pytest.fixture
def problem():
    cell = kpref.Elman(3, 4)
    return cell, cell.init_params(rng=0), np.zeros((2, 5, 3)), np.zeros((2, 4))


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 5)), r"x: expected a 3-D array of shape \(B, T, N=3\), got a 2-D array"),
        (np.zeros((2, 5, 4)), r"x: expected shape \(\*, \*, 3\) with N=3, got shape \(2, 5, 4\) \(N=4\)"),
        (np.zeros((2, 0, 3)), r"x: expected a non-empty array"),
    ],
)
def test_wrong_shapes(problem, x, match):
    cell, theta, _, _ = problem
    with pytest.raises(ValueError, match=match):
        kpref.simulate(cell, theta, x)


def test_theta_and_h0_shapes(problem):
    cell, theta, x, h0 = problem
    with pytest.raises(ValueError, match=r"theta: expected shape \(%d\) with p=%d, got shape \(%d,\)"
                       % (cell.num_params, cell.num_params, cell.num_params - 1)):
        kpref.simulate(cell, theta[:-1], x)
    with pytest.raises(ValueError, match=r"h0: expected shape \(2, 4\) with B=2, got shape \(3, 4\)"):
        kpref.simulate(cell, theta, x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"h0: expected a 2-D array"):
        kpref.simulate(cell, theta, x, np.zeros(4))  # no broadcasting of one state to all trials


@pytest.mark.parametrize("arg", ["theta", "x", "h0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(problem, arg, bad):
    cell, theta, x, h0 = problem
    args = dict(theta=theta.copy(), x=x.copy(), h0=h0.copy())
    args[arg].flat[1] = bad
    with pytest.raises(ValueError, match=rf"{arg}: expected finite values, got .* at index"):
        kpref.simulate(cell, args["theta"], args["x"], args["h0"])


@pytest.mark.parametrize("dtype, match", [(np.int64, "dtype int64"), (np.complex128, "complex"),
                                          (bool, "dtype bool"), (object, "object")])
def test_integer_complex_bool_object_refused(problem, dtype, match):
    cell, theta, x, _ = problem
    with pytest.raises(TypeError, match=rf"x: expected a real floating array, got .*{match}"):
        kpref.simulate(cell, theta, x.astype(dtype))


def test_float32_is_converted(problem):
    cell, theta, x, _ = problem
    z = kpref.simulate(cell, theta.astype(np.float32), x.astype(np.float32) + 0.5)
    assert z.dtype == np.float64


@pytest.mark.parametrize("size", [0, -3])
def test_non_positive_sizes(size):
    with pytest.raises(ValueError, match=rf"hidden_size: expected an integer >= 1, got {size}"):
        kpref.Elman(3, size)
    with pytest.raises(ValueError, match=rf"input_size: expected an integer >= 1, got {size}"):
        kpref.Elman(size, 3)


def test_non_integer_sizes_and_options():
    with pytest.raises(TypeError, match=r"hidden_size: expected an integer >= 1, got 4.0"):
        kpref.Elman(3, 4.0)
    with pytest.raises(ValueError, match=r"nonlinearity: expected one of 'tanh', 'relu', got 'sigmoid'"):
        kpref.Elman(3, 4, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match=r"bias: expected a bool"):
        kpref.Elman(3, 4, bias=1)


def test_unflatten_flatten_names(problem):
    cell, theta, _, _ = problem
    d = dict(cell.unflatten(theta))
    d.pop("bias_hh")
    d["bias"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"params: expected exactly the names .* unknown \['bias'\] and missing \['bias_hh'\]"):
        cell.flatten(d)


def test_init_params_rng_and_gain():
    cell = kpref.Elman(2, 3)
    with pytest.raises(ValueError, match=r"g: expected a finite number > 0, got 0.0"):
        cell.init_params(rng=0, g=0.0)
    with pytest.raises(TypeError, match=r"rng: expected None, an integer seed or a numpy.random.Generator"):
        cell.init_params(rng=np.random.RandomState(0))


def test_step_level_blocks(problem):
    cell, theta, _, _ = problem
    pt = cell.point(theta, np.zeros((3, 4)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"V: expected shape \(\*, 3, 4\) with M=3, got shape \(1, 2, 4\)"):
        cell.state_jvp(pt, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"dtheta: expected a 2-D array"):
        cell.param_jvp(pt, np.zeros(cell.num_params))
    with pytest.raises(TypeError, match=r"pt: expected a StepPoint"):
        cell.state_vjp(None, np.zeros((1, 3, 4)))


def test_missing_numba_fails_loudly():
    """Without numba, importing kpref raises ImportError naming numba; there is no quiet fallback."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numba' or name.startswith('numba.'):\n"
        "            raise ImportError('numba blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import kpref\n"
        "except ImportError as exc:\n"
        "    print('ERR', exc)\n"
        "else:\n"
        "    print('IMPORTED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ERR") and "needs numba" in out

"""The README's examples run as written and print the numbers the README shows, at the precision shown.

A README that does not run, or whose numbers are stale, is a defect. Each number is compared at the
precision it is printed with: a value shown with k decimals must round to it (|actual − shown| ≤
½·10⁻ᵏ), a value shown in scientific notation with 3 significant digits must format to the same text.
"""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

import kpref

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text(encoding="utf-8")


def _blocks():
    return re.findall(r"```python\n(.*?)```", TEXT, re.S)


def _printed_blocks():
    """(python source, the plain output block right after it) pairs."""
    return re.findall(r"```python\n((?:(?!```).)*)```\n```\n(.*?)```", TEXT, re.S)


def _shown(token):
    """A number as printed: (value, half a unit of its last shown digit)."""
    token = token.strip()
    mant = token.split("e")[0]
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    exp = int(token.split("e")[1]) if "e" in token else 0
    return float(token), 0.5 * 10.0 ** (exp - decimals)


def assert_shown(actual, token):
    value, half = _shown(token)
    assert abs(actual - value) <= half * (1 + 1e-12), f"README shows {token}, the code gives {actual!r}"


def _run(source, ns=None):
    ns = {} if ns is None else ns
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(source, ns)
    return ns, out.getvalue()


def test_shown_precision_helper():
    assert _shown("0.0081") == (0.0081, pytest.approx(5e-5, rel=1e-12, abs=0))
    assert _shown("1.90e-01")[1] == pytest.approx(5e-4, rel=1e-12, abs=0)
    assert_shown(0.008073, "0.0081")
    with pytest.raises(AssertionError):
        assert_shown(0.00816, "0.0081")


def test_readme_has_the_four_examples():
    assert len(_blocks()) == 4


@pytest.mark.slow
def test_readme_examples_run():
    tour, analysis, backend, koopman = _blocks()
    ns = {}
    # the analysis block continues the tour's session; `exponents` stands for a Lyapunov spectrum
    exec(tour + "\nexponents = __import__('kpref').analysis.lyapunov_spectrum(lin)\n" + analysis, ns)
    exec(backend, {})
    exec(koopman, {})


def test_readme_printed_output_blocks_match():
    """Every output block after a code block: each line as printed (a trailing " ..." elides the rest)."""
    pairs = _printed_blocks()
    assert pairs, "the README has no printed output to check"
    for source, shown in pairs:
        _, printed = _run(source)
        actual = printed.splitlines()
        expected = [line for line in shown.splitlines() if line.strip()]
        assert len(actual) == len(expected), (expected, actual)
        for want, got in zip(expected, actual):
            if want.endswith(" ..."):
                assert got.startswith(want[:-4]), f"README: {want!r}\ncode:   {got!r}"
            else:
                assert got == want


def test_readme_off_by_one_backend_report():
    """"With d[:, t] in place of d[:, t + 1] … P_adjoint FAIL rel.error 1.90e-01 > budget 1.48e-05 … t=18"."""
    backend = _blocks()[2]
    m = re.search(r"says `(P_adjoint FAIL rel\.error [0-9.e+-]+ > budget [0-9.e+-]+) \.\.\. first step over\s+"
                  r"budget \(backward in time\): t=(\d+)`", TEXT)
    assert m, "the README's off-by-one sentence changed: update this test"
    assert "d[:, t + 1]" in backend
    ns, _ = _run(backend.replace("d[:, t + 1]", "d[:, t]").replace("report.raise_if_failed()", ""))
    text = " ".join(str(ns["report"]).split())  # the prose quotes the report with single spaces
    assert m.group(1) in text
    assert f"first step over budget (backward in time): t={m.group(2)}" in text


def test_readme_koopman_numbers():
    """The commented results of the Koopman example, and "bisection comes out at distance 0.75"."""
    koopman = _blocks()[3]
    ns, _ = _run(koopman)
    kk = kpref.koopman
    dist = kk.spectral_distance(ns["ev"], kk.koopman_spectrum(ns["tr"]["gradient"], 4))
    assert_shown(dist, re.search(r"spectral_distance\(.*#\s*([0-9.]+)", koopman).group(1))
    shown = re.search(r"r\.conjugate, r\.distance, r\.spread, r\.p_value\s*#\s*(.*)", koopman).group(1).split(",")
    r = ns["r"]
    assert str(r.conjugate) == shown[0].strip()
    for actual, token in zip((r.distance, r.spread, r.p_value), shown[1:]):
        assert_shown(actual, token)
    token = re.search(r"bisection comes out at distance ([0-9.]+)", TEXT).group(1)
    tr = ns["tr"]
    assert_shown(kk.conjugacy_test(tr["gradient"], tr["bisection"], n_delays=4, rng=0).distance, token)


@pytest.mark.slow
def test_readme_effective_rank_table():
    """"At initialization, K's effective rank is far below P's (exact dense SVD, B=4, T=20, H=16)"."""
    table = re.search(r"\| cell \| K \| P \| NTK \|\n\|[-|]+\|\n(.*?)\n\n", TEXT, re.S).group(1)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table.splitlines()}
    assert set(rows) == {"Elman", "GRU"}
    for name, shown in rows.items():
        rng = np.random.default_rng(0)  # the setup of kpref.analysis's docstring example
        cell = getattr(kpref, name)(input_size=3, hidden_size=16)
        lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((4, 20, 3)))
        for op, token in zip((lin.K, lin.P, lin.NTK), shown):
            assert_shown(kpref.analysis.effective_rank(op), token)


def test_readme_continuous_adjoint_orders():
    """"the observed orders are 1.04, 2.13 and 4.16 for Euler, midpoint and RK4"."""
    from kpref.testing import continuous_adjoint_order

    m = re.search(r"observed orders are ([0-9.]+), ([0-9.]+) and ([0-9.]+)\s+for\s+Euler, midpoint and RK4", TEXT)
    assert m
    for method, token in zip(("euler", "midpoint", "rk4"), m.groups()):
        cell = kpref.RateODE(2, 3, tau=1.0, dt=0.4, method=method)
        theta = cell.init_params(np.random.default_rng(0), g=1.5)
        rng = np.random.default_rng(11)
        x, h0, e = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 3)), rng.standard_normal((2, 4, 3))
        order, _ = continuous_adjoint_order(cell, theta, x, h0, e)
        assert_shown(order, token)

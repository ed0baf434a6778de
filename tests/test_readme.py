"""The README's Python examples run as written, and the reports it prints are the ones they print.

A README that does not run is a defect; a sample output nobody regenerates
goes stale. Every ```python block followed by a ```text block is run and its
output compared with that block: the text exactly, except that numbers may
differ by 25% (float32 rounding differs across CPUs) and the worst entry's
location may move among entries of the same kind (trial/step/unit, or
parameter block/gate). Numbers the README states in prose, tables and
comments are compared at the precision they are printed with: a value shown
with k decimals must round to it (|actual − shown| ≤ ½·10⁻ᵏ).
"""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest


import kpref
from tests.helpers import readme_block

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"```(python|text)\n(.*?)```", re.S)
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_WORST = re.compile(r"worst: .*? \(backend ")


def _fences():
    return _FENCE.findall(README.read_text(encoding="utf-8"))


def _blocks():
    return [code for kind, code in _fences() if kind == "python"]


def _run(code, namespace=None):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {} if namespace is None else namespace)
    return out.getvalue()


def _shape(text):
    """The text with every number replaced by '#', and the worst entry by its kind of location."""
    text = _WORST.sub(lambda m: "worst: " + ("<param> " if "[" in m.group(0) else "<state> ") + "(backend ", text)
    return _NUMBER.sub("#", text)


def assert_same_report(got, expected):
    got_lines, exp_lines = got.strip().splitlines(), expected.strip().splitlines()
    assert len(got_lines) == len(exp_lines), f"README shows {len(exp_lines)} lines, the code prints:\n{got}"
    for g, e in zip(got_lines, exp_lines):
        assert _shape(g) == _shape(e), f"README line differs from the printed one:\n  {e}\n  {g}"
        gn = [float(v) for v in _NUMBER.findall(_WORST.sub("", g))]
        en = [float(v) for v in _NUMBER.findall(_WORST.sub("", e))]
        for a, b in zip(gn, en):
            assert abs(a - b) <= 0.25 * max(abs(a), abs(b)) + 1e-300, f"README number {b} vs printed {a}:\n  {e}\n  {g}"


def test_readme_has_the_seven_examples():
    assert len(_blocks()) == 7


@pytest.mark.slow
def test_readme_examples_run():
    ns = {}
    # the analysis block continues the tour's session; `exponents` stands for a Lyapunov spectrum
    tour, analysis = readme_block("lin = kpref.linearize"), readme_block("from kpref import analysis")
    _run(tour + "\nexponents = __import__('kpref').analysis.lyapunov_spectrum(lin)\n" + analysis, ns)
    _run(readme_block("from kpref import koopman as kk"))


def test_readme_custom_cell_passes_verify():
    """The "Adding a cell" example runs (its own asserts are the verify checks) and checks every row."""
    ns = {}
    exec(readme_block("class Momentum(kpref.Cell)"), ns)
    assert len(ns["rows"]) == 15 and ns["cell"].has_weight_sites


def _printed_after(code):
    fences = _fences()
    i = fences.index(("python", code))
    assert fences[i + 1][0] == "text", "the example's printed output must follow it in a ```text block"
    return fences[i + 1][1]


@pytest.mark.slow
def test_readme_backend_reports_are_the_printed_ones():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    torch_example = readme_block("import numpy as np, torch, kpref")
    jax_example = readme_block("import numpy as np, jax, jax.numpy as jnp, kpref")
    backend = readme_block("import numpy as np, kpref\nfrom kpref.testing import check_backend")
    for code in (torch_example, jax_example, backend):
        assert_same_report(_run(code), _printed_after(code))
    # the off-by-one variant of the hand-written backend: its P_adjoint line
    buggy = backend.replace("(d[:, t + 1] * lam", "(d[:, t] * lam").replace("report.raise_if_failed()", "")
    assert buggy != backend
    line = [ln for ln in _run(buggy).splitlines() if ln.startswith("P_adjoint")]
    shown = README.read_text(encoding="utf-8").split("becomes (also checked by the test):\n\n```text\n")[1]
    assert_same_report(line[0], shown.split("```")[0])


def test_the_report_comparison_can_fail():
    line = "P    PASS  rel.error 5.03e-08 <= budget 1.48e-05 [float32]  worst: trial 1, step 12, unit 5 (backend 1, kpref 1)"
    assert_same_report(line.replace("trial 1, step 12", "trial 0, step 3"), line)     # another location: same kind
    with pytest.raises(AssertionError, match="number"):
        assert_same_report(line.replace("5.03e-08", "9.03e-08"), line)
    with pytest.raises(AssertionError, match="differs"):
        assert_same_report(line.replace("PASS", "FAIL"), line)
    with pytest.raises(AssertionError, match="lines"):
        assert_same_report(line + "\n" + line, line)


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


def test_shown_precision_helper():
    assert _shown("0.0081") == (0.0081, pytest.approx(5e-5, rel=1e-12, abs=0))
    assert _shown("1.90e-01")[1] == pytest.approx(5e-4, rel=1e-12, abs=0)
    assert_shown(0.008073, "0.0081")
    with pytest.raises(AssertionError):
        assert_shown(0.00816, "0.0081")


def test_readme_koopman_distance():
    """The commented distance of the Koopman example (mirror vs gradient, published configuration)."""
    koopman = readme_block("from kpref import koopman as kk")
    kk = kpref.koopman
    tr = kk.published_trajectories()
    ev = kk.koopman_spectrum(tr["mirror"], n_delays=4)
    dist = kk.spectral_distance(ev, kk.koopman_spectrum(tr["gradient"], 4))
    assert_shown(dist, re.search(r"spectral_distance\(.*#\s*([0-9.]+)", koopman).group(1))


@pytest.mark.slow
def test_readme_effective_rank_table():
    """"At initialization, K's effective rank is far below P's (exact dense SVD, B=4, T=20, H=16)"."""
    text = README.read_text(encoding="utf-8")
    table = re.search(r"\| cell \| K \| P \| NTK \|\n\|[-|]+\|\n(.*?)\n\n", text, re.S).group(1)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in table.splitlines()}
    assert set(rows) == {"Elman", "GRU"}
    for name, shown in rows.items():
        rng = np.random.default_rng(0)  # the setup of kpref.analysis's docstring example
        cell = getattr(kpref, name)(input_size=3, hidden_size=16)
        lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((4, 20, 3)))
        for op, token in zip((lin.K, lin.P, lin.NTK), shown):
            assert_shown(kpref.analysis.effective_rank(op), token)

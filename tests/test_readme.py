"""The README's Python examples run as written (a README that does not run is a defect)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


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

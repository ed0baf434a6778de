"""The README's Python examples run as written (a README that does not run is a defect)."""

import pytest

from tests.helpers import readme_block, readme_blocks


def test_readme_has_the_five_examples():
    assert len(readme_blocks()) == 5


@pytest.mark.slow
def test_readme_examples_run():
    tour, custom_cell, analysis, backend, koopman = readme_blocks()
    ns = {}
    # the analysis block continues the tour's session; `exponents` stands for a Lyapunov spectrum
    exec(tour + "\nexponents = __import__('kpref').analysis.lyapunov_spectrum(lin)\n" + analysis, ns)
    exec(backend, {})
    exec(koopman, {})


def test_readme_custom_cell_passes_verify():
    """The "Adding a cell" example runs (its own asserts are the verify checks) and checks every row."""
    ns = {}
    exec(readme_block("class Momentum(kpref.Cell)"), ns)
    assert len(ns["rows"]) == 11 and ns["cell"].has_weight_sites

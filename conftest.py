"""Test configuration for tests/ and validation/: the hypothesis profiles every property test runs under.

``deadline=None`` everywhere because the first example of a test compiles numba kernels.

* ``ci`` (what ``.ci/run`` selects): derandomized, 25 examples per test, no example database.
  Reproducible run to run; it explores nothing new.
* ``dev`` (the default): 10 random examples per test; hypothesis's example database
  (``.hypothesis/`` in the checkout, ignored by git) is kept between local runs, so a failure
  found once is replayed first on every later run until it is fixed.
* ``explore``: 250 examples per test (10× ``ci``) from a fresh seed on every run. The seed is
  printed in the header ("hypothesis exploring run: --hypothesis-seed=N"); pass it back with
  ``--hypothesis-seed=N`` to replay the run exactly. Uses and extends the example database.
  Bounded in time: every strategy bounds its sizes, so each example is bounded; run it as

      HYPOTHESIS_PROFILE=explore timeout 3600 nice -n 10 python -m pytest tests -n 2 -m "not slow" \
          -p no:cacheprovider -q

Every failure an exploring run finds becomes an explicit ``@example`` on the test that found it
(e.g. the dot test of ``Elman(relu)`` at inputs near 1e-282 in ``tests/test_operators.py``).
"""

import os
import secrets

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]
_DATABASE = DirectoryBasedExampleDatabase(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".hypothesis",
                                                       "examples"))
CI_EXAMPLES = 25

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=CI_EXAMPLES,
    suppress_health_check=_SUPPRESS,
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=10,
    suppress_health_check=_SUPPRESS,
    database=_DATABASE,
)
settings.register_profile(
    "explore",
    deadline=None,
    max_examples=10 * CI_EXAMPLES,
    suppress_health_check=_SUPPRESS + [HealthCheck.filter_too_much],
    database=_DATABASE,
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """An exploring run draws a fresh seed unless ``--hypothesis-seed`` is given, and says which.

    Runs before hypothesis's own ``pytest_configure``, which then applies the seed to every test.
    Under pytest-xdist the controller draws it and the workers inherit it (``PYTEST_XDIST_WORKER``).
    """
    if PROFILE != "explore" or config.getoption("--hypothesis-seed", default=None) is not None:
        return
    seed = os.environ.get("KPREF_HYPOTHESIS_SEED")
    if seed is None:
        seed = str(secrets.randbits(32))
        os.environ["KPREF_HYPOTHESIS_SEED"] = seed  # inherited by xdist workers: one seed per run
    config.option.hypothesis_seed = seed


def pytest_report_header(config):
    if PROFILE == "explore":
        return (f"hypothesis exploring run: --hypothesis-seed={config.getoption('--hypothesis-seed')} "
                f"({settings().max_examples} examples per test; replay with that option)")
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Repeat the exploring run's seed at the end (``-q`` hides the header)."""
    if PROFILE == "explore":
        terminalreporter.write_line(
            f"hypothesis exploring run: --hypothesis-seed={config.getoption('--hypothesis-seed')} "
            f"({settings().max_examples} examples per test); replay with HYPOTHESIS_PROFILE=explore and that option")

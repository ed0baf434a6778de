"""Hypothesis strategies drawing kpref problems: :mod:`kpref.testing.strategies`, under its historical name."""

from .testing.strategies import *  # noqa: F401,F403  (the public names, re-exported unchanged)
from .testing.strategies import __all__, __doc__  # noqa: F401

"""Continuous-time cells: a vector field integrated by an explicit Runge–Kutta step (SPEC §2)."""

from ._ode import ODECell, VectorField
from ._rate import RateODE

__all__ = ["ODECell", "VectorField", "RateODE"]

"""Continuous-time cells: a vector field integrated by an explicit Runge–Kutta step (SPEC §2).

* :class:`VectorField` — the user's field (an ABC: ``f`` and its four products);
* :class:`ButcherTableau` / :data:`METHODS` — validated explicit tableaux;
* :class:`RungeKuttaStepper` — one step and its exact discrete tangents and adjoints;
* :class:`ContinuousAdjoint` — the adjoint ODE, a strategy for ``linearize(adjoint=)``;
* :class:`ODECell` — the cell gluing them; :class:`RateODE` / :class:`RateField` — the rate network.
"""

from ._adjoint import ContinuousAdjoint
from ._field import VectorField
from ._ode import ODECell
from ._rate import RateField, RateODE
from ._stepper import RungeKuttaStepper
from ._tableau import METHODS, ButcherTableau

__all__ = ["ODECell", "VectorField", "RateODE", "RateField", "ButcherTableau", "METHODS",
           "RungeKuttaStepper", "ContinuousAdjoint"]

"""The operators of a linearized trajectory (SPEC §3–4): ``P``, ``P*``, ``P⁻¹``, ``J_θ``, ``K``, ``NTK``."""

from ._adjoint import AdjointStrategy, DiscreteAdjoint
from ._linearization import Linearization, Loss, linearize, mse_loss
from ._named import NamedOperator, todense

__all__ = ["AdjointStrategy", "DiscreteAdjoint", "Linearization", "Loss", "NamedOperator", "linearize", "mse_loss", "todense"]

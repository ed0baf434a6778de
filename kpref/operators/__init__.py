"""The operators of a linearized trajectory (SPEC §3–4): ``P``, ``P*``, ``P⁻¹``, ``J_θ``, ``K``, ``NTK``."""

from ._adjoint import AdjointStrategy, DiscreteAdjoint
from ._input import CheckedOperator, as_operator
from ._linearization import KroneckerSite, Linearization, linearize
from ._loss import Loss, check_mask, mask_weights, mse_loss
from ._named import NamedOperator, todense

__all__ = ["AdjointStrategy", "CheckedOperator", "DiscreteAdjoint", "as_operator", "KroneckerSite", "Linearization", "Loss", "NamedOperator", "check_mask",
           "linearize", "mask_weights", "mse_loss", "todense"]

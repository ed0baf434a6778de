r"""How :meth:`Linearization.grad` computes ``∇_θ L`` from ``e = ∂L/∂z``: an adjoint strategy.

``linearize(..., adjoint=)`` takes ``'discrete'`` (default), ``'continuous'``
(the cell's own continuous adjoint, ``cell.continuous_adjoint()``: ODE cells)
or an :class:`AdjointStrategy` instance.

* :class:`DiscreteAdjoint` — ``∇_θ L = J_θᵀ P* e``: backpropagation through
  time written as the adjoint recursion, exact for the discrete recurrence.
* :class:`kpref.ode.ContinuousAdjoint` — the adjoint ODE solved backward,
  an ``O(dt^order)`` approximation of the same gradient (ODE cells).

The operators P, K, NTK stay the exact discrete ones whatever the strategy.
"""

from __future__ import annotations

import abc

import numpy as np

__all__ = ["AdjointStrategy", "DiscreteAdjoint"]


class AdjointStrategy(abc.ABC):
    """A route from the error signal ``e`` (B, T, S) to the gradient ``∇_θ L`` (p,).

    A subclass sets ``name`` and implements :meth:`gradient`; :meth:`check`
    refuses, at ``linearize`` time, a cell the route cannot serve.
    """

    name = None

    def check(self, cell):
        """Raise ``ValueError`` naming the cell when this route cannot serve it (default: accept)."""

    @abc.abstractmethod
    def gradient(self, lin, e):
        """``∇_θ L`` (p,) for a checked ``e = ∂L/∂z`` (B, T, S) on the linearization ``lin``."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class DiscreteAdjoint(AdjointStrategy):
    """``∇_θ L = J_θᵀ P* e``: the exact gradient of the discrete recurrence (every cell)."""

    name = "discrete"

    def gradient(self, lin, e):
        W = np.ascontiguousarray(e.transpose(1, 0, 2))[None]
        return lin._JT(lin.propagate_backward_in_time(W))[0]

"""Discrete recurrent cells: one step ``h_t = F(h_{t-1}, x_t; θ)`` and its four linear products (SPEC §2–3).

:class:`Cell` is the contract a new cell fills in (hooks for F and its four
products, and declared capabilities: ``gate_names``, ``state_parts``,
``analytic``, ``has_weight_sites``, ``has_continuous_adjoint``); :func:`simulate`
runs any cell over a batch of trajectories. :func:`njit` is the decorator of
kpref's kernels (numba, ``cache=True``, Ctrl-C held while a signature
compiles), for the kernels of a new cell.
"""

from ._cell import Cell, StepPoint
from ._elman import Elman
from ._gru import GRU
from ._leaky import LeakyRNN, Linear
from ._lstm import LSTM
from ._simulate import simulate
from .._jit import njit

__all__ = ["Cell", "StepPoint", "Elman", "GRU", "LSTM", "LeakyRNN", "Linear", "simulate", "njit"]

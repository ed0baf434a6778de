"""kpref: the exact float64 reference for the K-P operators of recurrent learning.

Public surface (implementation lives in private ``_*.py`` modules):

* cells: :class:`Elman`, :class:`GRU`, :class:`LeakyRNN`, :class:`Linear`;
* trajectories: :func:`simulate`.
"""

from ._cell import Cell, StepPoint
from ._elman import Elman
from ._simulate import simulate

__all__ = ["Cell", "StepPoint", "Elman", "simulate"]
__version__ = "0.1.0"

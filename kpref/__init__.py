"""kpref: the exact float64 reference for the K-P operators of recurrent learning.

Public surface (implementation lives in private ``_*.py`` modules):

* cells: :class:`Elman`, :class:`GRU`, :class:`LeakyRNN`, :class:`Linear`;
* trajectories: :func:`simulate`;
* operators: :func:`linearize` → :class:`Linearization` (``P``, ``P_inv``, ``J_theta``,
  ``K``, ``NTK``, ``grad``), :func:`mse_loss`, :func:`todense`.
"""

from ._cell import Cell, StepPoint
from ._elman import Elman
from ._gru import GRU
from ._leaky import LeakyRNN, Linear
from ._lstm import LSTM
from ._ode import ODECell, VectorField
from ._ode_rate import RateODE
from ._simulate import simulate
from ._linearization import Linearization, Loss, linearize, mse_loss
from ._operators import todense
from . import tasks
from ._train import Checkpoint, Readout, TrainResult, init_readout, load_checkpoint, loss_and_gradient, train

__all__ = [
    "Cell", "StepPoint", "Elman", "simulate",
    "GRU", "LeakyRNN", "Linear",
    "LSTM", "ODECell", "VectorField", "RateODE",
    "Linearization", "Loss", "linearize", "mse_loss", "todense",
    "tasks", "Checkpoint", "Readout", "TrainResult", "init_readout", "load_checkpoint", "loss_and_gradient", "train",
]
__version__ = "0.1.0"

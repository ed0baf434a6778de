"""kpref: the exact float64 reference for the K-P operators of recurrent learning.

Public surface (implementation lives in private ``_*.py`` modules; the
conventions are fixed in ``docs/SPEC.md``):

* cells: :class:`Elman`, :class:`GRU`, :class:`LSTM`, :class:`LeakyRNN`,
  :class:`Linear`, :class:`RateODE`, and :class:`ODECell` integrating a
  user's :class:`VectorField`;
* trajectories: :func:`simulate`;
* operators: :func:`linearize` → :class:`Linearization` (``P``, ``P_inv``,
  ``J_theta``, ``K``, ``NTK``, ``grad``, ``kronecker_factors``), :func:`mse_loss`,
  :func:`todense`;
* analyses of the operators: :mod:`kpref.analysis`;
* tasks and training: :mod:`kpref.tasks`, :func:`train`, :func:`load_checkpoint`;
* Koopman spectra of training dynamics: :mod:`kpref.koopman`;
* checking another implementation: :mod:`kpref.testing`, :mod:`kpref.strategies`.

Command line: ``python -m kpref report [--quick]`` (the KPFlow experiments) and
``python -m kpref verify [--quick]`` (the oracle checks itself).
"""

from ._cli_signals import install_import_sigint as _install_import_sigint

_install_import_sigint()   # `python -m kpref` only: Ctrl-C during the imports exits 130 with one line

from .cells import Cell, StepPoint, Elman, GRU, LeakyRNN, Linear, LSTM, simulate
from .ode import ODECell, VectorField, RateODE
from .operators import Linearization, Loss, linearize, mse_loss, todense
from . import tasks
from . import analysis
from . import koopman
from .training import Checkpoint, Readout, TrainResult, init_readout, load_checkpoint, loss_and_gradient, train

__all__ = [
    "Cell", "StepPoint", "Elman", "simulate",
    "GRU", "LeakyRNN", "Linear",
    "LSTM", "ODECell", "VectorField", "RateODE",
    "Linearization", "Loss", "linearize", "mse_loss", "todense",
    "tasks", "analysis", "koopman", "Checkpoint", "Readout", "TrainResult", "init_readout", "load_checkpoint", "loss_and_gradient", "train",
]
__version__ = "0.1.0"

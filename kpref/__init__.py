"""kpref: the exact float64 reference for the K-P operators of recurrent learning.

Public surface (implementation lives in private ``_*.py`` modules of the family
subpackages ``kpref.cells``, ``kpref.ode``, ``kpref.operators``, ``kpref.analysis``,
``kpref.koopman``, ``kpref.testing``, ``kpref.training``, ``kpref.tasks`` and
``kpref.experiments``; the conventions are fixed in ``docs/SPEC.md``). Every
type the API returns is exported here and from its subpackage. Importing
kpref imports neither matplotlib nor tqdm (the report and progress bars
import them when used):

* cells: :class:`Elman`, :class:`GRU`, :class:`LSTM`, :class:`LeakyRNN`,
  :class:`Linear`, :class:`RateODE`, and :class:`ODECell` integrating a
  user's :class:`VectorField` with a :class:`ButcherTableau`; a new cell
  subclasses :class:`Cell` and fills its hooks (README, "Adding a cell");
* trajectories: :func:`simulate`;
* operators: :func:`linearize` → :class:`Linearization` (``P``, ``P_inv``,
  ``J_theta``, ``K``, ``NTK``, ``grad``, ``kronecker_factors``), :func:`mse_loss`,
  :func:`todense`; the gradient's route is an :class:`AdjointStrategy`;
* analyses of the operators: :mod:`kpref.analysis`;
* tasks and training: :mod:`kpref.tasks`, :func:`train`, :func:`load_checkpoint`;
* Koopman spectra of training dynamics: :mod:`kpref.koopman`;
* checking another implementation: :mod:`kpref.testing`, :mod:`kpref.strategies`;
  backends from torch and JAX: :mod:`kpref.interop`.

Command line: ``python -m kpref report [--quick]`` (the KPFlow experiments) and
``python -m kpref verify [--quick]`` (the oracle checks itself).
"""

from ._signals import install_import_sigint as _install_import_sigint

_install_import_sigint()   # `python -m kpref` only: Ctrl-C during the imports exits 130 with one line

from .cells import Cell, StepPoint, Elman, GRU, LeakyRNN, Linear, LSTM, simulate
from .ode import (ButcherTableau, ContinuousAdjoint, METHODS, ODECell, RateField, RateODE, RungeKuttaStepper,
                  VectorField)
from .operators import (AdjointStrategy, DiscreteAdjoint, KroneckerSite, Linearization, Loss, NamedOperator,
                        linearize, mse_loss, todense)
from . import tasks
from . import analysis
from . import koopman
from . import interop
from .training import (Checkpoint, GradientResult, Readout, TrainResult, init_readout, load_checkpoint,
                       loss_and_gradient, train)

__all__ = [
    # cells and trajectories
    "Cell", "StepPoint", "Elman", "GRU", "LeakyRNN", "Linear", "LSTM", "simulate",
    # continuous-time cells
    "ODECell", "VectorField", "RateODE", "RateField", "ButcherTableau", "METHODS", "RungeKuttaStepper",
    "ContinuousAdjoint",
    # operators and the loss
    "Linearization", "NamedOperator", "KroneckerSite", "AdjointStrategy", "DiscreteAdjoint", "Loss",
    "linearize", "mse_loss", "todense",
    # application layer
    "tasks", "analysis", "koopman", "interop", "Checkpoint", "GradientResult", "Readout", "TrainResult", "init_readout",
    "load_checkpoint", "loss_and_gradient", "train",
]
__version__ = "0.1.0"

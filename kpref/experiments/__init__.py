"""The application layer: the KPFlow experiments, the ``report`` and ``sweep`` commands and their figures.

``kpref.experiments.sweep`` is the public face of :mod:`kpref.experiments._sweep` (``SweepConfig``,
``run_sweep``, ``run_one``, ``train_kwargs``, ``trivial_loss``, ...); ``kpref.experiments.interference`` that of
:mod:`kpref.experiments._interference`.
"""

from . import _interference as interference
from . import _sweep as sweep

__all__ = ["sweep", "interference"]

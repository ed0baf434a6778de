"""The application layer: the KPFlow experiments, the ``report`` and ``sweep`` commands and their figures.

* experiments (:mod:`kpref.experiments._experiments`): :class:`ExperimentConfig`,
  :func:`run_collapse`, :func:`run_alignment` and the summaries they record;
* the report (:mod:`kpref.experiments._report`): :func:`run_report`,
  :func:`summary_table`, :func:`write_figures`, the CLI's :func:`main`;
* ``kpref.experiments.sweep``, the public face of :mod:`kpref.experiments._sweep`
  (``SweepConfig``, ``run_sweep``, ``run_one``, ``train_kwargs``, ...);
* ``kpref.experiments.interference``, that of :mod:`kpref.experiments._interference`;
* :func:`run_local`, the local-process executor of ``report --jobs`` and ``sweep --jobs``.

matplotlib is imported only when figures are written.
"""

from ._experiments import *  # noqa: F401,F403  (its __all__)
from ._experiments import AXES, OPERATORS, __all__ as _experiment_names
from ._experiments import _subtask_operator_alignment as subtask_operator_alignment
from ._executors import BLAS_THREAD_VARIABLES, run_local, worker_blas_threads
from ._report import (FIGURES, INCOMPLETE, ReportFolderError, add_arguments, main, read_report, run_report,
                      summary_table, write_figures)
from . import _interference as interference
from . import _sweep as sweep

__all__ = list(_experiment_names) + ["AXES", "OPERATORS", "FIGURES", "INCOMPLETE", "ReportFolderError",
                                     "add_arguments", "main", "read_report", "run_report", "subtask_operator_alignment",
                                     "summary_table", "write_figures", "sweep", "interference", "run_local",
                                     "worker_blas_threads", "BLAS_THREAD_VARIABLES"]

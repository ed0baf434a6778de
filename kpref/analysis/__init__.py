r"""Exact and randomized analyses of the K-P operators (SPEC §5–6).

Every function takes any ``scipy.sparse.linalg.LinearOperator`` (a 2-D float
array or a SciPy sparse matrix is wrapped with ``aslinearoperator``), except
:func:`lyapunov_spectrum` and :func:`effective_dimensions`, which take a
:class:`kpref.Linearization`. ``method='exact'`` is the default everywhere;
randomized methods take ``n_probes`` and ``rng`` (``None``, an int seed or a
``numpy.random.Generator``; nothing else draws random numbers) and, with
``return_error=True``, return ``(estimate, error estimate)``.

Spectra (:mod:`kpref.analysis._spectral`)
    :func:`spectrum`, :func:`singular_values` (dense LAPACK; thick-restart
    block Lanczos or ARPACK for the ``k`` extreme ones),
    :func:`participation_ratio`, :func:`effective_rank`, :func:`variance_rank`.
Traces (:mod:`kpref.analysis._traces`)
    :func:`trace`, :func:`frobenius_norm`, :func:`alignment` — exact, or
    Hutchinson, Hutch++, XTrace.
Axes of trajectory space (:mod:`kpref.analysis._partial_trace`)
    :func:`partial_trace`, :func:`marginal_sum` (KPFlow's "partial trace"),
    :func:`effective_dimension`, :func:`effective_dimensions`.
The KPFlow package's definitions (:mod:`kpref.analysis._kpflow`)
    ``effective_dimension(..., reduction='marginal')``, :func:`reduced_gram`,
    :func:`operator_effective_rank` (95 % variance over kept axes),
    :func:`misdirection` ``= cos(NTK, P P*)``, :func:`pp_star`.
Eigenfunctions (:mod:`kpref.analysis._eigen`)
    :func:`eigenpairs`, :func:`singular_triplets`: vectors shaped
    ``(k, B, T, S)`` or like the kept axes, with residuals and fixed signs.
K's per-unit blocks (:mod:`kpref.analysis._unit_blocks`)
    :func:`unit_blocks` → :class:`KBlocks` (also ``lin.K_blocks()``): ``K`` is
    a direct sum of one block per hidden unit for every discrete built-in
    cell, so the exact methods above (``method='auto'``/``'exact'``) take
    ``K``'s spectrum, traces, ranks, partial traces, effective dimensions and
    alignments through the blocks at any size; ``KBlocks.eigenpairs`` gives
    its top eigenvectors shaped (k, B, T, S).
``P`` per trial (:mod:`kpref.analysis._propagator`)
    :func:`propagator_singular_values`: exact ``σ(P_b)`` of every trial's
    block (``P`` is block diagonal in the batch) where ``B·T·S²`` fits.
Dynamics (:mod:`kpref.analysis._lyapunov`)
    :func:`lyapunov_spectrum`, :func:`kaplan_yorke_dimension`.

The KPFlow papers' structural claim, on small networks at initialization
(PyTorch's default initialization, ``B = 4`` trials of ``T = 20`` steps,
``H = 16``): the effective rank of ``K`` is far below that of ``P``.

>>> import numpy as np, kpref
>>> from kpref.analysis import effective_rank
>>> for Cell in (kpref.Elman, kpref.GRU):
...     rng = np.random.default_rng(0)
...     cell = Cell(input_size=3, hidden_size=16)
...     lin = kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((4, 20, 3)))
...     ranks = [effective_rank(M) for M in (lin.K, lin.P, lin.NTK)]
...     print(f"{Cell.__name__:5s} K {ranks[0]:6.2f}  P {ranks[1]:6.2f}  NTK {ranks[2]:5.2f}")
Elman K  23.53  P 702.45  NTK  4.12
GRU   K  37.04  P 673.77  NTK 13.55

(out of ``B·T·H = 1280`` dimensions; ``K``'s rank is also bounded by the
number of parameters, 336 for this Elman cell and 1008 for the GRU.)
"""

from ._eigen import EIGEN_METHODS, EigenPairs, SingularTriplets, eigenpairs, register_eigen_method, singular_triplets
from ._kpflow import gram_variance_rank, misdirection, operator_effective_rank, pp_star, reduced_gram
from ._lyapunov import kaplan_yorke_dimension, lyapunov_spectrum
from ._partial_trace import AXIS_NAMES
from ._spectral import LanczosResult
from ._partial_trace import (
    AxisReducedOperator,
    effective_dimension,
    effective_dimensions,
    marginal_sum,
    partial_trace,
)
from ._spectral import (
    block_lanczos,
    effective_rank,
    participation_ratio,
    singular_values,
    spectrum,
    variance_rank,
)
from ._traces import alignment, frobenius_norm, trace
# the randomized-trace toolkit the functions above are built on (for custom estimates and their tests)
from ._traces import (TraceEstimate, TraceTarget, direct_target, gram_target, hutch_plus_plus, hutchinson,
                      rademacher, xtrace)
from ._unit_blocks import BlockDiagonalOperator, KBlocks, UnitSite, unit_blocks
from ._propagator import propagator_singular_values

__all__ = [
    "AXIS_NAMES",
    "LanczosResult",
    "TraceEstimate",
    "TraceTarget",
    "direct_target",
    "gram_target",
    "hutch_plus_plus",
    "hutchinson",
    "rademacher",
    "xtrace",
    "spectrum",
    "singular_values",
    "participation_ratio",
    "effective_rank",
    "variance_rank",
    "trace",
    "frobenius_norm",
    "alignment",
    "partial_trace",
    "marginal_sum",
    "AxisReducedOperator",
    "effective_dimension",
    "effective_dimensions",
    "lyapunov_spectrum",
    "kaplan_yorke_dimension",
    "block_lanczos",
    "reduced_gram",
    "operator_effective_rank",
    "gram_variance_rank",
    "pp_star",
    "misdirection",
    "eigenpairs",
    "singular_triplets",
    "EigenPairs",
    "SingularTriplets",
    "register_eigen_method",
    "EIGEN_METHODS",
    "unit_blocks",
    "KBlocks",
    "UnitSite",
    "BlockDiagonalOperator",
    "propagator_singular_values",
]

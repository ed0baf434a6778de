"""Koopman spectra of (training) trajectories and tests of dynamical equivalence.

Two training processes are dynamically equivalent (topologically conjugate)
when the Koopman eigenvalues of their trajectories agree (Redman et al.,
"Identifying Equivalent Training Dynamics", NeurIPS 2024). This module
estimates those eigenvalues by dynamic mode decomposition (DMD) of
time-delay embedded trajectories and compares them, with NumPy/SciPy only.

* :func:`delay_embed`, :func:`snapshot_pairs`, :func:`dmd` (→ :class:`DMDResult`),
  :func:`dmd_from_pairs`, :func:`select_rank`, :func:`gavish_donoho_omega`;
* :func:`koopman_spectrum` — delay embedding + DMD, eigenvalues sorted by modulus;
* :func:`spectral_distance` — ``'matched'`` (published) or exact ``'wasserstein'``;
* replicates (one spectrum per seed or run): :func:`load_spectra` (result
  files), :func:`replicate_spectra`, :func:`distance_matrix`,
  :func:`within_between`, :func:`compare_systems` (→ :class:`SystemComparison`)
  — the calibrated decision: "not conjugate" by a permutation test over
  replicate labels (false rate ≤ α), "conjugate" by an equivalence test whose
  margin is a quantile of the seed-to-seed distances, else "inconclusive";
* :func:`conjugacy_test` (→ :class:`ConjugacyResult`) — distance, within-system
  spread, permutation p-value, effect size; the calibrated decision when
  replicates are given, else :func:`uncalibrated_margin_rule`. ``str(result)``
  names the rule and its p-value or margin;
* figures (matplotlib, imported when drawing): :func:`plot_replicate_spectra`
  (eigenvalues and the unit circle per system and replicate),
  :func:`plot_within_between` (within- vs between-system distances);
* calibration by simulation: :func:`linear_replicate_spectra`,
  :func:`shifted_spectrum`, :func:`calibration_rates` (→ :class:`CalibrationRates`);
* :func:`trajectories_from_checkpoints` — flattened weights of training runs
  (arrays or kpref ``.npz`` checkpoints), optionally PCA-projected;
* :func:`published_trajectories` — the paper's first experiment (mirror descent,
  gradient descent, bisection on ``f(x) = Σ tan x_i``).

The defaults of :func:`dmd`, :func:`koopman_spectrum` and
:func:`spectral_distance` are the published configuration (projected DMD, no
truncation, no centering, mean distance of the optimal one-to-one matching).

The two sections below are the full equations: DMD (``kpref.koopman._dmd``), then
spectra, distances and the conjugacy test (``kpref.koopman._koopman``).
"""

from . import _dmd
from . import _koopman
from . import _replicates
from . import _calibration
from ._dmd import (
    DEFAULT_RESIDUAL_TOL,
    DMD_METHODS,
    DMDResult,
    delay_embed,
    dmd,
    dmd_from_pairs,
    gavish_donoho_omega,
    select_rank,
    snapshot_pairs,
)
from ._dmd import _SubsetEigenvalues as SubsetEigenvalues  # resampled DMD spectra from factors (the nulls' engine)
from ._koopman import (
    CALIBRATED_RULE,
    DEFAULT_MARGIN,
    UNCALIBRATED_RULE,
    ConjugacyResult,
    SpectrumOptions,
    conjugacy_test,
    koopman_spectrum,
    published_trajectories,
    replicate_spectra,
    spectral_distance,
    trajectories_from_checkpoints,
    uncalibrated_margin_rule,
)
from ._figures import plot_replicate_spectra, plot_within_between
from ._calibration import CalibrationRates, calibration_rates, linear_replicate_spectra, shifted_spectrum
from ._replicates import (
    DECISIONS,
    DEFAULT_ALPHA,
    DEFAULT_EQUIVALENCE_QUANTILE,
    SystemComparison,
    WithinBetween,
    compare_systems,
    distance_matrix,
    load_spectra,
    within_between,
)

__all__ = [
    "SubsetEigenvalues",
    "CALIBRATED_RULE",
    "DECISIONS",
    "DEFAULT_ALPHA",
    "DEFAULT_EQUIVALENCE_QUANTILE",
    "DEFAULT_MARGIN",
    "UNCALIBRATED_RULE",
    "CalibrationRates",
    "SpectrumOptions",
    "SystemComparison",
    "WithinBetween",
    "calibration_rates",
    "compare_systems",
    "distance_matrix",
    "linear_replicate_spectra",
    "load_spectra",
    "replicate_spectra",
    "shifted_spectrum",
    "uncalibrated_margin_rule",
    "within_between",
    "DEFAULT_RESIDUAL_TOL",
    "DMD_METHODS",
    "ConjugacyResult",
    "DMDResult",
    "conjugacy_test",
    "delay_embed",
    "dmd",
    "dmd_from_pairs",
    "gavish_donoho_omega",
    "koopman_spectrum",
    "plot_replicate_spectra",
    "plot_within_between",
    "published_trajectories",
    "select_rank",
    "snapshot_pairs",
    "spectral_distance",
    "trajectories_from_checkpoints",
]

if None not in (__doc__, _dmd.__doc__, _koopman.__doc__, _replicates.__doc__):  # not under python -OO
    __doc__ += "\nDynamic mode decomposition\n==========================\n\n" + _dmd.__doc__
    __doc__ += "\nSpectra, distances, conjugacy\n=============================\n\n" + _koopman.__doc__
    __doc__ += "\nReplicates\n==========\n\n" + _replicates.__doc__
    if _calibration.__doc__ is not None:
        __doc__ += "\nCalibration by simulation\n=========================\n\n" + _calibration.__doc__

"""Error rates of kpref's calibrated conjugacy decision, measured by simulation (the README table).

Linear systems of known conjugacy (``kpref.koopman.linear_replicate_spectra``:
every replicate a fresh random change of coordinates, random initial states,
Gaussian observation noise, DMD spectrum) and of known non-conjugacy (every
eigenvalue moved by δ toward the origin, ``shifted_spectrum``: noise-free
matched distance exactly δ). For each noise level σ, replicate count n and
distance δ, ``calibration_rates`` runs ``--trials`` independent pairs through
``compare_systems`` (α = 0.05, margin = 0.9-quantile of the seed-to-seed
distances, 199 permutations and bootstrap draws) and prints the rate of each
decision:

* δ = 0 (conjugate): "not conjugate" is a false positive (bounded by α by the
  permutation test), "conjugate" is the equivalence test's power;
* δ > 0 (not conjugate): "conjugate" is a false negative, "not conjugate" the power.

The mean seed-to-seed distance at each σ is printed for scale: δ is
resolvable when it is comparable to it. A Markdown table goes to stdout.

Run ``python validation/examples/koopman_calibration.py`` (full: 200 trials per
cell, several minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kpref import koopman as kk

EIGENVALUES = np.array([0.95, 0.8 * np.exp(0.3j), 0.8 * np.exp(-0.3j), 0.6])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 trials, fewer cells")
    parser.add_argument("--trials", type=int, default=None, help="trials per cell (default 200; 20 with --quick)")
    args = parser.parse_args(argv)
    trials = args.trials or (20 if args.quick else 200)
    noises = (0.01, 0.03) if args.quick else (0.01, 0.03, 0.1)
    counts = (5, 10) if args.quick else (5, 10, (5, 15), 20)
    deltas = (0.0, 0.01, 0.03, 0.1)
    start = time.perf_counter()
    print(f"spectrum {np.array2string(EIGENVALUES, precision=3)}; 4 trajectories × 25 steps per replicate; "
          f"{trials} trials per cell; α = {kk.DEFAULT_ALPHA}, margin quantile {kk.DEFAULT_EQUIVALENCE_QUANTILE}\n")
    print("| σ | mean seed-to-seed distance | replicates | δ | not conjugate | conjugate | inconclusive |")
    print("|---|---|---|---|---|---|---|")
    for noise in noises:
        scale = kk.within_between(kk.linear_replicate_spectra(EIGENVALUES, 20, noise, rng=7),
                                  kk.linear_replicate_spectra(EIGENVALUES, 20, noise, rng=8))
        within = np.concatenate([scale.within_a, scale.within_b]).mean()
        for n in counts:
            for delta in deltas:
                r = kk.calibration_rates(EIGENVALUES, delta, noise, n, trials, rng=1000)
                wrong = "not_conjugate" if delta == 0 else "conjugate"
                cells = {k: f"{getattr(r, k):.3f}" for k in ("not_conjugate", "conjugate", "inconclusive")}
                cells[wrong] = f"**{cells[wrong]}**"  # the error rate of the cell
                label = f"{n[0]} vs {n[1]}" if isinstance(n, tuple) else f"{n} vs {n}"
                print(f"| {noise:g} | {within:.4f} | {label} | {delta:g} | {cells['not_conjugate']} | "
                      f"{cells['conjugate']} | {cells['inconclusive']} |", flush=True)
    print(f"\nBold: the error rate of the cell (false 'not conjugate' at δ = 0, false 'conjugate' at δ > 0). "
          f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

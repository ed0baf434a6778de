"""The first experiment of Redman et al. (NeurIPS 2024), end to end, and its noise robustness.

Online mirror descent (log barrier), online gradient descent on u = log x and
the bisection method on f(x) = Σ tan(x_i) over [1/T, 1]², η = 0.01, T = 100,
a 5×5 grid of initial conditions, 4 delays (see
``kpref.koopman.published_trajectories`` for every detail). Prints

1. the Koopman eigenvalues of the three optimizers (published configuration:
   projected DMD, no truncation);
2. the three matched (published) distances and ``conjugacy_test`` with its
   defaults for each pair;
3. a noise-robustness table: Gaussian noise of standard deviation σ added to
   every trajectory entry, the mirror–gradient distance (``'wasserstein'``, so
   that adaptive ranks may differ in count) for full-rank DMD and for the
   truncated / total-least-squares variants, the worst over noise draws, with
   the gradient–bisection distance of the same variant for scale.

4. the authors' saved eigenvalues (``shared/data/redman2024``, found beside the
   repository or given by ``--data``): every published pair with its distance,
   the paper's reading, kpref's calibrated decision (``compare_systems``: rule,
   p-value, margin) and the uncalibrated 5 % rule; plus replicates of the
   optimizer experiment generated here (12 seeds of 25 random initial
   conditions each, ``published_trajectories(rng=seed)``), since the files hold
   one spectrum per optimizer. Figures ``docs/figures/koopman_published_*.png``
   unless ``--no-figures``. This is the README's published-file table.

Run ``python validation/examples/koopman_published.py`` (full) or with ``--quick``
(a smoke test: fewer noise draws and resamples).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kpref import koopman as kk

PAIRS = (("mirror", "gradient"), ("gradient", "bisection"), ("mirror", "bisection"))
VARIANTS = (
    ("full rank (published)", {}),
    ("rank 4", {"rank": 4}),
    ("Gavish-Donoho", {"rank": "gavish-donoho"}),
    ("TLS, rank 4", {"rank": 4, "method": "tls"}),
    ("TLS, Gavish-Donoho", {"rank": "gavish-donoho", "method": "tls"}),
    ("FB, rank 4", {"rank": 4, "method": "fb"}),
)


def print_eigenvalues(trajectories):
    print("Koopman eigenvalues (published configuration: 4 delays, projected DMD, no truncation)")
    for name, traj in trajectories.items():
        ev = kk.koopman_spectrum(traj, 4)
        print(f"  {name:9s}", np.array2string(ev, precision=5, max_line_width=100, prefix="  " + " " * 10))


def print_distances(trajectories, n_resamples):
    print("\nDistances and conjugacy_test without replicates (rule: uncalibrated margin 0.05 · ρ; seed 0)")
    header = f"  {'pair':22s} {'matched d':>10s} {'spread':>8s} {'(d+s)/(m·ρ)':>12s} {'p-value':>8s} {'effect':>8s}  conjugate"
    print(header)
    for a, b in PAIRS:
        d = kk.spectral_distance(kk.koopman_spectrum(trajectories[a], 4), kk.koopman_spectrum(trajectories[b], 4))
        r = kk.conjugacy_test(trajectories[a], trajectories[b], 4, n_resamples=n_resamples, rng=0)
        assert d == r.distance
        ratio = (r.distance + r.spread) / (r.margin * r.spectral_radius)
        print(
            f"  {a + ' vs ' + b:22s} {d:10.5f} {r.spread:8.5f} {ratio:12.2f} {r.p_value:8.3f} "
            f"{r.effect_size:8.1f}  {r.conjugate}"
        )


def noise_table(trajectories, sigmas, n_draws):
    print(f"\nNoise robustness: mirror–gradient W1 distance, worst of {n_draws} noise draws "
          "(in brackets: gradient–bisection, same variant, first draw)")
    width = 24
    print("  " + f"{'σ':>7s} " + " ".join(f"{name:>{width}s}" for name, _ in VARIANTS))
    for sigma in sigmas:
        cells = []
        for _, opts in VARIANTS:
            worst, separation = 0.0, np.nan
            for draw in range(n_draws):
                rng = np.random.default_rng(1000 + draw)
                noisy = {k: v + sigma * rng.standard_normal(v.shape) for k, v in trajectories.items()}
                try:
                    ev = {k: kk.koopman_spectrum(v, 4, **opts) for k, v in noisy.items()}
                except ValueError as exc:  # e.g. TLS on noise-free rank-deficient data
                    worst = np.nan
                    print(f"    ({opts}, σ={sigma:g}: {str(exc)[:70]}…)")
                    break
                worst = max(worst, kk.spectral_distance(ev["mirror"], ev["gradient"], "wasserstein"))
                if draw == 0:
                    separation = kk.spectral_distance(ev["gradient"], ev["bisection"], "wasserstein")
            cells.append(f"{worst:.4f} [{separation:.3f}]")
        print("  " + f"{sigma:7.0e} " + " ".join(f"{c:>{width}s}" for c in cells))


ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "h5": "Koopman_eigenvalues_FCN_MNIST_h=5.npy",
    "h10": "Koopman_eigenvalues_FCN_MNIST_h=10.npy",
    "h40": "Koopman_eigenvalues_FCN_MNIST_h=40.npy",
    "grokking": "grokking_mod_addition_eigs.npy",
    "constrained": "grokking_mod_addition_constrained_alpha_0.8_eigs.npy",
}
PAPER = {("h5", "h10"): (0.0065, "not conjugate"), ("h5", "h40"): (0.0070, "not conjugate"),
         ("h10", "h40"): (0.0047, "not conjugate"), ("grokking", "constrained"): (0.0275, "not conjugate")}


def find_data(given):
    candidates = [Path(given)] if given else [up / "shared" / "data" / "redman2024" for up in (ROOT.parent, ROOT.parent.parent)]
    for folder in candidates:
        if (folder / FILES["h5"]).is_file():
            return folder
    return None


def _row(label, paper_d, paper_reading, r, radius):
    spread = 0.5 * (r.mean_within_a + r.mean_within_b)
    old = "conjugate" if kk.uncalibrated_margin_rule(r.mean_between, spread, radius) else "not conjugate"
    paired = "" if paper_d is None else f"{paper_d:.4f}"
    return (f"| {label} | {paired} | {r.mean_between:.4f} | {r.mean_within_a:.4f} / {r.mean_within_b:.4f} | "
            f"{paper_reading} | **{r.decision}** ({r.rule}: p = {r.p_value:.3g}, margin {r.margin:.4f}, "
            f"gap CI [{r.gap_ci[0]:.2g}, {r.gap_ci[1]:.2g}]) | {old} |")


def published_files_table(folder, resamples, figures):
    print("\nThe authors' saved eigenvalues: calibrated decision (compare_systems, α = 0.05, margin = 0.9-quantile "
          f"of the seed-to-seed distances, {resamples} resamples, seed 0) and the uncalibrated 5 % rule\n")
    print("| pair | paper's distance (row i vs row i) | kpref mean between (all pairs) | mean within (a / b) | "
          "paper | kpref calibrated | uncalibrated 5 % rule |")
    print("|---|---|---|---|---|---|---|")
    spectra = {k: kk.load_spectra(folder / f, n_eigenvalues=10) for k, f in FILES.items()}
    comparisons = {}
    for (a, b), (paper_d, reading) in PAPER.items():
        r = kk.compare_systems(spectra[a], spectra[b], n_permutations=resamples, n_bootstrap=resamples, rng=0,
                               names=(a, b))
        comparisons[f"{a} vs {b}"] = r
        radius = np.abs(np.concatenate([spectra[a], spectra[b]])).max()
        print(_row(f"{a} vs {b}", paper_d, reading, r, radius))
    for name, rows in spectra.items():
        half = rows.shape[0] // 2
        r = kk.compare_systems(rows[:half], rows[half:], n_permutations=resamples, n_bootstrap=resamples, rng=0,
                               names=(f"{name}[:{half}]", f"{name}[{half}:]"))
        print(_row(f"{name} rows 0–{half - 1} vs {half}–{rows.shape[0] - 1}", None, "(same system)", r,
                   np.abs(rows).max()))
    optimizer = {k: [] for k in ("mirror", "gradient", "bisection")}
    for seed in range(12):
        tr = kk.published_trajectories(rng=seed)
        for k in optimizer:
            optimizer[k].append(kk.koopman_spectrum(tr[k], 4))
    paper_opt = {("mirror", "gradient"): 0.0081, ("gradient", "bisection"): 0.7534, ("mirror", "bisection"): 0.7460}
    for (a, b), d in paper_opt.items():
        r = kk.compare_systems(optimizer[a], optimizer[b], n_permutations=resamples, n_bootstrap=resamples, rng=0,
                               names=(a, b))
        reading = "conjugate" if a == "mirror" and b == "gradient" else "not conjugate"
        radius = np.abs(np.concatenate([optimizer[a], optimizer[b]])).max()
        print(_row(f"{a} vs {b} (12 generated seeds)", d, reading, r, radius))
    # the same seeds with gradient descent observed in x (started at u_0 = log x_0): the coordinates, not the
    # dynamics, separate the two above
    in_x = {k: [] for k in ("mirror", "gradient")}
    for seed in range(12):
        tr = kk.published_trajectories(rng=seed, gradient_coordinates="x", gradient_grid="log")
        for k in in_x:
            in_x[k].append(kk.koopman_spectrum(tr[k], 4))
    r = kk.compare_systems(in_x["mirror"], in_x["gradient"], n_permutations=resamples, n_bootstrap=resamples,
                           rng=0, names=("mirror", "gradient in x"))
    radius = np.abs(np.concatenate([in_x["mirror"], in_x["gradient"]])).max()
    print(_row("mirror vs gradient mapped to x, u_0 = log x_0 (12 generated seeds)", None, "conjugate", r, radius))
    if figures:
        out = ROOT / "docs" / "figures"
        out.mkdir(parents=True, exist_ok=True)
        fcn = {k: spectra[k] for k in ("h5", "h10", "h40")}
        kk.plot_replicate_spectra(fcn, out / "koopman_published_fcn_spectra.png", zoom=(0.96, 1.005, -0.06, 0.06),
                                  title="published FCN eigenvalues (Redman et al. 2024), one colour per seed")
        kk.plot_within_between(comparisons, out / "koopman_published_distances.png",
                               title="published files: seed-to-seed vs between-system distances")
        print(f"\nfigures in {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer noise draws and resamples")
    parser.add_argument("--data", default=None, help="folder of the published eigenvalue files")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--files-only", action="store_true", help="only the published-file table")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not args.files_only:
        trajectories = kk.published_trajectories()
        np.set_printoptions(linewidth=110)
        print_eigenvalues(trajectories)
        print_distances(trajectories, 19 if args.quick else 199)
        sigmas = (1e-6, 1e-4) if args.quick else (0.0, 1e-6, 1e-5, 1e-4, 1e-3)
        noise_table(trajectories, sigmas, 1 if args.quick else 10)
    folder = find_data(args.data)
    if folder is None:
        print("\n(the published eigenvalue files were not found: pass --data FOLDER)")
    else:
        published_files_table(folder, 199 if args.quick else 999, not args.no_figures)
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

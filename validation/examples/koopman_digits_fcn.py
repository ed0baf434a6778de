"""Do fully connected networks of different widths train with equivalent dynamics? (generated replicates)

A NumPy re-creation, at small scale, of the FCN experiment of Redman et al.
(NeurIPS 2024), on scikit-learn's bundled ``digits`` (8×8 images, 1797
samples; nothing downloaded): networks 64-h-10 (ReLU, softmax cross-entropy)
of widths h ∈ {5, 10, 40}, trained by minibatch SGD from ``--seeds`` seeds
each. Each seed is one replicate: its flattened weights after every step form
one trajectory, which is projected on its own 10 leading principal axes
(``trajectories_from_checkpoints``) and decomposed by projected DMD (no
delays, full rank): 10 eigenvalues per seed, like the published files. (With
5 components, 4 delays and rank 10 the trailing eigenvalues fit SGD noise and
the seed-to-seed distances were 4 times larger, ≈ 0.15.) Then ``compare_systems`` for every pair of widths and, as the
within-system control, for each width's seeds split in two halves.

Every seed is drawn from ``numpy.random.default_rng(seed)`` (initial weights,
then minibatch order); one seed gives bitwise one run.

Writes ``docs/figures/koopman_digits_fcn_spectra.png`` (eigenvalues near
λ = 1 per width and seed) and ``docs/figures/koopman_digits_fcn_distances.png``
(within- vs between-width distances) unless ``--no-figures``.

Needs scikit-learn (``pip install -e .[examples]``). Run
``python validation/examples/koopman_digits_fcn.py`` or with ``--quick``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from kpref import koopman as kk

WIDTHS = (5, 10, 40)
N_COMPONENTS, N_DELAYS, RANK = 10, 0, None
FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def load_data():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - the optional extra
        raise SystemExit(f"this example needs scikit-learn: pip install -e .[examples] ({exc})") from None
    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0  # pixel values 0..16 → [0, 1]
    y = np.asarray(digits.target)
    return x, y


def train_fcn(x, y, width, seed, steps, batch, learning_rate):
    """Minibatch SGD on a 64-width-10 ReLU network; returns the (steps + 1, p) flattened weights."""
    rng = np.random.default_rng(seed)
    n_in, n_out = x.shape[1], 10
    W1 = rng.standard_normal((width, n_in)) * np.sqrt(2.0 / n_in)  # He initialization
    b1 = np.zeros(width)
    W2 = rng.standard_normal((n_out, width)) * np.sqrt(1.0 / width)
    b2 = np.zeros(n_out)
    onehot = np.eye(n_out)[y]
    trajectory = np.empty((steps + 1, W1.size + b1.size + W2.size + b2.size))

    def record(t):
        trajectory[t] = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])

    record(0)
    for t in range(1, steps + 1):
        idx = rng.choice(x.shape[0], batch, replace=False)
        xb, yb = x[idx], onehot[idx]
        pre = xb @ W1.T + b1
        hid = np.maximum(pre, 0.0)
        logits = hid @ W2.T + b2
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        d_logits = (prob - yb) / batch  # ∂(mean cross-entropy)/∂logits
        d_hid = (d_logits @ W2) * (pre > 0)
        W2 -= learning_rate * d_logits.T @ hid
        b2 -= learning_rate * d_logits.sum(axis=0)
        W1 -= learning_rate * d_hid.T @ xb
        b1 -= learning_rate * d_hid.sum(axis=0)
        record(t)
    return trajectory


def accuracy(x, y, trajectory, width):
    theta = trajectory[-1]
    n_in = x.shape[1]
    W1 = theta[: width * n_in].reshape(width, n_in)
    b1 = theta[width * n_in : width * n_in + width]
    rest = theta[width * n_in + width :]
    W2 = rest[: 10 * width].reshape(10, width)
    b2 = rest[10 * width :]
    return float(np.mean(np.argmax(np.maximum(x @ W1.T + b1, 0) @ W2.T + b2, axis=1) == y))


def seed_spectrum(trajectory):
    scores = kk.trajectories_from_checkpoints(trajectory[None], n_components=N_COMPONENTS)
    return kk.koopman_spectrum(scores, N_DELAYS, rank=RANK)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 6 seeds, 100 steps, 199 resamples")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per width (default 20; 6 with --quick)")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    n_seeds = args.seeds or (6 if args.quick else 20)
    steps, resamples = (100, 199) if args.quick else (300, 999)
    start = time.perf_counter()
    x, y = load_data()
    spectra = {}
    for width in WIDTHS:
        name = f"h={width}"
        runs = [train_fcn(x, y, width, seed, steps, batch=32, learning_rate=0.1) for seed in range(n_seeds)]
        spectra[name] = np.stack([seed_spectrum(run) for run in runs])
        acc = np.mean([accuracy(x, y, run, width) for run in runs])
        print(f"{name:5s}: {n_seeds} seeds × {steps + 1} steps, p = {runs[0].shape[1]}, "
              f"mean training accuracy {acc:.3f}, |λ| in [{np.abs(spectra[name]).min():.4f}, "
              f"{np.abs(spectra[name]).max():.4f}]")

    print(f"\nReplicate comparison (matched distance, α = {kk.DEFAULT_ALPHA}, margin = "
          f"{kk.DEFAULT_EQUIVALENCE_QUANTILE}-quantile of the seed-to-seed distances, {resamples} resamples):")
    comparisons = {}
    for a, b in itertools.combinations(spectra, 2):
        r = kk.compare_systems(spectra[a], spectra[b], n_permutations=resamples, n_bootstrap=resamples, rng=0,
                               names=(a, b))
        comparisons[f"{a} vs {b}"] = r
        spread = 0.5 * (r.mean_within_a + r.mean_within_b)
        radius = np.abs(np.concatenate([spectra[a], spectra[b]])).max()
        old = kk.uncalibrated_margin_rule(r.mean_between, spread, radius)
        print(f"  {r}\n    (uncalibrated margin rule: {'conjugate' if old else 'not conjugate'})")
    print("\nWithin-system controls (first half of the seeds vs second half):")
    for name, rows in spectra.items():
        half = rows.shape[0] // 2
        r = kk.compare_systems(rows[:half], rows[half:], n_permutations=resamples, n_bootstrap=resamples, rng=0,
                               names=(f"{name} first", f"{name} second"))
        print(f"  {r}")

    if not args.no_figures:
        FIGURES.mkdir(parents=True, exist_ok=True)
        lo = min(np.abs(s).min() for s in spectra.values())
        im = max(np.abs(s.imag).max() for s in spectra.values())
        kk.plot_replicate_spectra(spectra, FIGURES / "koopman_digits_fcn_spectra.png",
                                  zoom=(lo - 0.01, 1.01, -1.1 * im, 1.1 * im),
                                  title="digits FCN: Koopman eigenvalues per width and seed (unit circle in grey)")
        kk.plot_within_between(comparisons, FIGURES / "koopman_digits_fcn_distances.png",
                               title="digits FCN: seed-to-seed vs across-width distances")
        print(f"\nfigures in {FIGURES}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

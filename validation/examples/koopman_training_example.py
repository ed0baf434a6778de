"""Are two recurrent-network training processes dynamically equivalent? (kpref.train → kpref.koopman)

Trains, with kpref's own trainer (full-batch Adam on a short memory-pro task,
checkpoints every step as ``.npz`` files), ``--runs`` seeds of each of

* ``Elman g=0.5``  — tanh Elman network, recurrent weights N(0, 0.5²/H);
* ``Elman g=2``    — the same cell with recurrent gain 2 (chaotic at init);
* ``GRU``          — a GRU cell at torch's default initialization;

reads each system's checkpoints with ``trajectories_from_checkpoints`` (paths
of the ``.npz`` files, read through ``kpref.load_checkpoint``; PCA fitted on
that system's runs jointly — conjugacy does not care about coordinates, so the
systems need not share a parameter space) and compares pairs with
``conjugacy_test`` *with replicates* (every run is one replicate:
``replicates_a = np.arange(n_runs)``), so the decision is the calibrated one
(``compare_systems``: permutation test over run labels, equivalence margin
from the run-to-run distances). The within-system control compares the
Elman g=0.5 runs of seeds 0… with those of seeds 100…: it must not come out
"not conjugate" more often than α.

Each printed decision names its rule and p-value or margin. Writes
``docs/figures/koopman_rnn_spectra.png`` and ``koopman_rnn_distances.png``
unless ``--no-figures``.

An illustration, not a validated claim: the answers depend on the task, the
optimizer, the number of runs and of checkpoints.

Run ``python validation/examples/koopman_training_example.py`` or with ``--quick``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import kpref
from kpref import koopman as kk


def train_runs(make_cell, g, seeds, x, target, mask, steps, learning_rate, root):
    runs = []
    for seed in seeds:
        directory = Path(root) / f"seed{seed}"
        kpref.train(make_cell(), x, target, mask=mask, rng=seed, g=g, steps=steps, optimizer="adam",
                    learning_rate=learning_rate, checkpoint_every=1, checkpoint_dir=directory, progress=False)
        runs.append(sorted(str(p) for p in directory.glob("checkpoint_*.npz")))
    return runs


FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer runs, steps and resamples")
    parser.add_argument("--runs", type=int, default=None, help="runs per system (default 12; 4 with --quick)")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    n_runs, steps, n_resamples = (4, 25, 99) if args.quick else (12, 60, 999)
    n_runs = args.runs if args.runs is not None else n_runs
    hidden, n_components, n_delays, rank = 16, 4, 4, 8
    start = time.perf_counter()

    x, target, mask = kpref.tasks.memory_pro(16, rng=0, fixation_steps=5, stimulus_steps=10, memory_steps=10,
                                             response_steps=10, grace_steps=2)
    systems = {
        "Elman g=0.5": (lambda: kpref.Elman(3, hidden, "tanh"), 0.5, range(n_runs)),
        "Elman g=0.5'": (lambda: kpref.Elman(3, hidden, "tanh"), 0.5, range(100, 100 + n_runs)),
        "Elman g=2": (lambda: kpref.Elman(3, hidden, "tanh"), 2.0, range(n_runs)),
        "GRU": (lambda: kpref.GRU(3, hidden), None, range(n_runs)),
    }
    trajectories = {}
    with tempfile.TemporaryDirectory() as root:
        for name, (make_cell, g, seeds) in systems.items():
            paths = train_runs(make_cell, g, seeds, x, target, mask, steps, 1e-2, Path(root) / name)
            trajectories[name] = kk.trajectories_from_checkpoints(paths, n_components=n_components)
            print(f"{name:13s}: {len(paths)} runs × {len(paths[0])} checkpoints, p = {make_cell().num_params}"
                  f" → PCA {n_components}")

    labels = np.arange(n_runs)
    options = dict(rank=rank, n_resamples=n_resamples, replicates_a=labels, replicates_b=labels)
    pairs = (("Elman g=0.5", "Elman g=0.5'"), ("Elman g=0.5", "Elman g=2"), ("Elman g=0.5", "GRU"),
             ("Elman g=2", "GRU"))
    print(f"\nconjugacy_test with replicates ({n_delays} delays, rank {rank}, one spectrum per run):")
    comparisons = {}
    for a, b in pairs:
        r = kk.conjugacy_test(trajectories[a], trajectories[b], n_delays, rng=0, names=(a, b), **options)
        comparisons[f"{a} vs {b}"] = r.comparison
        print(f"  {r}")
    if not args.no_figures:
        FIGURES.mkdir(parents=True, exist_ok=True)
        spectra = {k: kk.replicate_spectra(v, n_delays, rank) for k, v in trajectories.items() if not k.endswith("'")}
        kk.plot_replicate_spectra(spectra, FIGURES / "koopman_rnn_spectra.png",
                                  title="kpref RNN training: Koopman eigenvalues per system and run")
        kk.plot_within_between(comparisons, FIGURES / "koopman_rnn_distances.png",
                               title="kpref RNN training: run-to-run vs across-system distances")
        print(f"figures in {FIGURES}")
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

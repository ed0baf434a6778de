"""Are two recurrent-network training processes dynamically equivalent? (kpref.train → kpref.koopman)

Trains, with kpref's own trainer (full-batch Adam on a short memory-pro task,
checkpoints every step as ``.npz`` files), several runs of each of

* ``Elman g=0.5``  — tanh Elman network, recurrent weights N(0, 0.5²/H);
* ``Elman g=0.5'`` — the same system, other initial seeds (a control: it must
  come out conjugate to the first);
* ``Elman g=1.5``  — the same cell with a larger recurrent gain;
* ``GRU``          — a GRU cell at torch's default initialization;

turns each system's checkpoints into trajectories with
``trajectories_from_checkpoints`` (paths of the ``.npz`` files; PCA fitted on
that system's runs jointly — conjugacy does not care about coordinates, so the
systems need not share a parameter space) and compares every pair with
``conjugacy_test`` (delays, Gavish–Donoho rank, Wasserstein distance since
adaptive ranks may differ in count). The printed table holds the distance,
the within-system spread, ``(distance + spread) / (margin · ρ)`` (conjugate
when ≤ 1), the permutation p-value and the decision.

This is an illustration, not a validated claim: the answers depend on the
task, the optimizer, the number of runs and of checkpoints. On the full run
(10 runs × 61 checkpoints per system) the control pair had the smallest
distance (0.006) and the only large permutation p-value among the
Elman/GRU pairs, yet was *not* called conjugate: the within-system spread
from half-splits of 10 runs (0.044) fills the 5 % margin on its own. The
decision rule is conservative with scarce data by design; more runs shrink
the spread. Training spectra cluster near 1, so a tighter ``--margin``
separates less at equal data.

Run ``python validation/examples/koopman_training_example.py`` or with ``--quick``.
"""

from __future__ import annotations

import argparse
import itertools
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer runs, steps and resamples")
    parser.add_argument("--runs", type=int, default=None, help="runs per system (default 10; 4 with --quick)")
    parser.add_argument("--margin", type=float, default=kk.DEFAULT_MARGIN, help="conjugacy_test margin")
    args = parser.parse_args(argv)
    n_runs, steps, n_resamples = (4, 25, 19) if args.quick else (10, 60, 199)
    n_runs = args.runs if args.runs is not None else n_runs
    hidden, n_components, n_delays = 16, 4, 4
    start = time.perf_counter()

    x, target, mask = kpref.tasks.memory_pro(16, rng=0, fixation_steps=5, stimulus_steps=10, memory_steps=10,
                                             response_steps=10, grace_steps=2)
    systems = {
        "Elman g=0.5": (lambda: kpref.Elman(3, hidden, "tanh"), 0.5, range(n_runs)),
        "Elman g=0.5'": (lambda: kpref.Elman(3, hidden, "tanh"), 0.5, range(100, 100 + n_runs)),
        "Elman g=1.5": (lambda: kpref.Elman(3, hidden, "tanh"), 1.5, range(n_runs)),
        "GRU": (lambda: kpref.GRU(3, hidden), None, range(n_runs)),
    }
    trajectories = {}
    with tempfile.TemporaryDirectory() as root:
        for name, (make_cell, g, seeds) in systems.items():
            paths = train_runs(make_cell, g, seeds, x, target, mask, steps, 1e-2, Path(root) / name)
            trajectories[name] = kk.trajectories_from_checkpoints(paths, n_components=n_components)
            print(f"{name:13s}: {len(paths)} runs × {len(paths[0])} checkpoints, p = {make_cell().num_params}"
                  f" → PCA {n_components}")

    options = dict(rank="gavish-donoho", distance="wasserstein", n_resamples=n_resamples, margin=args.margin)
    print(f"\nKoopman spectra ({n_delays} delays, Gavish–Donoho rank): leading eigenvalues")
    for name, traj in trajectories.items():
        ev = kk.koopman_spectrum(traj, n_delays, rank="gavish-donoho")
        print(f"  {name:13s} rank {ev.size:2d}:", np.array2string(ev[:4], precision=4))

    print(f"\n  {'pair':30s} {'W1':>8s} {'spread':>8s} {'(d+s)/(m·ρ)':>12s} {'p':>6s}  conjugate")
    for a, b in itertools.combinations(trajectories, 2):
        r = kk.conjugacy_test(trajectories[a], trajectories[b], n_delays, rng=0, **options)
        ratio = (r.distance + r.spread) / (r.margin * r.spectral_radius)
        print(f"  {a + ' vs ' + b:30s} {r.distance:8.4f} {r.spread:8.4f} {ratio:12.2f} {r.p_value:6.3f}  {r.conjugate}")
    print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()

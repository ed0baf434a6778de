"""Benchmark of K's per-unit blocks against today's routes, in one run (issue 17).

Run (paper size: GRU H=256, B=20, T=90, N=3; several minutes):

    OPENBLAS_NUM_THREADS=1 nice -n 10 python validation/benchmarks/bench_kblocks.py --workers 2

Smoke test (small network):

    python validation/benchmarks/bench_kblocks.py --quick

Prints one table comparing, on one linearization:

* the exact full spectrum of K through its blocks (kpref.analysis.spectrum,
  method='auto' → blocks), and the exact effective rank of K through them,
  against the Hutch++ effective rank (n_probes products, today's route at this
  size) — with the exact value's distance from the estimate in units of the
  estimate's own error bar;
* the top-k eigenvalues of K by thick-restart block Lanczos on the
  matrix-free K (today's route; orthogonalization='cgs2', the route before
  issue 17), and their agreement with the block route;
* the top-k eigenvalues of the NTK by block Lanczos before ('cgs2': two full
  Gram–Schmidt passes and an SVD per block) and after ('local+1': local
  orthogonalization, one full reorthogonalization pass, Cholesky QR twice).

Every route is timed in the same process, one after another, so the routes
are compared under the same load. On a shared machine the absolute figures
are not those of a quiet one: say so when quoting them. With
``OPENBLAS_NUM_THREADS=1`` and ``--workers 2`` the per-block factorizations
run on two threads; multi-threaded BLAS with worker threads oversubscribes
the cores.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import kpref
from kpref import analysis

from bench_analysis import CountingOperator, timed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small network (H=32, B=4, T=20)")
    ap.add_argument("--cell", choices=("gru", "elman", "lstm"), default="gru")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--time", type=int, default=None)
    ap.add_argument("--input", type=int, default=3)
    ap.add_argument("--k", type=int, default=20, help="number of top eigenvalues")
    ap.add_argument("--probes", type=int, default=100, help="Hutch++ products")
    ap.add_argument("--tol", type=float, default=1e-10, help="Lanczos relative residual tolerance")
    ap.add_argument("--workers", type=int, default=1, help="threads for the per-block factorizations")
    ap.add_argument("--skip-k-lanczos", action="store_true", help="skip today's block Lanczos on K")
    ap.add_argument("--only-ntk", action="store_true", help="only the NTK rows")
    ap.add_argument("--ntk-block-sizes", type=int, nargs="*", default=[],
                    help="extra 'after' rows for the NTK with these Lanczos block sizes (default block: "
                         "min(max(⌈k/2⌉, 4), 32))")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    H = args.hidden or (32 if args.quick else 256)
    B = args.batch or (4 if args.quick else 20)
    T = args.time or (20 if args.quick else 90)
    N = args.input
    Cell = {"gru": kpref.GRU, "elman": kpref.Elman, "lstm": kpref.LSTM}[args.cell]
    cell = Cell(input_size=N, hidden_size=H)
    rng = np.random.default_rng(args.seed)
    lin, t_lin = timed(lambda: kpref.linearize(cell, cell.init_params(rng), rng.standard_normal((B, T, N))))
    n = lin.size
    print(f"{Cell.__name__} H={H} B={B} T={T} N={N}: trajectory space n={n}, p={cell.num_params} "
          f"(float64, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"workers={args.workers}; load average {os.getloadavg()[0]:.1f} at start)")
    print(f"linearize: {t_lin:.2f} s")
    head = f"{'task':<46} {'time':>9} {'columns':>8}  result"
    print()
    print(head)
    print("-" * (len(head) + 40))

    def row(task, seconds, columns, result):
        print(f"{task:<46} {seconds:8.2f}s {columns:>8}  {result}", flush=True)

    if not args.only_ntk:
        kb, t = timed(lambda: analysis.unit_blocks(lin))
        kb.workers = args.workers
        row(f"K blocks: build ({kb.units} × {kb.form} {kb.block_size})", t, 0, repr(kb))
        lam, t_full = timed(lambda: kb.eigenvalues())
        row("K exact full spectrum (blocks)", t_full, 0,
            f"{lam.size} eigenvalues, λ1={lam[0]:.6e}, λ{args.k}={lam[args.k - 1]:.6e}, rank {int(np.sum(lam > 1e-12 * lam[0]))}")
        fresh = analysis.KBlocks(kb.shape, kb.units, kb.sites, cell_name=kb.cell_name)
        fresh.workers = args.workers

        def erank_cold():
            s2, s4 = fresh.power_sums()
            return s2 * s2 / s4

        erank, t = timed(erank_cold)
        lam2 = lam ** 2
        row("K exact effective rank (blocks, cold)", t, 0,
            f"{erank:.4f}; from the spectrum {lam2.sum() ** 2 / np.sum(lam2 * lam2):.4f}")
        lin.K_blocks().workers = args.workers    # lin's own (cached) blocks, used by analysis.* on lin.K below
        (pr, t) = timed(lambda: analysis.participation_ratio(lin.K))
        row("K exact participation ratio (trace+Frobenius)", t, 0, f"{pr:.4f}  (tr K)²/‖K‖_F², no eigenvalues")
        c = CountingOperator(lin.K)
        (est, err), t = timed(lambda: analysis.effective_rank(c, "hutch++", args.probes, args.seed, return_error=True))
        row(f"K effective rank (Hutch++ {args.probes}, today)", t, c.columns,
            f"{est:.4f} ± {err:.4f}; exact is {abs(est - erank) / err:.2f} error bars away")
        top = lam[:args.k]
        if not args.skip_k_lanczos:
            c = CountingOperator(lin.K)
            res, t = timed(lambda: analysis.block_lanczos(c.matmat, n, args.k, "LA", tol=args.tol, rng=args.seed,
                                                          orthogonalization="cgs2"))
            row(f"K top-{args.k} eig (block Lanczos, today)", t, c.columns,
                f"λ1={res.values[0]:.6e}; max |Δλ|/λ1 vs blocks {np.abs(res.values - top).max() / top[0]:.1e}")
    times = {}
    values = {}
    for orth in ("cgs2", "local+1"):
        c = CountingOperator(lin.NTK)
        res, t = timed(lambda: analysis.block_lanczos(c.matmat, n, args.k, "LA", tol=args.tol, rng=args.seed,
                                                      orthogonalization=orth))
        times[orth], values[orth] = t, res.values
        label = "before: 2 CGS passes + SVD" if orth == "cgs2" else "after: local + 1 pass, CholQR2"
        row(f"NTK top-{args.k} eig ({label})", t, c.columns,
            f"λ1={res.values[0]:.6e}, λ{args.k}={res.values[-1]:.6e}, {res.n_restarts} restarts")
    for bs in args.ntk_block_sizes:
        c = CountingOperator(lin.NTK)
        res, t = timed(lambda: analysis.block_lanczos(c.matmat, n, args.k, "LA", tol=args.tol, rng=args.seed,
                                                      block_size=bs))
        d = np.abs(res.values - values["cgs2"]).max() / values["cgs2"][0]
        row(f"NTK top-{args.k} eig (after, block size {bs})", t, c.columns,
            f"λ1={res.values[0]:.6e}; max |Δλ|/λ1 vs before {d:.1e}; {t / times['cgs2']:.2f} of before")
    d = np.abs(values["cgs2"] - values["local+1"]).max() / values["cgs2"][0]
    print(f"\nNTK after/before time: {times['local+1'] / times['cgs2']:.2f}; max |Δλ|/λ1 between them {d:.1e}")
    print("(columns: operator columns applied; every route timed in this one process, one after another)")


if __name__ == "__main__":
    main()

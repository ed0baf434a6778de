"""Benchmark of K's per-unit blocks and the new block Lanczos against the routes before issue 17, in one run.

Paper size (GRU H=256, B=20, T=90, N=3; several minutes; run it on a quiet machine):

    OPENBLAS_NUM_THREADS=1 python validation/benchmarks/bench_kblocks.py --workers 2

Small check (GRU H=32, B=4, T=30; seconds):

    OPENBLAS_NUM_THREADS=1 python validation/benchmarks/bench_kblocks.py --small

Block-size measurement for the NTK's top-k (medium size, H=64):

    OPENBLAS_NUM_THREADS=1 python validation/benchmarks/bench_kblocks.py --hidden 64 --batch 8 --time 60 \\
        --only-ntk --ntk-block-sizes 1 2 3 4 6 10

Prints ONE table, every row measured in this process one after another
(so old and new routes share the machine's load), on two linearizations of
the same problem that differ only in how ``K`` applies ``J_θ J_θᵀ``: the old
rows use ``k_route='jacobian'`` (the cell's ``J_θᵀ``/``J_θ`` kernels, column
by column: the product before issue 17), the new rows the default
(``'unit_sites'``: two large GEMMs per weight site for a block of columns).
The column "K product" of each row says which.

old (the routes before issue 17)
  * K top-k eigenvalues by block Lanczos on the matrix-free ``lin.K``
    (``orthogonalization='cgs2'``: two full classical Gram–Schmidt passes and
    an SVD per block, one more product for the final residuals, no locking,
    block size ``min(max(⌈k/2⌉, 4), 32)``, basis ``max(k + 3b, 6k)``);
  * K effective rank by Hutch++ (``--probes`` products), with its error bar;
  * K effective dimensions (batch, time, hidden) by Hutchinson, ``--dim-probes``
    probes per axis (the report's randomized route before issue 17), with error bars;
  * NTK top-k eigenvalues by the same old block Lanczos settings.
new
  * the build of K's blocks (``lin.K_blocks()``, from the hook ``cell._unit_weight_sites``);
  * K's exact full spectrum through the blocks;
  * K's exact effective rank, cold: ``analysis.effective_rank(lin.K)`` on a
    fresh linearization (build + power sums, the public call);
  * K's exact effective dimensions over the three axes through the blocks;
  * P's effective rank by Hutch++ and its effective dimensions by Hutchinson
    (``--dim-probes`` products: the report's per-checkpoint summaries of P);
  * NTK top-k eigenvalues by block Lanczos with today's defaults
    (``'local+1'``: local + one full reorthogonalization pass, Cholesky QR
    twice, locking of converged Ritz pairs, ``A V`` kept, block size
    ``min(max(⌈k/10⌉, 3), 32)``, basis ``max(k + 3b, 4k)``; basis stored as rows).

Before the table, the cost of one product per column (P, K and NTK on a
block of the default Lanczos block size, both K products), the best of
``--product-repeats`` runs.

Each result column says what was computed and how the routes agree (the
exact effective rank in units of the Hutch++ error bar; Lanczos eigenvalues
against the blocks or against each other, relative to λ₁). With
``OPENBLAS_NUM_THREADS=1`` and ``--workers 2`` the per-unit block work runs on
two threads; multi-threaded BLAS together with worker threads oversubscribes
the cores. On a shared machine the absolute figures are not a quiet
machine's: say so when quoting them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import kpref
from kpref import analysis

from bench_analysis import CountingOperator, timed


def _old_settings(k):
    """The block Lanczos of before issue 17: its default block size and basis, 'cgs2', no locking."""
    b = min(max(-(-k // 2), 4), 32)
    return dict(orthogonalization="cgs2", locking=False, block_size=b, max_basis=max(k + 3 * b, 6 * k))


def _product_timings(lin, lin_old, args, n):
    """Milliseconds per column of P, K and NTK (both K products) on one block of the default Lanczos size."""
    from kpref.analysis._spectral import _default_block_size

    b = _default_block_size(args.k)
    X = np.random.default_rng(args.seed).standard_normal((n, b))
    print(f"one product, ms per column (block of {b} columns, best of {args.product_repeats} rounds, the "
          "operators interleaved in each round so that both K products see the same load):")
    ops = [("P", lin.P, "-"), ("P*", lin.P.H, "-"), ("K", lin_old.K, lin_old.k_route), ("K", lin.K, lin.k_route),
           ("NTK", lin_old.NTK, lin_old.k_route), ("NTK", lin.NTK, lin.k_route)]
    for _, op, _ in ops:
        op.matmat(X)                                   # warm: compiled kernels, scratch, site arrays
    best = [np.inf] * len(ops)
    for _ in range(max(1, args.product_repeats)):
        for i, (_, op, _) in enumerate(ops):
            best[i] = min(best[i], timed(lambda: op.matmat(X))[1])
    for (name, _, route), t in zip(ops, best):
        print(f"  {name:<4} {route:<10} {1e3 * t / b:8.1f} ms")
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small network (H=32, B=4, T=30)")
    ap.add_argument("--cell", choices=("gru", "elman", "lstm"), default="gru")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--time", type=int, default=None)
    ap.add_argument("--input", type=int, default=3)
    ap.add_argument("--k", type=int, default=20, help="number of top eigenvalues")
    ap.add_argument("--probes", type=int, default=100, help="Hutch++ products")
    ap.add_argument("--dim-probes", type=int, default=30,
                    help="Hutchinson probes per axis for the old effective dimensions (the report's n_probes)")
    ap.add_argument("--tol", type=float, default=1e-10, help="Lanczos relative residual tolerance")
    ap.add_argument("--workers", type=int, default=1, help="threads for the per-unit block work")
    ap.add_argument("--skip-k-lanczos", action="store_true", help="skip the old block Lanczos on K")
    ap.add_argument("--only-ntk", action="store_true", help="only the NTK rows")
    ap.add_argument("--ntk-block-sizes", type=int, nargs="*", default=[],
                    help="extra new-route NTK rows with these Lanczos block sizes")
    ap.add_argument("--product-repeats", type=int, default=3, help="runs of each per-column product timing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    H = args.hidden or (32 if args.small else 256)
    B = args.batch or (4 if args.small else 20)
    T = args.time or (30 if args.small else 90)
    N = args.input
    Cell = {"gru": kpref.GRU, "elman": kpref.Elman, "lstm": kpref.LSTM}[args.cell]
    cell = Cell(input_size=N, hidden_size=H)
    rng = np.random.default_rng(args.seed)
    theta, x = cell.init_params(rng), rng.standard_normal((B, T, N))
    lin, t_lin = timed(lambda: kpref.linearize(cell, theta, x))
    lin_old = kpref.linearize(cell, theta, x, k_route="jacobian")     # the K product before issue 17
    n, k = lin.size, args.k
    print(f"{Cell.__name__} H={H} B={B} T={T} N={N}: trajectory space n={n}, p={cell.num_params} "
          f"(float64, {os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"workers={args.workers}; load average {os.getloadavg()[0]:.1f} at start)")
    print(f"linearize: {t_lin:.2f} s; K product: old rows {lin_old.k_route!r}, new rows {lin.k_route!r}")
    print()
    _product_timings(lin, lin_old, args, n)
    head = f"{'route':<4} {'task':<54} {'K product':<10} {'time':>9} {'columns':>8}  result"
    print()
    print(head)
    print("-" * (len(head) + 50))
    times = {}

    def row(route, task, seconds, columns, result, key=None, product="-"):
        if key:
            times[key] = seconds
        print(f"{route:<4} {task:<54} {product:<10} {seconds:8.2f}s {columns:>8}  {result}", flush=True)

    def lanczos(op, **kw):
        c = CountingOperator(op)
        res, t = timed(lambda: analysis.block_lanczos(c.matmat, n, k, "LA", tol=args.tol, rng=args.seed, **kw))
        return res, t, c.columns

    old_kw = _old_settings(k)
    top = None
    if not args.only_ntk:
        # ---- new: K through its blocks
        kb, t = timed(lambda: lin.K_blocks())
        kb.workers = args.workers
        row("new", f"K blocks: build ({kb.units} × {kb.form} {kb.block_size})", t, 0, repr(kb), "build", "blocks")
        lam, t = timed(lambda: kb.eigenvalues())
        top = lam[:k]
        row("new", "K exact full spectrum (blocks)", t, 0,
            f"{lam.size} eigenvalues, λ1={lam[0]:.6e}, λ{k}={lam[k - 1]:.6e}, rank "
            f"{int(np.sum(lam > 1e-12 * lam[0]))}", "spectrum", "blocks")
        cold = kpref.linearize(cell, theta, x)        # fresh caches: build + power sums, the public call

        def erank_cold():
            cold.K_blocks().workers = args.workers
            return analysis.effective_rank(cold.K)

        erank, t = timed(erank_cold)
        lam2 = lam ** 2
        row("new", "K exact effective rank (cold: build + power sums)", t, 0,
            f"{erank:.4f}; from the spectrum {lam2.sum() ** 2 / np.sum(lam2 * lam2):.4f}", "erank", "blocks")
        dims, t = timed(lambda: analysis.effective_dimensions(cold, operators=("K",))["K"])
        row("new", "K exact effective dimensions (blocks, 3 axes)", t, 0,
            ", ".join(f"{a} {v:.4f}" for a, v in dims.items()), "dims", "blocks")
        # ---- the report's randomized summaries of P at each checkpoint (Hutch++ / Hutchinson, --dim-probes)
        c = CountingOperator(lin.P)
        (pe, pe_err), t = timed(lambda: analysis.effective_rank(c, "hutch++", args.dim_probes, args.seed,
                                                                return_error=True))
        row("new", f"P effective rank (Hutch++ {args.dim_probes}, the report's)", t, c.columns,
            f"{pe:.4f} ± {pe_err:.4f}", "p_erank")
        pdims, t = timed(lambda: analysis.effective_dimensions(lin, operators=("P",), method="hutchinson",
                                                               n_probes=args.dim_probes, rng=args.seed)["P"])
        row("new", f"P effective dimensions (Hutchinson {args.dim_probes}, 3 axes)", t, args.dim_probes,
            ", ".join(f"{a} {v:.3f}" for a, v in pdims.items()), "p_dims")
        # ---- old: Hutch++, Hutchinson and block Lanczos on the matrix-free K
        hd, t = timed(lambda: analysis.effective_dimensions(lin_old, operators=("K",), method="hutchinson",
                                                            n_probes=args.dim_probes, rng=args.seed,
                                                            return_error=True)["K"])
        row("old", f"K effective dimensions (Hutchinson {args.dim_probes}, 3 axes)", t, args.dim_probes,
            ", ".join(f"{a} {v:.3f} ± {e:.3f} ({abs(v - dims[a]) / e:.1f} bars)" for a, (v, e) in hd.items()),
            "dims_old", lin_old.k_route)
        c = CountingOperator(lin_old.K)
        (est, err), t = timed(lambda: analysis.effective_rank(c, "hutch++", args.probes, args.seed,
                                                              return_error=True))
        row("old", f"K effective rank (Hutch++ {args.probes})", t, c.columns,
            f"{est:.4f} ± {err:.4f}; exact is {abs(est - erank) / err:.2f} error bars away", "hutch",
            lin_old.k_route)
        if not args.skip_k_lanczos:
            res, t, cols = lanczos(lin_old.K, **old_kw)
            row("old", f"K top-{k} eig (block Lanczos, cgs2, b={old_kw['block_size']})", t, cols,
                f"λ1={res.values[0]:.6e}; max |Δλ|/λ1 vs blocks {np.abs(res.values - top).max() / top[0]:.1e}",
                "k_lanczos", lin_old.k_route)
    # ---- NTK: old settings, new defaults, optional block sizes
    res_old, t, cols = lanczos(lin_old.NTK, **old_kw)
    ref = res_old.values
    row("old", f"NTK top-{k} eig (cgs2 + SVD, b={old_kw['block_size']}, no locking)", t, cols,
        f"λ1={ref[0]:.6e}, λ{k}={ref[-1]:.6e}, {res_old.n_restarts} restarts", "ntk_old", lin_old.k_route)
    res, t, cols = lanczos(lin.NTK)
    row("new", f"NTK top-{k} eig (defaults: local+1, CholQR2, locking)", t, cols,
        f"max |Δλ|/λ1 vs old {np.abs(res.values - ref).max() / ref[0]:.1e}; {res.n_restarts} restarts, "
        f"{res.n_locked} locked; {t / times['ntk_old']:.2f} of old", "ntk_new", lin.k_route)
    for bs in args.ntk_block_sizes:
        res, t, cols = lanczos(lin.NTK, block_size=bs)
        row("new", f"NTK top-{k} eig (local+1, locking, b={bs})", t, cols,
            f"max |Δλ|/λ1 vs old {np.abs(res.values - ref).max() / ref[0]:.1e}; {res.n_restarts} restarts, "
            f"{res.n_locked} locked; {t / times['ntk_old']:.2f} of old", product=lin.k_route)
    print()
    if "erank" in times:
        print(f"K effective rank: exact (cold) {times['erank']:.2f} s against Hutch++ {times['hutch']:.2f} s")
    if "dims" in times:
        print(f"K effective dimensions: exact {times['dims']:.2f} s against Hutchinson {times['dims_old']:.2f} s")
    if "k_lanczos" in times:
        print(f"K top-{k}: full spectrum {times['spectrum']:.2f} s against Lanczos top-{k} {times['k_lanczos']:.2f} s")
    print(f"NTK top-{k}: new/old time {times['ntk_new'] / times['ntk_old']:.2f}")
    print("(columns: operator columns applied; every route timed in this one process, one after another)")


if __name__ == "__main__":
    main()

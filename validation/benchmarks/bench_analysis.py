"""Benchmark of kpref.analysis at the KPFlow paper's size (issue 5, Speed).

Run (full, paper size: GRU H=256, B=20, T=90, N=3):

    python validation/benchmarks/bench_analysis.py

Smoke test (small network, every estimate also compared with its exact value):

    python validation/benchmarks/bench_analysis.py --quick

Prints one table: the top-k eigenvalues of K and of the NTK by thick-restart
block Lanczos (kpref.analysis.spectrum, method='lanczos'; optionally ARPACK
with --arpack), the n_probes Hutch++ effective rank of K, P and the NTK, and
the Hutchinson effective dimensions per axis. For each: wall time, the number
of operator columns pushed through the operator (matmat/rmatmat columns: one
column of K is one sweep of J_thetaᵀ and J_theta over the trajectory), and
the result. Speed is measured here, never in timed tests.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.sparse.linalg import LinearOperator

import kpref
from kpref import analysis


class CountingOperator(LinearOperator):
    """Wraps a LinearOperator and counts the columns of its block products (both directions)."""

    def __init__(self, op):
        self.op = op
        self.columns = 0
        super().__init__(dtype=np.float64, shape=op.shape)

    def _matmat(self, X):
        self.columns += X.shape[1]
        return self.op.matmat(X)

    def _rmatmat(self, X):
        self.columns += X.shape[1]
        return self.op.rmatmat(X)

    def _matvec(self, x):
        return self._matmat(x.reshape(-1, 1))[:, 0]

    def _rmatvec(self, x):
        return self._rmatmat(x.reshape(-1, 1))[:, 0]


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small network (H=16, B=4, T=20), exact comparisons")
    ap.add_argument("--cell", choices=("gru", "elman"), default="gru")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--time", type=int, default=None)
    ap.add_argument("--input", type=int, default=3)
    ap.add_argument("--k", type=int, default=20, help="number of top eigenvalues")
    ap.add_argument("--probes", type=int, default=100, help="Hutch++ / Hutchinson products")
    ap.add_argument("--tol", type=float, default=1e-10, help="Lanczos relative residual tolerance")
    ap.add_argument("--arpack", action="store_true", help="also time ARPACK (eigsh) for the top-k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    H = args.hidden or (16 if args.quick else 256)
    B = args.batch or (4 if args.quick else 20)
    T = args.time or (20 if args.quick else 90)
    N = args.input
    Cell = {"gru": kpref.GRU, "elman": kpref.Elman}[args.cell]
    cell = Cell(input_size=N, hidden_size=H)
    rng = np.random.default_rng(args.seed)
    theta = cell.init_params(rng)
    x = rng.standard_normal((B, T, N))
    lin, t_lin = timed(lambda: kpref.linearize(cell, theta, x))
    n = lin.size
    exact_ok = args.quick and n <= 4000
    ops = {name: getattr(lin, name) for name in ("K", "P", "NTK")}
    dense = {name: kpref.todense(op) for name, op in ops.items()} if exact_ok else None

    print(f"{Cell.__name__} H={H} B={B} T={T} N={N}: trajectory space n={n}, p={cell.num_params} parameters "
          f"(float64, strategy={lin.strategy}, {os.cpu_count()} cores)")
    print(f"linearize: {t_lin:.2f} s")
    for name in ("K", "NTK"):
        _, t1 = timed(lambda: ops[name].matmat(np.random.default_rng(1).standard_normal((n, args.k))))
        print(f"{name} matmat with {args.k} vectors: {t1:.2f} s")
    print()
    head = f"{'task':<34} {'time':>9} {'columns':>8}  result"
    print(head + ("  | exact, error" if exact_ok else ""))
    print("-" * (len(head) + (30 if exact_ok else 20)))

    def row(task, seconds, columns, result, exact=None):
        line = f"{task:<34} {seconds:8.2f}s {columns:>8}  {result}"
        if exact is not None:
            line += f"  | {exact}"
        print(line, flush=True)

    for name in ("K", "NTK"):
        methods = ("lanczos", "arpack") if args.arpack else ("lanczos",)
        for method in methods:
            c = CountingOperator(ops[name])
            lam, t = timed(lambda: analysis.spectrum(c, args.k, method=method, tol=args.tol, rng=args.seed))
            res = f"λ1={lam[0]:.6e}, λ{args.k}={lam[-1]:.6e}"
            ex = None
            if exact_ok:
                ref = np.linalg.eigvalsh(0.5 * (dense[name] + dense[name].T))[::-1][:args.k]
                ex = f"max |Δλ|/λ1 = {np.abs(lam - ref).max() / ref[0]:.1e}"
            row(f"top-{args.k} eig {name} ({method})", t, c.columns, res, ex)

    for name in ("K", "P", "NTK"):
        c = CountingOperator(ops[name])
        (est, err), t = timed(lambda: analysis.effective_rank(c, "hutch++", args.probes, args.seed,
                                                              return_error=True))
        ex = None
        if exact_ok:
            s2 = np.linalg.svd(dense[name], compute_uv=False) ** 2
            exact = s2.sum() ** 2 / np.sum(s2 * s2)
            ex = f"{exact:.3f}, error {abs(est - exact) / err:.1f} x est. error"
        row(f"eff. rank {name} (Hutch++ {args.probes})", t, c.columns, f"{est:.3f} ± {err:.3f}", ex)

    for name in ("K", "P", "NTK"):
        dims, t = timed(lambda: analysis.effective_dimensions(lin, operators=(name,), method="hutchinson",
                                                              n_probes=args.probes, rng=args.seed,
                                                              return_error=True)[name])
        res = ", ".join(f"{a} {v:.2f}±{e:.2f}" for a, (v, e) in dims.items())
        ex = None
        if exact_ok:
            exd = {a: analysis.effective_dimension(dense[name], lin.shape, a) for a in dims}
            ex = ", ".join(f"{a} {v:.2f}" for a, v in exd.items())
        row(f"eff. dims {name} (Hutchinson {args.probes})", t, args.probes, res, ex)
    print("\n(columns: operator columns applied, matmat and rmatmat; eff. dims: one set of probes for all axes)")

if __name__ == "__main__":
    main()

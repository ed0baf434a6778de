"""Benchmark of kpref's operators at the KPFlow paper's size (issue: operators, Speed).

Run:  python validation/benchmarks/bench_operators.py [--hidden 256 --batch 20 --time 90 --input 3]

Prints one table: linearize, P / P* / K / NTK products (best of several),
a 32-vector P matmat against the machine's measured float64 GEMM rate, the
first call of a fresh process with an empty and with a warm numba cache, and
— when torch is installed — a torch float32 baseline built the way the
reference KPFlow package does it (per-step Jacobians A_t materialized by
autograd, P and P* as batched mat-vec sweeps, K by autograd vjp/jvp), with
the ratios. Speed is measured here, never in timed tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kpref


def best_of(f, repeat=5, number=1):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            f()
        times.append((time.perf_counter() - t) / number)
    return min(times)


def gemm_rate(n=1024):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    a @ b
    t = best_of(lambda: a @ b, repeat=5)
    return 2 * n**3 / t


_FRESH = r"""
import time, numpy as np
t0 = time.perf_counter()
import kpref
cell = kpref.GRU({N}, {H})
th = cell.init_params(rng=0)
x = np.random.default_rng(1).standard_normal(({B}, {T}, {N}))
lin = kpref.linearize(cell, th, x, strategy="matrix_free")
v = np.random.default_rng(2).standard_normal(lin.size)
lin.P.matvec(v); lin.P.rmatvec(v); lin.K.matvec(v); lin.grad(v.reshape(lin.shape))
print(time.perf_counter() - t0)
"""


def fresh_process(args, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    code = _FRESH.format(N=args.input, H=args.hidden, B=args.batch, T=args.time)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def torch_baseline(cell, theta, x, repeat):
    try:
        import torch
        from torch.func import functional_call, jacrev, jvp, vjp, vmap
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    B, T, N = x.shape
    H = cell.hidden_size
    tc = torch.nn.GRUCell(N, H).float()
    params = {k: torch.from_numpy(v.astype(np.float32)) for k, v in cell.unflatten(theta).items()}
    xt = torch.from_numpy(x.astype(np.float32))

    def step(p, h, xx):
        return functional_call(tc, p, (xx, h))

    def build():
        with torch.no_grad():
            h = torch.zeros(B, H)
            hs = []
            for t in range(T):
                hs.append(h)
                h = step(params, h, xt[:, t])
            hprev = torch.stack(hs, 1)  # (B, T, H)
        jac = vmap(jacrev(lambda h, xx: step(params, h[None], xx[None])[0]))
        A = jac(hprev.reshape(B * T, H), xt.reshape(B * T, N)).reshape(B, T, H, H)
        return hprev, A

    t_build = best_of(build, repeat=max(1, repeat // 2))
    hprev, A = build()
    q = torch.randn(B, T, H)

    def P(q):
        out = torch.empty_like(q)
        out[:, 0] = q[:, 0]
        for t in range(1, T):
            out[:, t] = torch.bmm(A[:, t], out[:, t - 1, :, None])[..., 0] + q[:, t]
        return out

    def Pstar(w):
        out = torch.empty_like(w)
        out[:, T - 1] = w[:, T - 1]
        for t in range(T - 2, -1, -1):
            out[:, t] = w[:, t] + torch.bmm(A[:, t + 1].transpose(1, 2), out[:, t + 1, :, None])[..., 0]
        return out

    hr, xr = hprev.reshape(B * T, H), xt.reshape(B * T, N)
    f = lambda p: step(p, hr, xr)

    def K(w):
        _, pull = vjp(f, params)
        (g,) = pull(w.reshape(B * T, H))
        return jvp(f, (params,), (g,))[1]

    with torch.no_grad():
        return {
            "build": t_build,
            "P": best_of(lambda: P(q), repeat),
            "P*": best_of(lambda: Pstar(q), repeat),
            "K": best_of(lambda: K(q), repeat),
        }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--time", type=int, default=90)
    ap.add_argument("--input", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-fresh", action="store_true", help="skip the fresh-process timings")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    args = ap.parse_args(argv)
    B, T, N, H = args.batch, args.time, args.input, args.hidden
    cell = kpref.GRU(N, H)
    theta = cell.init_params(rng=0)
    x = np.random.default_rng(1).standard_normal((B, T, N))
    kpref.linearize(cell, theta, x, strategy="matrix_free").P.matvec(np.zeros(B * T * H))  # compile
    rows = []
    t_lin = best_of(lambda: kpref.linearize(cell, theta, x, strategy="matrix_free"), args.repeat)
    rows.append(("linearize (simulate + step cache)", t_lin, 0.1))
    lin = kpref.linearize(cell, theta, x, strategy="matrix_free")
    v = np.random.default_rng(2).standard_normal(lin.size)
    res = {}
    for name, f in (("P", lin.P.matvec), ("P*", lin.P.rmatvec), ("K", lin.K.matvec), ("NTK", lin.NTK.matvec)):
        f(v)
        res[name] = best_of(lambda: f(v), args.repeat)
        rows.append((f"{name} product (1 vector)", res[name], 0.040 if name != "NTK" else None))
    e = v.reshape(lin.shape)
    rows.append(("grad = J^T P* e", best_of(lambda: lin.grad(e), args.repeat), None))
    k = 32
    X = np.random.default_rng(3).standard_normal((lin.size, k))
    lin.P.matmat(X)
    t_mm = best_of(lambda: lin.P.matmat(X), max(3, args.repeat // 2))
    flops = (T - 1) * 2 * (k * B) * H * (3 * H)  # the GEMM with weight_hh at every step
    rate = gemm_rate()
    rows.append((f"P matmat, {k} vectors", t_mm, None))
    print(f"GRU H={H} B={B} T={T} N={N}  (float64, strategy=matrix_free, {os.cpu_count()} cores)")
    print(f"{'measurement':<40} {'time':>12} {'target':>10}  verdict")
    print("-" * 74)
    for name, t, target in rows:
        verdict = "" if target is None else ("ok" if t <= target else "SLOW")
        tgt = "" if target is None else f"{target * 1e3:.0f} ms"
        print(f"{name:<40} {t * 1e3:9.2f} ms {tgt:>10}  {verdict}")
    frac = flops / t_mm / rate
    print(f"{'P matmat GEMM rate':<40} {flops / t_mm / 1e9:8.1f} GF/s  (machine float64 GEMM {rate / 1e9:.1f} GF/s:"
          f" {100 * frac:.0f}%, target >= 50%  {'ok' if frac >= 0.5 else 'SLOW'})")
    if not args.no_fresh:
        with tempfile.TemporaryDirectory() as cache:
            cold = fresh_process(args, cache)
            warm = fresh_process(args, cache)
        print(f"{'fresh process, empty numba cache':<40} {cold:9.2f} s  {'20 s':>9}  {'ok' if cold <= 20 else 'SLOW'}")
        print(f"{'fresh process, warm numba cache':<40} {warm:9.2f} s  {'2 s':>9}  {'ok' if warm <= 2 else 'SLOW'}")
    if not args.no_torch:
        base = torch_baseline(cell, theta, x, args.repeat)
        if base is None:
            print("torch not installed: no float32 baseline")
        else:
            print("-" * 74)
            print("torch float32 baseline (materialized per-step Jacobians, autograd K)")
            print(f"{'build Jacobians':<40} {base['build'] * 1e3:9.2f} ms   ratio torch/kpref(linearize) "
                  f"{base['build'] / t_lin:6.1f}x")
            for name in ("P", "P*", "K"):
                print(f"{name + ' product':<40} {base[name] * 1e3:9.2f} ms   ratio torch/kpref "
                      f"{base[name] / res[name]:6.2f}x")


if __name__ == "__main__":
    main()

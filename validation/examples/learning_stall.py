"""Why paper-size memory-pro runs end at the batch-mean loss (issue 16, "runs that learn").

Trains one cell per setting with kpref.train (full batch, Adam) on memory-pro and prints the final loss
against the trivial (batch-mean) loss. Settings vary one factor at a time from the report's paper defaults
(kpref layout 10/20/30/30 with 5 grace steps, Gaussian g, lr 1e-3, 1000 steps) at a reduced hidden size.

    nice -n 10 python validation/examples/learning_stall.py --hidden 64 --steps 1000
"""

import argparse
import itertools
import time

import numpy as np

import kpref
from kpref import tasks
from kpref.experiments import sweep as sw


def run(cell_name, g, lr, steps, H, B, layout, convention, seed=0):
    kw = dict(tasks.KPFLOW_MEMORY_PRO, noise_std=0.0) if layout == "kpflow" else {}
    batch = tasks.memory_pro(B, np.random.default_rng([seed, 0]), **kw)
    cell = {"gru": kpref.GRU, "elman": kpref.Elman}[cell_name](3, H)
    theta = cell.init_params(np.random.default_rng([seed, 1]), g=g, g_convention=convention)
    t0 = time.perf_counter()
    res = kpref.train(cell, batch.x, batch.target, mask=batch.mask, theta=theta, rng=np.random.default_rng([seed, 2]),
                      steps=steps, learning_rate=lr, progress=False)
    triv = sw.trivial_loss(batch.target, batch.mask)
    L = res.losses
    marks = {k: float(L[k]) for k in (0, steps // 4, steps // 2, steps)}
    return triv, marks, time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--cells", default="gru,elman")
    p.add_argument("--g", default="0.5,1,2")
    p.add_argument("--lr", default="0.001,0.01")
    p.add_argument("--layout", default="kpref")
    p.add_argument("--convention", default="gaussian")
    a = p.parse_args()
    print(f"H={a.hidden} B={a.batch} steps={a.steps} layout={a.layout} g convention={a.convention}", flush=True)
    for cell, g, lr in itertools.product(a.cells.split(","), [float(v) for v in a.g.split(",")],
                                         [float(v) for v in a.lr.split(",")]):
        triv, marks, sec = run(cell, g, lr, a.steps, a.hidden, a.batch, a.layout, a.convention)
        path = " -> ".join(f"{v:.4g}@{k}" for k, v in marks.items())
        flag = "DID NOT LEARN" if marks[a.steps] >= 0.5 * triv else "learned"
        print(f"{cell:5s} g={g:<4g} lr={lr:<6g} trivial {triv:.4g}  loss {path}  {flag}  ({sec:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Block Lanczos ('local+1', basis stored as rows) at a dimension above one restart slice of columns.

Tolerance: a Ritz value with true residual r lies within r of an eigenvalue (A symmetric), and r is
required ≤ tol·max|θ| (tol = 1e-10, max|θ| = 1 here); the returned vectors are orthonormal to the
rounding of the two-pass orthogonalization and CholQR2 (O(ε·√n) per column; 1e-12 leaves a margin).
"""

import numpy as np

from kpref.analysis import block_lanczos


def test_restarts_above_one_slice_of_columns_keep_the_answer():
    n = 20_000                       # more than one slice (8192 columns) of the restart's rotation
    rng = np.random.default_rng(0)
    d = np.concatenate([[1.0, 0.9, 0.8, 0.7, 0.6, 0.55], np.sort(rng.uniform(0.0, 0.5, n - 6))[::-1]])

    def mm(X):
        return d[:, None] * X

    res = block_lanczos(mm, n, 4, "LA", block_size=2, max_basis=14, rng=1, tol=1e-10)
    assert res.n_restarts > 0
    assert np.all(np.abs(res.values - d[:4]) <= 1e-10 * 1.01)
    assert np.all(res.residual_norms <= 1e-10 * 1.01)
    true = np.linalg.norm(mm(res.vectors) - res.vectors * res.values, axis=0)
    assert np.all(true <= 1e-10 * 1.01)
    assert np.abs(res.vectors.T @ res.vectors - np.eye(4)).max() <= 1e-12

r"""Minibatch streams and the trivial loss of :func:`kpref.train`.

Minibatches
-----------
With ``train(..., batch_fn=f)``, update ``k`` (``k = 0, 1, …``) uses the batch
``f(rng_k, k)``, where ``rng_k = numpy.random.default_rng(SeedSequence(s,
spawn_key=(k,)))`` and ``s`` is the run's ``batch_seed``. The stream is a
pure function of ``(s, k)``: a resumed run draws exactly the batches of an
uninterrupted one, and no generator state needs to be saved. ``f`` must
depend on nothing else (no state of its own).

:func:`pool_batches` is the usual ``f``: a pool of (noisy) trials drawn once,
from which each step takes ``batch_size`` distinct trials uniformly at random
(``rng_k.choice(pool_size, batch_size, replace=False)``, rows in the order
drawn), as the KPFlow package trains on minibatches of 500 from 5000 noisy
trials.

Trivial loss
------------
The loss of the best predictor that ignores the input: the batch mean of the
targets at each time and output, ``ȳ[t, o] = Σ_b m[b,t,o] y[b,t,o] / Σ_b
m[b,t,o]`` (0 where ``Σ_b m = 0``; ``m = 1`` without mask), scored with the
same masked MSE (SPEC §4)::

    L_trivial = Σ_{b,t,o} m[b,t,o] (ȳ[t,o] − y[b,t,o])² / c,   c = B·T·O ('mean') or 1 ('sum')

A network whose loss does not fall well below ``L_trivial`` has learned at
most the mean target.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .._checks import as_real_array, check_choice, check_positive_int
from ..operators import check_mask, mask_weights

__all__ = ["PoolBatches", "pool_batches", "trivial_loss", "fingerprint"]


def trivial_loss(target, mask=None, reduction="mean"):
    """The loss of the batch-mean predictor of ``target`` (module Notes). ``target`` (B, T, O)."""
    target = as_real_array("target", target, (None, None, None), ("B", "T", "O"))
    B, T, O = target.shape
    mask = check_mask(mask, B, T, O)
    check_choice("reduction", reduction, ("mean", "sum"))
    m = mask_weights(mask, B, T, O)
    weight = m.sum(axis=0)
    mean = np.divide((m * target).sum(axis=0), weight, out=np.zeros((T, O)), where=weight > 0)
    diff = mean[None] - target
    c = float(B * T * O) if reduction == "mean" else 1.0
    return float(np.sum(m * diff * diff) / c)


def fingerprint(*arrays):
    """SHA-256 of arrays (shape and float64 bytes each; ``None`` allowed), as recorded in run configurations."""
    sha = hashlib.sha256()
    for a in arrays:
        if a is None:
            sha.update(b"none")
        else:
            sha.update(str(a.shape).encode())
            sha.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return sha.hexdigest()


class PoolBatches:
    """A ``batch_fn`` drawing ``batch_size`` distinct trials of a fixed pool per step (module Notes).

    Holds copies of the pool. Called as ``pool(rng, step)``, returns
    ``(x, target, mask)`` (``mask`` ``None`` when the pool has none).
    ``describe()`` is recorded in the run's configuration (sizes and the
    SHA-256 of the pool).
    """

    def __init__(self, x, target, mask=None, *, batch_size):
        x = as_real_array("x", x, (None, None, None), ("B", "T", "N"))
        B, T, _ = x.shape
        target = as_real_array("target", target, (B, T, None), ("B", "T", "O"))
        mask = check_mask(mask, B, T, target.shape[2])
        # copies: the pool is owned, never a view of the caller's arrays
        self.x, self.target = x.copy(), target.copy()
        self.mask = None if mask is None else mask.copy()
        self.batch_size = check_positive_int("batch_size", batch_size)
        if self.batch_size > B:
            raise ValueError(f"batch_size: expected at most the pool size B={B}, got {self.batch_size}")
        for a in (self.x, self.target, self.mask):
            if a is not None:
                a.flags.writeable = False
        self._sha = fingerprint(self.x, self.target, self.mask)

    @property
    def pool_size(self):
        return self.x.shape[0]

    def describe(self):
        return {"kind": "pool", "pool_size": self.pool_size, "batch_size": self.batch_size,
                "pool_sha256": self._sha}

    def __call__(self, rng, step):
        idx = rng.choice(self.pool_size, self.batch_size, replace=False)
        mask = None if self.mask is None else self.mask[idx]
        return self.x[idx], self.target[idx], mask

    def __repr__(self):
        return f"PoolBatches(pool_size={self.pool_size}, batch_size={self.batch_size})"


def pool_batches(x, target, mask=None, *, batch_size):
    """A :class:`PoolBatches` ``batch_fn`` for :func:`kpref.train` (module Notes)."""
    return PoolBatches(x, target, mask, batch_size=batch_size)

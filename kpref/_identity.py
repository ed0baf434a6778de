"""Pushing the identity through a linear map: the one home of identity streaming.

A dense matrix of a matrix-free operator is its product with the identity.
kpref forms it in four places (``todense``, the analyses' ``materialize``,
the dense state Jacobian ``Cell.state_jacobian``, the per-trial blocks of
``P`` in the experiments), all through these helpers:

* :func:`column_blocks` / :func:`identity_block` — the identity a block of
  columns at a time (memory of one block);
* :func:`identity_columns` — ``matmat`` applied to every block, written into
  one dense result;
* :func:`repeated_identity` — ``copies`` identities at once, for maps that act
  independently on rows (a cell's step) or on trials (``P``), so that one
  product yields every row's (trial's) dense block.
"""

from __future__ import annotations

import numpy as np

__all__ = ["column_blocks", "identity_block", "identity_columns", "repeated_identity"]


def column_blocks(n, block):
    """``(start, stop)`` pairs covering ``range(n)`` in blocks of ``block``."""
    for start in range(0, n, block):
        yield start, min(n, start + block)


def identity_block(n, start, stop):
    """Columns ``start:stop`` of the ``n × n`` identity."""
    E = np.zeros((n, stop - start))
    E[np.arange(start, stop), np.arange(stop - start)] = 1.0
    return E


def identity_columns(matmat, n_out, n_in, block, out=None):
    """The dense (n_out, n_in) matrix of the linear map ``matmat``, one block of identity columns at a time.

    ``matmat`` maps an (n_in, k) block to (n_out, k). ``out`` (optional) is
    the preallocated result; the caller has checked the memory.
    """
    out = np.empty((n_out, n_in)) if out is None else out
    for start, stop in column_blocks(n_in, block):
        out[:, start:stop] = matmat(identity_block(n_in, start, stop))
    return out


def repeated_identity(copies, n):
    """``E`` (copies, n, n) with ``E[c] = I_n``: the identity of every row (or trial) at once."""
    E = np.zeros((copies, n, n))
    idx = np.arange(n)
    E[:, idx, idx] = 1.0
    return E

r"""JAX implementations as kpref backends: every operator slot from a JAX step function.

:func:`backend` turns a step ``f(h, x, params) -> h'`` (rows batched: ``h``
(M, S), ``x`` (M, N), ``params`` a dict of arrays in your own names) into a
backend for :func:`kpref.testing.check_backend`, each slot by ``jax.jvp`` /
``jax.vjp`` of the step alone (the derivations: :mod:`kpref.interop._autodiff`)::

    backend = kpref.interop.jax.backend(gru_step, params, x, cell=kpref.GRU(3, 16), dtype="float32")
    report = kpref.testing.check_backend(backend, *backend.problem)

**float64.** JAX computes in float32 unless its ``jax_enable_x64`` switch is
on. ``dtype='float64'`` (the default) turns it on with
``jax.config.update("jax_enable_x64", True)``: a process-wide setting of JAX
that stays on for the rest of the session (arrays you create afterwards
default to 64 bits). ``dtype='float32'`` leaves the switch as it is and casts
every array to float32 explicitly. Needs the ``jax`` extra
(``pip install 'kpref[jax]'``; jax's CPU wheel).
"""

from __future__ import annotations

import numpy as np

from ._autodiff import AutodiffBackend
from ._names import describe_value, to_numpy

__all__ = ["backend", "JaxBackend"]


def _jax():
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("kpref.interop.jax needs jax: pip install 'kpref[jax]'") from exc
    return jax


def backend(step, params, x, h0=None, *, cell, dtype="float64"):
    """A :class:`JaxBackend` of every kpref operator for the JAX step ``step(h, x, params)``.

    Parameters
    ----------
    step : callable
        ``f(h, x, params) -> h'`` in ``jax.numpy``, rows batched.
    params : dict name → array
        Its parameters: kpref's (torch's) names, module prefixes, ``_l0`` and
        extra entries (a readout, set aside) accepted (see
        :func:`kpref.interop.torch.match_names`).
    x : (B, T, N) array
    h0 : (B, S) array, optional (zeros)
    cell : kpref cell
        The kpref cell the step implements.
    dtype : {'float64', 'float32'}
        The backend's precision (float64 turns on ``jax_enable_x64``; see the
        module notes).

    Returns
    -------
    JaxBackend
        With ``backend.problem == (cell, theta, x, h0)`` in float64.
    """
    if not callable(step):
        raise TypeError(f"step: expected a JAX step function f(h, x, params), got {describe_value(step)}")
    if not hasattr(params, "keys"):
        raise TypeError(f"params: expected a dict name -> array, got {describe_value(params)}")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype: expected 'float64' or 'float32', got {dtype!r}")
    return JaxBackend(step, cell, params, x, h0, dtype)


class JaxBackend(AutodiffBackend):
    """Every operator slot of :func:`kpref.testing.check_backend` for a JAX step (see :func:`backend`)."""

    framework = "jax"

    def __init__(self, step, cell, params, x, h0, dtype):
        jax = _jax()
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self._jnp_dtype = jax.numpy.dtype(dtype)
        named = {k: self._array(np.asarray(to_numpy(v), dtype=np.float64)) for k, v in params.items()}
        # jit the step: jvp/vjp trace through it, and each call is one compiled kernel instead of op-by-op
        # dispatch (kpref's checks call it thousands of times)
        self._cache = {}
        self._setup(jax.jit(step), cell, named, x, h0, dtype)

    def _compiled(self, kind, f):
        """One jitted jvp/vjp per map (traced once per shape, then reused by every call)."""
        key = (kind, f.__name__)
        if key not in self._cache:
            jax = _jax()
            if kind == "jvp":
                self._cache[key] = jax.jit(lambda p, d, *a: jax.jvp(lambda p_: f(p_, *a), (p,), (d,))[1])
            else:
                self._cache[key] = jax.jit(lambda p, w, *a: jax.vjp(lambda p_: f(p_, *a), p)[1](w)[0])
        return self._cache[key]

    def _trajectory(self, params, q):
        """``h_t = F(h_{t-1}, x_t) + q_t`` by ``jax.lax.scan`` (one compiled step, not T unrolled ones)."""
        jax = _jax()

        def body(h, xq):
            h = self._step_fn(h, xq[0], params) + xq[1]
            return h, h
        _, hs = jax.lax.scan(body, self._h0, (self._x.transpose(1, 0, 2), q.transpose(1, 0, 2)))
        return hs.transpose(1, 0, 2)

    def _jvp(self, f, primal, tangent, *args):
        return self._compiled("jvp", f)(primal, tangent, *args)

    def _vjp(self, f, primal, cotangent, *args):
        return self._compiled("vjp", f)(primal, cotangent, *args)

    def _array(self, a):
        return _jax().numpy.asarray(np.asarray(a, dtype=np.float64), dtype=self._jnp_dtype)

    def _stack(self, arrays, axis):
        return _jax().numpy.stack(arrays, axis=axis)

    def _concat(self, arrays, axis):
        return _jax().numpy.concatenate(arrays, axis=axis)

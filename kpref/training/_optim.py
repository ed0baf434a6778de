r"""Optimizers of :func:`kpref.train`: objects with ``step``, ``state_dict`` and ``load_state_dict``.

Every optimizer updates one flat float64 parameter vector ``φ`` (in
:func:`kpref.train`, ``φ = [θ, vec(W_out), b_out]``, C order) from its
gradient ``g = ∇L(φ)``, with ``k = 1, 2, …`` the number of the update, and
follows ``torch.optim`` (no weight decay):

* :class:`GD`, gradient descent: ``φ ← φ − η g``.
* :class:`SGD`, ``torch.optim.SGD`` with momentum ``μ``, dampening ``τ`` and
  optionally Nesterov::

      b₁ = g₁,   b_k = μ b_{k−1} + (1 − τ) g_k   (k > 1)
      d_k = g_k + μ b_k  (nesterov)   or   d_k = b_k
      φ ← φ − η d_k

  With ``μ = 0`` it is :class:`GD`, bit for bit.
* :class:`Adam`, ``torch.optim.Adam`` (Kingma & Ba 2015; bias corrections
  applied to the step size and to ``√v``; no amsgrad)::

      m_k = β₁ m_{k−1} + (1 − β₁) g_k,       m₀ = 0
      v_k = β₂ v_{k−1} + (1 − β₂) g_k ⊙ g_k, v₀ = 0
      φ ← φ − (η / (1 − β₁ᵏ)) · m_k / (√v_k / √(1 − β₂ᵏ) + ε)

:func:`clip_grad_norm` is ``torch.nn.utils.clip_grad_norm_`` (2-norm) on a
list of gradient blocks.

``step(params, grad)`` returns the new parameters as a new array (the
argument is not modified). ``state_dict()`` returns copies of the state
arrays, always with ``count`` (the number of updates taken, ``k``);
``load_state_dict(state)`` checks every entry (keys, shapes, finiteness,
``v ≥ 0``, an SGD buffer that is zero before the first update) and refuses an
impossible state with a ``ValueError`` naming it.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import DEFAULT_MEMORY_LIMIT, as_real_array, check_bool, check_positive_float, check_positive_int

__all__ = ["Optimizer", "GD", "SGD", "Adam", "clip_grad_norm", "make_optimizer", "adam_update"]


def _unit_interval(name, value, *, closed_top=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number in [0, 1), got {value!r} ({type(value).__name__})")
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0
    if not ok:
        raise ValueError(f"{name}: expected a number in [0, 1{']' if closed_top else ')'}, got {value!r}")
    return value


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
    return [_unit_interval(f"betas[{i}]", b) for i, b in enumerate(betas)]


class Optimizer:
    """Base class: a named update rule on a flat parameter vector of ``size`` entries."""

    name = "optimizer"
    _state_keys: tuple = ()

    def __init__(self, size, learning_rate):
        self.size = check_positive_int("size", size)
        if 8 * 2 * self.size > DEFAULT_MEMORY_LIMIT:  # at most two state vectors
            raise ValueError(f"size: expected at most {DEFAULT_MEMORY_LIMIT // 16} parameters (the optimizer state "
                             f"must fit in {DEFAULT_MEMORY_LIMIT / 1024**3:.0f} GiB), got {self.size}")
        self.learning_rate = check_positive_float("learning_rate", learning_rate)
        self.count = 0

    def hyperparameters(self):
        """The JSON-ready hyperparameters (recorded in a run's configuration)."""
        return {"learning_rate": self.learning_rate}

    def _check(self, params, grad):
        if not (isinstance(params, np.ndarray) and params.dtype == np.float64 and params.shape == (self.size,)):
            raise ValueError(f"params: expected a float64 array of shape ({self.size},), got {np.shape(params)}")
        if not (isinstance(grad, np.ndarray) and grad.dtype == np.float64 and grad.shape == (self.size,)):
            raise ValueError(f"grad: expected a float64 array of shape ({self.size},), got {np.shape(grad)}")

    def step(self, params, grad):
        """Return the parameters after one update (a new array)."""
        raise NotImplementedError

    def _arrays(self):
        return {}

    def state_dict(self):
        """Copies of the state: ``count`` (0-d int64) and the optimizer's arrays."""
        out = {k: v.copy() for k, v in self._arrays().items()}
        out["count"] = np.array(self.count, dtype=np.int64)
        return out

    def load_state_dict(self, state, *, name="state"):
        """Set the state from :meth:`state_dict` output, after checking it (``name`` in messages)."""
        if not isinstance(state, dict):
            raise TypeError(f"{name}: expected a dict of arrays, got {type(state).__name__}")
        want = set(self._state_keys) | {"count"}
        if set(state) != want:
            raise ValueError(f"{name}: expected the {self.name} state keys {sorted(want)}, got {sorted(state)}")
        count = np.asarray(state["count"])
        if count.shape != () or count.dtype.kind not in "iu" or int(count) < 0:
            raise ValueError(f"{name}['count']: expected a non-negative integer, got {state['count']!r}")
        arrays = {}
        for key in self._state_keys:
            try:
                arrays[key] = as_real_array(f"{name}[{key!r}]", state[key], (self.size,), ("size",)).copy()
            except TypeError as exc:
                raise ValueError(str(exc)) from None
        self._validate(arrays, int(count), name)
        self.count = int(count)
        self._set(arrays)

    def _validate(self, arrays, count, name):
        pass

    def _set(self, arrays):
        pass


class SGD(Optimizer):
    """``torch.optim.SGD`` without weight decay: momentum ``μ``, dampening ``τ``, Nesterov (module Notes)."""

    name = "sgd"
    _state_keys = ("momentum_buffer",)

    def __init__(self, size, learning_rate, momentum=0.0, dampening=0.0, nesterov=False):
        super().__init__(size, learning_rate)
        self.momentum = _unit_interval("momentum", momentum)
        self.dampening = _unit_interval("dampening", dampening, closed_top=True)
        self.nesterov = check_bool("nesterov", nesterov)
        if self.nesterov and (self.momentum == 0.0 or self.dampening != 0.0):
            raise ValueError(
                f"nesterov: expected momentum > 0 and dampening = 0 with nesterov=True (as torch), "
                f"got momentum={self.momentum}, dampening={self.dampening}")
        self.buffer = np.zeros(self.size)

    def hyperparameters(self):
        return {"learning_rate": self.learning_rate, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov}

    def step(self, params, grad):
        self._check(params, grad)
        if self.momentum == 0.0:
            direction = grad
        else:
            if self.count == 0:
                self.buffer = grad.copy()
            else:
                self.buffer = self.momentum * self.buffer + (1.0 - self.dampening) * grad
            direction = grad + self.momentum * self.buffer if self.nesterov else self.buffer
        self.count += 1
        return params - self.learning_rate * direction

    def _arrays(self):
        return {"momentum_buffer": self.buffer}

    def _validate(self, arrays, count, name):
        buf = arrays["momentum_buffer"]
        if (count == 0 or self.momentum == 0.0) and np.any(buf != 0.0):
            raise ValueError(
                f"{name}['momentum_buffer']: expected zeros (no momentum yet: count={count}, "
                f"momentum={self.momentum}), got a buffer of norm {np.linalg.norm(buf)!r}")

    def _set(self, arrays):
        self.buffer = arrays["momentum_buffer"]


class GD(SGD):
    """Gradient descent ``φ ← φ − η g`` (``SGD`` with no momentum)."""

    name = "gd"

    def __init__(self, size, learning_rate):
        super().__init__(size, learning_rate)

    def hyperparameters(self):
        return {"learning_rate": self.learning_rate}


class Adam(Optimizer):
    """``torch.optim.Adam`` without weight decay or amsgrad (module Notes)."""

    name = "adam"
    _state_keys = ("m", "v")

    def __init__(self, size, learning_rate=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(size, learning_rate)
        self.beta1, self.beta2 = _check_betas(betas)
        self.eps = check_positive_float("eps", eps)
        self.m = np.zeros(self.size)
        self.v = np.zeros(self.size)

    def hyperparameters(self):
        return {"learning_rate": self.learning_rate, "betas": [self.beta1, self.beta2], "eps": self.eps}

    def step(self, params, grad):
        self._check(params, grad)
        self.count += 1
        params, self.m, self.v = adam_update(params, grad, self.m, self.v, self.count, self.learning_rate,
                                             self.beta1, self.beta2, self.eps)
        return params

    def _arrays(self):
        return {"m": self.m, "v": self.v}

    def _validate(self, arrays, count, name):
        if np.any(arrays["v"] < 0.0):
            raise ValueError(f"{name}['v']: expected a second moment >= 0, got a negative entry")
        if count == 0 and (np.any(arrays["m"] != 0.0) or np.any(arrays["v"] != 0.0)):
            raise ValueError(f"{name}: expected zero moments before the first update (count=0)")

    def _set(self, arrays):
        self.m, self.v = arrays["m"], arrays["v"]


def adam_update(phi, grad, m, v, count, learning_rate, beta1, beta2, eps):
    """One Adam step (module Notes); ``count`` is the 1-based step number. Returns new ``(phi, m, v)``."""
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * (grad * grad)
    bias_correction1 = 1.0 - beta1 ** count
    bias_correction2 = 1.0 - beta2 ** count
    denom = np.sqrt(v) / np.sqrt(bias_correction2) + eps
    return phi - (learning_rate / bias_correction1) * (m / denom), m, v


def make_optimizer(name, size, hyperparameters):
    """The optimizer ``name`` ('gd', 'sgd', 'adam') of ``size`` parameters from its hyperparameters dict."""
    classes = {"gd": GD, "sgd": SGD, "adam": Adam}
    if name not in classes:
        raise ValueError(f"optimizer: expected one of {', '.join(map(repr, classes))}, got {name!r}")
    return classes[name](size, **hyperparameters)


def clip_grad_norm(blocks, max_norm):
    r"""Scale gradient blocks in place as ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (2-norm).

    ``n = ‖(‖g₁‖₂, …, ‖g_k‖₂)‖₂`` (the norm of the per-block norms, as torch
    stacks per-parameter norms), ``c = min(1, max_norm / (n + 1e-6))`` and
    every block ``g_i ← c g_i`` (torch multiplies even when ``c = 1``; that is
    exact). Returns ``n``, the norm before clipping.
    """
    max_norm = check_positive_float("max_norm", max_norm)
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise TypeError(f"blocks: expected a non-empty list of float64 arrays (scaled in place), got "
                        f"{type(blocks).__name__}")
    for i, b in enumerate(blocks):
        if not isinstance(b, np.ndarray) or b.dtype != np.float64:
            raise TypeError(f"blocks[{i}]: expected a float64 array (scaled in place), got "
                            f"{getattr(b, 'dtype', type(b).__name__)}")
        if not np.all(np.isfinite(b)):
            raise ValueError(f"blocks[{i}]: expected finite gradients, got non-finite entries")
    norms = np.array([np.linalg.norm(b.ravel()) for b in blocks])
    total = float(np.linalg.norm(norms))
    coef = min(max_norm / (total + 1e-6), 1.0)
    for b in blocks:
        b *= coef
    return total

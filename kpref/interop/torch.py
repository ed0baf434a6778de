r"""PyTorch implementations as kpref backends, and kpref parameters in torch's names.

:func:`backend` turns a ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``, a
single-layer ``torch.nn.RNN``/``GRU``/``LSTM``, or any torch step function
``f(h, x, params)`` into a backend for :func:`kpref.testing.check_backend`
with every operator slot, each computed by ``torch.func`` from the step alone
(nothing of kpref's hand-derived products)::

    backend = kpref.interop.torch.backend(torch.nn.GRUCell(3, 16), x)
    report = kpref.testing.check_backend(backend, *backend.problem)
    print(report)

Every slot comes from ``torch.func.jvp``/``vjp`` of the step alone (the
derivations: :mod:`kpref.interop._autodiff`). A sequence module is stepped one
time step at a time through its own ``forward`` (``batch_first`` either way),
so its own computation is what is checked. Parameters go in and out as dicts
in the module's own names and order; answers are tensors of the backend's
dtype (float32 or float64), which sets the budget.

``params_from_torch``/``params_to_torch``/``match_names`` need no torch.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np

from ._autodiff import AutodiffBackend
from ._names import describe_value, match_names, params_from_torch, params_to_torch, to_numpy

__all__ = ["backend", "TorchBackend", "params_from_torch", "params_to_torch", "match_names", "cell_of"]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("kpref.interop.torch.backend needs torch: pip install 'kpref[torch]'") from exc
    return torch


_CELLS = ("RNNCell", "GRUCell", "LSTMCell")
_SEQUENCES = ("RNN", "GRU", "LSTM")


def _kind(module):
    torch = _torch()
    for name in _CELLS + _SEQUENCES:
        if type(module) is getattr(torch.nn, name):
            return name
    return None


def cell_of(module):
    """The kpref cell equal to a ``torch.nn`` recurrent module (one layer, one direction)."""
    import kpref

    kind = _kind(module)
    if kind is None:
        raise TypeError(f"module: expected torch.nn.RNNCell/GRUCell/LSTMCell/RNN/GRU/LSTM, got {describe_value(module)}")
    if kind in _SEQUENCES:
        if module.num_layers != 1 or module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError(f"module: expected a single-layer, unidirectional {kind} without projection, got "
                             f"num_layers={module.num_layers}, bidirectional={module.bidirectional}; a kpref cell is "
                             "one layer in one direction")
    N, H, bias = module.input_size, module.hidden_size, module.bias
    if kind in ("RNNCell", "RNN"):
        return kpref.Elman(N, H, module.nonlinearity, bias=bias)
    if kind in ("GRUCell", "GRU"):
        return kpref.GRU(N, H, bias=bias)
    return kpref.LSTM(N, H, bias=bias)


@contextlib.contextmanager
def _without_mkldnn(torch):
    """torch's mkldnn kernels off (restored after); silences the TF32 notice that toggling them prints."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _module_step(module, kind, H):
    """``step(h, x, params)`` through the module's own forward (rows batched)."""
    from torch.func import functional_call

    torch = _torch()
    if kind in ("RNNCell", "GRUCell"):
        return lambda h, x, p: functional_call(module, p, (x, h))
    if kind == "LSTMCell":
        def lstm_cell(h, x, p):
            h1, c1 = functional_call(module, p, (x, (h[:, :H], h[:, H:])))
            return torch.cat([h1, c1], dim=1)
        return lstm_cell
    first = module.batch_first

    def seq_input(x):
        return x[:, None] if first else x[None]

    # torch's float32 CPU LSTM kernel (mkldnn) has no forward-mode AD: the plain kernel computes the same step
    if kind == "LSTM":
        def lstm(h, x, p):
            with _without_mkldnn(torch):
                _, (h1, c1) = functional_call(module, p, (seq_input(x), (h[None, :, :H], h[None, :, H:])))
            return torch.cat([h1[0], c1[0]], dim=1)
        return lstm

    def sequence(h, x, p):
        with _without_mkldnn(torch):
            return functional_call(module, p, (seq_input(x), h[None]))[1][0]
    return sequence


def backend(model, x, h0=None, *, params=None, cell=None, dtype=None):
    """A :class:`TorchBackend` of every kpref operator, by ``torch.func``.

    Parameters
    ----------
    model : torch.nn module or callable
        ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``, or a single-layer,
        unidirectional ``torch.nn.RNN``/``GRU``/``LSTM``; or a step function
        ``f(h, x, params) -> h'`` on rows (``h`` (M, S), ``x`` (M, N), ``params``
        a dict of tensors), with ``params`` and ``cell`` given.
    x : (B, T, N) array or tensor
    h0 : (B, S) array or tensor, optional (zeros)
    params : dict name → tensor, optional
        The step function's parameters (required for a step function; for a
        module, its own parameters are used). Torch names: module prefixes,
        ``_l0`` and extra entries (a readout) are accepted (see
        :func:`match_names`); extras get zero tangents and are set aside.
    cell : kpref cell, optional
        The kpref cell the step implements (required for a step function;
        derived from a module).
    dtype : torch.float32 or torch.float64, optional
        The precision of the backend (default: the module's or the params').
        A module is copied, never changed.

    Returns
    -------
    TorchBackend
        With ``backend.problem == (cell, theta, x, h0)`` in float64 (``theta``
        the exact float64 values of the backend's parameters) for ``check_backend``.
    """
    torch = _torch()
    if isinstance(model, torch.nn.Module):
        kind = _kind(model)
        derived = cell_of(model)
        if cell is not None and repr(cell) != repr(derived):
            raise ValueError(f"cell: the module is {derived!r}, got cell={cell!r}")
        if params is not None:
            raise ValueError("params: a module's own parameters are used; pass params only with a step function")
        module = copy.deepcopy(model)
        if dtype is not None:
            module = module.to(dtype)
        module.requires_grad_(False)
        named = {k: v.detach() for k, v in module.named_parameters()}
        return TorchBackend(_module_step(module, kind, model.hidden_size), derived, named, x, h0)
    if not callable(model):
        raise TypeError(f"model: expected a torch.nn recurrent module or a step function f(h, x, params), "
                        f"got {describe_value(model)}")
    if cell is None or params is None:
        raise ValueError("a step function f(h, x, params) needs params= (its parameters) and cell= (the kpref cell "
                         "it implements)")
    if not hasattr(params, "keys"):
        raise TypeError(f"params: expected a dict name -> tensor, got {describe_value(params)}")
    named = {}
    for k, v in params.items():
        t = v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(to_numpy(v)))
        named[k] = t.to(dtype) if dtype is not None else t
    return TorchBackend(model, cell, named, x, h0)


class TorchBackend(AutodiffBackend):
    """Every operator slot of :func:`kpref.testing.check_backend` for a torch step, by ``torch.func``.

    Build with :func:`backend`. Attributes: ``cell``, ``theta``, ``x``, ``h0``
    (the float64 problem; ``problem`` is the tuple), ``params`` (the backend's
    parameters in its own names and order), ``dtype`` (a torch dtype). The
    slots and their derivation: :mod:`kpref.interop._autodiff`.
    """

    framework = "torch"

    def __init__(self, step, cell, params, x, h0):
        torch = _torch()
        dtypes = {v.dtype for v in params.values()}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise TypeError(f"params: expected floating tensors of one dtype, got {sorted(map(str, dtypes))}")
        with torch.no_grad():
            self._setup(step, cell, params, x, h0, next(iter(dtypes)))

    def _jvp(self, f, primal, tangent, *args):
        from torch.func import jvp
        return jvp(lambda p: f(p, *args), (primal,), (tangent,))[1]

    def _vjp(self, f, primal, cotangent, *args):
        from torch.func import vjp
        return vjp(lambda p: f(p, *args), primal)[1](cotangent)[0]

    def _array(self, a):
        return _torch().as_tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype)

    def _stack(self, arrays, axis):
        return _torch().stack(arrays, dim=axis)

    def _concat(self, arrays, axis):
        return _torch().cat(arrays, dim=axis)

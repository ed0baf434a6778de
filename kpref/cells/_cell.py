"""The recurrent-cell contract: a step ``F`` and its four linear products.

A cell is one step ``h_t = F(h_{t-1}, x_t; θ)`` of SPEC §2, evaluated for
``M`` rows at once (rows are trials, or (trial, step) pairs: the
linearization of a whole trajectory is known once the trajectory is, so
``J_θ`` and ``J_θᵀ`` are one call with ``M = B·T`` rows).

Shapes used by every method (``S`` the state size, ``N`` the input size,
``p`` the number of parameters, ``k`` the number of vectors in a block)::

    theta : (p,)        flat float64 parameter vector (layout: ``param_shapes``)
    h     : (M, S)      state h_{t-1} of each row
    x     : (M, N)      input x_t of each row
    V, W  : (k, M, S)   blocks of k state-space vectors (vector index first)
    dtheta: (k, p)      blocks of k parameter-space vectors

Linearity, as Diffrax states it for its terms:

=================  =====================================  ==================
method             computes                               linear in
=================  =====================================  ==================
``state_jvp``      ``A V``,   ``A = ∂F/∂h``               ``V``
``state_vjp``      ``Aᵀ W``                               ``W``
``param_jvp``      ``G δθ``,  ``G = ∂F/∂θ`` (h fixed)     ``δθ``
``param_vjp``      ``Σ_rows Gᵀ W``                        ``W``
=================  =====================================  ==================

The adjoints are with respect to the plain Euclidean inner products of
SPEC §1. ``param_vjp`` sums over the rows (every row shares θ).

A subclass implements the private, unchecked hooks ``_step``, ``_prepare``,
``_state_jvp``, ``_state_vjp``, ``_param_jvp``, ``_param_vjp`` and
``_state_jacobian``; the public methods check their input and call them.
The operators of :mod:`kpref.operators._linearization` call the hooks directly, on
arrays they have already checked.
"""

from __future__ import annotations

import abc
import numbers
from collections import OrderedDict
from math import prod

import numpy as np

from .._checks import (
    as_generator,
    as_real_array,
    as_real_or_complex_array,
    check_bool,
    check_memory,
    check_positive_float,
    check_positive_int,
    check_size_memory,
    freeze_arrays,
    readonly_copy,
)

__all__ = ["Cell", "StepPoint", "TorchConventionCell"]


class _IndexValueError(IndexError, ValueError):
    """An index out of range: an ``IndexError`` (as before) that is also the ``ValueError`` of bad input."""


class StepPoint:
    """The linearization point of ``F`` at ``M`` rows.

    Holds ``theta`` (flat), ``h`` (M, S), ``x`` (M, N) and ``cache``, a tuple
    of arrays whose leading axis is the row axis, computed once by the cell's
    ``_prepare`` (gate activations and the like) and reused by every product.

    :meth:`scratch` hands kernels preallocated work arrays that live as long
    as the point: a product over all ``B·T`` rows needs (M, 3H)-sized
    temporaries, and allocating them afresh on every call costs as much as
    the product's GEMM (fresh pages are zero-filled by the kernel on first
    touch). Scratch contents are undefined between calls; kernels never
    return them.

    ``cell`` is the cell that built the point (:meth:`Cell.point` sets it);
    a cell's products refuse a point built by another cell (its cache means
    something else). A point built by hand has ``cell=None`` and is checked
    for its shapes only.
    """

    __slots__ = ("theta", "h", "x", "cache", "cell", "_scratch")

    def __init__(self, theta, h, x, cache, *, cell=None):
        self.theta = theta
        self.h = h
        self.x = x
        self.cache = cache
        self.cell = cell
        self._scratch = {}

    def scratch(self, name, shape):
        """A reusable float64 work array ``name`` of ``shape`` (contents undefined)."""
        shape = tuple(int(n) for n in shape)
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape:
            buf = self._scratch[name] = np.empty(shape)
        return buf

    @property
    def num_rows(self):
        return self.h.shape[0]

    def rows(self, start, stop):
        """The point restricted to rows ``start:stop`` (views, no copy)."""
        return StepPoint(
            self.theta,
            self.h[start:stop],
            self.x[start:stop],
            tuple(c[start:stop] for c in self.cache),
            cell=self.cell,
        )


class Cell(abc.ABC):
    """Abstract recurrent cell ``h' = F(h, x; θ)`` with hand-derived products.

    Attributes
    ----------
    input_size : int
        ``N``.
    hidden_size : int
        Units of the cell (for LSTM the state is ``[h, c]`` of size
        ``2 * hidden_size``).
    state_size : int
        ``S``, the length of the state vector that ``F`` maps.
    param_shapes : OrderedDict[str, tuple]
        Parameter names and shapes, in the order of the flat vector ``theta``.
    num_params : int
        ``p``.
    dt : float
        Time represented by one step: 1.0 for discrete cells, the integrator's
        step for ODE cells (Lyapunov exponents are reported per unit time).
    continuous : bool
        Whether the cell is an integrator step of an ODE.
    """

    dt = 1.0
    continuous = False
    #: Names of weight matrices whose H×H blocks are redrawn by ``init_params(g=...)``.
    recurrent_weights = ("weight_hh",)

    def __init__(self, input_size, hidden_size, state_size, param_shapes):
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.state_size = int(state_size)
        self.param_shapes = OrderedDict((k, tuple(int(d) for d in v)) for k, v in param_shapes.items())
        offsets = {}
        start = 0
        for name, shape in self.param_shapes.items():
            size = prod(shape)
            offsets[name] = (start, start + size)
            start += size
        self._offsets = offsets
        self.num_params = start
        # θ alone must fit (every product allocates several θ-sized and state-sized arrays)
        check_size_memory(f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                          f"state_size={self.state_size}", 8 * max(start, self.state_size, self.input_size),
                          what=f"the parameter vector of {type(self).__name__} (p={start})")

    # ------------------------------------------------------------------ layout
    @property
    def output_size(self):
        """Length of the readout state: the first ``hidden_size`` entries of the state."""
        return self.hidden_size

    def param_block_of(self, index):
        """Name of the parameter block holding flat index ``index`` and the index inside it."""
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index: expected an integer in [0, {self.num_params}), got {index!r}")
        for name, (a, b) in self._offsets.items():
            if a <= index < b:
                return name, np.unravel_index(index - a, self.param_shapes[name])
        raise _IndexValueError(f"index: expected 0 <= index < {self.num_params}, got {index}")

    def param_slices(self):
        """Ordered mapping name → slice into the flat vector."""
        return OrderedDict((n, slice(a, b)) for n, (a, b) in self._offsets.items())

    def check_theta(self, theta, name="theta"):
        """Return ``theta`` as a checked flat float64 vector of length ``num_params``."""
        return as_real_array(name, theta, (self.num_params,), ("p",))

    def unflatten(self, theta):
        """Dict name → view of ``theta`` with the block's shape (no copy of a float64 vector)."""
        return self._views(self.check_theta(theta))

    def _views(self, theta):
        """unflatten without checks (any dtype: complex-step use)."""
        return OrderedDict(
            (name, theta[a:b].reshape(self.param_shapes[name])) for name, (a, b) in self._offsets.items()
        )

    def _view(self, theta, name):
        """One parameter block of ``theta`` as a view (no checks, no copy): the hot-path
        accessor of the per-step products, cheaper than building every view."""
        a, b = self._offsets[name]
        return theta[a:b].reshape(self.param_shapes[name])

    def flatten(self, params):
        """Flat float64 vector from a dict name → array (every name, exact shapes)."""
        if not hasattr(params, "keys"):
            raise TypeError(f"params: expected a mapping name -> array, got {type(params).__name__}")
        unknown = sorted(set(params) - set(self.param_shapes))
        missing = [n for n in self.param_shapes if n not in params]
        if unknown or missing:
            raise ValueError(
                f"params: expected exactly the names {list(self.param_shapes)}, "
                f"got unknown {unknown} and missing {missing}"
            )
        out = np.empty(self.num_params)
        for name, (a, b) in self._offsets.items():
            out[a:b] = as_real_array(f"params[{name!r}]", params[name], self.param_shapes[name]).ravel()
        return out

    def _unpack_block(self, dtheta):
        """(k, p) → dict name → contiguous (k, *shape) arrays."""
        k = dtheta.shape[0]
        return OrderedDict(
            (name, np.ascontiguousarray(dtheta[:, a:b]).reshape((k,) + self.param_shapes[name]))
            for name, (a, b) in self._offsets.items()
        )

    def _pack_block(self, blocks, k):
        """dict name → (k, *shape) arrays → (k, p)."""
        out = np.empty((k, self.num_params), dtype=np.result_type(*[b.dtype for b in blocks.values()]))
        for name, (a, b) in self._offsets.items():
            out[:, a:b] = blocks[name].reshape(k, b - a)
        return out

    # ---------------------------------------------------------- initialization
    def init_params(self, rng=None, g=None):
        """Draw a parameter vector.

        By default every parameter is drawn from ``U(-1/√H, 1/√H)`` with
        ``H = hidden_size``: torch's default for ``RNNCell``/``GRUCell``/
        ``LSTMCell`` (kpref uses the same rule for its own cells).

        With ``g`` (> 0) given, each ``H×H`` block of the recurrent weights
        (``weight_hh``: one block for Elman/LeakyRNN/Linear/RateODE, the
        r, z, n blocks for GRU, the i, f, g, o blocks for LSTM) is drawn
        i.i.d. ``N(0, g²/H)`` instead — the gain ``g`` of the KPFlow papers'
        sweeps (g > 1 is the chaotic regime for a tanh network at large H).
        Everything else keeps the default.

        ``rng`` is ``None``, an integer seed or a ``numpy.random.Generator``.
        """
        rng = as_generator(rng)
        H = self.hidden_size
        bound = 1.0 / np.sqrt(H)
        theta = rng.uniform(-bound, bound, size=self.num_params)
        if g is not None:
            g = check_positive_float("g", g)
            params = self.unflatten(theta)
            for name in self.recurrent_weights:
                w = params[name]
                w[...] = rng.normal(0.0, g / np.sqrt(H), size=w.shape)
        return theta

    # ------------------------------------------------------------ public step
    def _check_rows(self, h, x, *, complex_ok=False):
        conv = as_real_or_complex_array if complex_ok else as_real_array
        h = conv("h", h, (None, self.state_size), ("M", "S"))
        x = conv("x", x, (h.shape[0], self.input_size), ("M", "N"))
        return h, x

    def step(self, theta, h, x, *, complex_step=False):
        """One step ``F(h, x; θ)`` for ``M`` rows: ``h`` (M, S), ``x`` (M, N) → (M, S).

        With ``complex_step=True`` complex ``theta``, ``h`` and ``x`` are
        accepted (the cell is evaluated in complex arithmetic) so that
        ``Im F(z + i s v) / s`` gives a derivative to rounding; only for
        analytic cells (every cell but Elman with ReLU).
        """
        if complex_step:
            theta = as_real_or_complex_array("theta", theta, (self.num_params,), ("p",))
            h, x = self._check_rows(h, x, complex_ok=True)
            if np.iscomplexobj(theta) or np.iscomplexobj(h) or np.iscomplexobj(x):
                theta, h, x = (np.asarray(a, dtype=np.complex128) for a in (theta, h, x))
        else:
            theta = self.check_theta(theta)
            h, x = self._check_rows(h, x)
        return self._step(theta, h, x)

    def point(self, theta, h, x):
        """The linearization point (a :class:`StepPoint`) of ``F`` at rows ``h``, ``x``.

        The point holds read-only copies of ``theta``, ``h`` and ``x``: changing
        the caller's arrays afterwards does not change it.
        """
        theta = readonly_copy(self.check_theta(theta))
        h, x = (readonly_copy(a) for a in self._check_rows(h, x))
        return StepPoint(theta, h, x, freeze_arrays(self._prepare(theta, h, x)), cell=self)

    def _check_point(self, pt):
        if not isinstance(pt, StepPoint):
            raise TypeError(f"pt: expected a StepPoint from cell.point(theta, h, x), got {type(pt).__name__}")
        if pt.cell is not None and pt.cell is not self:
            raise ValueError(
                f"pt: expected a StepPoint built by this cell ({self!r}), got one built by {pt.cell!r}; "
                "build it with this cell's point(theta, h, x)")
        M = np.shape(pt.h)[0] if np.ndim(pt.h) == 2 else None
        if (np.shape(pt.theta) != (self.num_params,) or M is None or np.shape(pt.h) != (M, self.state_size)
                or np.shape(pt.x) != (M, self.input_size)
                or any(np.shape(c)[:1] != (M,) for c in pt.cache)):
            raise ValueError(
                f"pt: expected a StepPoint of {self!r} (theta ({self.num_params},), h (M, {self.state_size}), "
                f"x (M, {self.input_size}), cache rows M), got theta {np.shape(pt.theta)}, h {np.shape(pt.h)}, "
                f"x {np.shape(pt.x)}, cache rows {[np.shape(c)[:1] for c in pt.cache]}")
        if pt.cell is None:   # built by hand: the kernels need float64 arrays (else a numba TypingError)
            for label, arr in (("theta", pt.theta), ("h", pt.h), ("x", pt.x)) + tuple(
                    (f"cache[{i}]", c) for i, c in enumerate(pt.cache)):
                if not isinstance(arr, np.ndarray) or arr.dtype != np.float64:
                    raise TypeError(f"pt: expected float64 arrays in a StepPoint, got pt.{label} of type "
                                    f"{type(arr).__name__} (dtype {getattr(arr, 'dtype', None)}); build it with "
                                    "cell.point(theta, h, x)")
        return pt

    def _check_state_block(self, name, V, pt):
        return as_real_array(name, V, (None, pt.num_rows, self.state_size), ("k", "M", "S"))

    def state_jvp(self, pt, V):
        """``A V`` for a block ``V`` (k, M, S); ``A = ∂F/∂h`` at ``pt``. Linear in ``V``."""
        pt = self._check_point(pt)
        return self._state_jvp(pt, self._check_state_block("V", V, pt))

    def state_vjp(self, pt, W):
        """``Aᵀ W`` for a block ``W`` (k, M, S). Linear in ``W``."""
        pt = self._check_point(pt)
        return self._state_vjp(pt, self._check_state_block("W", W, pt))

    def param_jvp(self, pt, dtheta):
        """``G δθ`` for a block ``dtheta`` (k, p) → (k, M, S). Linear in ``dtheta``."""
        pt = self._check_point(pt)
        dtheta = as_real_array("dtheta", dtheta, (None, self.num_params), ("k", "p"))
        return self._param_jvp(pt, dtheta)

    def param_vjp(self, pt, W):
        """``Σ_rows Gᵀ W`` for a block ``W`` (k, M, S) → (k, p). Linear in ``W``."""
        pt = self._check_point(pt)
        return self._param_vjp(pt, self._check_state_block("W", W, pt))

    def state_jacobian(self, pt):
        """Dense ``A = ∂F/∂h`` at every row: (M, S, S)."""
        return self._state_jacobian(self._check_point(pt))

    def param_jacobian(self, pt, memory_limit=None):
        """Dense immediate ``G = ∂F/∂θ`` at every row: (M, S, p), by ``param_jvp`` of the identity.

        The identity (p, p) and the result (M, S, p) are memory-checked first (``memory_limit`` bytes).
        """
        pt = self._check_point(pt)
        check_memory("param_jacobian", 8 * self.num_params * (self.num_params + 2 * pt.num_rows * self.state_size),
                     memory_limit)
        G = self._param_jvp(pt, np.eye(self.num_params))
        return np.ascontiguousarray(G.transpose(1, 2, 0))

    def _state_jacobian(self, pt):
        """Default dense Jacobian: ``A`` applied to the identity block (one sweep)."""
        M, S = pt.num_rows, self.state_size
        E = np.zeros((S, M, S))
        for i in range(S):
            E[i, :, i] = 1.0
        AE = self._state_jvp(pt, E)  # AE[i, m, :] = A_m e_i  (column i)
        return np.ascontiguousarray(AE.transpose(1, 2, 0))

    # ----------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _step(self, theta, h, x):
        """F for checked arrays (float64, or complex128 for complex-step use)."""

    @abc.abstractmethod
    def _prepare(self, theta, h, x):
        """Tuple of row-indexed arrays (leading axis M) reused by the products."""

    @abc.abstractmethod
    def _state_jvp(self, pt, V):
        """A V."""

    @abc.abstractmethod
    def _state_vjp(self, pt, W):
        """Aᵀ W."""

    @abc.abstractmethod
    def _param_jvp(self, pt, dtheta):
        """G δθ."""

    @abc.abstractmethod
    def _param_vjp(self, pt, W):
        """Σ_rows Gᵀ W."""

    def __repr__(self):
        return f"{type(self).__name__}(input_size={self.input_size}, hidden_size={self.hidden_size})"

    # ------------------------------------------------------- torch interop
    #: Suffixes ``params_to_torch`` writes: none (``torch.nn.*Cell``) or ``_l0``
    #: (single-layer, unidirectional ``torch.nn.RNN/GRU/LSTM``).
    torch_suffixes = ("", "_l0")

    def params_from_torch(self, state_dict):
        """Flat ``theta`` from arrays keyed by torch parameter names.

        Parameters
        ----------
        state_dict : mapping name → tensor or array
            ``module.state_dict()`` of ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``
            (names ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) or of a
            single-layer, unidirectional ``torch.nn.RNN``/``GRU``/``LSTM`` (the same
            names with the suffix ``_l0``). Cells without a torch counterpart
            (``LeakyRNN``, ``Linear``, ``RateODE``, ``ODECell``) use their kpref
            names (``cell.param_shapes``), with or without ``_l0``. Values are
            torch tensors (any device; converted by ``.detach().cpu().numpy()``,
            torch itself is never imported) or NumPy arrays of real floats.

        Returns
        -------
        theta : (p,) float64 array

        Raises
        ------
        ValueError
            For keys of another layer or direction (``_l1``, ``_reverse``: build one
            kpref cell per layer and direction), mixed suffixes, unknown or
            missing names, and wrong shapes; ``TypeError`` for non-float data.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"state_dict: expected a mapping name -> tensor or array, got {type(state_dict).__name__}")
        keys = list(state_dict.keys())
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"state_dict: expected string keys, got {key!r}")
        import re

        other = [k for k in keys if k not in self.param_shapes and re.search(r"(_l[1-9][0-9]*|_reverse)$", k)]
        if other:
            raise ValueError(
                f"state_dict: expected a single-layer, unidirectional state dict (suffix '_l0' or none), got "
                f"keys of another layer or direction {sorted(other)}; a kpref cell is one layer in one "
                "direction: build one cell per layer/direction and pass each its own keys with the '_l0' "
                "suffix renamed"
            )
        suffixed = [k for k in keys if k.endswith("_l0")]
        if suffixed and len(suffixed) != len(keys):
            raise ValueError(
                f"state_dict: expected every key with the suffix '_l0' or none, got a mixture: "
                f"{sorted(suffixed)} and {sorted(set(keys) - set(suffixed))}"
            )
        suffix = "_l0" if suffixed else ""
        params = {}
        for key in keys:
            params[key[: len(key) - len(suffix)]] = _torch_free_array(f"state_dict[{key!r}]", state_dict[key])
        unknown = sorted(set(params) - set(self.param_shapes))
        missing = [n for n in self.param_shapes if n not in params]
        if unknown or missing:
            expected = [n + suffix for n in self.param_shapes]
            raise ValueError(
                f"state_dict: expected exactly the keys {expected} for {self!r}, got unknown "
                f"{[u + suffix for u in unknown]} and missing {[m + suffix for m in missing]} (strip any "
                "module prefix such as 'rnn.' first)"
            )
        out = np.empty(self.num_params)
        for name, (a, b) in self._offsets.items():
            key = name + suffix
            out[a:b] = as_real_array(f"state_dict[{key!r}]", params[name], self.param_shapes[name]).ravel()
        return out

    def params_to_torch(self, theta, suffix=""):
        """Arrays keyed by torch names from a flat ``theta``: the inverse of :meth:`params_from_torch`.

        Parameters
        ----------
        theta : (p,) array
        suffix : {'', '_l0'}
            ``''`` for ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``, ``'_l0'`` for a
            single-layer ``torch.nn.RNN``/``GRU``/``LSTM``.

        Returns
        -------
        dict name → float64 ndarray
            Fresh C-contiguous copies (changing them does not change ``theta``).
            Load into torch (which kpref never imports) with::

                sd = {k: torch.from_numpy(v) for k, v in cell.params_to_torch(theta, "_l0").items()}
                module = torch.nn.GRU(N, H, batch_first=True).double()
                module.load_state_dict(sd)

            (``.double()`` first: ``load_state_dict`` copies into the module's dtype.)
        """
        theta = self.check_theta(theta)
        if not isinstance(suffix, str) or suffix not in self.torch_suffixes:
            raise ValueError(f"suffix: expected one of {', '.join(map(repr, self.torch_suffixes))}, got {suffix!r}")
        return {name + suffix: np.array(view, dtype=np.float64, order="C", copy=True)
                for name, view in self._views(theta).items()}


class TorchConventionCell(Cell):
    """Parameter layout shared by the ``torch.nn``-convention cells (Elman, GRU, LSTM).

    ``weight_ih`` (G·H, N), ``weight_hh`` (G·H, H), ``bias_ih`` (G·H) and
    ``bias_hh`` (G·H), with ``G = gates`` blocks of rows in torch's order;
    ``bias=False`` removes the two biases. The state has
    ``state_blocks · H`` entries (2 for the LSTM's ``[h, c]``).
    """

    gates = 1
    state_blocks = 1

    def __init__(self, input_size, hidden_size, bias=True):
        input_size = check_positive_int("input_size", input_size)
        hidden_size = check_positive_int("hidden_size", hidden_size)
        self.bias = check_bool("bias", bias)
        rows = self.gates * hidden_size
        shapes = OrderedDict(weight_ih=(rows, input_size), weight_hh=(rows, hidden_size))
        if self.bias:
            shapes.update(bias_ih=(rows,), bias_hh=(rows,))
        super().__init__(input_size, hidden_size, self.state_blocks * hidden_size, shapes)

    def _weights(self, theta):
        """Contiguous ``(W_ih, W_hh, b_ih, b_hh)`` of ``theta`` (zero biases when ``bias=False``)."""
        p = self._views(theta)
        zero = np.zeros(self.gates * self.hidden_size, dtype=theta.dtype)
        b_ih = p["bias_ih"] if self.bias else zero
        b_hh = p["bias_hh"] if self.bias else zero
        return (np.ascontiguousarray(p["weight_ih"]), np.ascontiguousarray(p["weight_hh"]),
                np.ascontiguousarray(b_ih), np.ascontiguousarray(b_hh))


def _torch_free_array(name, value):
    """A NumPy view of a torch tensor (detached, on the CPU) or ``value`` itself, without importing torch."""
    if isinstance(value, np.ndarray):
        return value
    if all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy")):
        tensor = value.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            tensor = tensor.float()   # NumPy has no bfloat16; float32 holds every bfloat16 exactly
        return tensor.numpy()
    return value   # lists and other array-likes: as_real_array judges them

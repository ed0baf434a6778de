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
``_state_jvp``, ``_state_vjp``, ``_param_jvp`` and ``_param_vjp`` (and may
override ``_state_jacobian``, ``_weight_sites``, ``_sweep`` (the forward
sweep, which must equal ``_step`` one step at a time bit for bit) and
``_run_prepared``, the forward sweep fused with the cache, which must equal
``_step`` then ``_prepare`` bit for bit); the public methods check
their input and call them. The operators of :mod:`kpref.operators` call the
hooks directly, on arrays they have already checked.

What checkers and diagnostics may assume about a cell is *declared* on its
class, never inferred from its name or sizes: ``gate_names``,
``state_parts``, ``analytic``, ``has_weight_sites`` (with
:meth:`Cell.weight_sites`), ``has_unit_weight_sites`` (with the hook
``Cell._unit_weight_sites``) and ``has_continuous_adjoint`` (with
:meth:`Cell.continuous_adjoint`). The defaults claim nothing. The README's
"Adding a cell" works a small custom cell through all of it.
"""

from __future__ import annotations

import abc
import numbers
from collections import OrderedDict
from math import prod

import numpy as np

from .._identity import repeated_identity
from .._checks import (
    as_generator,
    as_real_array,
    as_real_or_complex_array,
    check_bool,
    check_choice,
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


def step_rows(x, h0, z):
    """The rows ``(h_{t-1}, x_t)`` of a trajectory, row ``t·B + b``: ``(h_rows (T·B, S), x_rows (T·B, N))``, fresh."""
    B, T, S = z.shape
    h_prev = np.empty((T, B, S))
    h_prev[0] = h0
    h_prev[1:] = z[:, :-1].transpose(1, 0, 2)
    x_rows = np.array(x.transpose(1, 0, 2), order="C").reshape(T * B, x.shape[2])
    return h_prev.reshape(T * B, S), x_rows


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
    gate_names, state_parts, analytic, has_weight_sites, has_continuous_adjoint
        The declared capabilities (see each; defaults claim nothing).
    """

    dt = 1.0
    continuous = False
    #: Names of weight matrices whose H×H blocks are redrawn by ``init_params(g=...)``.
    recurrent_weights = ("weight_hh",)

    # ------------------------------------------------------- capabilities
    # What diagnostics and checkers may assume about a cell is declared here,
    # never inferred from its class name or sizes. The defaults claim nothing:
    # a new cell that does not declare a capability is refused (or checked by
    # the slower, always-valid route), not silently misread.

    #: Names of the row blocks of the stacked weights (``weight_ih``,
    #: ``weight_hh``, ``bias_ih``, ``bias_hh`` of ``len(gate_names)·H`` rows),
    #: in row order: GRU ``('r', 'z', 'n')``, LSTM ``('i', 'f', 'g', 'o')``;
    #: ``()`` when the weights are not stacked gates.
    gate_names = ()

    #: Whether ``F`` is analytic in ``(h, x, θ)`` (complex-step derivatives are
    #: valid): ``False`` by default, so checkers use finite differences unless
    #: a cell declares it (ReLU is not analytic; tanh and sigmoid are).
    analytic = False

    #: Whether :meth:`weight_sites` is implemented (the Kronecker form of K).
    has_weight_sites = False

    #: Whether the hook :meth:`_unit_weight_sites` is implemented: every weight site's
    #: ``D`` is diagonal per unit (K's per-unit blocks, :func:`kpref.analysis.unit_blocks`).
    has_unit_weight_sites = False

    #: Whether :meth:`continuous_adjoint` is implemented (``linearize(...,
    #: adjoint='continuous')``).
    has_continuous_adjoint = False

    @property
    def state_parts(self):
        """The named parts of the state vector, in order: tuple of ``(name, size)``.

        Default ``(('h', state_size),)``; the LSTM's ``[h, c]`` is
        ``(('h', H), ('c', H))``. The sizes add up to ``state_size``.
        """
        return (("h", self.state_size),)

    def weight_sites(self, pt):
        """The weight sites of K's Kronecker form (SPEC §3) at the point ``pt``.

        Returns a list of ``(names, activity, D)``: for a weight used as
        ``W a`` inside ``F`` (activity ``a`` (M, q), with a column of ones when
        the site has a bias), ``names`` the parameter blocks of the site and
        ``D = ∂F/∂(pre-activation)`` (M, S, o) row by row; K is
        ``Σ_sites D (a aᵀ ⊗ I_o) Dᵀ``. A cell declares ``has_weight_sites =
        True`` and implements the hook ``_weight_sites(pt)``.

        Raises
        ------
        NotImplementedError
            When the cell declares no weight sites (``has_weight_sites`` is
            False), e.g. ODE cells, whose parameters enter every stage.
        """
        pt = self._check_point(pt)
        if not self.has_weight_sites:
            raise NotImplementedError(
                f"weight_sites: {type(self).__name__} declares no weight sites (has_weight_sites=False); "
                "a cell whose weights each enter F once as W a declares has_weight_sites = True and "
                "implements _weight_sites(pt); lin.K is exact for every cell")
        return self._weight_sites(pt)

    def _weight_sites(self, pt):
        """Hook of :meth:`weight_sites` (cells declaring ``has_weight_sites = True`` implement it)."""
        raise NotImplementedError(f"{type(self).__name__} declares has_weight_sites but does not implement "
                                  "_weight_sites(pt)")

    def _unit_weight_sites(self, pt):
        """Declared hook: the weight sites of :meth:`weight_sites` in per-unit form (cells with ``has_unit_weight_sites``).

        The units are the ``U`` entries of each part of :attr:`state_parts`
        (all parts have ``U`` entries): state entry ``p·U + u`` is part ``p``
        of unit ``u``. A site's ``o = G·U`` pre-activation rows are ``G``
        stacked gates, row ``q·U + u`` feeding unit ``u`` only. Returns a
        list of ``(names, activity, d)`` in the order of :meth:`weight_sites`
        (``pt`` already checked), ``d`` of shape (M, P, G, U)::

            d[m, p, q, u] = D[m, p·U + u, q·U + u],   D[m, p·U + u, q·U + u'] = 0 for u ≠ u'.

        A cell declares ``has_unit_weight_sites = True`` and implements this
        hook only when that holds at every point; :func:`kpref.analysis.unit_blocks`
        then never forms the dense ``D``.
        """
        raise NotImplementedError(f"{type(self).__name__} declares has_unit_weight_sites but does not implement "
                                  "_unit_weight_sites(pt)")

    def continuous_adjoint(self):
        """The continuous-adjoint strategy of this cell (an :class:`~kpref.operators.AdjointStrategy`).

        Raises
        ------
        NotImplementedError
            When the cell declares none (``has_continuous_adjoint`` is False):
            every discrete cell.
        """
        raise NotImplementedError(
            f"continuous_adjoint: {type(self).__name__} declares no continuous adjoint "
            "(has_continuous_adjoint=False; ODE cells have one); use adjoint='discrete'")

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
    def init_params(self, rng=None, g=None, g_convention="gaussian"):
        """Draw a parameter vector.

        By default every parameter is drawn from ``U(-1/√H, 1/√H)`` with
        ``H = hidden_size``: torch's default for ``RNNCell``/``GRUCell``/
        ``LSTMCell`` (kpref uses the same rule for its own cells).

        With ``g`` (> 0) given, each ``H×H`` block of the recurrent weights
        (``weight_hh``: one block for Elman/LeakyRNN/Linear/RateODE, the
        r, z, n blocks for GRU, the i, f, g, o blocks for LSTM) is redrawn
        according to ``g_convention``:

        * ``'gaussian'`` (kpref's default): i.i.d. ``N(0, g²/H)`` — the
          random-matrix gain (g > 1 is the chaotic regime for a tanh network
          at large H); these normals are drawn after the uniforms;
        * ``'kpflow'``: the KPFlow package's gain, ``g`` times torch's
          ``U(-1/√H, 1/√H)`` draw (std ``g/√(3H)``; no further draws, so the
          same ``rng`` gives the same uniforms as ``g=None``). The same ``g``
          is a √3 smaller spread than with ``'gaussian'``.

        Everything else keeps the default. ``rng`` is ``None``, an integer
        seed or a ``numpy.random.Generator``.
        """
        rng = as_generator(rng)
        check_choice("g_convention", g_convention, ("gaussian", "kpflow"))
        H = self.hidden_size
        bound = 1.0 / np.sqrt(H)
        theta = rng.uniform(-bound, bound, size=self.num_params)
        if g is not None:
            g = check_positive_float("g", g)
            params = self.unflatten(theta)
            for name in self.recurrent_weights:
                w = params[name]
                if g_convention == "kpflow":
                    w *= g
                else:
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
        analytic cells (``cell.analytic``; every built-in cell but Elman with ReLU).
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
        E = np.ascontiguousarray(repeated_identity(M, S).transpose(1, 0, 2))   # E[i, m] = e_i at every row
        AE = self._state_jvp(pt, E)  # AE[i, m, :] = A_m e_i  (column i)
        return np.ascontiguousarray(AE.transpose(1, 2, 0))

    # ----------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _step(self, theta, h, x):
        """F for checked arrays (float64, or complex128 for complex-step use)."""

    @abc.abstractmethod
    def _prepare(self, theta, h, x):
        """Tuple of row-indexed arrays (leading axis M) reused by the products."""

    def _prepare_by_step(self, theta, h_rows, x_rows, B):
        """The cache of every row ``t·B + b`` of a trajectory, by ``_prepare`` on one step's ``B`` rows at a time.

        One step at a time, so that a cell fusing the forward sweep with its
        cache (:meth:`_run_prepared`) gives the same numbers bit for bit:
        every product inside ``_prepare`` then has the shape it has in the
        step.
        """
        T = h_rows.shape[0] // B
        out = None
        for t in range(T):
            part = self._prepare(theta, h_rows[t * B:(t + 1) * B], x_rows[t * B:(t + 1) * B])
            if out is None:
                out = tuple(np.empty((T * B,) + np.shape(a)[1:], dtype=np.result_type(a)) for a in part)
            for dst, a in zip(out, part):
                dst[t * B:(t + 1) * B] = a
        return out

    def _run_prepared(self, theta, x, h0):
        """The trajectory ``z`` (B, T, S) and the cache of its rows ``t·B + b`` (checked float64 input).

        Default: the forward sweep by ``_step``, then :meth:`_prepare_by_step`
        on the rows ``(z_{t-1}, x_t)``. A cell may compute both in one sweep
        (each gate once); it must give the same numbers bit for bit as this
        default (tests/test_cell_kernels.py checks it for every built-in cell).
        """
        z = self._sweep(theta, x, h0)
        h_rows, x_rows = step_rows(x, h0, z)
        return z, self._prepare_by_step(theta, h_rows, x_rows, x.shape[0])

    def _sweep(self, theta, x, h0):
        """The trajectory ``z`` (B, T, S), ``z_t = F(z_{t-1}, x_t)`` (checked input: float64, or complex128 in
        complex-step use), for :func:`kpref.simulate` and the default :meth:`_run_prepared`.

        Default: ``_step`` one step at a time. A cell may hoist the work of
        every step out of the loop (GRU, Elman: the transposed weights); it
        must give the same numbers bit for bit as this default
        (tests/test_cell_kernels.py checks it for every built-in cell).
        """
        B, T, _ = x.shape
        z = np.empty((B, T, self.state_size), dtype=np.result_type(theta, x, h0))
        h = h0
        for t in range(T):
            h = self._step(theta, h, np.ascontiguousarray(x[:, t]))
            z[:, t] = h
        return z

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

        A shim of :func:`kpref.interop.torch.params_from_torch` (``cell`` first
        there), which documents the names, suffixes and refusals.
        """
        from ..interop._names import params_from_torch
        return params_from_torch(self, state_dict)

    def params_to_torch(self, theta, suffix=""):
        """Arrays keyed by torch names from a flat ``theta``: the inverse of :meth:`params_from_torch`.

        A shim of :func:`kpref.interop.torch.params_to_torch`.
        """
        from ..interop._names import params_to_torch
        return params_to_torch(self, theta, suffix)


class TorchConventionCell(Cell):
    """Parameter layout shared by the ``torch.nn``-convention cells (Elman, GRU, LSTM).

    ``weight_ih`` (G·H, N), ``weight_hh`` (G·H, H), ``bias_ih`` (G·H) and
    ``bias_hh`` (G·H), with ``G = gates`` blocks of rows in torch's order;
    ``bias=False`` removes the two biases. The state has
    ``state_blocks · H`` entries (2 for the LSTM's ``[h, c]``).
    """

    state_blocks = 1

    @property
    def gates(self):
        """Number of stacked row blocks: ``len(gate_names)``, or 1 when the weights are not gated."""
        return len(self.gate_names) or 1

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

    def _transposed_weights(self, theta):
        """:meth:`_weights` with the two weights transposed, C-contiguous: ``(W_ihᵀ, W_hhᵀ, b_ih, b_hh)``.

        The forward kernels take this one layout on every path (a GEMM with a
        C-contiguous right factor is the faster one here, and one layout keeps
        the paths' products bit for bit equal).
        """
        w_ih, w_hh, b_ih, b_hh = self._weights(theta)
        return np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), b_ih, b_hh

    def _unit_sites_from(self, pt, d_ih, d_hh):
        """``[(names, activity, d)]`` of the two torch-convention sites: ``(W_ih, b_ih)`` reads ``[x, 1]``,
        ``(W_hh, b_hh)`` reads ``[h, 1]`` (``h`` the first ``H`` state entries); ``d`` per unit (M, P, G, H)."""
        h = pt.h[:, :self.hidden_size]
        if self.bias:
            ones = np.ones((pt.h.shape[0], 1))
            return [(("weight_ih", "bias_ih"), np.hstack([pt.x, ones]), d_ih),
                    (("weight_hh", "bias_hh"), np.hstack([h, ones]), d_hh)]
        return [(("weight_ih",), pt.x.copy(), d_ih), (("weight_hh",), h.copy(), d_hh)]

"""Parameters and arrays as other frameworks hold them (torch-free: neither torch nor JAX is imported).

* :func:`to_numpy` — a NumPy view of a torch tensor (any device, with or
  without grad), a JAX array, a NumPy array or nested lists, copying only
  when the data is not on the CPU already;
* :func:`describe_value` — what a value *is*, for messages ("a dict with keys
  [...]", "a tuple of 2 values", "a torch.Tensor float32 on cuda:0 that
  requires grad, shape (2, 5, 3)");
* :func:`params_from_torch` / :func:`params_to_torch` — kpref's flat ``theta``
  from/to arrays keyed by torch parameter names (``weight_ih``, ``_l0``);
* :func:`match_names` — which keys of a user's state dict are the cell's
  parameters: module prefixes (``rnn.``, ``0.rnn.``, ``cell.``) stripped,
  ``_l0`` suffixes accepted, other parameters (a readout) set aside by name.
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple

import numpy as np

from .._checks import as_real_array

__all__ = ["to_numpy", "describe_value", "params_from_torch", "params_to_torch", "match_names", "NameMatch",
           "TORCH_SUFFIXES", "closest"]

#: Suffixes ``params_to_torch`` writes: none (``torch.nn.*Cell``) or ``_l0``
#: (single-layer, unidirectional ``torch.nn.RNN/GRU/LSTM``).
TORCH_SUFFIXES = ("", "_l0")

_OTHER_LAYER = re.compile(r"(_l[1-9][0-9]*|_reverse)$")


def _is_torch_tensor(value):
    return all(hasattr(value, attr) for attr in ("detach", "cpu", "numpy"))


def to_numpy(value):
    """``value`` as a NumPy array, copying only what must be copied.

    A torch tensor is detached (no copy) and moved to the CPU (a copy only if
    it lives elsewhere); ``.numpy()`` then shares its memory. A bfloat16
    tensor becomes float32 (which holds every bfloat16 exactly). A JAX array
    on the CPU is viewed through ``__array__`` (``np.asarray``; a device
    array is copied to the host). Nested lists become a new array. The dtype
    is kept (the caller decides what to accept).
    """
    if isinstance(value, np.ndarray):
        return value
    if _is_torch_tensor(value):
        tensor = value.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


def describe_value(value):
    """A short description of what ``value`` is, for error messages and reports."""
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        keys = list(value.keys())
        shown = ", ".join(map(repr, keys[:6])) + (", ..." if len(keys) > 6 else "")
        return f"a {type(value).__name__} with keys [{shown}]"
    if isinstance(value, tuple):
        inner = ", ".join(describe_value(v) for v in value[:3]) + (", ..." if len(value) > 3 else "")
        return f"a tuple of {len(value)} values ({inner})"
    if _is_torch_tensor(value):
        dtype = str(getattr(value, "dtype", "?")).replace("torch.", "")
        grad = " that requires grad" if getattr(value, "requires_grad", False) else ""
        return f"a torch.Tensor {dtype} on {getattr(value, 'device', '?')}{grad}, shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a numpy array {value.dtype}, shape {value.shape}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__module__.split('.')[0]} {type(value).__name__} {value.dtype}, shape {tuple(value.shape)}"
    if value is None:
        return "None"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def closest(name, candidates):
    """The candidate closest to ``name`` (difflib), or ``None``."""
    match = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.6)
    return match[0] if match else None


def _check_keys(state_dict):
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError(f"state_dict: expected a mapping name -> tensor or array, got {type(state_dict).__name__}")
    keys = list(state_dict.keys())
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"state_dict: expected string keys, got {key!r}")
    return keys


def params_from_torch(cell, state_dict):
    """Flat ``theta`` of ``cell`` from arrays keyed by torch parameter names.

    Parameters
    ----------
    cell : kpref cell
    state_dict : mapping name → tensor or array
        ``module.state_dict()`` of ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``
        (names ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) or of a
        single-layer, unidirectional ``torch.nn.RNN``/``GRU``/``LSTM`` (the same
        names with the suffix ``_l0``). Cells without a torch counterpart
        (``LeakyRNN``, ``Linear``, ``RateODE``, ``ODECell``) use their kpref
        names (``cell.param_shapes``), with or without ``_l0``. Values are
        torch tensors (any device; converted by ``.detach().cpu().numpy()``,
        torch itself is never imported) or NumPy arrays of real floats.
        Exactly the cell's keys: for a whole model's state dict (module
        prefixes, a readout) use :func:`match_names` first.

    Returns
    -------
    theta : (p,) float64 array (a new array)

    Raises
    ------
    ValueError
        For keys of another layer or direction (``_l1``, ``_reverse``: build one
        kpref cell per layer and direction), mixed suffixes, unknown or
        missing names, and wrong shapes; ``TypeError`` for non-float data.
    """
    keys = _check_keys(state_dict)
    other = [k for k in keys if k not in cell.param_shapes and _OTHER_LAYER.search(k)]
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
    params = {key[: len(key) - len(suffix)]: key for key in keys}
    unknown = sorted(set(params) - set(cell.param_shapes))
    missing = [n for n in cell.param_shapes if n not in params]
    if unknown or missing:
        expected = [n + suffix for n in cell.param_shapes]
        raise ValueError(
            f"state_dict: expected exactly the keys {expected} for {cell!r}, got unknown "
            f"{[u + suffix for u in unknown]} and missing {[m + suffix for m in missing]} (a whole model's "
            "state dict, with module prefixes such as 'rnn.' or a readout: kpref.interop.torch.match_names)"
        )
    out = np.empty(cell.num_params)
    for name, sl in cell.param_slices().items():
        key = params[name]
        out[sl] = as_real_array(f"state_dict[{key!r}]", to_numpy(state_dict[key]), cell.param_shapes[name]).ravel()
    return out


def params_to_torch(cell, theta, suffix=""):
    """Arrays keyed by torch names from a flat ``theta``: the inverse of :func:`params_from_torch`.

    Parameters
    ----------
    cell : kpref cell
    theta : (p,) array
    suffix : {'', '_l0'}
        ``''`` for ``torch.nn.RNNCell``/``GRUCell``/``LSTMCell``, ``'_l0'`` for a
        single-layer ``torch.nn.RNN``/``GRU``/``LSTM``.

    Returns
    -------
    dict name → float64 ndarray
        Fresh C-contiguous copies (changing them does not change ``theta``).
        Load into torch with::

            sd = {k: torch.from_numpy(v) for k, v in params_to_torch(cell, theta, "_l0").items()}
            module = torch.nn.GRU(N, H, batch_first=True).double()
            module.load_state_dict(sd)

        (``.double()`` first: ``load_state_dict`` copies into the module's dtype.)
    """
    theta = cell.check_theta(theta)
    if not isinstance(suffix, str) or suffix not in TORCH_SUFFIXES:
        raise ValueError(f"suffix: expected one of {', '.join(map(repr, TORCH_SUFFIXES))}, got {suffix!r}")
    return {name + suffix: np.array(theta[sl].reshape(cell.param_shapes[name]), dtype=np.float64, order="C")
            for name, sl in cell.param_slices().items()}


class NameMatch(NamedTuple):
    """Which keys of a user's parameter dict hold which of the cell's parameters (see :func:`match_names`)."""

    keys: dict        # kpref name → the user's key, in the cell's order
    extras: list      # the user's other keys (a readout, ...), set aside
    order: list       # every user key, in the user's order

    def kpref_name(self, key):
        """The kpref name of user key ``key``, or ``None`` for an extra."""
        for name, k in self.keys.items():
            if k == key:
                return name
        return None


def _split(key):
    """'0.rnn.weight_hh_l0' → ('0.rnn.', 'weight_hh', '_l0')."""
    prefix, _, leaf = key.rpartition(".")
    prefix = prefix + "." if prefix else ""
    suffix = "_l0" if leaf.endswith("_l0") else ""
    return prefix, leaf[: len(leaf) - len(suffix)], suffix


def match_names(cell, keys, name="params"):
    """Find the cell's parameters among the keys of a whole model's state dict.

    A key is ``prefix + leaf + suffix``: ``prefix`` a module path ending in a
    dot (``'rnn.'``, ``'0.rnn.'``, ``'cell.'`` or none), ``leaf`` a name of
    ``cell.param_shapes`` (torch's names for the torch-convention cells) and
    ``suffix`` ``'_l0'`` or none. The cell's parameters are the keys of the
    one prefix under which *every* parameter of the cell appears; every other
    key (a readout ``'fc.weight'``, another module) is an *extra*: set aside,
    named, never mixed in.

    Raises
    ------
    ValueError
        When no prefix holds every parameter (naming the missing ones and the
        closest keys), when several do (ambiguous), or when the chosen module
        has keys of another layer or direction (``_l1``, ``_reverse``: a kpref
        cell is one layer).
    """
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise TypeError(f"keys: expected an iterable of torch parameter names (strings), got {type(keys).__name__}")
    keys = list(keys)
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"{name}: expected string keys (torch parameter names), got {key!r}")
    groups = {}
    for key in keys:
        prefix, leaf, suffix = _split(key)
        if leaf in cell.param_shapes:
            groups.setdefault(prefix, {}).setdefault(leaf, []).append(key)
    complete = [p for p, g in groups.items() if all(n in g for n in cell.param_shapes)]
    wanted = list(cell.param_shapes)
    if not complete:
        best = max(groups.items(), key=lambda kv: len(kv[1]), default=(None, {}))
        missing = [n for n in wanted if n not in best[1]]
        unmatched = [_split(k)[1] for k in keys if _split(k)[1] not in cell.param_shapes]
        hints = {m: closest(m, unmatched) for m in missing}
        hint = ", ".join(f"{m} (closest key: {h!r})" if h else m for m, h in hints.items())
        raise ValueError(
            f"{name}: expected the parameters {wanted} of {cell!r} (torch names; a module prefix such as "
            f"'rnn.' and the suffix '_l0' are accepted), got keys {keys}: missing {hint}"
        )
    if len(complete) > 1:
        raise ValueError(f"{name}: the parameters of {cell!r} appear under several module prefixes "
                         f"{sorted(complete)}; pass only one module's parameters")
    prefix = complete[0]
    group = groups[prefix]
    for leaf, ks in group.items():
        if len(ks) > 1:
            raise ValueError(f"{name}: parameter {leaf!r} appears twice under prefix {prefix!r}: {ks}")
    in_module = [k for k in keys if k.startswith(prefix) and "." not in k[len(prefix):]]
    other = [k for k in in_module if _OTHER_LAYER.search(k)]
    if other:
        raise ValueError(
            f"{name}: expected a single-layer, unidirectional module, got keys of another layer or direction "
            f"{sorted(other)}; a kpref cell is one layer in one direction")
    suffixes = {_split(group[n][0])[2] for n in wanted}
    if len(suffixes) > 1:
        raise ValueError(f"{name}: expected every parameter key with the suffix '_l0' or none, got a mixture: "
                         f"{[group[n][0] for n in wanted]}")
    matched = {n: group[n][0] for n in wanted}
    used = set(matched.values())
    return NameMatch(matched, [k for k in keys if k not in used], keys)

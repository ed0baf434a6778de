"""Input checking shared by every public entry point (SPEC §7).

Every public function of kpref converts its array arguments with
:func:`as_real_array`, which

* converts real floating input (float16/32/64, longdouble) to C-contiguous
  float64;
* refuses boolean, integer, complex, object and string data with a
  ``TypeError`` naming the argument;
* refuses NaN and inf with a ``ValueError`` naming the argument and the first
  offending index;
* checks the rank and every fixed dimension, and never broadcasts, truncates
  or reshapes.

Messages follow one pattern: ``<argument>: expected <what>, got <what>``.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

__all__ = [
    "as_real_array",
    "as_real_or_complex_array",
    "check_positive_int",
    "check_positive_float",
    "check_real",
    "check_callable",
    "check_choice",
    "check_memory",
    "physical_memory",
    "MAX_RANDOM_DRAWS",
    "check_memory_limit",
    "check_size_memory",
    "check_finite_result",
    "readonly_copy",
    "freeze_arrays",
    "as_generator",
    "DEFAULT_MEMORY_LIMIT",
]

#: Largest integer any size, count or index argument may take.
MAX_INT = 2**62

#: Largest number of independent random draws (dot-test pairs, probe vectors of a checker, simulated
#: trials) a loop of kpref runs. The count drives a loop, not an allocation, so no memory check bounds it.
#: At this size a random check misses a defect visible in a fraction f >= 1e-5 of random directions with
#: probability (1 - f)**MAX_RANDOM_DRAWS < e**-10, and a rate estimated from the draws has a standard error
#: <= 0.5 / sqrt(MAX_RANDOM_DRAWS) = 5e-4; more draws add nothing a user can act on, and each costs at least
#: one product or one simulated system (10**15 draws would run for years: the old behaviour, a hang).
MAX_RANDOM_DRAWS = 10**6

#: Default limit, in bytes, for any dense materialization (callers may raise it).
DEFAULT_MEMORY_LIMIT = 2 * 1024**3


def _shape_text(shape):
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def _check_shape(name, arr, shape, dims):
    if shape is None:
        return
    if arr.ndim != len(shape):
        labels = dims or tuple("?" for _ in shape)
        expected = "(" + ", ".join(
            f"{lab}={s}" if s is not None else str(lab) for lab, s in zip(labels, shape)
        ) + ")"
        raise ValueError(
            f"{name}: expected a {len(shape)}-D array of shape {expected}, "
            f"got a {arr.ndim}-D array of shape {arr.shape}"
        )
    for axis, (want, got) in enumerate(zip(shape, arr.shape)):
        if want is not None and want != got:
            label = dims[axis] if dims else f"axis {axis}"
            raise ValueError(
                f"{name}: expected shape {_shape_text(shape)}"
                + (f" with {label}={want}" if dims else "")
                + f", got shape {arr.shape} ({label}={got})"
            )


def _nonfinite(arr):
    """``None`` if ``arr`` is finite, else ``(first bad index, its value, number of bad entries)``."""
    finite = np.isfinite(arr)
    if finite.all():
        return None
    where = tuple(int(i) for i in np.argwhere(~finite)[0])
    return where, arr[where], int((~finite).sum())


def _check_finite(name, arr):
    bad = _nonfinite(arr)
    if bad is not None:
        where, value, count = bad
        raise ValueError(
            f"{name}: expected finite values, got {value!r} at index {where} ({count} non-finite entries in all)"
        )


def _dtype_of(name, a):
    if hasattr(a, "dtype") and not isinstance(a, np.ndarray):
        # torch tensors and other array-likes: go through NumPy without copying twice
        a = np.asarray(a)
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(f"{name}: expected a real floating array, got an object array")
    return arr


def as_real_array(name, a, shape=None, dims=None, *, allow_empty=False):
    """Return ``a`` as a finite, C-contiguous float64 array.

    Parameters
    ----------
    name : str
        The argument's name, used in every message.
    a : array_like
        Real floating data. Booleans, integers, complex numbers, objects and
        strings are refused: an integer array is almost always a mistake
        (e.g. a token index passed as an input), and a silent cast hides it.
    shape : tuple of int or None, optional
        Expected shape; ``None`` entries are free. The rank must match exactly.
    dims : tuple of str, optional
        Names of the axes (e.g. ``("B", "T", "N")``) for the messages.
    """
    arr = _dtype_of(name, a)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name}: expected a real floating array, got complex dtype {arr.dtype} "
            "(complex input is accepted only by documented complex-step entry points)"
        )
    if kind in "biu":
        raise TypeError(
            f"{name}: expected a real floating array, got dtype {arr.dtype}; "
            "convert explicitly with .astype(float) if the integers are meant as values"
        )
    if kind != "f":
        raise TypeError(f"{name}: expected a real floating array, got dtype {arr.dtype}")
    _check_shape(name, arr, shape, dims)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float64)
    _check_finite(name, out)
    return out


def as_real_or_complex_array(name, a, shape=None, dims=None):
    """Like :func:`as_real_array` but also accepts complex data (complex-step use).

    Real input becomes float64, complex input complex128.
    """
    arr = _dtype_of(name, a)
    if arr.dtype.kind == "c":
        _check_shape(name, arr, shape, dims)
        out = np.ascontiguousarray(arr, dtype=np.complex128)
        _check_finite(name, out)
        return out
    return as_real_array(name, arr, shape, dims)


def check_positive_int(name, value, *, minimum=1, maximum=None, why=None):
    """Return ``value`` as an int, refusing bools, floats and values below ``minimum``.

    ``maximum`` (with ``why``, the reason printed in the message) bounds a count
    that drives a loop rather than an allocation, such as :data:`MAX_RANDOM_DRAWS`.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: expected an integer <= {maximum}" + (f" ({why})" if why else "") + f", got {value}")
    if value > MAX_INT:
        # no array axis, count or index can be this large (NumPy sizes are int64); refuse before any arithmetic
        raise ValueError(f"{name}: expected an integer <= 2**62, got {value}")
    return value


def check_positive_float(name, value, *, upper=None, upper_inclusive=True):
    """Return ``value`` as a finite float > 0 (and <= or < ``upper`` if given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value}")
    if upper is not None:
        if (value > upper) if upper_inclusive else (value >= upper):
            interval = f"(0, {upper}]" if upper_inclusive else f"(0, {upper})"
            raise ValueError(f"{name}: expected a number in {interval}, got {value}")
    return value


def check_real(name, value, *, minimum=None):
    """Return ``value`` as a finite float (``>= minimum`` if given); bools, strings, complex, None refused.

    The scalar counterpart of :func:`as_real_array` for real-valued (not only
    positive) scalars: a distance, a shift, a loss.
    """
    bound = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number{bound}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value}")
    return value


def check_callable(name, value, what="a callable"):
    """Return ``value`` if it is callable, else a ``TypeError`` naming ``name`` (``what`` says which signature)."""
    if not callable(value):
        raise TypeError(f"{name}: expected {what}, got {value!r:.60} ({type(value).__name__})")
    return value


def check_bool(name, value):
    """``value`` as a Python bool; ``TypeError`` naming ``name`` for anything but a bool (0/1 included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``; otherwise a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_memory_limit(value, name="memory_limit"):
    """``value`` as a number of bytes: ``None`` → the default (2 GiB), else a finite real ≥ 1.

    NaN would switch every ``nbytes > limit`` test off, a negative or string
    limit would fail later with a message about something else: all are
    refused here, naming ``name``.
    """
    if value is None:
        return DEFAULT_MEMORY_LIMIT
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected None or a number of bytes, got {value!r} ({type(value).__name__})")
    as_float = float(value)
    if not np.isfinite(as_float) or as_float < 1.0:
        raise ValueError(f"{name}: expected a finite number of bytes >= 1, got {value!r}")
    return int(as_float) if not isinstance(value, numbers.Integral) else operator.index(value)


def check_size_memory(names, nbytes, limit=None, *, what="the arrays"):
    """Refuse (``ValueError`` naming the size arguments) an allocation of ``nbytes`` that a user size asks for.

    ``names`` is the text naming the arguments and their values, e.g.
    ``"batch_size=10**9, num_steps=50"``: the message starts with it.
    """
    limit = check_memory_limit(limit)
    if nbytes > limit:
        raise ValueError(
            f"{names}: {what} would take {nbytes / 2**30:.3g} GiB, above the limit of {limit / 2**30:.3g} GiB "
            "(memory_limit); use smaller sizes"
        )


def check_memory(what, nbytes, limit, *, name="memory_limit"):
    """Refuse a dense allocation of ``nbytes`` above ``limit`` bytes, with the figures.

    ``limit`` is checked with :func:`check_memory_limit` (``None`` is the default).
    """
    limit = check_memory_limit(limit, name)
    if nbytes > limit:
        raise MemoryError(
            f"{what}: a dense materialization needs {nbytes / 1024**2:.1f} MiB, above the limit of "
            f"{limit / 1024**2:.1f} MiB; pass a larger memory_limit (in bytes) to allow it, "
            "or use the matrix-free operator"
        )


def physical_memory():
    """Bytes of RAM of this machine, or ``None`` where the OS does not say (POSIX ``sysconf``).

    The bound for an index that only makes sense inside an array in memory:
    a larger array cannot exist, whatever ``memory_limit`` a caller chose.
    """
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):     # pragma: no cover - non-POSIX
        return None


def check_finite_result(what, arr, hint=""):
    """Raise ``FloatingPointError`` if ``arr`` holds inf or NaN (a result, not an input: it overflowed).

    kpref never returns a non-finite result silently: inputs are refused
    (``ValueError``) before any work, and a result that overflows from finite
    input raises this error naming the function, the first bad index and,
    with ``hint``, what to change.
    """
    arr = np.asarray(arr)
    bad = _nonfinite(arr)
    if bad is not None:
        where, value, count = bad
        raise FloatingPointError(
            f"{what}: the result is not finite ({value.item()!r} at index {where}, {count} non-finite entries "
            "in all) although every input was finite" + (f"; {hint}" if hint else "")
        )
    return arr


def readonly_copy(arr):
    """A fresh C-contiguous copy of ``arr`` with ``writeable=False`` (an immutable snapshot)."""
    out = np.array(arr, order="C", copy=True)
    out.flags.writeable = False
    return out


def freeze_arrays(arrays):
    """Make every ndarray of the tuple ``arrays`` read-only (in place) and return the tuple."""
    for arr in arrays:
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False
    return arrays


def as_generator(rng, name="rng"):
    """Return a ``numpy.random.Generator`` from ``None``, an int seed or a Generator.

    ``None`` draws fresh OS entropy (non-reproducible, as NumPy documents);
    the legacy ``RandomState`` and global seeding are not accepted.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, numbers.Integral):
        raise TypeError(
            f"{name}: expected None, an integer seed or a numpy.random.Generator, got {type(rng).__name__}"
        )
    if rng < 0:
        raise ValueError(f"{name}: expected a non-negative integer seed, got {rng}")
    return np.random.default_rng(int(rng))

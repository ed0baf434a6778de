"""Other frameworks' implementations as kpref backends, and parameters in their names.

* :mod:`kpref.interop.torch` — a backend for :func:`kpref.testing.check_backend`
  from a ``torch.nn`` recurrent module or any torch step function (by
  ``torch.func``); ``params_from_torch`` / ``params_to_torch`` / ``match_names``.
  Needs the ``torch`` extra (``pip install kpref[torch]``) for the backend only.
* :mod:`kpref.interop.jax` — a backend from a JAX step function (by
  ``jax.jvp`` / ``jax.vjp``). Needs the ``jax`` extra.

Importing :mod:`kpref.interop` imports neither torch nor JAX.
"""

import importlib

__all__ = ["torch", "jax"]


def __getattr__(name):
    """``kpref.interop.torch`` / ``.jax`` on first use (neither framework is imported until a backend is built)."""
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'kpref.interop' has no attribute {name!r}")

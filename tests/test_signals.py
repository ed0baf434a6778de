"""Ctrl-C during a numba compile is held until the compile is done (kpref.cells.njit).

A SIGINT raised as a KeyboardInterrupt inside LLVM's ctypes callbacks is
swallowed ("Exception ignored") and leaves numba's library half-built; the
next use then fails with ``RuntimeError: no compiled object yet`` (seen in
CI on a Ctrl-C test of ``python -m kpref report``). The tests interrupt a
compile deterministically: numba runs an ``@overload`` implementation in
Python while typing, and that implementation raises SIGINT.
"""

import importlib.util
import signal

import numba
import pytest
from numba.extending import overload

from kpref.cells import njit


_MODULE = """
import signal
from numba.extending import overload


def interrupt_while_typing():
    pass


@overload(interrupt_while_typing)
def _impl():
    signal.raise_signal(signal.SIGINT)
    return lambda: None


def body(x):
    interrupt_while_typing()
    return x + 1.0
"""


@pytest.fixture
def body(tmp_path, request):
    """A kernel body whose first compile raises SIGINT, in a module of its own under ``tmp_path``: numba
    types an overload once per function and ``cache=True`` keeps compiled code beside the module, so a
    shared module would compile only in the first test."""
    path = tmp_path / "interrupting.py"
    path.write_text(_MODULE)
    spec = importlib.util.spec_from_file_location(f"interrupting_{request.node.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.body


def test_ctrl_c_during_a_compile_is_delivered_after_it(body):
    kernel = njit(body)
    with pytest.raises(KeyboardInterrupt):
        kernel(1.0)
    assert len(kernel.signatures) == 1          # the compile finished before the interrupt was delivered
    assert kernel(2.0) == 3.0                   # and the compiled code is whole


def test_plain_numba_is_cut_mid_compile(body):
    """The failure the wrapper prevents: the same interrupt stops plain numba inside its compile."""
    kernel = numba.njit(body)
    with pytest.raises(KeyboardInterrupt):
        kernel(1.0)
    assert kernel.signatures == []


def test_nested_compiles_deliver_one_interrupt_after_the_outer_one(body):
    inner = njit(body)

    def outer_body(x):
        return inner(x) * 2.0

    outer = njit(outer_body)
    with pytest.raises(KeyboardInterrupt):
        outer(1.0)
    assert len(outer.signatures) == 1 and outer(2.0) == 6.0


def test_the_previous_handler_is_restored_and_receives_the_signal(body):
    got = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        kernel = njit(body)
        assert kernel(1.0) == 2.0               # the handler recorded the signal instead of raising
        assert got == [signal.SIGINT]
        assert len(kernel.signatures) == 1
        signal.raise_signal(signal.SIGINT)      # outside a compile: straight to the handler
        assert got == [signal.SIGINT, signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
    assert signal.getsignal(signal.SIGINT) is previous


def test_njit_refuses_what_is_not_a_function():
    with pytest.raises(TypeError, match="njit: expected a Python function, got int"):
        njit(3)


def test_njit_nogil_form():
    """``@njit(nogil=True)`` compiles a kernel that releases the GIL; ``nogil`` must be a bool."""
    def body(x):
        return x + 1.0
    kernel = njit(nogil=True)(body)
    assert kernel(1.0) == 2.0 and kernel.targetoptions.get("nogil") is True
    assert njit(body).targetoptions.get("nogil", False) is False
    with pytest.raises(TypeError, match="nogil: expected a bool, got 3"):
        njit(nogil=3)

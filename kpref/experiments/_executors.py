"""Local worker processes for independent runs: the one executor of ``report --jobs`` and ``sweep --jobs``.

:func:`run_local` calls ``fn(*args)`` for each item, in this process when
``jobs == 1`` and otherwise in ``jobs`` spawned processes
(``concurrent.futures.ProcessPoolExecutor``: an existing engine, nothing
home-made). Results come back in completion order with the item's index,
so a caller that stores them by index gets the same output whatever the
number of workers: each run seeds its own ``numpy.random.Generator`` and
shares no state with the others.

Ctrl-C: the workers never act on SIGINT (a terminal sends it to the whole
process group): they are spawned with it blocked and then ignore it, so it
reaches only the parent, as a KeyboardInterrupt; the
parent then terminates its workers, cancels what has not started and
re-raises. A worker killed by the operating system makes the pool raise
``BrokenProcessPool``; nothing half-done is returned.

Threads: ``jobs`` workers that each let BLAS start one thread per core
oversubscribe the machine (on 2 cores, two GRU runs at once took three
times as long per step). Unless the caller has set them, the workers get
``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` =
``max(1, cores // jobs)`` (:data:`BLAS_THREAD_VARIABLES`); the parent's own
environment is restored once the pool is shut down.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

from .._checks import check_positive_int

__all__ = ["run_local", "BLAS_THREAD_VARIABLES", "worker_blas_threads"]

#: The thread-count variables of the BLAS libraries NumPy and SciPy may load.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


#: Local worker processes allowed at once (a larger --jobs is a typo, not a machine).
MAX_JOBS = 1024


def _check_jobs(jobs):
    return check_positive_int("jobs", jobs, maximum=MAX_JOBS, why="local worker processes")


def worker_blas_threads(jobs):
    """BLAS threads per worker when ``jobs`` run at once: ``max(1, cores // jobs)``."""
    return max(1, (os.cpu_count() or 1) // _check_jobs(jobs))


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(fn, items, jobs):
    """Yield ``(index, fn(*items[index]))`` for every item, in completion order, on ``jobs`` processes.

    ``fn`` must be importable by name (a module-level function) when
    ``jobs > 1``; ``items`` is a sequence of argument tuples. The arguments
    are checked when called; the runs start when the result is iterated.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable (a module-level function), got {type(fn).__name__}")
    jobs = _check_jobs(jobs)
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise TypeError(f"items: expected a sequence of argument tuples, got {type(items).__name__}")
    items = list(items)
    for k, args in enumerate(items):
        if not isinstance(args, tuple):
            raise TypeError(f"items: expected a sequence of argument tuples, got {type(args).__name__} at index {k}")
    return _run_local(fn, items, jobs)


def _run_local(fn, items, jobs):
    if jobs == 1:
        for index, args in enumerate(items):
            yield index, fn(*args)
        return
    others = set(multiprocessing.active_children())      # children that are not this pool's: left alone
    saved = {k: os.environ.get(k) for k in BLAS_THREAD_VARIABLES}
    for k in BLAS_THREAD_VARIABLES:                       # inherited by the spawned workers; the caller's win
        if saved[k] is None:
            os.environ[k] = str(worker_blas_threads(jobs))
    try:
        yield from _run_pool(fn, items, jobs, others)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_pool(fn, items, jobs, others):
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        # the workers are spawned by these submits; SIGINT is blocked meanwhile, so they start with it blocked
        # (inherited through fork and exec) instead of catching a Ctrl-C while they import, and a Ctrl-C that
        # arrives now reaches this process when the block is lifted
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            futures = {pool.submit(fn, *args): index for index, args in enumerate(items)}
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BaseException:                 # Ctrl-C, a failed run, or the caller stopped early
        for child in set(multiprocessing.active_children()) - others:
            child.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)

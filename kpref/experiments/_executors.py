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
"""

from __future__ import annotations

import multiprocessing
import signal

__all__ = ["run_local"]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_local(fn, items, jobs):
    """Yield ``(index, fn(*items[index]))`` for every item, in completion order, on ``jobs`` processes.

    ``fn`` must be importable by name (a module-level function) when
    ``jobs > 1``; ``items`` is a sequence of argument tuples.
    """
    items = list(items)
    if jobs == 1:
        for index, args in enumerate(items):
            yield index, fn(*args)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed

    others = set(multiprocessing.active_children())      # children that are not this pool's: left alone
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

"""Atomic file writes (the one writer of the report, the sweep and the Koopman figures) and file digests.

:func:`atomic_write` writes into a temporary file in the target's folder
(name ``.kpref-tmp-<name>.<random>``, so a folder's owner can recognize and
remove leftovers of a killed process), flushes it to disk, gives it the
mode ``open()`` would (``mkstemp`` makes 0600) and moves it into place with
``os.replace``: a reader sees the old file or the new one, never a part.
On any exception, KeyboardInterrupt included, the temporary file is removed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

__all__ = ["TMP_PREFIX", "atomic_write", "file_sha256"]

TMP_PREFIX = ".kpref-tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """``write(fh)`` into a temporary file in ``path``'s folder, flushed to disk, then ``os.replace`` it.

    Returns ``path``.
    """
    folder, name = os.path.split(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=TMP_PREFIX + name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def file_sha256(path):
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks): what a manifest records and a reader checks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

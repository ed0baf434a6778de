"""Helpers shared by tests/ and validation/ (imported as ``tests.helpers``; not part of kpref).

Kept independent of kpref on purpose: a test's yardstick must not be the
code under test.
"""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def rel(a, b):
    """Relative error ``‖a − b‖ / ‖b‖`` (Frobenius over all entries; ``‖b‖`` floored at 1e-300)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(np.ravel(a - b)) / max(np.linalg.norm(np.ravel(b)), 1e-300))


def readme_blocks():
    """The README's ```python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def readme_block(marker):
    """The one README python block containing ``marker``."""
    found = [b for b in readme_blocks() if marker in b]
    if len(found) != 1:
        raise LookupError(f"expected one README python block containing {marker!r}, found {len(found)}")
    return found[0]

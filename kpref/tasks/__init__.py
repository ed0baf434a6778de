"""Task generators for training recurrent networks (public module).

``kpref.tasks.memory_pro``, ``flip_flop`` and ``multitask`` return float64
``(x, target[, mask[, rule]])`` batches, seeded by a ``numpy.random.Generator``;
timing, targets and draw order are documented in :mod:`kpref.tasks._tasks`.
"""

from ._tasks import (
    MEMORY_RULES,
    TASK_NAMES,
    FlipFlopTrials,
    MemoryProTrials,
    MultitaskTrials,
    flip_flop,
    generate,
    memory_pro,
    multitask,
)
from ._tasks import __doc__ as _details

__all__ = [
    "MEMORY_RULES",
    "TASK_NAMES",
    "FlipFlopTrials",
    "MemoryProTrials",
    "MultitaskTrials",
    "flip_flop",
    "generate",
    "memory_pro",
    "multitask",
]

__doc__ = __doc__ + "\n" + _details

"""Task generators for training recurrent networks (public module).

``kpref.tasks.memory_pro``, ``flip_flop``, ``multitask`` and ``low_rank_forecast`` return float64
``(x, target[, mask[, rule]])`` batches, seeded by a ``numpy.random.Generator``;
timing, targets and draw order are documented in :mod:`kpref.tasks._tasks`.
"""

from ._tasks import (
    KPFLOW_MEMORY_PRO,
    MEMORY_RULES,
    TASK_NAMES,
    FlipFlopTrials,
    LowRankForecastTrials,
    MemoryProTrials,
    MultitaskTrials,
    flip_flop,
    generate,
    low_rank_forecast,
    memory_pro,
    memory_pro_accuracy,
    multitask,
)
from ._tasks import __doc__ as _details

__all__ = [
    "KPFLOW_MEMORY_PRO",
    "LowRankForecastTrials",
    "low_rank_forecast",
    "memory_pro_accuracy",
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

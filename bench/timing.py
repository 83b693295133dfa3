"""Timing helper shared by the benchmarks (not a benchmark itself: run_all runs only bench_*.py)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, TypeVar

Result = TypeVar("Result")


def timed(fn: Callable[[], Result], repeats: int) -> tuple[float, Result]:
    """Median seconds of `repeats` calls of `fn` and the last call's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result

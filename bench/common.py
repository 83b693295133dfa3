"""Helpers shared by the benchmarks (not a benchmark itself: run_all runs only bench_*.py)."""

from __future__ import annotations

import argparse
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


def image_size(text: str) -> tuple[int, int]:
    """argparse type of one "HxW" size, e.g. "240x360"."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size HxW such as 240x360, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return height, width


def image_sizes(text: str) -> list[tuple[int, int]]:
    """argparse type of comma-separated "HxW" sizes, e.g. "240x360,480x720" (empty: none)."""
    return [image_size(part) for part in text.split(",") if part]

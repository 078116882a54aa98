"""Timing in alternating rounds: the settings compared share the machine's drifts.

On a shared machine the load changes within seconds; timing A, A, A then B, B, B would
compare two different machines. Rounds of A, B, A, B, ... with medians do not, and a
setting clearly slower than the fastest after a round is not timed again (one slow round is
enough to rule it out, and bfloat16 emulated in float32 can take a minute per large step).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

TIMED_ROUNDS = 3
# After a round, a setting this many times slower than the fastest is dropped.
CLEARLY_SLOWER = 1.5

_Key = TypeVar("_Key", bound=Hashable)


def seconds_of(function: Callable[[], object]) -> float:
    """Wall seconds of one call of `function`."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def still_timed(key: _Key, durations: Mapping[_Key, list[float]]) -> bool:
    """Whether `key` is worth another round: not clearly slower than the fastest so far."""
    if not durations[key]:
        return True
    fastest = min(min(times) for times in durations.values() if times)
    return min(durations[key]) <= CLEARLY_SLOWER * fastest


def interleaved_medians(
    timers: Mapping[_Key, Callable[[], float]], rounds: int = TIMED_ROUNDS
) -> dict[_Key, float]:
    """Median seconds of each timer (a call returns the seconds of one step), over
    alternating rounds; settings ruled out early keep the rounds they had."""
    durations: dict[_Key, list[float]] = {key: [] for key in timers}
    for _ in range(rounds):
        for key in [key for key in timers if still_timed(key, durations)]:
            durations[key].append(timers[key]())
    return {key: statistics.median(times) for key, times in durations.items()}

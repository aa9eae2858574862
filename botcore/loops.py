"""One value per event loop.

Async clients are bound to the loop that made them. The Functions worker runs one
loop for the process's life, so each value is made once; tests, benchmarks and
the local host run several loops, and each gets its own.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self) -> None:
        self._values: dict[asyncio.AbstractEventLoop, T] = {}

    def get(self, make: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            for stale in [l for l in self._values if l.is_closed()]:
                del self._values[stale]
            value = self._values[loop] = make()
        return value

    def pop(self) -> T | None:
        """Forget this loop's value (to close it, or to make a new one)."""
        return self._values.pop(asyncio.get_running_loop(), None)

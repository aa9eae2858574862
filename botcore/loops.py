"""One value per event loop, and calls run together on one.

Async clients are bound to the loop that made them. The Functions worker runs one
loop for the process's life, so each value is made once; tests, benchmarks and
the local host run several loops, and each gets its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class PerLoop(Generic[T]):
    """With `close`, a value still held when asyncio.run() ends its loop is closed then, so a
    process that stops cleanly does not leave open clients behind ("Unclosed client session")."""

    def __init__(self, close: Callable[[T], Awaitable[None]] | None = None) -> None:
        self._values: dict[asyncio.AbstractEventLoop, T] = {}
        self._close = close
        self._guards: dict[asyncio.AbstractEventLoop, Any] = {}

    def get(self, make: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            for stale in [loop for loop in self._values if loop.is_closed()]:
                del self._values[stale]
                self._guards.pop(stale, None)
            value = self._values[loop] = make()
            if self._close is not None:
                self._guards[loop] = self._closed_at_shutdown(loop, value)
        return value

    def pop(self) -> T | None:
        """Forget this loop's value (to close it, or to make a new one)."""
        loop = asyncio.get_running_loop()
        self._guards.pop(loop, None)
        return self._values.pop(loop, None)

    def _closed_at_shutdown(self, loop: asyncio.AbstractEventLoop, value: T) -> AsyncGenerator[None, None]:
        """An async generator paused in a try/finally: asyncio.run() closes every such generator
        of its loop as it ends (loop.shutdown_asyncgens), and the finally closes the value."""
        close = self._close
        assert close is not None

        async def guard() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                if self._values.get(loop) is value:  # not popped and closed by its owner already
                    del self._values[loop]
                    await close(value)

        generator = guard()
        try:  # the first step registers the generator with the running loop and stops at the yield
            generator.__anext__().send(None)
        except StopIteration:
            pass
        return generator


async def together(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run the calls concurrently and let each finish before the first failure is raised: none is left running."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failure is not None:
        raise failure
    return cast(list[T], outcomes)

"""PerLoop: one value per event loop, closed when asyncio.run() ends that loop."""

import asyncio

from botcore.loops import PerLoop


def test_a_value_is_made_once_per_loop_and_closed_when_its_loop_ends() -> None:
    closed: list[object] = []

    async def close(value: object) -> None:
        await asyncio.sleep(0)  # closing may await
        closed.append(value)

    per_loop: PerLoop[object] = PerLoop(close=close)

    async def use() -> object:
        value = per_loop.get(object)
        assert per_loop.get(object) is value
        return value

    first = asyncio.run(use())
    assert closed == [first]
    second = asyncio.run(use())
    assert second is not first and closed == [first, second]


def test_a_value_popped_by_its_owner_is_not_closed_again() -> None:
    closed: list[object] = []

    async def close(value: object) -> None:
        closed.append(value)

    per_loop: PerLoop[object] = PerLoop(close=close)

    async def replace() -> tuple[object, object]:
        old = per_loop.get(object)
        assert per_loop.pop() is old  # the owner closes it itself
        return old, per_loop.get(object)

    old, new = asyncio.run(replace())
    assert closed == [new]

"""Recording outcomes, pure or with the write handed in: how a batch's outcomes become retry batches or
failures (botcore.delivery.ledger), and how few sends the recorder lets go unrecorded (botcore.delivery.send).
The writes themselves are tested on Azurite (tests/integration) and end to end."""

from __future__ import annotations

import asyncio

import pytest

from botcore.delivery.ledger import Delivered, Outcome, Status, abandoned, handed_on
from botcore.delivery.send import FLUSH_SECONDS, OutcomeRecorder
from botcore.storage import StorageStalledError


def test_what_a_batch_hands_on_is_grouped_by_the_attempts_used() -> None:
    outcomes = {
        "a": Delivered(Status.SENT, "act-1"),
        "b": Delivered(Status.RETRYING, attempts=1),
        "c": Delivered(Status.RETRYING, attempts=3),
        "d": Delivered(Status.RETRYING, attempts=1),
        "e": Delivered(Status.FAILED, error="400"),
    }
    assert handed_on(outcomes) == {1: ["b", "d"], 3: ["c"]}
    assert list(handed_on(outcomes)) == [1, 3]


def test_an_abandoned_batch_fails_what_has_no_final_outcome_and_keeps_the_rest() -> None:
    recorded = {"a": Delivered(Status.SENT, "act-1"), "b": Delivered(Status.RETRYING, attempts=1)}
    result = abandoned(recorded, ["a", "b", "c"], "gave up")
    assert result["a"] == Delivered(Status.SENT, "act-1")
    assert result["b"] == result["c"] == Delivered(Status.FAILED, error="gave up")


class Writes:
    """The recorder's collaborator: a write that can be made to hang (storage that stops answering)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, outcomes: list[Outcome]) -> None:
        await self.gate.wait()
        self.batches.append([o.key for o in outcomes])


async def test_at_most_limit_sends_are_unrecorded_and_a_write_carries_all_that_came_before() -> None:
    writes = Writes()
    recorder = OutcomeRecorder(writes, limit=4)
    writes.gate.clear()  # storage slow: the first write waits
    for key in "abcd":
        assert await recorder.start()
        recorder.add(Outcome(key, Status.SENT))
    fifth = asyncio.create_task(recorder.start())
    await asyncio.sleep(0.05)
    assert not fifth.done()  # four unrecorded: the fifth send waits for the write
    writes.gate.set()
    assert await asyncio.wait_for(fifth, 1)
    recorder.add(Outcome("e", Status.SENT))
    unwritten = [o.key for o in await recorder.finish()]  # the batch's last write carries these
    assert writes.batches[0] == list("abcd")  # one write for the four that came before it
    assert sorted([k for batch in writes.batches for k in batch] + unwritten) == list("abcde")


async def test_a_write_that_hangs_past_the_timeout_stops_the_sends_and_says_why() -> None:
    writes = Writes()
    recorder = OutcomeRecorder(writes, limit=2, timeout=0.05)
    writes.gate.clear()  # storage hangs for good
    for key in "ab":
        assert await recorder.start()
        recorder.add(Outcome(key, Status.SENT))
    assert await asyncio.wait_for(recorder.start(), 1) is False  # no more sends: none could be recorded
    with pytest.raises(StorageStalledError):
        await recorder.finish()


async def test_outcomes_are_written_within_the_flush_interval_without_more_sends() -> None:
    writes = Writes()
    recorder = OutcomeRecorder(writes, limit=100)
    assert await recorder.start()
    recorder.add(Outcome("a", Status.SENT))
    for _ in range(200):
        if writes.batches:
            break
        await asyncio.sleep(FLUSH_SECONDS / 100)
    assert writes.batches == [["a"]]  # written by the timer, not by a later send
    assert await recorder.finish() == []


async def test_outcomes_at_a_steady_pace_wait_for_the_flush_interval_unless_the_unrecorded_near_the_limit() -> None:
    """A write merges the batch's whole row: a few outcomes per write would cost a write per couple of sends."""
    writes = Writes()
    recorder = OutcomeRecorder(writes, limit=20)
    await asyncio.sleep(FLUSH_SECONDS)  # the last write (none) is long past: the first outcome goes at once
    assert await recorder.start()
    recorder.add(Outcome("first", Status.SENT))
    await written(writes, 1, within=FLUSH_SECONDS / 10)
    assert writes.batches == [["first"]]
    keys = [f"k{i}" for i in range(9)]
    for key in keys:  # nine sends within a flush interval: none written yet
        assert await recorder.start()
        recorder.add(Outcome(key, Status.SENT))
        await asyncio.sleep(0.005)
    assert writes.batches == [["first"]]
    for _ in range(200):
        if len(writes.batches) > 1:
            break
        await asyncio.sleep(FLUSH_SECONDS / 100)
    assert writes.batches[1] == keys  # one write for the nine
    in_flight = [await recorder.start() for _ in range(9)]  # sends waiting for the Connector: 9 of 20 unrecorded
    assert all(in_flight)
    assert await recorder.start()  # the tenth: half the limit, its outcome written at once
    recorder.add(Outcome("early", Status.SENT))
    await written(writes, 3, within=FLUSH_SECONDS / 10)
    assert writes.batches[2:] == [["early"]]
    for _ in range(9):
        recorder.unstarted()
    assert await recorder.finish() == []


async def written(writes: Writes, count: int, within: float) -> None:
    """Until `count` writes were made, for at most `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while len(writes.batches) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.002)


async def test_an_idle_run_renews_its_claim_with_an_empty_write() -> None:
    """A run waiting for slots or permits writes no outcome; its claim must not lapse under it meanwhile."""
    writes = Writes()
    recorder = OutcomeRecorder(writes, limit=4, renew_every=0.05)
    for _ in range(50):
        if len(writes.batches) >= 2:
            break
        await asyncio.sleep(0.01)
    assert writes.batches[:2] == [[], []]  # renewals, one every renew_every
    assert await recorder.finish() == []

"""A selection's fan-out page by page, in this process against an Azurite of its own (no host takes the queues'
messages; the test hands the jobs queue's messages to the jobs function's edge), with pages of 5 (the job's first of
3) and 3 pages an invocation so that a few dozen conversations take several of each."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.botstack import BotStack, new_tenant, stack_of_its_own

FIRST, PAGE, PAGES = 3, 5, 3
SLOW_SAVE = 0.15  # seconds each cursor save takes here: long enough to see what waits for it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with stack_of_its_own(tmp_path_factory.mktemp("fanout"), hosted=False) as stack:
        yield stack


class Timeline:
    """When the fan-out's steps began and ended, in the order they began."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def wrap(self, kind: str, step: Any, delay: float = 0.0) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            entry: dict[str, Any] = {"kind": kind, "start": time.monotonic(), "args": args}
            self.steps.append(entry)
            if delay:
                await asyncio.sleep(delay)
            result = await step(*args, **kwargs)
            entry["end"] = time.monotonic()
            return result

        return timed

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["kind"] == kind]


def test_a_page_reserves_while_the_page_before_is_saved_and_puts_only_after_it(
    stack: BotStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botcore.delivery import fanout
    from botcore.delivery.batches import SendBatch
    from botcore.state.conversations import ConversationStore

    monkeypatch.setattr(fanout, "FIRST_PAGE", FIRST)
    monkeypatch.setattr(fanout, "PAGE_SIZE", PAGE)
    monkeypatch.setattr(fanout, "PAGES_PER_INVOCATION", PAGES)
    timeline = Timeline()
    monkeypatch.setattr(fanout, "reserve_paced", timeline.wrap("reserve", fanout.reserve_paced))
    monkeypatch.setattr(fanout, "enqueue_reserved", timeline.wrap("put", fanout.enqueue_reserved))
    monkeypatch.setattr(fanout, "save_page", timeline.wrap("save", fanout.save_page, delay=SLOW_SAVE))
    monkeypatch.setattr(ConversationStore, "addresses", timeline.wrap("read", ConversationStore.addresses))
    puts: list[str] = []
    tenant = new_tenant()  # one pace key: a reservation and a batch per page
    keys = {stack.key(c) for c in stack.seed(2 * PAGE * PAGES + 2, tenant_id=tenant, prefix="paged")}

    outcomes = asyncio.run(_fan_out(stack, tenant, puts))

    # 32 conversations: pages of 3, 5 and 5, then of 5, 5 and 5, then one of 4.
    assert outcomes == ["continuing", "continuing", f"fanned out to {len(keys)}"]
    batches = [SendBatch.parse(m) for m in puts]
    assert sorted(k for b in batches for k, _ in b.items) == sorted(keys)  # each put on the queue once
    planned = [0, 3, 8, 13, 18, 23, 28]  # conversations before each page: the batches are named by their place
    assert [b.id for b in batches] == [f"{n}.0.0" for n in planned]
    saves, reservations, enqueued = timeline.of("save"), timeline.of("reserve"), timeline.of("put")
    reads = timeline.of("read")
    assert len(saves) == len(reservations) == len(enqueued) == len(batches) == len(reads) == 7
    for page in range(len(reads) - 1):
        if page % PAGES == 0:  # an invocation's first page: the next read waits for its reservations
            assert reads[page + 1]["start"] >= reservations[page]["end"], page
        elif page % PAGES < PAGES - 1:  # later pages: the next page is read while this one is reserved
            assert reads[page + 1]["start"] <= reservations[page]["start"], page
    for page in range(1, len(saves)):
        if page % PAGES == 0:
            continue  # the first page of an invocation: the page before was another invocation's
        before = saves[page - 1]
        assert reservations[page]["start"] < before["end"], page  # reserved while the page before was saved
        assert enqueued[page]["start"] >= before["end"], page  # its batches put only once that page is saved


async def _fan_out(stack: BotStack, tenant: str, puts: list[str]) -> list[str]:
    """POST /api/notify to the tenant, then each message of the jobs queue to the jobs function's edge until the
    fan-out ends; the edge's outcome for each. Every message put on the sends queue is kept in `puts`."""
    from azure.storage.queue.aio import QueueClient

    from botcore.api import handle_notify
    from botcore.app import bot_for, close
    from botcore.worker import handle_job_message

    sends = bot_for().delivery.sends
    put = sends.send

    async def recorded(content: str, *, delay: float = 0) -> str:
        puts.append(content)
        return await put(content, delay=delay)

    sends.send = recorded  # type: ignore[method-assign]
    outcomes: list[str] = []
    try:
        answer = await handle_notify(
            {"Content-Type": "application/json"},
            json.dumps({"text": "paged", "target": {"tenantId": tenant}}).encode(),
            invocation_id="invocation-1",
        )
        assert answer.status == 202, answer.body
        async with QueueClient.from_connection_string(stack.storage_connection, "bot-jobs") as jobs:
            while not outcomes or outcomes[-1] == "continuing":
                [message] = [m async for m in jobs.receive_messages(max_messages=1, visibility_timeout=60)]
                outcomes.append(await handle_job_message(message.content.encode(), message.id, 1))
                await jobs.delete_message(message)
        return outcomes
    finally:
        await close()

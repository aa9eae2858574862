"""Timer triggers: NCRONTAB schedules in UTC, runOnStartup, past_due, never two at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .app_loader import FunctionInfo, resolve
from .cron import parse_schedule
from .triggers import timer_info

log = logging.getLogger("devhost.timer")

PAST_DUE_AFTER = 1.0  # seconds late before an invocation counts as past due


class TimerRunner:
    def __init__(self, function: FunctionInfo, invoke: Callable[[FunctionInfo, Any, str], Awaitable[Any]]) -> None:
        self.function, self.invoke = function, invoke
        self.schedule_text = resolve(function.trigger["schedule"])
        self.schedule = parse_schedule(self.schedule_text)
        self.run_on_startup = bool(function.trigger.get("runOnStartup"))
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def _fire(self, past_due: bool, last: datetime | None, due: datetime, reason: str) -> None:
        try:
            await self.invoke(self.function, timer_info(past_due, last, self.schedule.next_after(due)), reason)
        except Exception:
            pass  # logged by the host; the schedule goes on

    async def run(self) -> None:
        last = None
        if self.run_on_startup:
            now = datetime.now(UTC)
            await self._fire(False, None, now, "Timer fired at startup (runOnStartup)")
            last = now
        due = self.schedule.next_after(datetime.now(UTC))
        while not self._stopping.is_set():
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), wait)
                    return
                except TimeoutError:
                    pass
            now = datetime.now(UTC)
            await self._fire(
                (now - due).total_seconds() > PAST_DUE_AFTER, last, due, f"Timer fired at {due.isoformat()}"
            )
            last = due
            due = self.schedule.next_after(max(due, datetime.now(UTC)))

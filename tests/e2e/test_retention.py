"""Retention end to end: jobs sent through the running bot (the function app in the local host), then the retention
pass, driven in this process as the timer runs it, a retention period later: a finished job's status answers 404
saying it expired, through the API and the command line, its id stays taken, and running work is untouched."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from botcore.app import bot_for, close
from botcore.delivery.retention import run_retention
from tests.botstack import BotStack, environment, new_tenant, stack_of_its_own, status_of
from tests.hostproc import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bot(tmp_path_factory):
    """A bot on a storage account of its own: the pass, a retention period on, would expire every other test's
    finished jobs."""
    with stack_of_its_own(tmp_path_factory.mktemp("retention")) as stack:
        yield stack


async def _retention_pass(bot: BotStack, days: float):
    with environment(bot.env):
        report = await run_retention(bot_for().delivery, now=datetime.now(UTC) + timedelta(days=days))
        await close()
    return report


async def test_a_finished_job_expires_and_says_so_while_running_work_stays(bot: BotStack) -> None:
    tenant = new_tenant()
    one, two = await asyncio.to_thread(bot.seed, 2, tenant_id=tenant)
    notify = await asyncio.to_thread(
        bot.api, "POST", "notify", {"text": "hi", "target": {"conversation": bot.key(one)}}
    )
    notified = notify.json()["id"]
    broadcast = await asyncio.to_thread(bot.api, "POST", "notify", {"text": "all", "target": {"tenantId": tenant}})
    broadcast_id = broadcast.json()["id"]
    await asyncio.to_thread(status_of, bot, notified, state="done", sent=1)
    await asyncio.to_thread(status_of, bot, broadcast_id, state="done", sent=2)
    update = (await asyncio.to_thread(bot.api, "PATCH", f"notify/{broadcast_id}", {"text": "all, edited"})).json()["id"]
    await asyncio.to_thread(status_of, bot, update, state="done", updated=2)
    reminder = await asyncio.to_thread(
        bot.api, "POST", "reminders", {"text": "later", "target": {"conversation": bot.key(two)}, "inSeconds": 7200}
    )
    reminder_id = reminder.json()["id"]
    await asyncio.to_thread(status_of, bot, reminder_id, state="scheduled")

    report = await _retention_pass(bot, days=31)
    assert report.expired == 3 and report.skipped == 0, report.summary()

    for job_id in (notified, broadcast_id, update):
        answer = await asyncio.to_thread(bot.api, "GET", f"notify/{job_id}")
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "NotFound" and f"job {job_id} " in error["message"] and "expired on" in error["message"]
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "botcore", "status", notified],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "BotStorage": bot.storage_connection},
    )
    assert cli.returncode == 1 and f"job {notified} (notify, created " in cli.stdout and "expired on" in cli.stdout
    again = await asyncio.to_thread(
        bot.api, "POST", "notify", {"id": notified, "text": "hi", "target": {"conversation": bot.key(one)}}
    )
    assert again.status_code == 409 and "expired on" in again.json()["error"]["message"]
    revised = await asyncio.to_thread(bot.api, "DELETE", f"notify/{broadcast_id}")
    assert revised.status_code == 404 and "expired on" in revised.json()["error"]["message"]
    await asyncio.to_thread(status_of, bot, reminder_id, state="scheduled")  # not due yet: untouched

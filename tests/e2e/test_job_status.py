"""Every job can be followed by its id: notify, broadcast, reminder, beginDialog, update and delete, through
the API and `python -m botcore status`; a target that matches nobody says so."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from botcore.jobs import Target, new_job
from tests.botstack import BotStack, status_of, wait_until
from tests.hostproc import REPO


def _cli_status(bot: BotStack, job_id: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "botcore", "status", job_id],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "BotStorage": bot.storage_connection},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_kind_of_job_answers_its_status_by_id(bot: BotStack, tenant: str) -> None:
    group = tenant
    cids = bot.seed(2, tenant_id=group)
    notify = bot.api("POST", "notify", {"text": "one", "target": {"conversation": bot.key(cids[0])}}).json()["id"]
    status_of(bot, notify, kind="notify", state="done", sent=1)
    broadcast = new_job("broadcast", Target(tenant_id=group), text="all")
    bot.enqueue(broadcast.to_json())
    status_of(bot, broadcast.id, kind="broadcast", state="done", targets=2, sent=2)
    reminder = bot.api(
        "POST", "reminders", {"text": "later", "target": {"conversation": bot.key(cids[1])}, "inSeconds": 3600}
    ).json()["id"]
    status_of(bot, reminder, kind="reminder", state="scheduled")
    survey = new_job("beginDialog", Target(conversation=bot.key(cids[1])), dialog="survey")
    bot.enqueue(survey.to_json())
    status_of(bot, survey.id, kind="beginDialog", state="done", targets=1, sent=1)
    update = bot.api("PATCH", f"notify/{broadcast.id}", {"text": "all, edited"}).json()["id"]
    status_of(bot, update, kind="update", notification=broadcast.id, revision=1, state="done", updated=2)
    delete = bot.api("DELETE", f"notify/{broadcast.id}").json()["id"]
    status_of(bot, delete, kind="delete", revision=2, state="done", deleted=2)
    assert status_of(bot, update)["state"] == "superseded"
    for job_id, kind in ((notify, "notify"), (survey.id, "beginDialog"), (delete, "delete")):
        assert _cli_status(bot, job_id)["kind"] == kind  # the same status through the command line


def test_a_dialog_for_a_conversation_nobody_stored_is_skipped_with_a_warning(bot: BotStack) -> None:
    key = bot.key(f"nobody-{uuid.uuid4().hex}")
    survey = new_job("beginDialog", Target(conversation=key), dialog="survey")
    bot.enqueue(survey.to_json())
    status = status_of(bot, survey.id, state="done", skipped=1)
    assert key in status["warning"] and "no conversation" in status["warning"]


def test_a_target_that_matches_nobody_says_so_in_the_status_and_the_log(bot: BotStack) -> None:
    nobody = f"nobody-here-{uuid.uuid4().hex[:6]}"
    job_id = bot.api("POST", "notify", {"text": "hello?", "target": {"userId": nobody}}).json()["id"]
    status = status_of(bot, job_id, state="done", targets=0)
    assert nobody in status["warning"] and "matches" in status["warning"]
    assert wait_until(
        lambda: f"WARNING botcore.delivery.plan: job {job_id}: no stored conversation matches" in bot.host.log()
    )
    key = bot.key(f"typo-{uuid.uuid4().hex}")
    job_id = bot.api("POST", "notify", {"text": "hello?", "target": {"conversation": key}}).json()["id"]
    status = status_of(bot, job_id, state="done", skipped=1)
    assert f"no conversation {key!r} is stored" == status["warning"]

"""The operator command line, as a subprocess, against the running bot's storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.botstack import BotStack, wait_until
from tests.hostproc import REPO, free_port


def cli(bot: BotStack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "BotStorage": bot.storage_connection}
    env.pop("AzureWebJobsStorage", None)
    return subprocess.run([sys.executable, "-m", "botcore", *args], cwd=str(REPO), env=env, text=True,
                          capture_output=True, timeout=60, check=check)


def lines(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_refs_notify_status_and_survey_from_the_command_line(bot: BotStack, tenant) -> None:
    cids = bot.seed(3, tenant_id=tenant)
    refs = lines(cli(bot, "refs", "--tenant", tenant))
    assert sorted(r["conversation"] for r in refs) == sorted(bot.key(c) for c in cids)
    assert all(r["active"] and r["tenantId"] == tenant for r in refs)

    [queued] = lines(cli(bot, "notify", "--tenant", tenant, "--text", "from the operator"))
    assert all(bot.wait_texts(c, 1) == ["from the operator"] for c in cids)
    assert wait_until(lambda: lines(cli(bot, "status", queued["id"]))[0]["state"] == "done", timeout=15)
    assert lines(cli(bot, "status", queued["id"]))[0]["sent"] == 3

    user = bot.conversation_entity(cids[0])["userId"]
    [started] = lines(cli(bot, "survey", "--user", user))
    assert started["target"] == {"conversation": bot.key(cids[0])}
    texts = bot.wait_texts(cids[0], 2, timeout=20)
    assert texts[1].startswith("Sorry to interrupt")


def test_command_line_errors_are_clear(bot: BotStack) -> None:
    missing = cli(bot, "status", "no-such-job", check=False)
    assert missing.returncode == 1 and "no notification job" in missing.stdout
    unnamable = cli(bot, "status", "a/b", check=False)  # no job can have that id
    assert unnamable.returncode == 2 and "job id must be 1 to 200 letters, digits or" in unnamable.stderr
    bad = cli(bot, "notify", "--text", "x", "--user", "u", "--everyone", check=False)
    assert bad.returncode == 2 and "everyone excludes" in bad.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("BotStorage", "AzureWebJobsStorage")}
    unset = subprocess.run([sys.executable, "-m", "botcore", "refs"], cwd=str(REPO), env=env, text=True,
                           capture_output=True, timeout=60)
    assert unset.returncode == 2 and "no storage connection" in unset.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args", [["refs"], ["notify", "--everyone", "--text", "hi"], ["survey", "--user", "u"],
                                  ["status", "some-job"]])
def test_unreachable_storage_is_one_line_with_a_hint(args: list[str]) -> None:
    from devhost.azurite import connection_string

    queues, tables = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "BotStorage": connection_string(queues, tables)}
    result = subprocess.run([sys.executable, "-m", "botcore", *args], cwd=str(REPO), env=env, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: storage is unavailable (") and line.endswith(
        f"BotStorage points at {tables}/devstoreaccount1 and {queues}/devstoreaccount1: is it running? "
        "(scripts/run starts Azurite and prints the BotStorage to export)")

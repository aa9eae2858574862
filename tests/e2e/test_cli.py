"""The operator command line, as a subprocess, against the running bot's storage."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from tests.botstack import BotStack, new_tenant, wait_until
from tests.console import Console
from tests.hostproc import REPO, free_port


def cli_env(storage: str) -> dict[str, str]:
    env = {**os.environ, "BotStorage": storage}
    env.pop("AzureWebJobsStorage", None)
    return env


def cli(bot: BotStack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "botcore", *args],
        cwd=str(REPO),
        env=cli_env(bot.storage_connection),
        text=True,
        capture_output=True,
        timeout=60,
        check=check,
    )


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
    unset = subprocess.run(
        [sys.executable, "-m", "botcore", "refs"], cwd=str(REPO), env=env, text=True, capture_output=True, timeout=60
    )
    assert unset.returncode == 2 and "no storage connection" in unset.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [["refs"], ["notify", "--everyone", "--text", "hi"], ["survey", "--user", "u"], ["status", "some-job"]]
)
def test_unreachable_storage_is_one_line_with_a_hint(args: list[str]) -> None:
    from devhost.azurite import connection_string

    queues, tables = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "BotStorage": connection_string(queues, tables)}
    result = subprocess.run(
        [sys.executable, "-m", "botcore", *args], cwd=str(REPO), env=env, text=True, capture_output=True, timeout=60
    )
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: storage is unavailable (") and line.endswith(
        f"BotStorage points at {tables}/devstoreaccount1 and {queues}/devstoreaccount1: is it running? "
        "(scripts/run starts Azurite and prints the BotStorage to export)"
    )


def test_the_python_example_with_unreachable_storage_fails_in_seconds_in_one_line() -> None:
    from devhost.azurite import connection_string

    queues = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "BotStorage": connection_string(queues, f"http://127.0.0.1:{free_port()}")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "notify.py"), "29:someone", "hello"],
        cwd=str(REPO),
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == "" and time.monotonic() - started < 8
    [line] = result.stderr.splitlines()
    assert (
        line.startswith("error: storage is unavailable (")
        and "Connection refused" in line
        and line.endswith(
            f"the jobs queue is {queues}/devstoreaccount1/bot-jobs: is scripts/run running? "
            "(on other ports, export the "
            "BotStorage it prints)"
        )
    )


def test_status_knows_a_job_the_moment_notify_or_survey_prints_its_id(tmp_path: Path) -> None:
    """On a storage account no host serves, nothing but the command itself can have recorded the job."""
    from devhost.azurite import Azurite

    with Azurite(tmp_path / "azurite") as azurite:
        BotStack._init_storage({"BotStorage": azurite.connection_string})

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "botcore", *args],
                cwd=str(REPO),
                text=True,
                env=cli_env(azurite.connection_string),
                capture_output=True,
                timeout=60,
            )

        [queued] = lines(run("notify", "--everyone", "--text", "hello", "--id", "ops-1"))
        assert json.loads(run("status", queued["id"]).stdout) | {"created": None} == {
            "id": "ops-1",
            "kind": "notify",
            "created": None,
            "state": "fanning-out",
            "targets": 0,
            "sent": 0,
            "skipped": 0,
            "failed": 0,
            "pending": 0,
        }
        [started] = lines(run("survey", "--conversation", "emulator|chat-1"))
        assert json.loads(run("status", started["id"]).stdout)["kind"] == "beginDialog"
        from azure.storage.queue import QueueClient

        queued_jobs = [
            json.loads(m.content)["id"]
            for m in QueueClient.from_connection_string(azurite.connection_string, "bot-jobs").peek_messages(
                max_messages=32
            )
        ]
        assert queued_jobs == ["ops-1", started["id"]]

        again = run("notify", "--everyone", "--text", "hello", "--id", "ops-1")  # a retry: the same job
        assert again.returncode == 0 and lines(again)[0]["id"] == "ops-1"
        other = run("notify", "--everyone", "--text", "other words", "--id", "ops-1")
        assert other.returncode == 2 and other.stdout == ""
        [line] = other.stderr.splitlines()
        assert line.startswith("error: id ops-1 is already used by another job (notify, created ")


def _held_broadcast(bot: BotStack, count: int) -> tuple[str, list[str]]:
    """A notification to `count` conversations of a tenant, the first of them held back (its sends answered 503,
    which delivery retries) until the test clears the channel's faults. Its job id and conversations."""
    cids = bot.seed(count, tenant_id=new_tenant())
    bot.channel.fail(503, "ServiceUnavailable", times=None, conversation_id=cids[0])
    [queued] = lines(cli(bot, "notify", "--tenant", bot.conversation_entity(cids[0])["tenantId"], "--text", "followed"))
    return queued["id"], cids


def test_status_follow_on_a_pipe_writes_a_json_line_per_change_until_the_broadcast_ends(bot: BotStack) -> None:
    job_id, cids = _held_broadcast(bot, 4)
    try:
        follow = Console(
            [sys.executable, "-m", "botcore", "status", job_id, "--follow"],
            cwd=str(REPO),
            env=cli_env(bot.storage_connection),
        )
        held = json.loads(follow.expect('"sent": 3', timeout=30))
        assert held["state"] == "sending" and held["pending"] == 1 and held["targets"] == 4
    finally:
        bot.channel.clear_faults()
    done = json.loads(follow.expect('"state": "done"', timeout=40))
    assert done | {"created": None} == {
        "id": job_id,
        "kind": "notify",
        "created": None,
        "state": "done",
        "targets": 4,
        "sent": 4,
        "skipped": 0,
        "failed": 0,
        "pending": 0,
    }
    assert follow.wait(15) == 0
    shown = [json.loads(line) for line in follow.seen]
    assert all(a != b for a, b in pairwise(shown)), "a line per change, none repeated"
    assert all(a["sent"] <= b["sent"] for a, b in pairwise(shown)) and shown[-1] == done


class Terminal:
    """A command with a pseudo-terminal of 120 columns as its output, as an operator runs it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.process = subprocess.Popen(
            argv, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
        )
        os.close(slave)
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, args=(master,), daemon=True)
        self._reader.start()

    def _read(self, master: int) -> None:
        try:
            while chunk := os.read(master, 4096):
                self._output += chunk
        except OSError:  # the command exited: its end of the terminal is closed
            pass
        finally:
            os.close(master)

    def text(self) -> str:
        return self._output.decode(errors="replace")

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


def test_status_follow_on_a_terminal_draws_a_progress_bar_until_the_broadcast_ends(bot: BotStack) -> None:
    job_id, _ = _held_broadcast(bot, 4)
    try:
        terminal = Terminal(
            [sys.executable, "-m", "botcore", "status", job_id, "--follow"], cli_env(bot.storage_connection)
        )
        assert wait_until(lambda: "3/4" in terminal.text(), timeout=30), terminal.text()
    finally:
        bot.channel.clear_faults()
    assert terminal.wait(40) == 0, terminal.text()
    frames = terminal.text().replace("\r\n", "\n").split("\r")  # tqdm redraws its line after a \r
    held = next(frame for frame in frames if "3/4" in frame)
    assert held.startswith(f"{job_id} sending:  75%|") and held.endswith(", sent=3, failed=0, pending=1]")
    final = frames[-1].splitlines()
    assert final[0].startswith(f"{job_id} done: 100%|")
    # elapsed<time left, and the rate of what settled while it was followed (tqdm turns a slow one round)
    assert re.search(r"\| 4/4 \[\d\d:\d\d<00:00, +\d+\.\d\d(msg/s|s/msg), sent=4, failed=0, pending=0\]$", final[0]), (
        final[0]
    )
    assert json.loads(final[-1])["state"] == "done"


def test_status_follow_on_a_terminal_without_tqdm_says_so_in_one_line() -> None:
    """The deployed app's requirements do not include tqdm: the bar says what to install, before any storage call."""
    without_tqdm = "import runpy, sys; sys.modules['tqdm'] = None; runpy.run_module('botcore', run_name='__main__')"
    terminal = Terminal(
        [sys.executable, "-c", without_tqdm, "status", "some-job", "--follow"], cli_env("UseDevelopmentStorage=true")
    )
    assert terminal.wait(30) == 2
    assert terminal.text().splitlines() == [
        "error: --follow draws its progress bar with tqdm, which is not installed: pip install -r "
        "requirements-dev.txt (or pipe the output for JSON lines)"
    ]

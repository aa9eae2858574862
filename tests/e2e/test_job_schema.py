"""The published job schema, the examples that follow it, and parse_job agree."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from botcore.jobs import JobError, parse_job
from tests.botstack import BotStack, wait_until
from tests.hostproc import REPO

SCHEMA = json.loads((REPO / "schemas" / "job.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
BASE = {"id": "j1", "created": "2026-11-25T18:00:00Z"}
TEXT = {"text": "hi"}
ONE = {"target": {"conversation": "msteams|19:abc"}}

VALID = [
    {"kind": "notify", **BASE, **ONE, **TEXT},
    {"kind": "notify", **BASE, "target": {"everyone": True}, "attachments": [{"contentType": "x"}]},
    {"kind": "notify", **BASE, "target": {"userId": "29:u", "tenantId": "t"}, **TEXT, "extra": 1},
    {"kind": "broadcast", **BASE, "target": {"channelId": "msteams"}, **TEXT},
    {"kind": "reminder", **BASE, **ONE, **TEXT, "due": "2026-11-25T18:10:00.5+01:00"},
    {"kind": "beginDialog", **BASE, **ONE, "dialog": "survey"},
    {"kind": "update", **BASE, "target": {"everyone": True}, **TEXT, "notification": "j0"},
    {"kind": "delete", **BASE, "target": {"everyone": True}, "notification": "j0"},
    {"kind": "notify", **BASE, "id": "Az09._~-" + "x" * 192, **ONE, **TEXT},  # every character an id may hold
    {"kind": "notify", **BASE, **ONE, **TEXT, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
]
INVALID = [
    {"kind": "notify", **BASE, **ONE},  # nothing to send
    {"kind": "notify", **BASE, **ONE, "attachments": []},
    {"kind": "shout", **BASE, **ONE, **TEXT},
    {"kind": "notify", "created": BASE["created"], **ONE, **TEXT},
    {"kind": "notify", **BASE, **TEXT},
    {"kind": "notify", **BASE, "target": {}, **TEXT},
    {"kind": "notify", **BASE, "target": {"everyone": False}, **TEXT},
    {"kind": "notify", **BASE, "target": {"everyone": True, "userId": "u"}, **TEXT},
    {"kind": "notify", **BASE, "target": {"room": "r"}, **TEXT},
    {"kind": "notify", **BASE, "target": {"userId": ""}, **TEXT},
    {"kind": "notify", "id": "j1", "created": "yesterday", **ONE, **TEXT},
    {"kind": "notify", "id": "j1", "created": "2026-11-25T18:00:00", **ONE, **TEXT},  # no time zone
    {"kind": "notify", "id": "", "created": BASE["created"], **ONE, **TEXT},
    {"kind": "notify", "id": "x" * 201, "created": BASE["created"], **ONE, **TEXT},
    {"kind": "notify", **BASE, **ONE, "text": "x" * 28001},
    # ids stand as they are in /api/notify/{id}: no character a URL would change or cut there
    *(
        {"kind": "notify", "id": bad, "created": BASE["created"], **ONE, **TEXT}
        for bad in ("a/b", ".", "..", "x?y", "x#y", "a b", "50%", "é", "a\nb")
    ),
    {"kind": "delete", **BASE, "target": {"everyone": True}, "notification": "a/b"},
    {"kind": "update", **BASE, "target": {"everyone": True}, **TEXT, "notification": ".."},
    {"kind": "broadcast", **BASE, **ONE, **TEXT},
    {"kind": "reminder", **BASE, **ONE, **TEXT},
    {"kind": "reminder", **BASE, **ONE, **TEXT, "due": "soon"},
    {"kind": "beginDialog", **BASE, **ONE},
    {"kind": "beginDialog", **BASE, "target": {"userId": "u"}, "dialog": "survey"},
    {"kind": "update", **BASE, **ONE, **TEXT},
    {"kind": "delete", **BASE, **ONE},
    {"kind": "notify", **BASE, **ONE, "attachments": ["card"]},
    {"kind": "notify", **BASE, "target": {"conversation": "msteams|19:a/b"}, **TEXT},  # no table key holds /
    {"kind": "notify", **BASE, "target": {"conversation": "msteams-19:abc"}, **TEXT},  # not an address key
    {"kind": "notify", **BASE, "target": {"conversation": "m|" + "a" * 1100}, **TEXT},
    {"kind": "notify", **BASE, **ONE, **TEXT, "traceparent": "4bf92f3577b34da6a3ce929d0e0e4736"},  # a trace id alone
    {"kind": "notify", **BASE, **ONE, **TEXT, "traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"},
]


def test_the_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("doc", VALID, ids=lambda d: d["kind"])
def test_valid_jobs_pass_both_schema_and_parser(doc) -> None:
    assert list(VALIDATOR.iter_errors(doc)) == []
    parse_job(json.dumps(doc))


@pytest.mark.parametrize("doc", INVALID)
def test_invalid_jobs_fail_both_schema_and_parser(doc) -> None:
    assert list(VALIDATOR.iter_errors(doc)) != []
    with pytest.raises(JobError):
        parse_job(json.dumps(doc))


def test_the_cli_example_sends_a_valid_job(tmp_path: Path) -> None:
    """examples/notify.sh as written, with a stand-in `az` that records its arguments."""
    record = tmp_path / "az-args.json"
    fake_az = tmp_path / "az"
    fake_az.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    fake_az.chmod(fake_az.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    subprocess.run(
        [str(REPO / "examples" / "notify.sh"), "mystorage", "Maintenance at 18:00"], env=env, check=True, timeout=30
    )
    args = json.loads(record.read_text())
    assert args[:2] == ["storage", "message"] and args[args.index("--queue-name") + 1] == "bot-jobs"
    job = json.loads(args[args.index("--content") + 1])
    assert list(VALIDATOR.iter_errors(job)) == []
    assert parse_job(json.dumps(job)).target.everyone and job["text"] == "Maintenance at 18:00"


def test_the_python_example_notifies_a_user_and_prints_how_to_follow_the_job(bot: BotStack) -> None:
    user = "29:example-user"
    [cid] = bot.seed(1, user_id=user, tenant_id="example-tenant")
    env = {**os.environ, "BotStorage": bot.storage_connection}
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "notify.py"), user, "Your report is ready"],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
        cwd=str(REPO),
    )
    assert bot.wait_texts(cid, 1) == ["Your report is ready"]
    queued, status = done.stdout.splitlines()
    job_id = queued.removeprefix("queued notification ").removesuffix(f" to {user}")
    python = os.path.relpath(sys.executable, REPO)
    python = sys.executable if python.startswith("..") else python  # a Python outside the repository: its path
    assert status == f"its status, once the bot has taken it: {python} -m botcore status {job_id}"
    command = status.split(": ", 1)[1]
    assert wait_until(
        lambda: (
            '"state": "done"'
            in subprocess.run(
                command.split(), env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60
            ).stdout
        ),
        timeout=15,
    )


def test_the_python_example_explains_itself_without_arguments() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "notify.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stderr.startswith("usage:") and "<user id> <text>" in done.stderr
    assert "(the chat, python -m devhost chat, prints yours)" in done.stderr
    assert "Traceback" not in done.stderr

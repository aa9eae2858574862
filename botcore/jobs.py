"""Queue jobs: the JSON messages other services (and the bot itself) put on the jobs queue.

The schema is published as `schemas/job.schema.json`; `parse_job` is the one place
that enforces it. A message that does not parse raises `JobError`, and the queue
function sends it straight to the poison queue: retrying cannot fix it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import jsontext, telemetry
from .errors import BadInputError
from .keys import is_conversation_key

QUEUE_MESSAGE_BYTES = 64 * 1024  # what a queue message holds
MAX_REMINDER_SECONDS = 366 * 86400  # how far ahead a reminder may fall due
# A job id names its status at /api/notify/{id}, so it must stand in a URL path as it is: unreserved
# characters only (RFC 3986), and not `.` or `..`, which a client resolves away.
_JOB_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")
# A W3C traceparent: version, trace id, parent id, flags (a later version may add fields after a dash).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[!-~]*)?")
TRACEPARENT_CHARS = 512


class JobError(BadInputError):
    """The message is not a valid job; the text says what is wrong."""


class JobTooLargeError(JobError):
    """The job is valid but larger than a queue message can carry."""

    http_status, code = 413, "PayloadTooLarge"


@dataclass(frozen=True)
class Target:
    """Who receives a job: one conversation (by address key), a selection of stored conversations, or every
    member of a Teams team (each in a one-to-one conversation)."""

    conversation: str | None = None
    user_id: str | None = None
    channel_id: str | None = None
    tenant_id: str | None = None
    team: str | None = None
    everyone: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {
            "conversation": self.conversation,
            "userId": self.user_id,
            "channelId": self.channel_id,
            "tenantId": self.tenant_id,
            "team": self.team,
            "everyone": self.everyone or None,
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class Job:
    kind: str
    id: str
    target: Target
    created: str
    dialog: str | None = None
    text: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    due: str | None = None  # reminder: when to send (ISO 8601)
    notification: str | None = None  # update/delete: the id of the notify job whose messages change
    extra: dict[str, Any] = field(default_factory=dict)
    # The trace context the job continues (botcore.telemetry): the one it was made in, or its message's.
    traceparent: str | None = field(default_factory=telemetry.traceparent, compare=False)

    @property
    def is_selection(self) -> bool:
        """The target is a set of conversations found in storage, not one known conversation."""
        return self.target.conversation is None and self.target.team is None

    def content(self) -> dict[str, Any]:
        """The message fields a notification sends."""
        out: dict[str, Any] = {"type": "message"}
        if self.text is not None:
            out["text"] = self.text
        if self.attachments:
            out["attachments"] = self.attachments
        return out

    def to_json(self) -> str:
        """The queue form: ASCII JSON, since a queue message is XML text, which cannot carry every character
        (U+FFFE, most control characters) that JSON can; escaped, they travel as they are."""
        return json.dumps(self._fields(), separators=(",", ":"))

    def digest(self) -> str:
        """What the job asks for, without its id, creation time and trace context: two sightings of one id must
        agree on it."""
        fields = self._fields()
        del fields["id"], fields["created"]
        fields.pop("traceparent", None)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def check_size(self) -> str:
        """The queue form, or JobTooLargeError naming the limit."""
        text = self.to_json()
        if len(text) > QUEUE_MESSAGE_BYTES:
            raise JobTooLargeError(
                f"the job takes {len(text)} bytes as a queue message; a queue message holds "
                f"at most {QUEUE_MESSAGE_BYTES} (non-ASCII text counts 6 to 12 bytes a character)"
            )
        return text

    def _fields(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(kind=self.kind, id=self.id, target=self.target.to_dict(), created=self.created)
        if self.dialog is not None:
            out["dialog"] = self.dialog
        if self.text is not None:
            out["text"] = self.text
        if self.attachments:
            out["attachments"] = self.attachments
        if self.due is not None:
            out["due"] = self.due
        if self.notification is not None:
            out["notification"] = self.notification
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        return out


# notify: send a message to the target now (one conversation, or a selection: a broadcast).
# broadcast: the same, for a selection only. reminder: a notify at `due`.
# beginDialog: start a dialog in one conversation. update/delete: change what a notify sent.
# replies: the bot's own, for the replies of a committed turn that could not be sent at once; they
# wait in the delivery ledger under the job's id.
KINDS = ("notify", "broadcast", "reminder", "beginDialog", "update", "delete", "replies")


def new_job(kind: str, target: Target, **fields: Any) -> Job:
    return Job(kind=kind, id=uuid.uuid4().hex, target=target, created=now_iso(), **fields)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_job_id(value: object, name: str = "job id") -> str:
    """A job id as every way in (the queue, the HTTP API, the CLI, a send batch) accepts it; else JobError."""
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value) or value in (".", ".."):
        raise JobError(f"{name} must be 1 to 200 letters, digits or . _ ~ - (and not . or ..)")
    return value


def check_traceparent(value: object, name: str) -> str | None:
    """A message's trace context as every message accepts it: a W3C traceparent, or None; else JobError."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > TRACEPARENT_CHARS or not _TRACEPARENT.fullmatch(value):
        raise JobError(f"{name} must be a W3C traceparent: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>")
    return value


def _opt_str(data: dict[str, Any], key: str, where: str, limit: int = 4096) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise JobError(f"{where}{key} must be a non-empty string of at most {limit} characters")
    return value


def _target(data: Any) -> Target:
    if not isinstance(data, dict):
        raise JobError("target must be an object")
    unknown = set(data) - {"conversation", "userId", "channelId", "tenantId", "team", "everyone"}
    if unknown:
        raise JobError(f"target has unknown fields: {', '.join(sorted(unknown))}")
    everyone = data.get("everyone", False)
    if not isinstance(everyone, bool):
        raise JobError("target.everyone must be a boolean")
    conversation = _opt_str(data, "conversation", "target.", 1024)
    if conversation is not None and not is_conversation_key(conversation):
        raise JobError("target.conversation must be a conversation's address key (see python -m botcore refs)")
    target = Target(
        conversation=conversation,
        user_id=_opt_str(data, "userId", "target."),
        channel_id=_opt_str(data, "channelId", "target."),
        tenant_id=_opt_str(data, "tenantId", "target."),
        team=_opt_str(data, "team", "target."),
        everyone=everyone,
    )
    if everyone and (target.conversation or target.user_id or target.channel_id or target.tenant_id or target.team):
        raise JobError("target.everyone excludes the other target fields")
    if target.team and (target.conversation or target.user_id or target.channel_id or target.tenant_id):
        raise JobError("target.team excludes the other target fields")
    if not (everyone or target.conversation or target.user_id or target.channel_id or target.tenant_id or target.team):
        raise JobError("target needs conversation, userId, channelId, tenantId, team or everyone")
    return target


def parse_job(body: bytes | str) -> Job:
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    if len(body) > QUEUE_MESSAGE_BYTES:
        raise JobTooLargeError(f"the job takes {len(body)} bytes; a queue message holds at most {QUEUE_MESSAGE_BYTES}")
    try:
        body.decode("utf-8")
        data = jsontext.loads(body, "job")
    except UnicodeDecodeError as exc:
        raise JobError("job is not UTF-8 text") from exc
    except jsontext.JsonTextError as exc:
        raise JobError(str(exc)) from None
    if not isinstance(data, dict):
        raise JobError("job must be a JSON object")
    kind = data.get("kind")
    if kind not in KINDS:
        raise JobError(f"job.kind must be one of {', '.join(KINDS)}")
    if data.get("id") is None:
        raise JobError("job.id is required")
    job_id = check_job_id(data["id"], "job.id")
    created = _opt_str(data, "created", "job.", 64)
    if created is None:
        raise JobError("job.created is required")
    _time(created, "job.created")
    if "target" not in data:
        raise JobError("job.target is required")
    target = _target(data["target"])
    dialog = _opt_str(data, "dialog", "job.", 100)
    text = _opt_str(data, "text", "job.", 28_000)
    attachments = data.get("attachments", [])
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise JobError("job.attachments must be a list of objects")
    due = _opt_str(data, "due", "job.", 64)
    if due is not None and _time(due, "job.due") - datetime.now(UTC) > timedelta(seconds=MAX_REMINDER_SECONDS):
        raise JobError("job.due must be at most a year ahead")
    notification = None if data.get("notification") is None else check_job_id(data["notification"], "job.notification")
    if kind == "beginDialog" and dialog is None:
        raise JobError("a beginDialog job needs dialog")
    if kind in ("beginDialog", "replies") and target.conversation is None:
        raise JobError(f"a {kind} job targets one conversation (target.conversation)")
    if kind in ("notify", "broadcast", "reminder", "update") and text is None and not attachments:
        raise JobError(f"a {kind} job needs text or attachments")
    if kind == "broadcast" and target.conversation is not None:
        raise JobError("a broadcast targets a selection (userId, channelId, tenantId or everyone)")
    if kind == "reminder" and due is None:
        raise JobError("a reminder job needs due (an ISO 8601 time)")
    if kind in ("update", "delete") and notification is None:
        raise JobError(f"an {kind} job needs notification (the id of the notify job to change)")
    traceparent = check_traceparent(data.get("traceparent"), "job.traceparent")
    known = {"kind", "id", "created", "target", "dialog", "text", "attachments", "due", "notification", "traceparent"}
    return Job(
        kind=kind,
        id=job_id,
        target=target,
        created=created,
        dialog=dialog,
        text=text,
        attachments=attachments,
        due=due,
        notification=notification,
        extra={k: v for k, v in data.items() if k not in known},
        traceparent=traceparent,
    )


def _time(value: str, name: str) -> datetime:
    """The time in UTC; a time that UTC cannot hold (year 9999 west of Greenwich) is refused."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise JobError(f"{name} must be an ISO 8601 time") from exc
    if parsed.tzinfo is None:
        raise JobError(f"{name} must carry a time zone (Z or an offset)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise JobError(f"{name} is out of range") from None


def due_time(job: Job) -> datetime:
    """A reminder's due time, in UTC."""
    assert job.due is not None
    return _time(job.due, "job.due")

"""The HTTP API for other services and operators: notify, job status, update/delete, reminders.

Requests are validated by turning them into queue jobs (`jobs.parse_job` is the
one place the schema is enforced), so the HTTP API and the queue API accept the
same things. Answers are immediate: the work happens in the queue functions.
Errors are raised and answered by botcore.responses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from . import telemetry
from .app import bot_for
from .delivery.ledger import ExpiredJob
from .errors import BadInputError, NotFoundError
from .jobs import MAX_REMINDER_SECONDS, Job, JobError, check_job_id, now_iso, parse_job
from .request import read_json
from .responses import Response, http_edge
from .settings import Settings, get_settings

log = logging.getLogger(__name__)


class JobNotFoundError(NotFoundError):
    pass


def _json_object(headers: Mapping[str, str], body: bytes, settings: Settings) -> dict[str, Any]:
    data = read_json(headers, body, settings)
    if not isinstance(data, dict):
        raise BadInputError("body must be a JSON object")
    return data


def _job_request(headers: Mapping[str, str], body: bytes, settings: Settings, kind: str) -> tuple[Job, str]:
    """The job a request body describes, and the request's digest. The digest covers what the request
    asks for, so that the same request sent again (with the same id) is recognised even where the job
    differs (a reminder `inSeconds` from now)."""
    data = _json_object(headers, body, settings)
    if "target" not in data:
        raise JobError("target is required")
    digest = hashlib.sha256(
        json.dumps({k: v for k, v in data.items() if k not in ("id", "traceparent")}, sort_keys=True).encode()
    ).hexdigest()
    if kind == "reminder" and "inSeconds" in data:
        if "due" in data:
            raise JobError("give due or inSeconds, not both")
        delay = data.pop("inSeconds")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= MAX_REMINDER_SECONDS:
            raise JobError("inSeconds must be a number of seconds up to a year")
        data["due"] = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="milliseconds")
    job = _job_from(data, kind)
    job.check_size()
    return job, digest


def _job_from(data: dict[str, Any], kind: str, **fields: Any) -> Job:
    """A job from a request body; the caller may choose the id (an idempotency key)."""
    draft = {k: v for k, v in data.items() if k not in ("kind", "created")}
    draft.update(fields, kind=kind, created=now_iso())
    traceparent = telemetry.traceparent()  # the request's trace (else a traceparent in the body: the caller's)
    if traceparent is not None:
        draft["traceparent"] = traceparent
    draft.setdefault("id", uuid.uuid4().hex)
    return parse_job(json.dumps(draft))


@http_edge("POST /api/notify")
async def handle_notify(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/notify: {text | attachments, target, id?} → 202 with the job id.

    The id is an idempotency key: the same request again gets the same answer (and is enqueued again
    if its job has not started, in case the first enqueue was lost); another request with it, 409.
    """
    settings = settings or get_settings()
    delivery = bot_for(settings).delivery
    job, digest = _job_request(headers, body, settings, "notify")
    header = await delivery.ledger.open_job(job, request_digest=digest)
    if not header.fanned_out:
        await delivery.jobs.send(header.job.to_json())
    log.info("notify job %s accepted for %s", job.id, job.target.to_dict())
    return Response(202, {"id": job.id, "status": f"/api/notify/{job.id}"})


@http_edge("/api/notify/{id}")
async def handle_job(
    method: str, job_id: str, headers: Mapping[str, str], body: bytes, settings: Settings | None = None
) -> Response:
    """GET /api/notify/{id}: counts; PATCH: update the sent messages; DELETE: delete them."""
    settings = settings or get_settings()
    check_job_id(job_id)
    delivery = bot_for(settings).delivery
    ledger = delivery.ledger
    if method == "GET":
        status = await ledger.status(job_id)
        if status is None:
            raise JobNotFoundError(f"no notification job {job_id!r} (it may still be queued)")
        if isinstance(status, ExpiredJob):
            raise JobNotFoundError(status.describe())
        return Response(200, status.to_dict())
    data: dict[str, Any] = {}
    if method == "PATCH":
        parsed = _json_object(headers, body, settings)
        data = {k: parsed[k] for k in ("text", "attachments") if k in parsed}
    job = _job_from(data, "update" if method == "PATCH" else "delete", notification=job_id, target={"everyone": True})
    # Recorded before the answer: from now on nothing is sent unrevised. The job revises what was sent.
    revision = await ledger.register_revision(job)
    await delivery.jobs.send(job.to_json())
    return Response(
        202, {"id": job.id, "notification": job_id, "revision": revision.number, "status": f"/api/notify/{job.id}"}
    )


@http_edge("POST /api/reminders")
async def handle_reminder(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/reminders: {text | attachments, target, due | inSeconds} → 201 with id and due time."""
    settings = settings or get_settings()
    delivery = bot_for(settings).delivery
    job, digest = _job_request(headers, body, settings, "reminder")
    due = await delivery.reminders.add(delivery.ledger, delivery.jobs, job, request_digest=digest)
    return Response(201, {"id": job.id, "due": due.isoformat(), "status": f"/api/notify/{job.id}"})

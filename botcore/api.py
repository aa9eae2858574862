"""The HTTP API for other services and operators: notify, job status, update/delete, reminders.

Requests are validated by turning them into queue jobs (`jobs.parse_job` is the
one place the schema is enforced), so the HTTP API and the queue API accept the
same things. Answers are immediate: the work happens in the queue functions.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from .endpoint import Response, error_response, read_json
from .jobs import JobError, now_iso, parse_job
from .settings import JOBS_QUEUE, Settings, get_settings

log = logging.getLogger("botcore.api")


def _json_object(headers: Mapping[str, str], body: bytes, settings: Settings) -> dict[str, Any] | Response:
    data = read_json(headers, body, settings)
    if not isinstance(data, (dict, Response)):
        return error_response(400, "BadRequest", "body must be a JSON object")
    return data


def _job_request(headers: Mapping[str, str], body: bytes, settings: Settings, kind: str) -> Any:
    """The job a request body describes (it must have a target), or the 400 that says why not."""
    data = _json_object(headers, body, settings)
    if isinstance(data, Response):
        return data
    if "target" not in data:
        return error_response(400, "BadRequest", "target is required")
    if kind == "reminder" and "inSeconds" in data:
        delay = data.pop("inSeconds")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 366 * 86400:
            return error_response(400, "BadRequest", "inSeconds must be a number of seconds up to a year")
        data["due"] = (datetime.now(timezone.utc) + timedelta(seconds=delay)).isoformat(timespec="milliseconds")
    try:
        return _job_from(data, kind)
    except JobError as exc:
        return error_response(400, "BadRequest", str(exc))


def _job_from(data: dict[str, Any], kind: str, **fields: Any) -> Any:
    """A job from a request body; the caller may choose the id (an idempotency key)."""
    draft = {k: v for k, v in data.items() if k not in ("kind", "created")}
    draft.update(fields, kind=kind, created=now_iso())
    draft.setdefault("id", uuid.uuid4().hex)
    return parse_job(json.dumps(draft))


async def _enqueue(job: Any) -> None:
    from .storage import get_queue

    await get_queue(JOBS_QUEUE).send(job.to_json())


async def handle_notify(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/notify: {text | attachments, target, id?} → 202 with the job id."""
    job = _job_request(headers, body, settings or get_settings(), "notify")
    if isinstance(job, Response):
        return job
    await _enqueue(job)
    log.info("notify job %s accepted for %s", job.id, job.target.to_dict())
    return Response(202, {"id": job.id, "status": f"/api/notify/{job.id}"})


async def handle_job(method: str, job_id: str, headers: Mapping[str, str], body: bytes,
                     settings: Settings | None = None) -> Response:
    """GET /api/notify/{id}: counts; PATCH: update the sent messages; DELETE: delete them."""
    from .ledger import DeliveryLedger

    settings = settings or get_settings()
    if not job_id or len(job_id) > 200:
        return error_response(400, "BadRequest", "job id must be 1 to 200 characters")
    ledger = DeliveryLedger()
    if method == "GET":
        status = await ledger.status(job_id)
        if status is None:
            return error_response(404, "NotFound", f"no notification job {job_id!r} (it may still be queued)")
        return Response(200, status.to_dict())
    if await ledger.header(job_id) is None:
        return error_response(404, "NotFound", f"no notification job {job_id!r}")
    data: dict[str, Any] = {}
    if method == "PATCH":
        parsed = _json_object(headers, body, settings)
        if isinstance(parsed, Response):
            return parsed
        data = {k: parsed[k] for k in ("text", "attachments") if k in parsed}
    try:
        job = _job_from(data, "update" if method == "PATCH" else "delete", notification=job_id,
                        target={"everyone": True})
    except JobError as exc:
        return error_response(400, "BadRequest", str(exc))
    await _enqueue(job)
    return Response(202, {"id": job.id, "notification": job_id})


async def handle_reminder(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/reminders: {text | attachments, target, due | inSeconds} → 201 with id and due time."""
    from .reminders import ReminderStore

    job = _job_request(headers, body, settings or get_settings(), "reminder")
    if isinstance(job, Response):
        return job
    due = await ReminderStore().add(job)
    return Response(201, {"id": job.id, "due": due.isoformat(), "status": f"/api/notify/{job.id}"})

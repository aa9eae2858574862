"""The HTTP API for other services and operators: notify, job status, update/delete, reminders.

Requests are validated by turning them into queue jobs (`jobs.parse_job` is the
one place the schema is enforced), so the HTTP API and the queue API accept the
same things. Answers are immediate: the work happens in the queue functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from .endpoint import Response, error_response, read_json
from .jobs import JobError, JobTooLargeError, now_iso, parse_job
from .settings import JOBS_QUEUE, Settings, get_settings

log = logging.getLogger("botcore.api")


def _json_object(headers: Mapping[str, str], body: bytes, settings: Settings) -> dict[str, Any] | Response:
    data = read_json(headers, body, settings)
    if not isinstance(data, (dict, Response)):
        return error_response(400, "BadRequest", "body must be a JSON object")
    return data


def _job_request(headers: Mapping[str, str], body: bytes, settings: Settings, kind: str) -> Any:
    """(the job a request body describes, the request's digest), or the 4xx Response that says why there is
    none. The digest covers what the request asks for, so that the same request sent again (with the
    same id) is recognised even where the job differs (a reminder `inSeconds` from now)."""
    data = _json_object(headers, body, settings)
    if isinstance(data, Response):
        return data
    if "target" not in data:
        return error_response(400, "BadRequest", "target is required")
    digest = hashlib.sha256(json.dumps({k: v for k, v in data.items() if k != "id"}, sort_keys=True)
                            .encode()).hexdigest()
    if kind == "reminder" and "inSeconds" in data:
        delay = data.pop("inSeconds")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 366 * 86400:
            return error_response(400, "BadRequest", "inSeconds must be a number of seconds up to a year")
        data["due"] = (datetime.now(timezone.utc) + timedelta(seconds=delay)).isoformat(timespec="milliseconds")
    try:
        job = _job_from(data, kind)
        job.check_size()
    except JobTooLargeError as exc:
        return error_response(413, "PayloadTooLarge", str(exc))
    except JobError as exc:
        return error_response(400, "BadRequest", str(exc))
    return job, digest


def _job_from(data: dict[str, Any], kind: str, **fields: Any) -> Any:
    """A job from a request body; the caller may choose the id (an idempotency key)."""
    draft = {k: v for k, v in data.items() if k not in ("kind", "created")}
    draft.update(fields, kind=kind, created=now_iso())
    draft.setdefault("id", uuid.uuid4().hex)
    return parse_job(json.dumps(draft))


async def _enqueue(job: Any) -> None:
    from .storage import get_queue

    await get_queue(JOBS_QUEUE).send(job.to_json())


def _conflict(exc: Exception) -> Response:
    return error_response(409, "Conflict", str(exc))


async def handle_notify(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/notify: {text | attachments, target, id?} → 202 with the job id.

    The id is an idempotency key: the same request again gets the same answer (and is enqueued again
    if its job has not started, in case the first enqueue was lost); another request with it, 409.
    """
    from .ledger import DeliveryLedger, IdConflictError

    request = _job_request(headers, body, settings or get_settings(), "notify")
    if isinstance(request, Response):
        return request
    job, digest = request
    try:
        header = await DeliveryLedger().open_job(job, request_digest=digest)
    except IdConflictError as exc:
        return _conflict(exc)
    if not header.fanned_out:
        await _enqueue(header.job)
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

    from .ledger import IdConflictError

    request = _job_request(headers, body, settings or get_settings(), "reminder")
    if isinstance(request, Response):
        return request
    job, digest = request
    try:
        due = await ReminderStore().add(job, request_digest=digest)
    except IdConflictError as exc:
        return _conflict(exc)
    return Response(201, {"id": job.id, "due": due.isoformat(), "status": f"/api/notify/{job.id}"})

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

from .endpoint import Response, _error, _header
from .jobs import JobError, now_iso, parse_job
from .settings import JOBS_QUEUE, Settings, get_settings

log = logging.getLogger("botcore.api")


def _json_body(headers: Mapping[str, str], body: bytes, settings: Settings) -> dict[str, Any] | Response:
    content_type = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "UnsupportedMediaType", "Content-Type must be application/json")
    if len(body) > settings.max_body_bytes:
        return _error(413, "PayloadTooLarge", f"body is larger than {settings.max_body_bytes} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _error(400, "BadRequest", "body is not valid JSON")
    if not isinstance(data, dict):
        return _error(400, "BadRequest", "body must be a JSON object")
    return data


def _job_from(data: dict[str, Any], kind: str, **fields: Any) -> Any:
    """A job from a request body; the caller may choose the id (an idempotency key)."""
    draft = {k: v for k, v in data.items() if k not in ("kind", "created")}
    draft.update(fields, kind=kind, created=now_iso())
    draft.setdefault("id", uuid.uuid4().hex)
    return parse_job(json.dumps(draft))


async def _enqueue(job: Any) -> None:
    from .storage import get_queue_client

    await get_queue_client(JOBS_QUEUE).send_message(job.to_json())


async def handle_notify(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/notify: {text | attachments, target, id?} → 202 with the job id."""
    settings = settings or get_settings()
    data = _json_body(headers, body, settings)
    if isinstance(data, Response):
        return data
    if "target" not in data:
        return _error(400, "BadRequest", "target is required")
    try:
        job = _job_from(data, "notify")
    except JobError as exc:
        return _error(400, "BadRequest", str(exc))
    await _enqueue(job)
    log.info("notify job %s accepted for %s", job.id, job.target.to_dict())
    return Response(202, {"id": job.id, "status": f"/api/notify/{job.id}"})


async def handle_job(method: str, job_id: str, headers: Mapping[str, str], body: bytes,
                     settings: Settings | None = None) -> Response:
    """GET /api/notify/{id}: counts; PATCH: update the sent messages; DELETE: delete them."""
    from .ledger import DeliveryLedger

    settings = settings or get_settings()
    if not job_id or len(job_id) > 200:
        return _error(400, "BadRequest", "job id must be 1 to 200 characters")
    ledger = DeliveryLedger()
    if method == "GET":
        status = await ledger.status(job_id)
        if status is None:
            return _error(404, "NotFound", f"no notification job {job_id!r} (it may still be queued)")
        return Response(200, status.to_dict())
    if await ledger.header(job_id) is None:
        return _error(404, "NotFound", f"no notification job {job_id!r}")
    data: dict[str, Any] = {}
    if method == "PATCH":
        parsed = _json_body(headers, body, settings)
        if isinstance(parsed, Response):
            return parsed
        data = {k: parsed[k] for k in ("text", "attachments") if k in parsed}
    try:
        job = _job_from(data, "update" if method == "PATCH" else "delete", notification=job_id,
                        target={"everyone": True})
    except JobError as exc:
        return _error(400, "BadRequest", str(exc))
    await _enqueue(job)
    return Response(202, {"id": job.id, "notification": job_id})


async def handle_reminder(headers: Mapping[str, str], body: bytes, settings: Settings | None = None) -> Response:
    """POST /api/reminders: {text | attachments, target, due | inSeconds} → 201 with id and due time."""
    from .reminders import ReminderStore

    settings = settings or get_settings()
    data = _json_body(headers, body, settings)
    if isinstance(data, Response):
        return data
    if "target" not in data:
        return _error(400, "BadRequest", "target is required")
    delay = data.pop("inSeconds", None)
    if delay is not None:
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 366 * 86400:
            return _error(400, "BadRequest", "inSeconds must be a number of seconds up to a year")
        data["due"] = (datetime.now(timezone.utc) + timedelta(seconds=delay)).isoformat(timespec="milliseconds")
    try:
        job = _job_from(data, "reminder")
    except JobError as exc:
        return _error(400, "BadRequest", str(exc))
    due = await ReminderStore().add(job)
    return Response(201, {"id": job.id, "due": due.isoformat(), "status": f"/api/notify/{job.id}"})

"""Every error answer, the app's and the local host's own, has one body: {"error": {"code", "message"}}.

The app behind the local host, over HTTP; each case is a request a client can make by mistake, with the
status and code the README lists for it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.botstack import BotStack


def _nobody() -> dict:
    """A target that matches no conversation: a job accepted here sends nothing into other tests' conversations."""
    return {"userId": f"nobody-{uuid.uuid4().hex}"}


def _notify(bot: BotStack, **kwargs) -> httpx.Response:
    return bot.api("POST", "notify", {"text": "x", "target": _nobody()}, **kwargs)


def _raw(bot: BotStack, method: str, path: str, content: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.request(method, f"{bot.host.base_url}{path}", content=content, headers=headers, timeout=30)


def _conflict(bot: BotStack) -> httpx.Response:
    job_id, target = uuid.uuid4().hex, _nobody()
    assert bot.api("POST", "notify", {"id": job_id, "text": "first", "target": target}).status_code == 202
    return bot.api("POST", "notify", {"id": job_id, "text": "second", "target": target})


CASES: dict[str, tuple[Callable[[BotStack], httpx.Response], int, str]] = {
    # the local host's own answers, before the app runs
    "no function at the path": (lambda bot: _raw(bot, "GET", "/api/nowhere"), 404, "NotFound"),
    "outside the route prefix": (lambda bot: _raw(bot, "GET", "/nowhere"), 404, "NotFound"),
    "a method the route does not take": (lambda bot: _raw(bot, "GET", "/api/notify"), 405, "MethodNotAllowed"),
    "no key": (lambda bot: _notify(bot, key=None), 401, "Unauthorized"),
    "a wrong key": (lambda bot: _notify(bot, key="wrong"), 401, "Unauthorized"),
    "past FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": (
        lambda bot: _raw(bot, "POST", "/api/messages", b"x" * 2_000_000, **{"Content-Type": "application/json"}),
        413,
        "PayloadTooLarge",
    ),
    # the app's
    "not JSON": (lambda bot: bot.api_raw("POST", "notify", "{not json"), 400, "BadRequest"),
    "no token": (
        lambda bot: _raw(bot, "POST", "/api/messages", b"{}", **{"Content-Type": "application/json"}),
        401,
        "Unauthorized",
    ),
    "no such job": (lambda bot: bot.api("GET", f"notify/{uuid.uuid4().hex}"), 404, "NotFound"),
    "an id used for other work": (_conflict, 409, "Conflict"),
    "past BotMaxBodyBytes": (
        lambda bot: bot.post(None, raw=b'{"x": "' + b"y" * 300_000 + b'"}'),
        413,
        "PayloadTooLarge",
    ),
    "not application/json": (
        lambda bot: _raw(
            bot, "POST", "/api/notify", b"{}", **{"Content-Type": "text/plain", "x-functions-key": "stack-key"}
        ),
        415,
        "UnsupportedMediaType",
    ),
    "an invoke activity": (
        lambda bot: bot.post(bot.activity(f"19:{uuid.uuid4().hex}", type="invoke", name="x")),
        501,
        "NotImplemented",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_error_answer_has_the_one_body(bot: BotStack, case: str) -> None:
    request, status, code = CASES[case]
    answer = request(bot)
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert list(body) == ["error"] and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body


def test_a_method_not_allowed_names_the_methods_allowed(bot: BotStack) -> None:
    answer = _raw(bot, "PUT", f"/api/notify/{uuid.uuid4().hex}")
    assert answer.status_code == 405 and answer.headers["Allow"] == "DELETE, GET, PATCH"
    assert answer.json()["error"]["message"] == "method PUT is not allowed here; this path takes DELETE, GET, PATCH"

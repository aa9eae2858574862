"""The outbound httpx client: where the bot's token may go, and how long the client lives."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from aiohttp import web

from botcore.protocol import http
from botcore.settings import get_settings
from devhost.server import BackgroundServer


class Recorder(BackgroundServer):
    """Answers /moved with a redirect and sets a cookie on every answer; records what it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None, str | None]] = []

    def build_app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.seen.append((request.path, request.headers.get("Cookie"), request.headers.get("Accept")))
            response = (
                web.Response(status=302, headers={"Location": "/elsewhere"})
                if request.path == "/moved"
                else web.Response(text="ok")
            )
            response.set_cookie("affinity", "1")
            return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
def server():
    with Recorder() as recorder:
        yield recorder


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_proxy_variables_are_ignored_and_redirects_are_not_followed(
    server, transport, monkeypatch, caplog
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO)
    async with http.new_http_client(5.0, 64, transport) as client:
        response = await client.post(f"{server.base_url}/moved", content=b"{}")
    assert response.status_code == 302 and [path for path, _, _ in server.seen] == ["/moved"]
    assert not [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))], "per-request INFO lines"


@pytest.mark.parametrize("transport", ["aiohttp", "httpcore"])
async def test_a_cookie_is_sent_back_once_and_every_request_accepts_anything(server, transport) -> None:
    """On the aiohttp transport, aiohttp (not httpx) keeps cookies and adds Accept."""
    async with http.new_http_client(5.0, 64, transport) as client:
        for _ in range(2):
            (await client.get(f"http://localhost:{server.port}/")).raise_for_status()
    assert [(cookie, accept) for _, cookie, accept in server.seen] == [(None, "*/*"), ("affinity=1", "*/*")]


def test_one_client_per_loop_with_the_configured_timeout_closed_when_its_loop_ends(monkeypatch) -> None:
    monkeypatch.setenv("BotHttpTimeoutSeconds", "7")
    get_settings.cache_clear()

    async def use() -> httpx.AsyncClient:
        client = http.get_http_client()
        assert http.get_http_client() is client and not client.is_closed
        assert client.timeout == httpx.Timeout(7.0) and not client.follow_redirects
        await http.close_http_client()
        assert client.is_closed and http.get_http_client() is not client
        return http.get_http_client()

    try:
        first = asyncio.run(use())
        second = asyncio.run(use())
    finally:
        get_settings.cache_clear()
    assert first.is_closed and second.is_closed and first is not second

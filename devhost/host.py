"""The local Functions host: runs a Python v2 function app without Core Tools.

What it reproduces of the Azure Functions host: HTTP triggers under host.json's
routePrefix with route templates, methods and auth levels (`function`/`admin`
keys from the `LocalFunctionKey` setting, else one made for the run, named in the
start banner; via `?code=` or `x-functions-key`);
queue triggers with batchSize, newBatchThreshold, maxDequeueCount, poison queues,
visibilityTimeout, maxPollingInterval back-off and messageEncoding; timer
triggers with six-field NCRONTAB in UTC, runOnStartup and past_due; settings
from local.settings.json with the environment winning; `GET /admin/host/status`.
Each trigger reaches the app in the shape the Functions host sends a worker
(triggers.py), through Microsoft's Python worker library where it is installed
(Python 3.13 and later: worker.py, over the worker protocol's messages), else
through the host's own loader (app_loader.py); async functions run on the host's
event loop, sync ones on a thread pool.

Where it differs: one process only (no scale-out, no singleton lock for timers:
two hosts both fire); identity-based connections are not supported for triggers
(connection strings and UseDevelopmentStorage=true are); output bindings other
than the HTTP return value are not implemented; a running invocation's message
is hidden for 30 seconds (or LocalQueueLeaseSeconds) and the lease renewed while
it runs (the Functions host uses longer leases, so a killed host's messages
reappear sooner here); on shutdown, running invocations get 30 seconds to finish
and received-but-unstarted messages are released at once; the host's own error answers
carry the app's JSON error body (botcore.responses), where the Functions host answers in its own form.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import secrets
import shlex
import signal
import time
import uuid
from pathlib import Path

from aiohttp import web

from . import DEFAULT_PORT, python_command
from .app_loader import FunctionInfo, HostConfigError, LoadedApp, load_app
from .http_trigger import DEFAULT_MAX_BODY, HttpTriggers, build_routes
from .queue_trigger import QueueListener, QueueOptions
from .timer_trigger import TimerRunner
from .triggers import HttpAnswer, TriggerData, trace_context_for

log = logging.getLogger("devhost")

SHUTDOWN_GRACE = 30.0


def _body_limit() -> int:
    """FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, the Functions host's own setting: the largest request body it reads."""
    raw = os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "").strip()
    if not raw:
        return DEFAULT_MAX_BODY
    if not raw.isdigit() or int(raw) <= 0:
        raise HostConfigError(f"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT must be a number of bytes, not {raw[:40]!r}")
    return int(raw)


class Host:
    def __init__(self, app_dir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.app_dir = app_dir
        self.bind_host = host
        self.port = port
        self._stop = asyncio.Event()

    async def _load(self) -> None:
        """The app, its triggers and the function key; before the port is bound, as a config error stops it."""
        self.app: LoadedApp = await load_app(self.app_dir)
        if self.port is None:
            self.port = int(os.environ.get("FUNCTIONS_HTTPWORKER_PORT", DEFAULT_PORT))
        self.function_key = os.environ.get("LocalFunctionKey") or ""
        self._key_origin = "LocalFunctionKey"
        if not self.function_key:
            self.function_key = secrets.token_urlsafe(24)
            self._key_origin = "made for this run: set LocalFunctionKey in local.settings.json to keep one"
        http = self.app.extension("http")
        self.http = HttpTriggers(
            build_routes(self.app.functions),
            http.get("routePrefix", "api"),
            self.function_key,
            self.invoke,
            max_body=_body_limit(),
        )
        options = QueueOptions.from_host_json(self.app.extension("queues"))
        self.listeners = [
            QueueListener(f, options, self.invoke) for f in self.app.functions if f.trigger_type == "queueTrigger"
        ]
        self.timers = [TimerRunner(f, self.invoke) for f in self.app.functions if f.trigger_type == "timerTrigger"]

    async def invoke(self, function: FunctionInfo, trigger: TriggerData, reason: str) -> HttpAnswer | None:
        invocation = uuid.uuid4()
        fn_log = logging.getLogger(f"Function.{function.name}")
        fn_log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", function.name, reason, invocation)
        start = time.perf_counter()
        try:
            result = await self.app.runner.invoke(function, trigger, str(invocation), trace_context_for(trigger))
        except Exception:
            fn_log.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                function.name,
                invocation,
                (time.perf_counter() - start) * 1000,
            )
            raise
        fn_log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            function.name,
            invocation,
            (time.perf_counter() - start) * 1000,
        )
        return result

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM. HostConfigError, before anything started: the port is taken, or
        storage cannot be reached (the message is one line saying what to do)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await self._load()
        web_app = web.Application(client_max_size=self.http.max_body)
        web_app.router.add_get("/admin/host/status", self._status)
        web_app.router.add_route("*", "/{tail:.*}", self.http.handle)
        runner = web.AppRunner(web_app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.bind_host, self.port)
            try:
                await site.start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise HostConfigError(
                    f"port {self.port} is in use (another host?): choose another port with --port"
                ) from None
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            await self._open_listeners()
        except BaseException:
            await runner.cleanup()
            raise
        tasks = [asyncio.create_task(x.run(), name=f"listener:{x.function.name}") for x in self.listeners]
        tasks += [asyncio.create_task(t.run(), name=f"timer:{t.function.name}") for t in self.timers]
        self._print_banner()
        await self._stop.wait()
        log.info("Stopping: no new requests or messages; waiting for running invocations")
        for worker in [*self.listeners, *self.timers]:
            worker.stop()
        await runner.cleanup()
        done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception():
                log.error("%s ended with %r", task.get_name(), task.exception())
        await self.app.runner.close()
        log.info("Host stopped")

    async def _open_listeners(self) -> None:
        """Every queue listener has its queues before the host says it started; none if one cannot."""
        opened: list[QueueListener] = []
        try:
            for listener in self.listeners:
                await listener.open()
                opened.append(listener)
        except BaseException:
            for listener in opened:
                await listener.close()
            raise

    async def _status(self, request: web.Request) -> web.Response:
        """Running once every queue listener has its queues; 503 Initializing before."""
        if not all(listener.ready.is_set() for listener in self.listeners):
            return web.json_response({"state": "Initializing"}, status=503)
        return web.json_response({"state": "Running", "functions": [f.name for f in self.app.functions]})

    def _print_banner(self) -> None:
        base = f"http://{'localhost' if self.bind_host == '127.0.0.1' else self.bind_host}:{self.port}"
        lines = [f"Functions, run through {self.app.runner.label}:"]
        for name, methods, url in self.http.urls(base):
            lines.append(f"    {name}: [{methods}] {url}")
        for listener in self.listeners:
            lines.append(f"    {listener.function.name}: queueTrigger {listener.queue_name}")
        for timer in self.timers:
            lines.append(f"    {timer.function.name}: timerTrigger {timer.schedule_text}")
        if any(route.auth_level != "anonymous" for route in self.http.routes):
            lines.append(
                f"Function key: {self.function_key} ({self._key_origin}), sent as ?code=<key> or the "
                "x-functions-key header"
            )
        log.info("Host started on %s\n%s", base, "\n".join(lines + self._try_it(base)))

    def _try_it(self, base: str) -> list[str]:
        """For this project's app: a request to paste, and how to chat, when the app has those routes."""
        urls = {name: url for name, _, url in self.http.urls(base)}
        lines = []
        if "notify" in urls:
            body = json.dumps({"text": "Hello from the API", "target": {"everyone": True}})
            lines += [
                "Send a notification to every conversation:",
                f"    curl -X POST {urls['notify']} -H {shlex.quote('x-functions-key: ' + self.function_key)} "
                f"-H 'Content-Type: application/json' -d {shlex.quote(body)}",
            ]
        if "messages" in urls:
            chat = f"{python_command()} -m devhost chat"
            if urls["messages"] != f"http://localhost:{DEFAULT_PORT}/api/messages":
                chat += f" --bot {urls['messages']}"
            lines += [
                "Talk to the bot from another terminal:",
                f"    {chat}",
                f"or with the Bot Framework Emulator at {urls['messages']} (no app id, no password)",
            ]
        return lines

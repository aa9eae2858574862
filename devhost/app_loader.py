"""Load a function app the way the Functions host does: settings, host.json, the functions the worker indexed.

Routes, queue names and schedules come from the bindings the worker reports for the app (the
azure-functions library's own metadata of it), never from a second list.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from .triggers import HttpAnswer, HttpData, TriggerData


class HostConfigError(Exception):
    """The app or its settings cannot be run; the message says what to fix."""


@dataclass
class FunctionInfo:
    """A function as the worker reports it: its id, and its trigger binding as the app declared it."""

    name: str
    function_id: str
    trigger: dict[str, Any]

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]

    @property
    def arg_name(self) -> str:
        return self.trigger["name"]


class Runner(Protocol):
    """What runs the app's functions: Microsoft's worker library (worker.py) or the host's own loader."""

    label: str  # for the banner: what runs the functions, with its version

    async def start(self) -> list[dict[str, Any]]:
        """Index the app: each function as {"name", "function_id", "bindings": [its bindings' JSON]}."""

    async def invoke(
        self, function: FunctionInfo, trigger: TriggerData, invocation_id: str, traceparent: str = ""
    ) -> HttpAnswer | None:
        """Run one function, in the trace context `traceparent` (empty: none); an HTTP function's answer, else None.
        Raises when the function failed."""

    async def close(self) -> None:
        """Wait for functions still running on threads."""


@dataclass
class LoadedApp:
    directory: Path
    host_json: dict[str, Any]
    runner: Runner
    functions: list[FunctionInfo] = field(default_factory=list)

    def extension(self, name: str) -> dict[str, Any]:
        return self.host_json.get("extensions", {}).get(name, {}) or {}


def load_settings(app_dir: Path) -> dict[str, str]:
    """local.settings.json `Values`, then the environment (the environment wins), into os.environ."""
    path = app_dir / "local.settings.json"
    values: dict[str, str] = {}
    if path.exists():
        try:
            values = {k: str(v) for k, v in (json.loads(path.read_text()).get("Values") or {}).items()}
        except (ValueError, AttributeError) as exc:
            raise HostConfigError(f"{path} is not valid JSON with a Values object: {exc}") from exc
    for key, value in values.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
    return values


def resolve(value: str) -> str:
    """Binding expressions `%Setting%` are app settings, as in the Functions host."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise HostConfigError(f"binding expression %{name}% names a setting that is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", setting, value)


async def load_app(app_dir: Path) -> LoadedApp:
    """Settings, host.json, then the functions as the worker indexes them: through Microsoft's worker library
    where it is installed (Python 3.13 and later), else through the host's own loader."""
    from . import worker

    app_dir = app_dir.resolve()
    host_path = app_dir / "host.json"
    host_json = json.loads(host_path.read_text()) if host_path.exists() else {}
    load_settings(app_dir)
    sys.path.insert(0, str(app_dir))
    sys.modules.pop("function_app", None)  # another app's, imported from the working directory
    runner: Runner = worker.Worker(app_dir) if worker.available() else OwnLoader()
    return LoadedApp(app_dir, host_json, runner, functions_of(await runner.start()))


def functions_of(indexed: list[dict[str, Any]]) -> list[FunctionInfo]:
    """The functions a runner indexed, each with its trigger binding."""
    functions = []
    for function in indexed:
        trigger = next((b for b in function["bindings"] if str(b["type"]).endswith("Trigger")), None)
        if trigger is None:
            raise HostConfigError(f"function {function['name']} has no trigger")
        functions.append(FunctionInfo(function["name"], function["function_id"], trigger))
    return functions


class OwnLoader:
    """The app's functions on Python 3.11 and 3.12, where Microsoft's worker library does not install.

    Indexes function_app.py with the azure-functions library as the worker does, and hands each trigger to
    that library's converters (the ones the worker calls) for the function's argument and its HTTP answer.
    Sync functions run on a thread pool, async ones on the host's event loop.
    """

    def __init__(self) -> None:
        self.label = f"the host's own loader (azure-functions {metadata.version('azure-functions')})"
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="function")
        self._functions: dict[str, tuple[Callable[..., Any], bool]] = {}  # function id: (function, has $return)

    async def start(self) -> list[dict[str, Any]]:
        import azure.functions as func

        module = importlib.import_module("function_app")
        apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
        if len(apps) != 1:
            raise HostConfigError(f"{module.__file__} must define exactly one FunctionApp, found {len(apps)}")
        functions = []
        for function in apps[0].get_functions():
            bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
            name = function.get_function_name()
            self._functions[name] = (function.get_user_function(), any(b["name"] == "$return" for b in bindings))
            functions.append({"name": name, "function_id": name, "bindings": bindings})
        return functions

    async def invoke(
        self, function: FunctionInfo, trigger: TriggerData, invocation_id: str, traceparent: str = ""
    ) -> HttpAnswer | None:
        from azure.functions import meta

        fn, has_return = self._functions[function.function_id]
        converters = meta.get_binding_registry()
        kwargs = {
            function.arg_name: converters.get(function.trigger_type).decode(
                _datum(trigger), trigger_metadata={k: meta.Datum(v, "json") for k, v in trigger.metadata.items()}
            )
        }
        if "context" in inspect.signature(fn).parameters:  # as the worker does: the invocation's context
            kwargs["context"] = InvocationContext(
                invocation_id, function.name, str(Path.cwd()), TraceContext(traceparent, "", {})
            )
        if inspect.iscoroutinefunction(fn):
            result = await fn(**kwargs)
        else:
            result = await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, **kwargs))
        if not has_return:
            return None
        if result is None:
            return HttpAnswer(204, {}, b"")
        answer = converters.get("http").encode(result, expected_type=None)
        if answer.type == "string":
            return HttpAnswer(200, {"content-type": "text/plain; charset=utf-8"}, answer.value.encode())
        value = answer.value
        return HttpAnswer(
            int(value["status_code"].value), {k: v.value for k, v in value["headers"].items()}, value["body"].value
        )

    async def close(self) -> None:
        self.executor.shutdown(wait=True)


@dataclass(frozen=True)
class TraceContext:
    """An invocation's trace context, as the worker gives it (an azure.functions.TraceContext), with its older
    names too."""

    trace_parent: str
    trace_state: str
    attributes: dict[str, str]

    @property
    def Traceparent(self) -> str:  # noqa: N802 (the worker's own name)
        return self.trace_parent

    @property
    def Tracestate(self) -> str:  # noqa: N802
        return self.trace_state

    @property
    def Attributes(self) -> dict[str, str]:  # noqa: N802
        return self.attributes


@dataclass
class InvocationContext:
    """What the Functions host passes as `context` (an azure.functions.Context) to a function that takes one;
    the local host has no retry context to give."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: TraceContext
    retry_context: None = None
    thread_local_storage: threading.local = field(default_factory=threading.local)


def _datum(trigger: TriggerData) -> Any:
    """The trigger as the azure-functions library's converters take it (what the worker makes of TypedData)."""
    from azure.functions.meta import Datum

    if not isinstance(trigger.value, HttpData):
        return Datum(trigger.value, trigger.type)
    http = trigger.value

    def strings(values: dict[str, str]) -> dict[str, Datum]:
        return {k: Datum(v, "string") for k, v in values.items()}

    return Datum(
        {
            "method": Datum(http.method, "string"),
            "url": Datum(http.url, "string"),
            "headers": strings(http.headers),
            "query": strings(http.query),
            "params": strings(http.params),
            "body": Datum(http.body, "bytes"),
        },
        "http",
    )


def parse_timespan(value: Any, default: float) -> float:
    """host.json TimeSpans ("00:00:30", "1.00:00:00") in seconds."""
    if value is None:
        return default
    match = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$", str(value))
    if not match:
        raise HostConfigError(f"host.json value {value!r} is not a TimeSpan (hh:mm:ss)")
    days, h, m, s = match.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(m) * 60 + float(s)

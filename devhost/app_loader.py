"""Load a function app the way the Functions host does: settings, host.json, registered functions.

Routes, queue names and schedules come from the azure-functions library's own
metadata of the app (`app.get_functions()`), never from a second list.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class HostConfigError(Exception):
    """The app or its settings cannot be run; the message says what to fix."""


@dataclass
class FunctionInfo:
    name: str
    trigger: dict[str, Any]
    fn: Callable[..., Any]
    arg_name: str
    is_async: bool
    takes_context: bool = False  # a `context` parameter: the host passes the invocation's func.Context

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]


@dataclass
class LoadedApp:
    directory: Path
    host_json: dict[str, Any]
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


def load_app(app_dir: Path) -> LoadedApp:
    import inspect

    import azure.functions as func

    app_dir = app_dir.resolve()
    host_path = app_dir / "host.json"
    host_json = json.loads(host_path.read_text()) if host_path.exists() else {}
    load_settings(app_dir)
    sys.path.insert(0, str(app_dir))
    sys.modules.pop("function_app", None)
    module = importlib.import_module("function_app")
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    if len(apps) != 1:
        raise HostConfigError(f"{app_dir}/function_app.py must define exactly one FunctionApp, found {len(apps)}")
    loaded = LoadedApp(app_dir, host_json)
    for function in apps[0].get_functions():
        bindings = [b.get_dict_repr() for b in function.get_bindings()]
        trigger = next((b for b in bindings if str(b["type"]).endswith("Trigger")), None)
        if trigger is None:
            raise HostConfigError(f"function {function.get_function_name()} has no trigger")
        trigger = {k: (v.value if hasattr(v, "value") else v) for k, v in trigger.items()}
        if "methods" in trigger and trigger["methods"]:
            trigger["methods"] = [getattr(m, "value", m) for m in trigger["methods"]]
        fn = function.get_user_function()
        loaded.functions.append(FunctionInfo(
            name=function.get_function_name(), trigger=trigger, fn=fn,
            arg_name=trigger["name"], is_async=inspect.iscoroutinefunction(fn),
            takes_context="context" in inspect.signature(fn).parameters,
        ))
    return loaded


@dataclass(frozen=True)
class InvocationContext:
    """What the Functions host passes as `context` (an azure.functions.Context) to a function that takes one;
    the local host has no trace or retry context to give."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: None = None
    retry_context: None = None
    thread_local_storage: threading.local = field(default_factory=threading.local)


def parse_timespan(value: Any, default: float) -> float:
    """host.json TimeSpans ("00:00:30", "1.00:00:00") in seconds."""
    if value is None:
        return default
    match = re.match(r"^(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$", str(value))
    if not match:
        raise HostConfigError(f"host.json value {value!r} is not a TimeSpan (hh:mm:ss)")
    days, h, m, s = match.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(m) * 60 + float(s)

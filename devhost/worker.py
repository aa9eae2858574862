"""The Functions host's side of the worker protocol, against Microsoft's Python worker library.

On Python 3.13 and later the Python worker that runs the app in Azure is a library on PyPI,
azure-functions-runtime: it indexes function_app.py, converts bindings and invokes functions, from the
protocol's protobuf messages. Here the local host is the other side of that protocol, in the same
process: every request is a StreamingMessage serialised and parsed again, as over the host's gRPC
stream, and so is every answer; triggers arrive in the shapes the .NET host sends (an RpcHttp with
lower-case header names and a bytes body; a queue message as a string with DequeueCount, Id and the
times as JSON trigger metadata; a timer as TimerInfo JSON).

The protocol's generated modules come from the azure-functions-runtime-v1 wheel, which ships them as a
top-level `tests.protos` package: scripts/setup installs it into a folder of its own, and they are
loaded from there under another package name, so that they never shadow this project's `tests`.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import types
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from .app_loader import FunctionInfo, HostConfigError
from .triggers import HttpAnswer, HttpData, TriggerData

RUNTIME = "azure-functions-runtime"
PROTOS_DIR = Path(sys.prefix) / "functions-rpc" / "tests" / "protos"
PROTOS_PACKAGE = "functions_rpc"


def available() -> bool:
    """Whether the worker library is installed (it is, on Python 3.13 and later, from requirements-dev.txt)."""
    return importlib.util.find_spec(RUNTIME.replace("-", "_")) is not None


def load_protos(directory: Path = PROTOS_DIR) -> types.ModuleType:
    """FunctionRpc_pb2, as `functions_rpc.FunctionRpc_pb2`: its package's own __init__ (which imports grpc)
    never runs, and its relative imports (shared/, identity/) resolve inside the same folder."""
    if f"{PROTOS_PACKAGE}.FunctionRpc_pb2" in sys.modules:
        return sys.modules[f"{PROTOS_PACKAGE}.FunctionRpc_pb2"]
    if not (directory / "FunctionRpc_pb2.py").is_file():
        raise HostConfigError(f"the Functions protocol's modules are not in {directory}: scripts/setup installs them")
    spec = importlib.machinery.ModuleSpec(PROTOS_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(directory)]
    sys.modules[PROTOS_PACKAGE] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{PROTOS_PACKAGE}.FunctionRpc_pb2")


class WorkerError(Exception):
    """The worker answered Failure: its own exception text, then its stack trace."""

    def __init__(self, message: str, stack_trace: str) -> None:
        super().__init__(f"{message}\n{stack_trace}".rstrip())
        self.message = message


class _Event:
    """What azure_functions_runtime.handle_event's functions take: the request and the host's properties."""

    def __init__(self, request: Any, protos: types.ModuleType) -> None:
        self.request = request
        self.properties = {"protos": protos, "host": "127.0.0.1"}


class Worker:
    """The worker library in this process, initialised on one app directory.

    The library keeps its registry in module globals: one Worker per process.
    """

    def __init__(self, app_dir: Path, protos: types.ModuleType | None = None) -> None:
        self.app_dir = app_dir.resolve()
        self.protos = protos or load_protos()
        self.label = f"Microsoft's Python worker library (azure-functions-runtime {metadata.version(RUNTIME)})"

    async def _exchange(self, kind: str, message: Any) -> Any:
        """One request and its answer, each through the wire format."""
        from azure_functions_runtime import handle_event

        request_id = uuid.uuid4().hex
        sent = self.protos.StreamingMessage.FromString(
            self.protos.StreamingMessage(request_id=request_id, **{kind: message}).SerializeToString()
        )
        answer = await getattr(handle_event, kind)(_Event(sent, self.protos))
        answer_kind = kind.replace("_request", "_response").replace("functions_metadata", "function_metadata")
        received = self.protos.StreamingMessage.FromString(
            self.protos.StreamingMessage(request_id=request_id, **{answer_kind: answer}).SerializeToString()
        )
        response = getattr(received, answer_kind)
        if response.result.status != self.protos.StatusResult.Success:
            exception = response.result.exception
            raise WorkerError(exception.message, exception.stack_trace)
        return response

    async def start(self) -> list[dict[str, Any]]:
        """Init (which indexes the app), the metadata request, a load request per function: the functions as
        the worker reports them, each {"name", "function_id", "bindings": [raw binding dicts]}."""
        p = self.protos
        try:
            await self._exchange("worker_init_request", p.WorkerInitRequest(function_app_directory=str(self.app_dir)))
        except WorkerError as exc:
            raise HostConfigError(
                f"the worker cannot index {self.app_dir / 'function_app.py'}: {exc.message}"
            ) from None
        metadata = await self._exchange(
            "functions_metadata_request", p.FunctionsMetadataRequest(function_app_directory=str(self.app_dir))
        )
        self.metadata = list(metadata.function_metadata_results)
        functions = []
        for result in self.metadata:
            await self._exchange(
                "function_load_request", p.FunctionLoadRequest(function_id=result.function_id, metadata=result)
            )
            functions.append(
                {
                    "name": result.name,
                    "function_id": result.function_id,
                    "bindings": [json.loads(raw) for raw in result.raw_bindings],
                }
            )
        return functions

    async def invoke(
        self, function: FunctionInfo, trigger: TriggerData, invocation_id: str, traceparent: str = ""
    ) -> HttpAnswer | None:
        """One invocation: the HTTP function's answer, else None; WorkerError when the worker reports failure.
        A function that takes `context` gets the invocation's id and trace context there from the worker."""
        response = await self.invocation(
            function,
            self.typed_data(trigger),
            {k: self.protos.TypedData(json=v) for k, v in trigger.metadata.items()},
            invocation_id,
            traceparent,
        )
        if function.trigger_type != "httpTrigger":
            return None
        return self.http_answer(response.return_value)

    async def invocation(
        self,
        function: FunctionInfo,
        data: Any,
        metadata: dict[str, Any],
        invocation_id: str | None = None,
        traceparent: str = "",
    ) -> Any:
        """An InvocationRequest with the trigger's TypedData and metadata as given; the InvocationResponse."""
        p = self.protos
        return await self._exchange(
            "invocation_request",
            p.InvocationRequest(
                invocation_id=invocation_id or str(uuid.uuid4()),
                function_id=function.function_id,
                input_data=[p.ParameterBinding(name=function.arg_name, data=data)],
                trigger_metadata=metadata,
                trace_context=p.RpcTraceContext(trace_parent=traceparent),
            ),
        )

    async def close(self) -> None:
        """Nothing of the worker's own runs after its invocations answered."""

    def typed_data(self, trigger: TriggerData) -> Any:
        p = self.protos
        if isinstance(trigger.value, HttpData):
            http = trigger.value
            return p.TypedData(
                http=p.RpcHttp(
                    method=http.method,
                    url=http.url,
                    headers=http.headers,
                    query=http.query,
                    params=http.params,
                    body=p.TypedData(bytes=http.body),
                )
            )
        return p.TypedData(**{trigger.type: trigger.value})

    def http_answer(self, value: Any) -> HttpAnswer:
        """An HTTP function's return value: an RpcHttp, a string (200), or nothing (204)."""
        kind = value.WhichOneof("data")
        if kind is None:
            return HttpAnswer(204, {}, b"")
        if kind == "string":
            return HttpAnswer(200, {"content-type": "text/plain; charset=utf-8"}, value.string.encode())
        if kind != "http":
            raise WorkerError(f"an HTTP function answered with TypedData {kind}, which the host cannot send", "")
        body = value.http.body
        payload = body.bytes if body.WhichOneof("data") == "bytes" else body.string.encode()
        return HttpAnswer(int(value.http.status_code or 200), dict(value.http.headers), payload)

# The cold-start child: run as `python -c <this file's text>` from the repository root, like the
# floors (`python -c pass`), so that nothing else is imported first. It answers one authenticated
# message in-process: signing keys, the bot's token and the storage clients are all fetched or
# created on this first message. BENCH_COLD_LOADER says how the app is loaded and invoked:
#   (unset)  import function_app, then botcore.endpoint.handle_messages, as the app's function does;
#   "own"    the local host's own loader: index function_app, invoke `messages` through the
#            azure-functions converters;
#   "worker" Microsoft's worker library: init (protocol modules, indexing), metadata and load
#            requests, then `messages` invoked with protobuf messages both ways.
import time

_t0 = time.perf_counter()
import os  # noqa: E402  (already loaded by the interpreter's start)

_LOADER = os.environ.get("BENCH_COLD_LOADER", "")
if not _LOADER:
    import function_app  # noqa: E402,F401
_t1 = time.perf_counter()  # with a loader: once it indexed the app
import asyncio  # noqa: E402
import json  # noqa: E402


async def _turn():
    global _t1
    request = json.loads(os.environ["BENCH_COLD_REQUEST"])
    headers = {"Authorization": request["authorization"], "Content-Type": "application/json"}
    if not _LOADER:
        from botcore.endpoint import handle_messages

        status = (await handle_messages(headers, request["body"].encode())).status
    else:
        from pathlib import Path

        from devhost.app_loader import OwnLoader, functions_of
        from devhost.triggers import http_request

        if _LOADER == "worker":
            from devhost.worker import Worker

            runner = Worker(Path.cwd())
        else:
            runner = OwnLoader()
        functions = {f.name: f for f in functions_of(await runner.start())}
        _t1 = time.perf_counter()
        answer = await runner.invoke(
            functions["messages"],
            http_request(
                "POST", "http://localhost:7071/api/messages", headers.items(), [], {}, request["body"].encode()
            ),
            "cold-start",
        )
        status = answer.status
    done = time.perf_counter()
    from botcore.protocol.http import close_http_client
    from botcore.storage import close_storage_clients

    await close_storage_clients()
    await close_http_client()
    return status, done


_status, _t2 = asyncio.run(_turn())
print(json.dumps({"import_s": _t1 - _t0, "turn_s": _t2 - _t1, "status": _status}), flush=True)

# The cold-start child: run as `python -c <this file's text>` from the repository root, like the
# floors (`python -c pass`), so that nothing else is imported first. It imports function_app, then
# answers one authenticated message in-process through botcore.endpoint.handle_messages: signing
# keys, the bot's token and the storage clients are all fetched or created on this first message.
import time

_t0 = time.perf_counter()
import function_app  # noqa: E402,F401

_t1 = time.perf_counter()
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402


async def _turn():
    from botcore.endpoint import handle_messages

    request = json.loads(os.environ["BENCH_COLD_REQUEST"])
    headers = {"Authorization": request["authorization"], "Content-Type": "application/json"}
    response = await handle_messages(headers, request["body"].encode())
    done = time.perf_counter()
    from botcore.protocol.http import close_http_client
    from botcore.storage import close_storage_clients

    await close_storage_clients()
    await close_http_client()
    return response, done


_response, _t2 = asyncio.run(_turn())
print(json.dumps({"import_s": _t1 - _t0, "turn_s": _t2 - _t1, "status": _response.status}), flush=True)

"""A function app that exercises the local host's triggers; it reports what it saw into a table."""

import asyncio
import json
import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(kind: str, **fields) -> None:
    from azure.data.tables import TableClient

    table = TableClient.from_connection_string(os.environ["TestStorage"], "devhostseen")
    table.upsert_entity({"PartitionKey": kind, "RowKey": f"{time.time_ns()}", "data": json.dumps(fields)})


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def items(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(
            {
                "route": dict(req.route_params),
                "query": dict(req.params),
                "body": req.get_body().decode(),
                "method": req.method,
            }
        ),
        mimetype="application/json",
    )


@app.route(route="secret", methods=["GET"])
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("the secret", status_code=200)


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("deliberate failure")


@app.queue_trigger(arg_name="msg", queue_name="%WorkQueue%", connection="TestStorage")
async def work(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    if body.startswith("slow"):
        await asyncio.sleep(float(body.split(":")[1]))
    record("work", id=msg.id, body=body, dequeue_count=msg.dequeue_count)
    if body.startswith("fail"):
        raise RuntimeError("deliberate queue failure")


@app.timer_trigger(arg_name="timer", schedule="%TickSchedule%", run_on_startup=True)
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due)

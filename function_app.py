"""Azure Functions entry point (Python v2 model): triggers wired to botcore, nothing else.

botcore is imported inside each function so that a cold start pays only for what
the first invocation needs.
"""

import logging

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

JOBS_QUEUE = "bot-jobs"  # botcore.settings.JOBS_QUEUE; a test keeps the two equal
STORAGE = "BotStorage"  # botcore.settings.STORAGE_CONNECTION


def _http_response(response) -> func.HttpResponse:
    return func.HttpResponse(
        body=response.json_bytes(),
        status_code=response.status,
        mimetype="application/json" if response.body is not None else None,
    )


@app.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def messages(req: func.HttpRequest) -> func.HttpResponse:
    """The bot's messaging endpoint; the Bot Framework JWT is the authentication."""
    from botcore.endpoint import handle_messages

    return _http_response(await handle_messages(req.headers, req.get_body()))


@app.queue_trigger(arg_name="msg", queue_name=JOBS_QUEUE, connection=STORAGE)
async def jobs(msg: func.QueueMessage) -> None:
    """Jobs from other services and from the bot itself (notify, begin a dialog)."""
    from botcore.worker import handle_job_message

    outcome = await handle_job_message(msg.get_body(), msg.id)
    logging.info("job message %s (dequeue count %s): %s", msg.id, msg.dequeue_count, outcome)

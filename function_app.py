"""Azure Functions entry point (Python v2 model): triggers wired to botcore, nothing else.

botcore is imported inside each function so that a cold start pays only for what
the first invocation needs.
"""

import logging

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# Names the triggers bind to; botcore.settings holds the same values (a test keeps them equal).
JOBS_QUEUE = "bot-jobs"
SENDS_QUEUE = "bot-sends"
STORAGE = "BotStorage"


def _traceparent(context: func.Context) -> str | None:
    """The invocation's trace context, as the Functions host gives it (a W3C traceparent; botcore.telemetry)."""
    return context.trace_context.Traceparent or None


def _http_response(response) -> func.HttpResponse:
    return func.HttpResponse(
        body=response.json_bytes(),
        status_code=response.status,
        headers=dict(response.headers),
        mimetype="application/json" if response.body is not None else None,
    )


@app.route(route="messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def messages(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """The bot's messaging endpoint; the Bot Framework JWT is the authentication."""
    from botcore.endpoint import handle_messages

    return _http_response(
        await handle_messages(
            req.headers, req.get_body(), invocation_id=context.invocation_id, traceparent=_traceparent(context)
        )
    )


@app.route(route="notify", methods=["POST"])
async def notify(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Send a notification to a conversation, a user, a channel, a tenant or everyone."""
    from botcore.api import handle_notify

    return _http_response(
        await handle_notify(
            req.headers, req.get_body(), invocation_id=context.invocation_id, traceparent=_traceparent(context)
        )
    )


@app.route(route="notify/{id}", methods=["GET", "PATCH", "DELETE"])
async def notify_job(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """A notification job: its delivery counts; update or delete the messages it sent."""
    from botcore.api import handle_job

    return _http_response(
        await handle_job(
            req.method,
            req.route_params.get("id", ""),
            req.headers,
            req.get_body(),
            invocation_id=context.invocation_id,
            traceparent=_traceparent(context),
        )
    )


@app.route(route="reminders", methods=["POST"])
async def reminders(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Schedule a notification for later."""
    from botcore.api import handle_reminder

    return _http_response(
        await handle_reminder(
            req.headers, req.get_body(), invocation_id=context.invocation_id, traceparent=_traceparent(context)
        )
    )


@app.queue_trigger(arg_name="msg", queue_name=JOBS_QUEUE, connection=STORAGE)
async def jobs(msg: func.QueueMessage, context: func.Context) -> None:
    """Jobs from other services and from the bot itself: notify, broadcast, reminder, begin a dialog."""
    from botcore.worker import handle_job_message

    outcome = await handle_job_message(msg.get_body(), msg.id, msg.dequeue_count or 1, _traceparent(context))
    logging.info("job message %s (dequeue count %s): %s", msg.id, msg.dequeue_count, outcome)


@app.queue_trigger(arg_name="msg", queue_name=SENDS_QUEUE, connection=STORAGE)
async def sends(msg: func.QueueMessage, context: func.Context) -> None:
    """Batches of a broadcast, delivered by whichever instance takes them."""
    from botcore.worker import handle_send_message

    outcome = await handle_send_message(msg.get_body(), msg.id, msg.dequeue_count or 1, _traceparent(context))
    logging.info("send batch %s (dequeue count %s): %s", msg.id, msg.dequeue_count, outcome)


@app.timer_trigger(arg_name="timer", schedule="0 * * * * *")
async def reminder_timer(timer: func.TimerRequest, context: func.Context) -> None:
    """Every minute: enqueue the reminders due before the next run, each made visible at its second."""
    from botcore.worker import fire_reminders

    fired = await fire_reminders(_traceparent(context))
    if fired:
        logging.info("reminders fired: %d", fired)


@app.timer_trigger(arg_name="timer", schedule="0 30 * * * *")
async def retention_timer(timer: func.TimerRequest) -> None:
    """Every hour: delete what delivery keeps of work finished BotLedgerRetentionDays ago, in a bounded pass."""
    from botcore.worker import expire_records

    await expire_records()

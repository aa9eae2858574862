"""The bot's one error hierarchy.

Everything botcore raises on purpose derives from `BotError`, through one of five kinds. Each edge
maps the kind, never a library's exception, to its answer, in one place: the HTTP functions to a
status and a JSON error body (botcore.responses), the queue functions to retry or poison
(botcore.worker). A library's exception is translated where the library is called.

A class may refine how the HTTP edge shows it (`http_status`, `code`, `public_message`: what the
caller reads, when the full text is for the log only). `code` is only ever that public code: an error
that carries the code an upstream service answered with (storage, the Connector, the identity
provider) keeps it in `service_code`, for the log and the records.
"""

from __future__ import annotations


class BotError(Exception):
    """Root of the errors botcore raises on purpose."""

    http_status: int | None = None
    code: str | None = None  # the code an HTTP answer carries; None: its kind's
    public_message: str | None = None


class BadInputError(BotError, ValueError):
    """The caller's input can never work: 4xx over HTTP, the poison queue at once on a queue."""


class NotFoundError(BotError):
    """What the request names does not exist."""


class ConflictError(BotError):
    """Another writer got there first, or the request contradicts what is stored."""

    permanent = False  # True: retrying cannot resolve it (a queue message goes to poison)


class UnavailableError(BotError):
    """A dependency (storage, the identity provider, the Connector) failed for now: retry later."""

    retry_after: float | None = None


class ConfigurationError(BotError):
    """The app's settings cannot work; the message names the setting to fix."""

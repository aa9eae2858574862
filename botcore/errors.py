"""The bot's one error hierarchy.

Everything botcore raises on purpose derives from `BotError`, through one of five
kinds. Each edge maps the kind, never a library's exception, to its answer: the
HTTP functions to a status and a JSON error body, the queue functions to retry
or poison. A library's exception is translated where the library is called.
"""

from __future__ import annotations


class BotError(Exception):
    """Root of the errors botcore raises on purpose."""


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

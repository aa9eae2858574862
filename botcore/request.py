"""What the HTTP functions read from a request: a header, and the JSON body within its bounds (415 for another
media type, 413 past BotMaxBodyBytes, 400 for what is not JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import jsontext
from .errors import BadInputError
from .settings import Settings


class UnsupportedMediaTypeError(BadInputError):
    http_status, code = 415, "UnsupportedMediaType"


class BodyTooLargeError(BadInputError):
    http_status, code = 413, "PayloadTooLarge"


def header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def read_json(headers: Mapping[str, str], body: bytes, settings: Settings) -> Any:
    """The request's JSON value; a BadInputError says why there is none."""
    content_type = (header(headers, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaTypeError("Content-Type must be application/json")
    if len(body) > settings.max_body_bytes:
        raise BodyTooLargeError(f"body is larger than {settings.max_body_bytes} bytes")
    return jsontext.loads(body)

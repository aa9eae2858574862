"""JSON text from outside: parsed once, and refused when it holds what the bot cannot store or send on.

JSON may escape a lone surrogate (`"\\ud800"`), and json.loads lets surrogate bytes through too; such
a string cannot be encoded as UTF-8, so storing or sending it fails later, far from the request that
brought it. Bodies are searched for the two forms first, so that only a suspicious one is checked
in full.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import BadInputError

_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class JsonTextError(BadInputError):
    """Not JSON, nested too deeply, or holding a lone surrogate."""


def loads(body: bytes, what: str = "body") -> Any:
    try:
        data = json.loads(body)
    except RecursionError:
        raise JsonTextError(f"{what} is nested too deeply to be JSON the bot accepts") from None
    except ValueError as exc:
        raise JsonTextError(f"{what} is not JSON: {exc}") from None
    if _MAYBE_SURROGATE.search(body):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonTextError(f"{what} holds a lone surrogate: text that cannot be sent as UTF-8") from None
    return data

"""JSON text from outside: parsed once, and refused when it holds what the bot cannot store or send on.

JSON may escape a lone surrogate (`"\\ud800"`), and json.loads lets surrogate bytes through too; such
a string cannot be encoded as UTF-8, so storing or sending it fails later, far from the request that
brought it. Bodies are searched for the two forms first, so that only a suspicious one is checked
in full.

json.loads also takes `NaN`, `Infinity` and `-Infinity`, which JSON does not have, and reads a number
too large for a float (`1e999`) as infinity; the bot would write them back as text no other JSON reader
takes, or compute with them (a delay of infinity seconds). Numbers must be finite.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import BadInputError

_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class JsonTextError(BadInputError):
    """Not JSON, nested too deeply, holding a number that is not finite, or holding a lone surrogate."""


def _constant(text: str) -> Any:
    raise JsonTextError(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonTextError(text)
    return value


def loads(body: bytes, what: str = "body") -> Any:
    try:
        data = json.loads(body, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        raise JsonTextError(f"{what} is nested too deeply to be JSON the bot accepts") from None
    except JsonTextError as exc:  # from _constant or _finite, naming the number
        raise JsonTextError(f"{what} holds {str(exc)[:40]}: JSON numbers the bot accepts are finite") from None
    except ValueError as exc:
        raise JsonTextError(f"{what} is not JSON: {exc}") from None
    if _MAYBE_SURROGATE.search(body):
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonTextError(f"{what} holds a lone surrogate: text that cannot be sent as UTF-8") from None
    return data

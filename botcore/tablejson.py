"""JSON values in Table Storage entities, split over as many string properties as they need.

A string property holds at most 64 KiB (32K UTF-16 characters) and an entity
1 MiB, so a large value is stored as `<name>0..<name>N` with `<name>Parts`, and a
value that cannot fit is refused, never truncated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import BadInputError

PART_CHARS = 30_000
MAX_PARTS = 13  # 390K characters = 780 KB of UTF-16: the entity stays under 1 MiB


class ValueTooLargeError(BadInputError):
    """A value that would not fit in one entity: refused, never truncated."""


def split_json(name: str, value: Any, max_parts: int = MAX_PARTS) -> dict[str, Any]:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
    if len(parts) > max_parts:
        raise ValueTooLargeError(f"{len(text)} characters; at most {PART_CHARS * max_parts} fit")
    props: dict[str, Any] = {f"{name}Parts": len(parts)}
    props.update({f"{name}{i}": part for i, part in enumerate(parts)})
    return props


def join_json(entity: Mapping[str, Any], name: str) -> Any:
    """The value split_json stored; None when there is none."""
    parts = int(entity.get(f"{name}Parts") or 0)
    text = "".join(entity.get(f"{name}{i}", "") for i in range(parts))
    return json.loads(text) if text else None

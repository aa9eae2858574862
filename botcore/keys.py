"""Table Storage keys derived from channel and conversation ids.

Table keys may not hold `/ \\ # ?` or control characters and are at most 1 KiB,
while channel ids are free text. Short ids are escaped reversibly (readable
keys help operators); ids whose escaped form would be too long are hashed, and
the full id is always stored in the entity itself.
"""

from __future__ import annotations

import hashlib
import re
import string

_SAFE = frozenset(string.ascii_letters + string.digits + "-_.@:")
MAX_ESCAPED = 400
_HASHED_PREFIX = "~~"


def encode_key(value: str) -> str:
    """A valid PartitionKey/RowKey for any string; distinct strings give distinct keys."""
    parts = []
    for ch in value:
        if ch in _SAFE:
            parts.append(ch)
        else:
            parts.extend(f"~{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    escaped = "".join(parts)
    if len(escaped) <= MAX_ESCAPED:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return _HASHED_PREFIX + digest


def conversation_key(channel_id: str, conversation_id: str) -> str:
    """The address key of a conversation: unique per (channel, conversation).

    `|` never occurs inside an encoded part, so the pair cannot be confused.
    """
    return f"{encode_key(channel_id)}|{encode_key(conversation_id)}"


_CONVERSATION_KEY = re.compile(r"[A-Za-z0-9_.@:~-]+\|[A-Za-z0-9_.@:~-]+")


def is_conversation_key(text: str) -> bool:
    """Whether `text` has the form conversation_key gives (and so is a valid table key)."""
    return len(text) <= 1024 and _CONVERSATION_KEY.fullmatch(text) is not None

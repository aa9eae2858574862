"""The sends-queue messages: a batch of one job's conversations, with their references and their slot; and
a revision batch, which brings one delivery row's messages to the job's latest revision.

A batch carries its conversations' references, so that no send reads the conversation table again, and
the block of request slots the pace calendar gave it (botcore.delivery.pacing). The references travel
zlib-compressed: a broadcast's references share most of their text, so the queue stores and the host
parses several times fewer bytes. BATCH_BYTES bounds the items before compression, so even
incompressible items fit in a queue message once in base64.

Batches are named by their place in the fan-out: the same items give the same names, so a batch
enqueued twice (a fan-out or retry redone after a crash) is claimed, and sent, once.

Every message carries the trace context it was made in (`traceparent`, botcore.telemetry), so that the
sends function continues the job's trace; a message without one (made before they carried it) runs as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import telemetry
from ..jobs import JobError, check_job_id, check_traceparent
from ..keys import is_conversation_key
from ..protocol.activity import ActivityError, ConversationReference
from .ledger import BATCH_PREFIX
from .pacing import Slot

BATCH_KEYS = 100
BATCH_BYTES = 48_000  # a queue message holds 64 KiB
MAX_UNPACKED = 1 << 20


@dataclass
class SendBatch:
    """Conversations of one job. `id` names the batch's ledger row (a fan-out's batches); without one, each
    conversation is claimed on its own row (retries of a one-conversation delivery). `pace` is the pace
    key the items share; `slot` is None for a batch that takes its slots when it runs."""

    job: str
    items: list[tuple[str, ConversationReference]]
    attempt: int = 0
    id: str = ""
    pace: str = ""
    slot: Slot | None = None
    traceparent: str | None = field(default_factory=telemetry.traceparent)

    def to_json(self) -> str:
        items = [_item(k, r.to_json()) for k, r in self.items]
        return _message(self.job, self.id, self.attempt, items, self.pace, self.slot, self.traceparent)

    @classmethod
    def parse(cls, body: bytes | str) -> SendBatch:
        """Items come packed (as `pack` writes them) or as a plain `items` list (easier to write by hand)."""
        try:
            data = json.loads(body)
            job, attempt, batch_id = data["job"], int(data.get("attempt", 0)), data.get("id", "")
            items = json.loads(_unpack(data["packed"])) if "packed" in data else data["items"]
            pace, slot = data.get("pace", ""), data.get("slot")
            if not isinstance(job, str) or not isinstance(items, list) or not isinstance(batch_id, str):
                raise JobError("job and id must be strings and items a list")
            check_job_id(job, "job")
            if not is_batch_id(batch_id):
                raise JobError(f"batch id {batch_id[:50]!r} is not made of letters, digits and dots")
            if not isinstance(pace, str):
                raise JobError("pace must be a string")
            return cls(
                job,
                [(str(k), ConversationReference.from_dict(r)) for k, r in items],
                attempt,
                batch_id,
                pace,
                Slot(float(slot[0]), float(slot[1])) if slot is not None else None,
                check_traceparent(data.get("traceparent"), "traceparent"),
            )
        except (ValueError, KeyError, TypeError, IndexError, RecursionError, zlib.error, ActivityError) as exc:
            raise JobError(f"not a send batch: {exc}") from exc


@dataclass
class RevisionBatch:
    """Bring the messages of one delivery row of a job (`row`: a batch's row, or a conversation's) to the
    job's latest revision. It names no conversations: the worker reads them from the row when it runs, so
    the message is small and never stale."""

    job: str
    row: str
    attempt: int = 0
    slot: Slot | None = None  # slots reserved when it last ran, too far off to wait for then
    traceparent: str | None = field(default_factory=telemetry.traceparent)

    def to_json(self) -> str:
        message: dict[str, Any] = {"kind": "revise", "job": self.job, "row": self.row, "attempt": self.attempt}
        if self.slot is not None:
            message["slot"] = [round(self.slot.start, 3), self.slot.interval]
        return _traced(message, self.traceparent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RevisionBatch:
        job, row, attempt, slot = data.get("job"), data.get("row"), data.get("attempt", 0), data.get("slot")
        if not isinstance(job, str) or not isinstance(row, str) or not isinstance(attempt, int):
            raise JobError("a revision batch needs job and row (strings) and an integer attempt")
        check_job_id(job, "job")
        if not (row.startswith(BATCH_PREFIX) and is_batch_id(row[len(BATCH_PREFIX) :]) or is_conversation_key(row)):
            raise JobError(f"row {row[:50]!r} names no delivery row")
        traceparent = check_traceparent(data.get("traceparent"), "traceparent")
        try:
            return cls(
                job, row, attempt, Slot(float(slot[0]), float(slot[1])) if slot is not None else None, traceparent
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise JobError(f"a revision batch's slot is [start, interval]: {exc}") from None


@dataclass(frozen=True)
class PackMessage:
    """A pack of reminders (botcore.delivery.packs): its id, and when its first reminder is due (epoch
    seconds). The reminders themselves wait in the pack's ledger row."""

    pack: str
    first_due: float
    traceparent: str | None = field(default_factory=telemetry.traceparent)

    def to_json(self) -> str:
        return _traced({"kind": "pack", "pack": self.pack, "due": self.first_due}, self.traceparent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackMessage:
        pack, due = data.get("pack"), data.get("due")
        if not isinstance(pack, str) or not isinstance(due, (int, float)) or isinstance(due, bool):
            raise JobError("a pack message needs pack (a string) and due (epoch seconds)")
        check_job_id(pack, "pack")
        return cls(pack, float(due), check_traceparent(data.get("traceparent"), "traceparent"))


def parse_sends_message(body: bytes | str) -> SendBatch | RevisionBatch | PackMessage:
    """A message from the sends queue, by its kind (a send batch has none)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise JobError(f"not a send batch: {exc}") from exc
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "revise":
        return RevisionBatch.from_dict(data)
    if kind == "pack":
        return PackMessage.from_dict(data)
    return SendBatch.parse(body)


def is_batch_id(batch_id: str) -> bool:
    return len(batch_id) <= 200 and all(c.isalnum() or c == "." for c in batch_id)


def retry_prefix(batch_id: str, attempts: int) -> str:
    """The name prefix of the retry batches made from `batch_id` for keys that used `attempts`: the same
    hand-on gives the same names, so a retry enqueued twice is sent once. The batch's place in the fan-out
    stays readable; a digest of the rest keeps names short however often a batch is handed on."""
    place = batch_id.split("r", 1)[0]
    digest = hashlib.sha256(f"{batch_id}r{attempts}".encode()).hexdigest()[:16]
    return f"{place}r{digest}."


def pack(
    job_id: str,
    items: Iterable[tuple[str, str]],
    *,
    attempt: int = 0,
    id_prefix: str | None = None,
    pace: str = "",
    slot: Slot | None = None,
) -> list[tuple[str, Slot | None]]:
    """Sends-queue messages, each with its slot, for (key, reference JSON) pairs: at most BATCH_KEYS
    conversations and BATCH_BYTES of items each. With a slot, each batch's slots follow the previous
    batch's; with id_prefix, the batches are named id_prefix + 0, 1, ... Each carries the trace context `pack` is
    called in."""
    traceparent = telemetry.traceparent()
    out: list[tuple[str, Slot | None]] = []
    current: list[str] = []
    size = sent_before = 0

    def close() -> None:
        batch_slot = Slot(slot.at(sent_before), slot.interval) if slot is not None else None
        batch_id = "" if id_prefix is None else f"{id_prefix}{len(out)}"
        out.append((_message(job_id, batch_id, attempt, current, pace, batch_slot, traceparent), batch_slot))

    for key, reference in items:
        item = _item(key, reference)
        item_size = len(item.encode()) + 1  # UTF-8 bytes
        if current and (len(current) >= BATCH_KEYS or size + item_size > BATCH_BYTES):
            close()
            sent_before += len(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        close()
    return out


def _item(key: str, reference_json: str) -> str:
    return f"[{json.dumps(key, ensure_ascii=False)},{reference_json}]"


def _message(
    job_id: str, batch_id: str, attempt: int, items: list[str], pace: str, slot: Slot | None, traceparent: str | None
) -> str:
    packed = base64.b64encode(zlib.compress(("[" + ",".join(items) + "]").encode(), 1)).decode("ascii")
    message: dict[str, Any] = {"job": job_id, "id": batch_id, "attempt": attempt, "pace": pace, "packed": packed}
    if slot is not None:
        message["slot"] = [round(slot.start, 3), slot.interval]
    return _traced(message, traceparent)


def _traced(message: dict[str, Any], traceparent: str | None) -> str:
    if traceparent is not None:
        message["traceparent"] = traceparent
    return json.dumps(message, separators=(",", ":"))


def _unpack(packed: Any) -> str:
    if not isinstance(packed, str):
        raise JobError("packed must be a string")
    inflater = zlib.decompressobj()
    text = inflater.decompress(base64.b64decode(packed, validate=True), MAX_UNPACKED)
    if inflater.unconsumed_tail or not inflater.eof:
        raise JobError(f"packed items are truncated or larger than {MAX_UNPACKED} bytes")
    return text.decode("utf-8")

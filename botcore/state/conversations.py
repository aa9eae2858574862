"""One Table Storage entity per conversation: its address and its dialog state.

Keeping both in one entity makes a turn cost one point read and at most one
write, and makes the ETag of that one entity guard everything a turn changes.
PartitionKey is the conversation's address key (one partition per conversation
spreads load); RowKey is constant.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, ConflictError
from ..keys import conversation_key, encode_key
from ..protocol.activity import TENANT_CHANNELS, ConversationReference
from ..settings import CONVERSATIONS_TABLE, MEMBERS_TABLE
from ..storage import (
    MAX_PAGE,
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    EntityTooLargeError,
    Table,
    TableStore,
    etag_of,
    get_table,
)
from ..tablejson import ValueTooLargeError, join_json, split_json

if TYPE_CHECKING:
    from azure.data.tables import TableEntity

ROW_KEY = "c"
INDEX_ROW = "i"
MAX_WRITE_ATTEMPTS = 8  # a write that loses the ETag race reads again and retries, this many times at most
LAST_SEEN_PRECISION = timedelta(hours=1)
REFERENCE_COLUMNS = [
    "PartitionKey",
    "RowKey",
    "ref",
    "active",
    "firstSeen",
    "lastSeen",
    "retiredReason",
]
ADDRESS_COLUMNS = ["PartitionKey", "ref", "channelId", "tenantId"]  # what a fan-out reads of each conversation


class ConcurrencyError(ConflictError):
    """Another writer changed the conversation since it was read: reload and run again."""


class StateTooLargeError(BadInputError):
    """The dialog state does not fit in one entity; it is refused, never truncated."""

    http_status, code = 413, "StateTooLarge"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Address:
    """A conversation's key and stored reference (JSON text), with what its pace depends on."""

    key: str
    reference: str
    channel_id: str
    tenant_id: str | None


@dataclass
class ConversationRecord:
    key: str
    reference: ConversationReference
    active: bool = True
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    retired_reason: str | None = None
    team_id: str | None = None  # the Teams team of a channel conversation
    state: dict[str, Any] | None = None
    etag: str | None = None

    @classmethod
    def from_entity(cls, entity: TableEntity) -> ConversationRecord:
        return cls(
            key=entity["PartitionKey"],
            reference=ConversationReference.from_dict(json.loads(entity["ref"])),
            active=bool(entity.get("active", True)),
            first_seen=entity.get("firstSeen"),
            last_seen=entity.get("lastSeen"),
            retired_reason=entity.get("retiredReason") or None,
            team_id=entity.get("teamId") or None,
            state=join_json(entity, "state"),
            etag=etag_of(entity),
        )


def _state_properties(state: dict[str, Any] | None) -> dict[str, Any]:
    if state is None:
        return {"stateParts": 0}
    try:
        return split_json("state", state)
    except ValueTooLargeError as exc:
        raise StateTooLargeError(f"dialog state: {exc}") from exc


def _reference_properties(reference: ConversationReference) -> dict[str, Any]:
    props = {
        "ref": reference.to_json(),
        "channelId": reference.channel_id,
        "conversationId": reference.conversation.id,
        "userId": reference.user.id if reference.user else "",
        "tenantId": reference.tenant_id or "",
        "isGroup": bool(reference.conversation.is_group),
        "serviceUrlTrust": reference.service_url_trust or "",
    }
    return props


def _same_address(a: ConversationReference, b: ConversationReference) -> bool:
    """Equal in everything but the activity id, which changes with every message."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("activityId", None)
    db.pop("activityId", None)
    return da == db


def _odata_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _user_row(channel_id: str, tenant_id: str, user_id: str) -> str:
    return f"user|{channel_id}|{tenant_id}|{user_id}"


def _team_row(channel_id: str, team_id: str) -> str:
    return f"team|{channel_id}|{team_id}"


class ConversationStore(TableStore):
    """The conversations table (one entity per conversation), and the members table that indexes it."""

    table_name = CONVERSATIONS_TABLE

    def __init__(self, table: Table | None = None, members: Table | None = None) -> None:
        super().__init__(table)
        self._members = members

    async def get(self, key: str) -> ConversationRecord | None:
        try:
            entity = await self.table.get(key, ROW_KEY)
        except EntityNotFoundError:
            return None
        return ConversationRecord.from_entity(entity)

    def needs_reference_write(
        self, record: ConversationRecord | None, reference: ConversationReference, now: datetime | None = None
    ) -> bool:
        """Whether an inbound activity must update the stored address (else: no write at all)."""
        if record is None or not record.active:
            return True
        if not _same_address(record.reference, reference):
            return True
        now = now or _now()
        return record.last_seen is None or now - record.last_seen > LAST_SEEN_PRECISION

    async def commit(
        self,
        record: ConversationRecord | None,
        *,
        key: str | None = None,
        reference: ConversationReference | None = None,
        state: Any = ...,
        team_id: str | None = None,
        now: datetime | None = None,
    ) -> ConversationRecord:
        """Write reference and/or state in one conditional write.

        `record` None inserts (the conversation must not exist yet); otherwise the
        write carries the record's ETag. A lost race raises ConcurrencyError.
        Passing a reference also marks the conversation active and refreshes lastSeen.
        """
        now = now or _now()
        if record is None:
            if reference is None:
                raise TypeError("a new conversation needs its reference")
            record = ConversationRecord(
                key=key or conversation_key(reference.channel_id, reference.conversation.id),
                reference=reference,
                first_seen=now,
                last_seen=now,
            )
        elif reference is not None:
            record.reference, record.active, record.retired_reason = reference, True, None
            record.last_seen = now
        if state is not ...:
            record.state = state
        record.team_id = team_id or record.team_id
        entity: dict[str, Any] = {"PartitionKey": record.key, "RowKey": ROW_KEY, "teamId": record.team_id or ""}
        entity.update(_reference_properties(record.reference))
        entity.update(
            active=record.active,
            firstSeen=record.first_seen or now,
            lastSeen=record.last_seen or now,
            retiredReason=record.retired_reason or "",
        )
        entity.update(_state_properties(record.state))
        inserting = record.etag is None
        try:
            if inserting:
                record.etag = await self.table.insert(entity)
            else:
                record.etag = await self.table.replace(entity, record.etag)
        except (EntityExistsError, EntityChangedError) as exc:
            raise ConcurrencyError(record.key) from exc
        except EntityTooLargeError as exc:
            raise StateTooLargeError(f"conversation {record.key}: {exc.service_code}") from exc
        if team_id is not None or inserting:
            await self._index(record, team_id)
        return record

    async def _index(self, record: ConversationRecord, team_id: str | None) -> None:
        """Find a personal conversation by (channel, tenant, user) and a team by (channel, id) without scanning
        the table: a new personal conversation and a newly seen team get a row in the members table."""
        reference = record.reference
        if team_id is not None:
            await self.members.upsert(
                {
                    "PartitionKey": encode_key(_team_row(reference.channel_id, team_id)),
                    "RowKey": INDEX_ROW,
                    "conversation": record.key,
                }
            )
        elif reference.tenant_id and reference.user and reference.conversation.is_group is not True:
            name = _user_row(reference.channel_id, reference.tenant_id, reference.user.id)
            await self.members.upsert(
                {"PartitionKey": encode_key(name), "RowKey": INDEX_ROW, "conversation": record.key}
            )

    @property
    def members(self) -> Table:
        if self._members is None:
            self._members = get_table(MEMBERS_TABLE)
        return self._members

    async def _pointer(self, name: str) -> str | None:
        try:
            row = await self.members.get(encode_key(name), INDEX_ROW)
        except EntityNotFoundError:
            return None
        pointer = row.get("conversation")
        return pointer if isinstance(pointer, str) else None

    async def _indexed(
        self, name: str, legacy: str, matches: Callable[[ConversationRecord], bool]
    ) -> ConversationRecord | None:
        """The active conversation an index row names, if it is what was asked for. Rows written before index
        names carried the channel (`legacy`) may have been pointed elsewhere by a client that claimed another
        channel's tenant or team; whatever a row names is checked, so a misdirected row reads as unknown."""
        key = await self._pointer(name) or await self._pointer(legacy)
        record = await self.get(key) if key else None
        return record if record is not None and record.active and matches(record) else None

    async def personal(self, channel_id: str, tenant_id: str, user_id: str) -> ConversationRecord | None:
        """The user's active one-to-one conversation with the bot on that channel and in that tenant, if any."""

        def matches(record: ConversationRecord) -> bool:
            reference = record.reference
            return (
                reference.channel_id == channel_id
                and reference.tenant_id == tenant_id
                and reference.user is not None
                and reference.user.id == user_id
            )

        return await self._indexed(_user_row(channel_id, tenant_id, user_id), f"user|{tenant_id}|{user_id}", matches)

    async def team(self, channel_id: str, team_id: str) -> ConversationRecord | None:
        """The active conversation that told the bot of a team (its id, tenant, service URL), if any."""

        def matches(record: ConversationRecord) -> bool:
            return record.reference.channel_id == channel_id and record.team_id == team_id

        return await self._indexed(_team_row(channel_id, team_id), f"team|{team_id}", matches)

    async def record_activity(
        self, reference: ConversationReference, *, team_id: str | None = None, now: datetime | None = None
    ) -> ConversationRecord:
        """Save the address of an inbound activity; writes only when something changed."""
        key = conversation_key(reference.channel_id, reference.conversation.id)
        for _ in range(MAX_WRITE_ATTEMPTS):
            record = await self.get(key)
            if (
                record is not None
                and not self.needs_reference_write(record, reference, now)
                and (team_id is None or record.team_id == team_id)
            ):
                return record
            try:
                return await self.commit(record, key=key, reference=reference, team_id=team_id, now=now)
            except ConcurrencyError:
                continue
        raise ConcurrencyError(key)

    async def retire(self, key: str, reason: str, *, now: datetime | None = None) -> bool:
        """Stop sending to a conversation (blocked, removed, gone); the row stays for audit."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            record = await self.get(key)
            if record is None:
                return False
            if not record.active:
                return True
            try:
                await self.table.merge(
                    {
                        "PartitionKey": key,
                        "RowKey": ROW_KEY,
                        "active": False,
                        "retiredReason": reason[:1000],
                        "retiredAt": now or _now(),
                    },
                    record.etag,
                )
                return True
            except EntityChangedError:
                continue
            except EntityNotFoundError:
                return False
        raise ConcurrencyError(key)

    @staticmethod
    def selection_filter(
        *,
        channel_id: str | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        include_retired: bool = False,
    ) -> str | None:
        clauses = []
        if channel_id is not None:
            clauses.append(f"channelId eq {_odata_quote(channel_id)}")
        if tenant_id is not None:
            # Rows stored before tenants were read only where the channel writes them may hold a tenant a
            # user's client claimed: a tenant is matched only on the channels that vouch for it.
            channels = " or ".join(f"channelId eq {_odata_quote(c)}" for c in sorted(TENANT_CHANNELS))
            clauses.append(f"({channels})")
            clauses.append(f"tenantId eq {_odata_quote(tenant_id)}")
        if user_id is not None:
            clauses.append(f"userId eq {_odata_quote(user_id)}")
        if not include_retired:
            clauses.append("active eq true")
        return " and ".join(clauses) or None

    async def page(
        self, query_filter: str | None, continuation_token: str | None = None, page_size: int = 500
    ) -> tuple[list[ConversationRecord], str | None]:
        """One page of conversations; the token resumes the listing in a later invocation."""
        entities, token = await self.table.page(
            query_filter, select=REFERENCE_COLUMNS, page_size=page_size, cursor=continuation_token
        )
        return [ConversationRecord.from_entity(e) for e in entities], token

    async def addresses(
        self, query_filter: str | None, continuation_token: str | None = None, page_size: int = 500
    ) -> tuple[list[Address], str | None]:
        """Up to `page_size` addresses from the cursor, in as many queries as that takes (Table Storage answers
        one with at most MAX_PAGE), each with its stored reference as JSON text: what a fan-out copies into send
        batches as is, since the sending side parses (and validates) each reference anyway."""
        found: list[Address] = []
        token = continuation_token
        while True:
            entities, token = await self.table.page(
                query_filter,
                select=ADDRESS_COLUMNS,
                page_size=min(page_size - len(found), MAX_PAGE),
                cursor=token,
            )
            found += (
                Address(e["PartitionKey"], e["ref"], e.get("channelId") or "", e.get("tenantId") or None)
                for e in entities
            )
            if not token or len(found) >= page_size:
                return found, token

    async def iter_pages(
        self, query_filter: str | None, page_size: int = 500
    ) -> AsyncIterator[list[ConversationRecord]]:
        token: str | None = None
        while True:
            records, token = await self.page(query_filter, token, page_size)
            if records:
                yield records
            if not token:
                return

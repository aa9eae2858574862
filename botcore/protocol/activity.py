"""Wire shapes of the Bot Framework protocol: activities, accounts, references.

Parsing is tolerant where the protocol is (optional fields may be absent,
unknown fields are kept and sent back untouched) and strict where it must be
(a body without what the protocol requires raises `ActivityError`, which the
endpoint answers with 400).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError

MAX_ID_LENGTH = 4096
# What a stored reference may carry (docs/protocol.md, "Conversation references"): display names are
# cut to MAX_NAME_CHARS, and past MAX_REFERENCE_BYTES of UTF-8 the fields the protocol does not need
# (unknown account fields) are dropped, so that every stored conversation fits in a send batch.
MAX_NAME_CHARS = 256
MAX_REFERENCE_BYTES = 16 * 1024

TEAMS_CHANNEL = "msteams"
# The channels whose channelData and conversation.tenantId the channel service writes. Elsewhere (Direct
# Line, Web Chat, the Emulator) the end user's client writes them, so a tenant or team read there would be
# whatever the user claims (docs/protocol.md, "Conversation references").
TENANT_CHANNELS = frozenset({TEAMS_CHANNEL})


class ActivityError(BadInputError):
    """The payload is not a usable activity or reference; the message says why."""


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):  # what JSON gives; a typing.Mapping check costs ~1 µs a call
        raise ActivityError(f"{what} must be a JSON object")
    return value


def _str(data: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ActivityError(f"{what}.{key} is required")
        return None
    if not isinstance(value, str):
        raise ActivityError(f"{what}.{key} must be a string")
    if required and not value:
        raise ActivityError(f"{what}.{key} must not be empty")
    if len(value) > MAX_ID_LENGTH and key in ("id", "channelId", "serviceUrl"):
        raise ActivityError(f"{what}.{key} is longer than {MAX_ID_LENGTH} characters")
    return value


def _extras(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


@dataclass
class ChannelAccount:
    id: str
    name: str | None = None
    aad_object_id: str | None = None
    role: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("id", "name", "aadObjectId", "role")

    @classmethod
    def from_dict(cls, data: Any, what: str = "account") -> ChannelAccount:
        data = _obj(data, what)
        return cls(
            id=_str(data, "id", what, required=True),  # type: ignore[arg-type]
            name=_str(data, "name", what),
            aad_object_id=_str(data, "aadObjectId", what),
            role=_str(data, "role", what),
            extra=_extras(data, cls._KNOWN),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["id"] = self.id
        _put(out, "name", self.name)
        _put(out, "aadObjectId", self.aad_object_id)
        _put(out, "role", self.role)
        return out


@dataclass
class ConversationAccount:
    id: str
    name: str | None = None
    is_group: bool | None = None
    conversation_type: str | None = None
    tenant_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = ("id", "name", "isGroup", "conversationType", "tenantId")

    @classmethod
    def from_dict(cls, data: Any, what: str = "conversation") -> ConversationAccount:
        data = _obj(data, what)
        is_group = data.get("isGroup")
        if is_group is not None and not isinstance(is_group, bool):
            raise ActivityError(f"{what}.isGroup must be a boolean")
        return cls(
            id=_str(data, "id", what, required=True),  # type: ignore[arg-type]
            name=_str(data, "name", what),
            is_group=is_group,
            conversation_type=_str(data, "conversationType", what),
            tenant_id=_str(data, "tenantId", what),
            extra=_extras(data, cls._KNOWN),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["id"] = self.id
        _put(out, "name", self.name)
        _put(out, "isGroup", self.is_group)
        _put(out, "conversationType", self.conversation_type)
        _put(out, "tenantId", self.tenant_id)
        return out


@dataclass
class Activity:
    """An activity as received or sent. Fields the bot does not model stay in `extra`."""

    type: str
    channel_id: str
    conversation: ConversationAccount
    service_url: str
    id: str | None = None
    from_: ChannelAccount | None = None
    recipient: ChannelAccount | None = None
    text: str | None = None
    locale: str | None = None
    timestamp: str | None = None
    name: str | None = None
    action: str | None = None
    value: Any = None
    members_added: list[ChannelAccount] = field(default_factory=list)
    members_removed: list[ChannelAccount] = field(default_factory=list)
    channel_data: Any = None
    reply_to_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _KNOWN = (
        "type",
        "channelId",
        "conversation",
        "serviceUrl",
        "id",
        "from",
        "recipient",
        "text",
        "locale",
        "timestamp",
        "name",
        "action",
        "value",
        "membersAdded",
        "membersRemoved",
        "channelData",
        "replyToId",
    )

    @classmethod
    def from_dict(cls, data: Any) -> Activity:
        data = _obj(data, "activity")
        type_ = _str(data, "type", "activity", required=True)
        service_url = _str(data, "serviceUrl", "activity", required=True)
        if not service_url.lower().startswith(("https://", "http://")):  # type: ignore[union-attr]
            raise ActivityError("activity.serviceUrl must be an http(s) URL")
        if "conversation" not in data:
            raise ActivityError("activity.conversation is required")
        return cls(
            type=type_,  # type: ignore[arg-type]
            channel_id=_str(data, "channelId", "activity", required=True),  # type: ignore[arg-type]
            conversation=ConversationAccount.from_dict(data["conversation"]),
            service_url=service_url,  # type: ignore[arg-type]
            id=_str(data, "id", "activity"),
            from_=_account(data, "from"),
            recipient=_account(data, "recipient"),
            text=_str(data, "text", "activity"),
            locale=_str(data, "locale", "activity"),
            timestamp=_str(data, "timestamp", "activity"),
            name=_str(data, "name", "activity"),
            action=_str(data, "action", "activity"),
            value=data.get("value"),
            members_added=_accounts(data, "membersAdded"),
            members_removed=_accounts(data, "membersRemoved"),
            channel_data=data.get("channelData"),
            reply_to_id=_str(data, "replyToId", "activity"),
            extra=_extras(data, cls._KNOWN),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out["type"] = self.type
        out["channelId"] = self.channel_id
        out["conversation"] = self.conversation.to_dict()
        out["serviceUrl"] = self.service_url
        _put(out, "id", self.id)
        _put(out, "from", self.from_.to_dict() if self.from_ else None)
        _put(out, "recipient", self.recipient.to_dict() if self.recipient else None)
        _put(out, "text", self.text)
        _put(out, "locale", self.locale)
        _put(out, "timestamp", self.timestamp)
        _put(out, "name", self.name)
        _put(out, "action", self.action)
        _put(out, "value", self.value)
        if self.members_added:
            out["membersAdded"] = [m.to_dict() for m in self.members_added]
        if self.members_removed:
            out["membersRemoved"] = [m.to_dict() for m in self.members_removed]
        _put(out, "channelData", self.channel_data)
        _put(out, "replyToId", self.reply_to_id)
        return out

    @property
    def tenant_id(self) -> str | None:
        """Teams puts the tenant in conversation.tenantId or channelData.tenant.id; other channels name none
        the bot may trust."""
        if self.channel_id not in TENANT_CHANNELS:
            return None
        if self.conversation.tenant_id:
            return self.conversation.tenant_id
        if isinstance(self.channel_data, dict):
            tenant = self.channel_data.get("tenant")
            tenant_id = tenant.get("id") if isinstance(tenant, dict) else None
            if isinstance(tenant_id, str):
                return tenant_id
        return None

    @property
    def team_id(self) -> str | None:
        """Teams names the team of a channel conversation in channelData.team.id; other channels name none
        the bot may trust."""
        if self.channel_id in TENANT_CHANNELS and isinstance(self.channel_data, dict):
            team = self.channel_data.get("team")
            team_id = team.get("id") if isinstance(team, dict) else None
            if isinstance(team_id, str) and team_id:
                return team_id
        return None

    def bot_was_removed(self) -> bool:
        bot_id = self.recipient.id if self.recipient else None
        return bool(bot_id) and any(m.id == bot_id for m in self.members_removed)


def _account(data: Mapping[str, Any], key: str) -> ChannelAccount | None:
    value = data.get(key)
    return None if value is None else ChannelAccount.from_dict(value, f"activity.{key}")


def _accounts(data: Mapping[str, Any], key: str) -> list[ChannelAccount]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ActivityError(f"activity.{key} must be a list")
    return [ChannelAccount.from_dict(v, f"activity.{key}[]") for v in value]


def _fits(text: str) -> bool:
    return len(text) * 4 <= MAX_REFERENCE_BYTES or len(text.encode("utf-8")) <= MAX_REFERENCE_BYTES


def _cut(account: Any, *, extra: bool = True) -> Any:
    if account is None:
        return None
    name = account.name[:MAX_NAME_CHARS] if account.name else account.name
    return dataclasses.replace(account, name=name, **({} if extra else {"extra": {}}))


TRUST_TOKEN = "token"
TRUST_EMULATOR = "emulator"
TRUST_DEVELOPMENT = "development"


@dataclass(frozen=True)
class ServiceEndpoint:
    """A Connector base URL and why the bot may call it (see `ConversationReference`)."""

    url: str
    trust: str | None


@dataclass
class ConversationReference:
    """A conversation's address: everything needed to speak into it later.

    `service_url_trust` records how the activity that gave the address was authenticated: "token" (a
    channel token whose `serviceurl` claim matched), "emulator" (an Emulator token, which vouches for no
    serviceUrl) or "development" (local mode without authentication). Whether a call may carry the
    bot's token is decided by botcore.trust, never by this field alone.
    """

    conversation: ConversationAccount
    channel_id: str
    service_url: str
    user: ChannelAccount | None = None
    bot: ChannelAccount | None = None
    activity_id: str | None = None
    locale: str | None = None
    service_url_trust: str | None = None

    @classmethod
    def from_activity(cls, activity: Activity, trust: str | None) -> ConversationReference:
        """The address to store: bounded (see MAX_REFERENCE_BYTES), with the tenant wherever Teams put it, and
        none on a channel whose client could have made one up."""
        conversation = activity.conversation
        if conversation.tenant_id != activity.tenant_id:
            conversation = dataclasses.replace(conversation, tenant_id=activity.tenant_id)
        return cls(
            conversation=conversation,
            channel_id=activity.channel_id,
            service_url=activity.service_url,
            user=activity.from_,
            bot=activity.recipient,
            activity_id=activity.id,
            locale=activity.locale,
            service_url_trust=trust,
        ).bounded()

    @classmethod
    def bounded_json(cls, text: str) -> str:
        """A stored reference's text as it may be sent on: as is when within bounds (the common case, no
        parsing), else re-cut; ActivityError when it cannot be (stored before references were bounded)."""
        return text if _fits(text) else cls.from_dict(json.loads(text)).bounded().to_json()

    def bounded(self) -> ConversationReference:
        """This reference cut to what may be stored; ActivityError if even its ids exceed MAX_REFERENCE_BYTES."""
        names = [a.name for a in (self.user, self.bot, self.conversation) if a is not None and a.name]
        if all(len(n) <= MAX_NAME_CHARS for n in names) and _fits(self.to_json()):
            return self
        out = dataclasses.replace(self, conversation=_cut(self.conversation), user=_cut(self.user), bot=_cut(self.bot))
        if _fits(out.to_json()):
            return out
        out = dataclasses.replace(
            out,
            conversation=dataclasses.replace(out.conversation, extra={}),
            user=_cut(out.user, extra=False),
            bot=_cut(out.bot, extra=False),
        )
        if _fits(out.to_json()):
            return out
        raise ActivityError(
            f"the conversation's address is larger than {MAX_REFERENCE_BYTES} bytes even without display names"
        )

    @classmethod
    def from_dict(cls, data: Any) -> ConversationReference:
        """Accept the Bot Framework reference shape and the v3 Node SDK `address` shape.

        The two differ only in the activity id's key (`activityId` vs `id`).
        """
        data = _obj(data, "reference")
        if "conversation" not in data:
            raise ActivityError("reference.conversation is required")
        service_url = _str(data, "serviceUrl", "reference", required=True)
        activity_id = _str(data, "activityId", "reference")
        if activity_id is None:
            activity_id = _str(data, "id", "reference")
        user, bot = data.get("user"), data.get("bot")
        return cls(
            conversation=ConversationAccount.from_dict(data["conversation"], "reference.conversation"),
            channel_id=_str(data, "channelId", "reference", required=True),  # type: ignore[arg-type]
            service_url=service_url,  # type: ignore[arg-type]
            user=None if user is None else ChannelAccount.from_dict(user, "reference.user"),
            bot=None if bot is None else ChannelAccount.from_dict(bot, "reference.bot"),
            activity_id=activity_id,
            locale=_str(data, "locale", "reference"),
            service_url_trust=_str(data, "serviceUrlTrust", "reference"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "conversation": self.conversation.to_dict(),
            "channelId": self.channel_id,
            "serviceUrl": self.service_url,
        }
        _put(out, "user", self.user.to_dict() if self.user else None)
        _put(out, "bot", self.bot.to_dict() if self.bot else None)
        _put(out, "activityId", self.activity_id)
        _put(out, "locale", self.locale)
        _put(out, "serviceUrlTrust", self.service_url_trust)
        return out

    def to_json(self) -> str:
        """The stored form: compact, non-ASCII text kept as is."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @property
    def tenant_id(self) -> str | None:
        return self.conversation.tenant_id

    @property
    def endpoint(self) -> ServiceEndpoint:
        return ServiceEndpoint(self.service_url, self.service_url_trust)

    def outgoing(self, type: str = "message", **fields: Any) -> dict[str, Any]:
        """A proactive activity into this conversation: from the bot, to the user."""
        out: dict[str, Any] = {
            "type": type,
            "channelId": self.channel_id,
            "serviceUrl": self.service_url,
            "conversation": self.conversation.to_dict(),
        }
        _put(out, "from", self.bot.to_dict() if self.bot else None)
        _put(out, "recipient", self.user.to_dict() if self.user else None)
        _put(out, "locale", self.locale)
        out.update({k: v for k, v in fields.items() if v is not None})
        return out

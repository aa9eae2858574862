"""The Connector client against the fake Bot Connector, over real HTTP."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

from botcore.protocol.activity import ServiceEndpoint
from botcore.protocol.connector import (
    ConnectorAuthError,
    ConnectorClient,
    ConversationGoneError,
    RequestRejectedError,
    RetryableConnectorError,
)
from botcore.protocol.tokens import TokenError
from botcore.protocol.trust import UntrustedServiceUrlError
from devhost.channel import FakeConnector


class StaticTokens:
    """Issues numbered tokens; the fake Connector accepts only the current one."""

    def __init__(self) -> None:
        self.current, self.refreshes = "tok-1", 0

    async def get_token(self, *, force_refresh: bool = False, stale: str | None = None) -> str:
        if force_refresh:
            self.refreshes += 1
            self.current = f"tok-{self.refreshes + 1}"
        return self.current


@pytest.fixture
def fake():
    with FakeConnector() as connector:
        yield connector


@pytest.fixture
async def trust(fake, storage_connection_string, monkeypatch):
    """The bot's rule over a real registry in Azurite, in which a channel token vouched for the fake."""
    from botcore import storage
    from botcore.protocol.trust import ServiceTrust
    from botcore.state.service_urls import ServiceUrlRegistry

    monkeypatch.setenv("BotStorage", storage_connection_string)
    await storage.ensure_resources()
    registry = ServiceUrlRegistry()
    await registry.record(fake.base_url)
    yield ServiceTrust(registry)
    await storage.close_storage_clients()


def trusted(fake) -> ServiceEndpoint:
    return ServiceEndpoint(fake.base_url + "/", "token")


ODD_IDS = ["19:abc@thread.tacv2;messageid=1", "a:1/2#3?4 5", "29:漢字🙂", "%2F"]


@pytest.mark.parametrize("conversation_id", ODD_IDS)
async def test_every_operation_reaches_its_path_with_encoded_ids(fake, http, conversation_id, trust) -> None:
    client = ConnectorClient(trust, http, StaticTokens())
    target = trusted(fake)
    sent = await client.send_to_conversation(target, conversation_id, {"type": "message", "text": "a"})
    replied = await client.reply_to_activity(target, conversation_id, "act/1", {"type": "message", "text": "b"})
    await client.update_activity(target, conversation_id, "act/1", {"type": "message", "text": "c"})
    await client.delete_activity(target, conversation_id, "act/1")
    created = await client.create_conversation(target, {"isGroup": False, "members": [{"id": "29:u"}]})
    assert sent.id and replied.id and created.id.startswith("conv-")
    ops = [(r.operation, r.conversation_id, r.activity_id) for r in fake.requests]
    assert ops == [
        ("send", conversation_id, None),
        ("reply", conversation_id, "act/1"),
        ("update", conversation_id, "act/1"),
        ("delete", conversation_id, "act/1"),
        ("create", None, None),
    ]
    assert all(r.authorization == "Bearer tok-1" for r in fake.requests)


async def test_paged_members_follow_the_continuation_token(fake, http, trust) -> None:
    fake.members["c1"] = [{"id": f"29:{i}", "name": f"n{i}"} for i in range(5)]
    client = ConnectorClient(trust, http, StaticTokens())
    first = await client.get_paged_members(trusted(fake), "c1", page_size=2)
    second = await client.get_paged_members(trusted(fake), "c1", 2, first.continuation_token)
    last = await client.get_paged_members(trusted(fake), "c1", 2, second.continuation_token)
    assert [m.id for m in first.members + second.members + last.members] == [f"29:{i}" for i in range(5)]
    assert last.continuation_token is None


async def test_empty_response_bodies_are_accepted(http, trust) -> None:
    with FakeConnector(status=202, empty_body=True) as fake:
        await trust.registry.record(fake.base_url)
        client = ConnectorClient(trust, http, StaticTokens())
        result = await client.send_to_conversation(trusted(fake), "c", {"text": "x"})
    assert result.id is None


@pytest.mark.parametrize(
    "target, tokens",
    [
        (ServiceEndpoint("https://smba.example/", None), True),
        (ServiceEndpoint("https://smba.example/", "development"), True),
        (ServiceEndpoint("http://smba.example/", "token"), True),
        (ServiceEndpoint("ftp://127.0.0.1/", "token"), False),
        (ServiceEndpoint("https://smba.example/", None), False),
        (ServiceEndpoint("https://smba.example/", "token"), True),  # says "token", but no channel token vouched for it
        (ServiceEndpoint("https://evil.example/", "emulator"), True),  # an Emulator token vouches for no serviceUrl
    ],
)
async def test_untrusted_service_urls_are_refused_before_any_io(fake, http, target, tokens, trust) -> None:
    client = ConnectorClient(trust, http, StaticTokens() if tokens else None)
    with pytest.raises(UntrustedServiceUrlError):
        await client.send_to_conversation(target, "c", {"text": "x"})
    assert fake.requests == []


async def test_an_emulator_service_url_gets_the_token_when_listed_or_in_development_on_loopback(
    fake, http, trust
) -> None:
    from botcore.protocol.trust import ServiceTrust

    development = ServiceTrust(trust.registry, emulator_on_loopback=True)
    await ConnectorClient(development, http, StaticTokens()).send_to_conversation(
        ServiceEndpoint(fake.base_url + "/", "emulator"), "c", {"text": "x"}
    )
    with pytest.raises(UntrustedServiceUrlError, match="BotEmulatorServiceHosts"):
        await ConnectorClient(development, http, StaticTokens()).send_to_conversation(
            ServiceEndpoint("https://tunnel.example/", "emulator"), "c", {"text": "x"}
        )
    listed = ServiceTrust(trust.registry, ["tunnel.example"])
    assert (
        await listed.base_for(ServiceEndpoint("https://TUNNEL.example", "emulator"), True) == "https://TUNNEL.example/"
    )
    assert len(fake.requests) == 1


async def test_in_production_a_loopback_emulator_service_url_gets_the_token_only_when_listed(fake, http, trust) -> None:
    """The loopback allowance serves an Emulator beside a bot run locally; a deployed app has none beside it."""
    from botcore.protocol.trust import ServiceTrust

    loopback = ServiceEndpoint(fake.base_url + "/", "emulator")
    localhost = ServiceEndpoint(fake.base_url.replace("127.0.0.1", "localhost") + "/", "emulator")
    for endpoint in (loopback, localhost):
        with pytest.raises(UntrustedServiceUrlError, match="BotEmulatorServiceHosts"):
            await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(endpoint, "c", {"text": "x"})
    assert fake.requests == []
    listed = ServiceTrust(trust.registry, ["127.0.0.1"])
    await ConnectorClient(listed, http, StaticTokens()).send_to_conversation(loopback, "c", {"text": "x"})
    assert [r.authorization for r in fake.requests] == ["Bearer tok-1"]


async def test_development_mode_sends_without_a_token(fake, http, trust) -> None:
    await ConnectorClient(trust, http, None).send_to_conversation(
        ServiceEndpoint(fake.base_url, "development"), "c", {"text": "x"}
    )
    assert fake.requests[0].authorization is None


async def test_401_refreshes_the_token_once_and_retries(fake, http, trust) -> None:
    tokens = StaticTokens()
    fake.require_token(lambda t: t == "tok-2")
    await ConnectorClient(trust, http, tokens).send_to_conversation(trusted(fake), "c", {"text": "x"})
    assert tokens.refreshes == 1 and fake.requests[0].authorization == "Bearer tok-2"
    fake.require_token(lambda t: False)
    with pytest.raises(ConnectorAuthError):
        await ConnectorClient(trust, http, tokens).send_to_conversation(trusted(fake), "c", {"text": "x"})


async def test_429_retry_after_is_honoured(fake, http, trust) -> None:
    fake.fail(429, "TooManyRequests", retry_after=0.6)
    start = time.monotonic()
    await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(trusted(fake), "c", {"text": "x"})
    assert time.monotonic() - start >= 0.6 and len(fake.requests) == 1


def _http_date(seconds_from_now: float) -> str:
    from datetime import datetime, timedelta
    from email.utils import format_datetime

    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    "header, seconds",
    [
        ("120", 120),
        ("0.5", 0.5),
        (" 7 ", 7),
        ("2592000", 3600),
        ("9" * 400, None),  # 30 days, and a number too long for a float: an hour, and the default
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("-5", None),
        ("1e3", None),
        ("soon", None),
        (90.0, 90),
        (30 * 86400.0, 3600),
        (-60.0, 0),  # HTTP-dates this far from now
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
async def test_retry_after_is_delta_seconds_or_an_http_date_and_at_most_the_cap(
    fake, http, trust, header, seconds
) -> None:
    """What the error says the caller must wait: None for what means nothing usable (the caller's default)."""
    fake.fail(429, "TooManyRequests", retry_after=_http_date(header) if isinstance(header, float) else header)
    client = ConnectorClient(trust, http, StaticTokens(), max_retry_after=3600)
    with pytest.raises(RetryableConnectorError) as info:
        await client.send_to_conversation(trusted(fake), "c", {"text": "x"}, retry=False)
    if seconds is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after == pytest.approx(seconds, abs=2)


@pytest.mark.parametrize("status", [412, 502, 503, 504])
async def test_transient_errors_are_retried(fake, http, status, trust) -> None:
    fake.fail(status, times=2)
    client = ConnectorClient(trust, http, StaticTokens(), max_retry_wait=10)
    assert (await client.send_to_conversation(trusted(fake), "c", {"text": "x"})).id


async def test_retry_budget_and_no_retry_mode_raise_retryable_errors(fake, http, trust) -> None:
    fake.fail(503, times=None)
    client = ConnectorClient(trust, http, StaticTokens(), max_attempts=3, max_retry_wait=10)
    with pytest.raises(RetryableConnectorError):
        await client.send_to_conversation(trusted(fake), "c", {"text": "x"})
    fake.clear_faults()
    fake.fail(429, retry_after=7)
    start = time.monotonic()
    with pytest.raises(RetryableConnectorError) as info:
        await client.send_to_conversation(trusted(fake), "c", {"text": "x"}, retry=False)
    assert info.value.retry_after == 7 and time.monotonic() - start < 1
    fake.clear_faults()
    fake.fail(429)  # no Retry-After: the error says so, rather than passing off the client's back-off as one
    with pytest.raises(RetryableConnectorError) as info:
        await client.send_to_conversation(trusted(fake), "c", {"text": "x"}, retry=False)
    assert info.value.status == 429 and info.value.retry_after is None


@pytest.mark.parametrize(
    "status, code",
    [
        (403, "ConversationBlockedByUser"),
        (403, "BotNotInConversationRoster"),
        (403, "BotDisabledByAdmin"),
        (403, "ForbiddenOperationException"),
        (403, "MessageWritesBlocked"),
        (404, "ConversationNotFound"),
    ],
)
async def test_permanent_failures_say_the_conversation_is_gone(fake, http, status, code, trust) -> None:
    fake.fail(status, code)
    with pytest.raises(ConversationGoneError) as info:
        await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(trusted(fake), "c", {"text": "x"})
    assert info.value.service_code == code and info.value.operation_id


async def test_teams_error_shape_is_parsed(fake, http, trust) -> None:
    fake.fail(403, "ConversationBlockedByUser", teams_shape=True)
    with pytest.raises(ConversationGoneError):
        await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(trusted(fake), "c", {"text": "x"})


@pytest.mark.parametrize("status, code", [(413, "MessageSizeTooBig"), (400, "BadArgument"), (500, "InternalError")])
async def test_sender_mistakes_are_never_retried(fake, http, status, code, trust) -> None:
    fake.fail(status, code, times=None)
    with pytest.raises(RequestRejectedError):
        await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(trusted(fake), "c", {"text": "x"})
    fake.clear_faults()
    await ConnectorClient(trust, http, StaticTokens()).send_to_conversation(trusted(fake), "c", {"text": "ok"})
    assert fake.texts() == ["ok"]


async def test_reset_connections_and_hangs_are_retried(fake, http, trust) -> None:
    fake.fail(200, reset=True)
    fake.fail(200, hang=3)
    client = ConnectorClient(trust, http, StaticTokens(), max_retry_wait=10)
    assert (await client.send_to_conversation(trusted(fake), "c", {"text": "x"})).id
    assert fake.texts() == ["x"]


class UnavailableTokens:
    """An identity provider that gives no token."""

    def __init__(self) -> None:
        self.asked = 0

    async def get_token(self, *, force_refresh: bool = False, stale: str | None = None) -> str:
        self.asked += 1
        raise TokenError("token endpoint answered 503", 503, "temporarily_unavailable")


async def test_a_token_fetched_ahead_of_a_run_serves_it_and_one_not_given_is_left_to_its_requests(
    fake, http, trust, caplog
) -> None:
    client = ConnectorClient(trust, http, StaticTokens())
    never_vouched = ServiceEndpoint("https://smba.example.invalid/", "token")
    await client.prepare([trusted(fake), trusted(fake), never_vouched])  # the refusal is the request's to meet
    assert trust.registry._verified == {fake.base_url + "/"}  # read ahead: the first request waits for nothing
    await client.send_to_conversation(trusted(fake), "c1", {"type": "message", "text": "a"})
    assert fake.requests[-1].authorization == "Bearer tok-1"
    with pytest.raises(UntrustedServiceUrlError):
        await client.send_to_conversation(never_vouched, "c1", {"type": "message", "text": "a"})
    failing = UnavailableTokens()
    await ConnectorClient(trust, http, failing).prepare([])  # left to the requests, which report it per conversation
    assert failing.asked == 1 and "could not be fetched ahead of a run" in caplog.text
    with pytest.raises(TokenError):
        await ConnectorClient(trust, http, failing).send_to_conversation(trusted(fake), "c1", {"type": "message"})

"""POST /api/messages end to end: the real function app in the local host, real HTTP,
Azurite, a local identity provider and the fake Bot Connector."""

from __future__ import annotations

import json

import pytest

from tests.botstack import APP_ID, BotStack


def test_an_authenticated_message_is_answered_and_its_address_saved(bot: BotStack, conversation_id) -> None:
    response = bot.say(conversation_id, "help")
    assert response.status_code == 200, response.text
    texts = bot.wait_texts(conversation_id, 2)
    assert "now know your address" in texts[0] and "Here's what I understand" in texts[1]
    received = bot.channel.activities(conversation_id)[0]
    assert received.operation == "reply" and bot.idp.is_valid_access_token(received.authorization.split()[1])
    assert received.body["from"]["id"] == f"28:{APP_ID}" and received.body["recipient"]["id"] == "29:user"
    entity = bot.conversation_entity(conversation_id)
    assert entity["conversationId"] == conversation_id and entity["tenantId"] == "tenant-1"
    assert entity["serviceUrlTrust"] == "token" and entity["active"] is True
    assert json.loads(entity["ref"])["serviceUrl"] == bot.service_url


def test_conversation_update_saves_and_removal_retires_the_address(bot: BotStack, conversation_id) -> None:
    added = bot.activity(conversation_id, type="conversationUpdate", membersAdded=[{"id": f"28:{APP_ID}"}])
    assert bot.post(added).status_code == 200
    assert bot.conversation_entity(conversation_id)["active"] is True
    removed = bot.activity(conversation_id, type="conversationUpdate", membersRemoved=[{"id": f"28:{APP_ID}"}])
    assert bot.post(removed).status_code == 200
    entity = bot.conversation_entity(conversation_id)
    assert entity["active"] is False and entity["retiredReason"] == "bot removed"
    install = bot.activity(conversation_id, type="installationUpdate", action="add")
    assert bot.post(install).status_code == 200
    assert bot.conversation_entity(conversation_id)["active"] is True


def test_unknown_activity_types_are_accepted_and_unanswered(bot: BotStack, conversation_id) -> None:
    assert bot.post(bot.activity(conversation_id, type="somethingNew", futureField=[1])).status_code == 200
    assert bot.post(bot.activity(conversation_id, type="typing")).status_code == 200
    assert bot.channel.activities(conversation_id) == []


def _bad_tokens(bot: BotStack) -> dict[str, str | None]:
    return {
        "missing": None,
        "expired": bot.token(lifetime=-600),
        "wrong audience": bot.idp.mint_channel_token("someone-else", bot.service_url),
        "wrong serviceurl": bot.idp.mint_channel_token(APP_ID, "https://evil.example/"),
        "unknown issuer": bot.token(extra_claims={"iss": "https://evil.example"}),
        "garbage": "abc.def.ghi",
    }


@pytest.mark.parametrize(
    "case", ["missing", "expired", "wrong audience", "wrong serviceurl", "unknown issuer", "garbage"]
)
def test_bad_tokens_get_401_and_nothing_is_stored_or_sent(bot: BotStack, conversation_id, case) -> None:
    token = _bad_tokens(bot)[case]
    headers = {"Authorization": None} if token is None else {"Authorization": f"Bearer {token}"}
    response = bot.post(bot.activity(conversation_id, "help"), headers=headers)
    assert response.status_code == 401
    assert bot.conversation_entity(conversation_id) is None
    assert bot.channel.activities(conversation_id) == []
    assert token is None or token not in bot.host.log()


@pytest.mark.parametrize(
    "raw, content_type, status",
    [
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (b'{"type": "message"}', "application/json", 400),
        (b'{"a": 1}', "text/plain", 415),
        (b'{"x": "' + b"y" * 300_000 + b'"}', "application/json", 413),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
    ],
)
def test_malformed_requests_get_a_clear_4xx(bot: BotStack, raw, content_type, status) -> None:
    response = bot.post(None, raw=raw, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert "error" in response.json()


def test_many_turns_cost_one_token_fetch_and_one_key_fetch(bot: BotStack, conversation_id) -> None:
    for _ in range(5):
        assert bot.say(conversation_id, "help").status_code == 200
    bot.wait_texts(conversation_id, 6)
    start_token, start_jwks = bot.idp.count("token"), bot.idp.count("jwks:channel")
    for _ in range(20):
        assert bot.say(conversation_id, "help").status_code == 200
    bot.wait_texts(conversation_id, 26)
    assert bot.idp.count("token") == start_token and bot.idp.count("jwks:channel") == start_jwks
    assert start_token >= 1 and start_jwks >= 1  # the first turns did fetch them, once per process


@pytest.mark.parametrize("size", [1_000_000, 20_000_000])
def test_oversized_bodies_get_413_in_bounded_time(bot: BotStack, size) -> None:
    import time

    started = time.monotonic()
    response = bot.post(None, raw=b'{"type": "message", "text": "' + b"x" * size + b'"}')
    assert response.status_code == 413 and time.monotonic() - started < 10


def test_huge_headers_get_a_4xx(bot: BotStack, conversation_id) -> None:
    response = bot.post(bot.activity(conversation_id, "help"), headers={"X-Padding": "a" * 100_000})
    assert 400 <= response.status_code < 500
    assert bot.conversation_entity(conversation_id) is None


async def test_a_malformed_setting_is_a_clear_configuration_error_in_the_log(monkeypatch, caplog) -> None:
    """The answer says what kind of failure it is; which setting, and its value, are for the log only."""
    from botcore.endpoint import handle_messages
    from botcore.settings import get_settings

    monkeypatch.setenv("MicrosoftAppId", APP_ID)
    monkeypatch.setenv("BotSendConcurrency", "lots")
    get_settings.cache_clear()
    try:
        response = await handle_messages(
            {"Content-Type": "application/json", "Authorization": "Bearer x"}, b"{}", invocation_id="7d1e"
        )
    finally:
        get_settings.cache_clear()
    assert response.status == 500 and response.body["error"] == {
        "code": "BotMisconfigured",
        "message": "the bot is misconfigured; its log names the setting to fix",
    }
    assert (
        "handle_messages (invocation 7d1e): ConfigurationError: BotSendConcurrency must be a number, not 'lots'"
        in caplog.text
    )

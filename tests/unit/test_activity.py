"""Wire shapes: tolerant of absent optional fields, faithful to unknown ones, strict on the rest."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from botcore.protocol.activity import TENANT_CHANNELS, Activity, ActivityError, ConversationReference

MINIMAL = {
    "type": "message",
    "channelId": "msteams",
    "serviceUrl": "https://smba.trafficmanager.net/emea/",
    "conversation": {"id": "a:1"},
}


def test_minimal_activity_parses_with_every_optional_field_absent() -> None:
    activity = Activity.from_dict(MINIMAL)
    assert activity.from_ is None and activity.recipient is None and activity.locale is None
    assert activity.tenant_id is None
    assert activity.to_dict() == MINIMAL


def test_unknown_fields_are_kept_at_every_level() -> None:
    data = {
        **MINIMAL,
        "futureField": {"x": [1, 2]},
        "from": {"id": "29:u", "someNewThing": True},
        "conversation": {"id": "a:1", "tenantId": "t1", "extraConv": 1},
        "channelData": {"tenant": {"id": "t2"}},
        "entities": [{"type": "mention"}],
    }
    assert Activity.from_dict(json.loads(json.dumps(data))).to_dict() == data


def test_tenant_comes_from_conversation_or_channel_data() -> None:
    assert Activity.from_dict({**MINIMAL, "channelData": {"tenant": {"id": "t2"}}}).tenant_id == "t2"
    conv = {"id": "a:1", "tenantId": "t1"}
    assert Activity.from_dict({**MINIMAL, "conversation": conv}).tenant_id == "t1"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"type": None}, "activity.type is required"),
        ({"type": 5}, "activity.type must be a string"),
        ({"channelId": ""}, "activity.channelId must not be empty"),
        ({"serviceUrl": None}, "activity.serviceUrl is required"),
        ({"serviceUrl": "ftp://x"}, r"http\(s\) URL"),
        ({"conversation": "a:1"}, "conversation must be a JSON object"),
        ({"conversation": {"name": "x"}}, "conversation.id is required"),
        ({"from": "29:u"}, "activity.from must be a JSON object"),
        ({"membersAdded": {"id": "x"}}, "membersAdded must be a list"),
        ({"conversation": {"id": "a", "isGroup": "yes"}}, "isGroup must be a boolean"),
    ],
)
def test_invalid_activities_are_refused_with_a_reason(change: dict, message: str) -> None:
    data = {k: v for k, v in {**MINIMAL, **change}.items() if v is not None}
    with pytest.raises(ActivityError, match=message):
        Activity.from_dict(data)


def test_bot_removed_is_recognised_by_recipient_id() -> None:
    base = {**MINIMAL, "type": "conversationUpdate", "recipient": {"id": "28:bot"}}
    assert Activity.from_dict({**base, "membersRemoved": [{"id": "28:bot"}]}).bot_was_removed()
    assert not Activity.from_dict({**base, "membersRemoved": [{"id": "29:u"}]}).bot_was_removed()
    assert not Activity.from_dict({**MINIMAL, "membersRemoved": [{"id": "28:bot"}]}).bot_was_removed()


def test_the_team_of_a_channel_conversation_is_read_from_channel_data() -> None:
    assert (
        Activity.from_dict({**MINIMAL, "channelData": {"team": {"id": "19:t@thread.tacv2"}}}).team_id
        == "19:t@thread.tacv2"
    )
    assert Activity.from_dict({**MINIMAL, "channelData": {"team": "x"}}).team_id is None
    assert Activity.from_dict(MINIMAL).team_id is None


CLAIMED = {
    "conversation": {"id": "a:1", "tenantId": "victim"},
    "channelData": {"tenant": {"id": "victim"}, "team": {"id": "19:t@thread.tacv2"}},
}


def test_only_teams_writes_the_channel_data_the_bot_trusts() -> None:
    assert TENANT_CHANNELS == {"msteams"}


@pytest.mark.parametrize("channel", ["directline", "webchat", "emulator", "slack", "MSTeams"])
def test_other_channels_name_no_tenant_or_team_whatever_the_client_sends(channel: str) -> None:
    activity = Activity.from_dict({**MINIMAL, **CLAIMED, "channelId": channel})
    assert activity.tenant_id is None and activity.team_id is None
    reference = ConversationReference.from_activity(activity, "token")
    assert reference.tenant_id is None and "tenantId" not in reference.to_dict()["conversation"]
    assert activity.to_dict()["channelData"] == CLAIMED["channelData"]  # kept as received, only not believed


def test_teams_tenant_and_team_are_stored() -> None:
    activity = Activity.from_dict({**MINIMAL, **CLAIMED})
    assert (activity.tenant_id, activity.team_id) == ("victim", "19:t@thread.tacv2")
    assert ConversationReference.from_activity(activity, "token").tenant_id == "victim"
    only_channel_data = Activity.from_dict({**MINIMAL, "channelData": {"tenant": {"id": "t2"}}})
    assert ConversationReference.from_activity(only_channel_data, "token").conversation.tenant_id == "t2"


def test_reference_from_activity_and_outgoing_proactive_activity() -> None:
    activity = Activity.from_dict(
        {
            **MINIMAL,
            "id": "act1",
            "locale": "de-DE",
            "from": {"id": "29:u", "name": "Ann"},
            "recipient": {"id": "28:bot", "name": "Bot"},
        }
    )
    ref = ConversationReference.from_activity(activity, "token")
    assert ref.user.id == "29:u" and ref.bot.id == "28:bot" and ref.activity_id == "act1"
    out = ref.outgoing(text="Hello")
    assert out["from"]["id"] == "28:bot" and out["recipient"]["id"] == "29:u"
    assert out["conversation"] == {"id": "a:1"} and out["locale"] == "de-DE"
    assert ConversationReference.from_dict(ref.to_dict()) == ref


def test_v3_node_address_shape_is_accepted() -> None:
    address = {
        "id": "act9",
        "channelId": "skype",
        "user": {"id": "u1", "name": "U"},
        "bot": {"id": "b1", "name": "B"},
        "conversation": {"id": "c1"},
        "serviceUrl": "https://smba.trafficmanager.net/apis/",
    }
    ref = ConversationReference.from_dict(address)
    assert ref.activity_id == "act9" and ref.user.id == "u1" and ref.bot.id == "b1"
    assert ref.service_url_trust is None  # an imported address earns no token by itself


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_no_input_raises_anything_but_activity_error(value) -> None:
    for candidate in (value, {**MINIMAL, "conversation": value}, {**MINIMAL, "from": value}):
        try:
            Activity.from_dict(candidate)
        except ActivityError:
            pass
        try:
            ConversationReference.from_dict(candidate)
        except ActivityError:
            pass

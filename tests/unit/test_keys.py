"""Table keys: any channel or conversation id gives a valid, distinct key."""

import re

from hypothesis import given
from hypothesis import strategies as st

from botcore.keys import MAX_ESCAPED, conversation_key, encode_key, is_conversation_key

FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


@given(st.text(min_size=1), st.text(min_size=1))
def test_any_nonempty_ids_give_a_valid_conversation_key(channel: str, conversation: str) -> None:
    key = conversation_key(channel, conversation)
    assert not FORBIDDEN.search(key)
    assert len(key.encode("utf-8")) <= 1024 and is_conversation_key(key)
    assert key == f"{encode_key(channel)}|{encode_key(conversation)}"


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_strings_give_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert encode_key(a) != encode_key(b)


def test_readable_ids_stay_readable() -> None:
    assert encode_key("29:1abc-DEF_x.y@z") == "29:1abc-DEF_x.y@z"
    assert encode_key("a/b#c?d\\e") == "a~2Fb~23c~3Fd~5Ce"


def test_long_ids_are_hashed_and_stay_distinct() -> None:
    long_a, long_b = "x" * 5000, "x" * 4999 + "y"
    assert len(encode_key(long_a)) < MAX_ESCAPED
    assert encode_key(long_a) != encode_key(long_b) and encode_key(long_a).startswith("~~")


def test_channel_and_conversation_cannot_be_confused() -> None:
    assert conversation_key("a|b", "c") != conversation_key("a", "b|c")

"""Table keys: any channel or conversation id gives a valid, distinct key that round-trips."""

import re

from hypothesis import given, strategies as st

from botcore.keys import MAX_ESCAPED, conversation_key, decode_key, encode_key

FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


@given(st.text())
def test_any_string_gives_a_valid_key_that_round_trips(value: str) -> None:
    key = encode_key(value)
    assert not FORBIDDEN.search(key)
    assert len(key.encode("utf-8")) <= 1024
    decoded = decode_key(key)
    assert decoded == value or (decoded is None and len(key) == 66)


@given(st.text(), st.text())
def test_distinct_strings_give_distinct_keys(a: str, b: str) -> None:
    if a != b:
        assert encode_key(a) != encode_key(b)


def test_readable_ids_stay_readable() -> None:
    assert encode_key("29:1abc-DEF_x.y@z") == "29:1abc-DEF_x.y@z"
    assert encode_key("a/b#c?d\\e") == "a~2Fb~23c~3Fd~5Ce"


def test_long_ids_are_hashed_and_stay_distinct() -> None:
    long_a, long_b = "x" * 5000, "x" * 4999 + "y"
    assert len(encode_key(long_a)) < MAX_ESCAPED
    assert encode_key(long_a) != encode_key(long_b)
    assert decode_key(encode_key(long_a)) is None


def test_channel_and_conversation_cannot_be_confused() -> None:
    assert conversation_key("a|b", "c") != conversation_key("a", "b|c")

"""Queue job schema: valid jobs round-trip, anything else is a JobError with a reason."""

import json

import pytest
from hypothesis import given, strategies as st

from botcore.broadcast import SendBatch
from botcore.jobs import KINDS, JobError, Target, new_job, parse_job


def test_a_new_job_round_trips_through_json() -> None:
    job = new_job("beginDialog", Target(conversation="msteams|a:1"), dialog="survey")
    again = parse_job(job.to_json().encode())
    assert again == job


def test_unknown_top_level_fields_are_kept() -> None:
    job = new_job("notify", Target(user_id="29:u"), text="hi", extra={"source": "billing"})
    assert json.loads(job.to_json())["source"] == "billing"
    assert parse_job(job.to_json()).extra == {"source": "billing"}


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b'{"kind":"explode","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true}}', "kind must be one of"),
        (b'{"kind":"notify","created":"2026-01-01T00:00:00Z","target":{"everyone":true},"text":"x"}', "id is required"),
        (b'{"kind":"notify","id":"1","created":"yesterday","target":{"everyone":true},"text":"x"}', "ISO 8601"),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{},"text":"x"}', "target needs"),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true,"userId":"u"},"text":"x"}', "excludes"),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true}}', "needs text"),
        (b'{"kind":"beginDialog","id":"1","created":"2026-01-01T00:00:00Z","target":{"userId":"u"},"dialog":"survey"}', "one conversation"),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"nobody":1},"text":"x"}', "unknown fields"),
        (b"x" * 70_000, "larger than"),
    ],
)
def test_malformed_jobs_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(JobError, match=reason):
        parse_job(body)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_no_bytes_raise_anything_but_job_error(body: bytes) -> None:
    try:
        parse_job(body)
    except JobError:
        pass


@given(st.dictionaries(st.sampled_from(["kind", "id", "created", "target", "dialog", "text", "attachments", "due",
                                        "notification"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
                       | st.sampled_from([*KINDS, "2026-11-25T18:00:00Z", "2026-11-25T18:00:00"])
                       | st.dictionaries(st.sampled_from(["conversation", "userId", "everyone", "x"]),
                                         st.text(max_size=5) | st.booleans(), max_size=3)))
def test_no_object_raises_anything_but_job_error(data: dict) -> None:
    try:
        parse_job(json.dumps(data))
    except JobError:
        pass


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | st.builds(lambda items: json.dumps({"job": "j", "items": items}).encode(),
                   st.lists(st.lists(st.text(max_size=5) | st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
                                     max_size=3), max_size=3)))
def test_no_send_batch_raises_anything_but_job_error(body: bytes) -> None:
    try:
        SendBatch.parse(body)
    except JobError:
        pass

"""Queue job schema: valid jobs round-trip, anything else is a JobError with a reason."""

import base64
import json
import random
import zlib
from datetime import UTC

import pytest
from hypothesis import given
from hypothesis import strategies as st

from botcore.delivery.batches import BATCH_KEYS, SendBatch, pack
from botcore.jobs import KINDS, JobError, Target, new_job, parse_job
from botcore.protocol.activity import ConversationReference


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
        (
            b'{"kind":"explode","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true}}',
            "kind must be one of",
        ),
        (b'{"kind":"notify","created":"2026-01-01T00:00:00Z","target":{"everyone":true},"text":"x"}', "id is required"),
        (b'{"kind":"notify","id":"1","created":"yesterday","target":{"everyone":true},"text":"x"}', "ISO 8601"),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{},"text":"x"}', "target needs"),
        (
            b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true,"userId":"u"},"text":"x"}',
            "excludes",
        ),
        (b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"everyone":true}}', "needs text"),
        (
            b'{"kind":"beginDialog","id":"1","created":"2026-01-01T00:00:00Z","target":{"userId":"u"},"dialog":"survey"}',
            "one conversation",
        ),
        (
            b'{"kind":"notify","id":"1","created":"2026-01-01T00:00:00Z","target":{"nobody":1},"text":"x"}',
            "unknown fields",
        ),
        (b"x" * 70_000, "a queue message holds at most 65536"),
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


@given(
    st.dictionaries(
        st.sampled_from(["kind", "id", "created", "target", "dialog", "text", "attachments", "due", "notification"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=5)
        | st.lists(st.integers(), max_size=2)
        | st.sampled_from([*KINDS, "2026-11-25T18:00:00Z", "2026-11-25T18:00:00"])
        | st.dictionaries(
            st.sampled_from(["conversation", "userId", "everyone", "x"]),
            st.text(max_size=5) | st.booleans(),
            max_size=3,
        ),
    )
)
def test_no_object_raises_anything_but_job_error(data: dict) -> None:
    try:
        parse_job(json.dumps(data))
    except JobError:
        pass


@given(
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.builds(
        lambda items: json.dumps({"job": "j", "items": items}).encode(),
        st.lists(
            st.lists(st.text(max_size=5) | st.dictionaries(st.text(max_size=5), st.text(max_size=5)), max_size=3),
            max_size=3,
        ),
    )
    | st.builds(
        lambda raw: json.dumps({"job": "j", "packed": base64.b64encode(zlib.compress(raw)).decode()}),
        st.binary(max_size=100) | st.text(max_size=100).map(str.encode),
    )
)
def test_no_send_batch_raises_anything_but_job_error(body: bytes) -> None:
    try:
        SendBatch.parse(body)
    except JobError:
        pass


def _reference(cid: str, name: str = "User") -> ConversationReference:
    return ConversationReference.from_dict(
        {
            "channelId": "msteams",
            "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "conversation": {"id": cid, "tenantId": "tenant-1"},
            "user": {"id": f"29:{cid}", "name": name},
            "bot": {"id": "28:2f6d1c6e-1111-2222-3333-444455556666", "name": "bot"},
            "serviceUrlTrust": "token",
        }
    )


def test_deeply_nested_json_is_a_job_error() -> None:
    with pytest.raises(JobError, match="nested too deeply"):
        parse_job(b"[" * 60_000)


def test_send_batches_round_trip_named_by_place_and_packed_small() -> None:
    refs = [(f"msteams|{i:04}", _reference(f"a:{i:04}", "Zoë 😀")) for i in range(BATCH_KEYS + 5)]
    messages = [m for m, _ in pack("job-1", [(k, r.to_json()) for k, r in refs], attempt=2, id_prefix="0.")]
    parsed = [SendBatch.parse(m.encode()) for m in messages]
    assert [(b.job, b.id, b.attempt, len(b.items)) for b in parsed] == [
        ("job-1", "0.0", 2, BATCH_KEYS),
        ("job-1", "0.1", 2, 5),
    ]
    assert [item for b in parsed for item in b.items] == refs
    plain = len(json.dumps([[k, r.to_dict()] for k, r in refs[:BATCH_KEYS]]))
    assert len(messages[0]) * 4 < plain  # a broadcast's references share most of their text


def test_a_batch_of_incompressible_references_still_fits_in_a_queue_message() -> None:
    rng = random.Random(7)
    refs = [
        (f"k{i}", _reference(f"a:{i}", "".join(chr(rng.randrange(0x4E00, 0x9FFF)) for _ in range(400))))
        for i in range(300)
    ]
    messages = [m for m, _ in pack("j" * 200, [(k, r.to_json()) for k, r in refs], id_prefix="9" * 150 + ".")]
    assert len(messages) > 3  # bounded by bytes, not by BATCH_KEYS
    assert all(len(m.encode()) <= 64 * 1024 for m in messages)
    assert sum(len(SendBatch.parse(m).items) for m in messages) == 300


def test_the_plain_items_form_is_accepted() -> None:
    body = json.dumps({"job": "j", "id": "1.0", "items": [["k", _reference("a:1").to_dict()]]})
    assert SendBatch.parse(body).items == [("k", _reference("a:1"))]


@pytest.mark.parametrize(
    "packed",
    [
        "not base64!",
        base64.b64encode(b"not zlib").decode(),
        base64.b64encode(zlib.compress(b"[" * 10)[:-4]).decode(),  # truncated
        base64.b64encode(zlib.compress(b" " * (2 << 20))).decode(),  # inflates past the cap
        base64.b64encode(zlib.compress(b"[" * 100_000)).decode(),  # nested past the parser's depth
        base64.b64encode(zlib.compress(b"\xff\xfe")).decode(),
        17,
    ],
)
def test_bad_packed_items_are_a_job_error(packed: object) -> None:
    with pytest.raises(JobError, match="not a send batch"):
        SendBatch.parse(json.dumps({"job": "j", "packed": packed}))


def test_retry_batches_are_named_deterministically_and_briefly_however_often_handed_on() -> None:
    from botcore.delivery.batches import SendBatch, pack, retry_prefix

    name = "9500.0.4"
    seen = set()
    for _ in range(50):  # handed on fifty times without an attempt
        prefix = retry_prefix(name, 0)
        assert prefix == retry_prefix(name, 0) and prefix.startswith("9500.0.4r")
        name = prefix + "0"
        assert name not in seen and len(name) < 40
        seen.add(name)
    [(message, _)] = pack("job", [("k", _reference("c").to_json())], id_prefix=retry_prefix(name, 3))
    assert SendBatch.parse(message).id.startswith("9500.0.4r")
    assert retry_prefix("1.0.0", 1) != retry_prefix("1.0.0", 2) != retry_prefix("1.0.1", 1)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_json_does_not_have_are_refused(literal: str) -> None:
    job = json.loads(new_job("notify", Target(user_id="29:u"), text="hi").to_json())
    with pytest.raises(JobError, match=f"holds {literal}: JSON numbers the bot accepts are finite"):
        parse_job(json.dumps(job)[:-1] + f',"weight":{literal}}}')


def test_a_due_time_more_than_a_year_ahead_is_refused() -> None:
    from datetime import datetime, timedelta

    now = datetime.now(UTC)
    for days, ok in ((365, True), (367, False)):
        job = new_job("reminder", Target(user_id="29:u"), text="hi", due=(now + timedelta(days=days)).isoformat())
        if ok:
            assert parse_job(job.to_json()).due == job.due
        else:
            with pytest.raises(JobError, match="job.due must be at most a year ahead"):
                parse_job(job.to_json())


@pytest.mark.parametrize("job_id", ["a/b", ".", "..", "x?y", "x#y", "a b", "50%", "é", "", "x" * 201])
def test_a_job_id_that_cannot_stand_in_a_url_path_is_refused_wherever_a_job_comes_in(job_id: str) -> None:
    from botcore.jobs import check_job_id

    with pytest.raises(JobError, match="letters, digits or"):
        check_job_id(job_id)
    notify = json.loads(new_job("notify", Target(user_id="29:u"), text="hi").to_json())
    with pytest.raises(JobError, match="job.id"):
        parse_job(json.dumps({**notify, "id": job_id}))
    with pytest.raises(JobError, match="job.notification"):
        parse_job(json.dumps({**notify, "kind": "delete", "notification": job_id}))
    with pytest.raises(JobError, match="letters, digits or"):
        SendBatch.parse(json.dumps({"job": job_id, "items": [["k", _reference("a:1").to_dict()]]}))


def test_job_ids_may_use_every_unreserved_url_character() -> None:
    from botcore.jobs import check_job_id

    for job_id in ("Az09._~-", "...", ".a", "x" * 200):
        assert check_job_id(job_id) == job_id

"""The cost benchmark's request classifier (bench/transactions.py): each kind of storage request named right.

The shapes are real: captured by running azure-data-tables 12.7 and azure-storage-queue 12.18 (the clients
botcore.storage builds) through the counting proxy against Azurite. Paths are as sent, with Azurite's account
first; If-Match as sent (an ETag, `*`, or none).
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench import transactions as tx

ETAG = "W/\"datetime'2026-12-07T05%3A01%3A09.0526036Z'\""
ENTITY = "/devstoreaccount1/captures(PartitionKey='msteams%7Ca:1',RowKey='c')"
MESSAGE = "/devstoreaccount1/captureq/messages/ac16e331-72bd-42b0-b2a5-5419cb5079e7"

# (service, method, path, query, If-Match or None, kind), in the order the SDK sent them.
CAPTURED = [
    ("table", "POST", "/devstoreaccount1/Tables", {}, None, tx.TABLE_CREATE),
    ("table", "POST", "/devstoreaccount1/captures", {}, None, tx.ENTITY_INSERT),
    ("table", "GET", ENTITY, {}, None, tx.ENTITY_READ),
    ("table", "GET", "/devstoreaccount1/captures(PartitionKey='none',RowKey='none')", {}, None, tx.ENTITY_READ),
    ("table", "PUT", ENTITY, {}, ETAG, tx.ENTITY_UPDATE),  # update_entity "replace", IfNotModified
    ("table", "PATCH", ENTITY, {}, "*", tx.ENTITY_UPDATE),  # update_entity "merge", Unconditionally
    ("table", "PUT", ENTITY, {}, None, tx.ENTITY_UPSERT),  # upsert_entity "replace"
    ("table", "PATCH", ENTITY, {}, None, tx.ENTITY_UPSERT),  # upsert_entity "merge"
    ("table", "DELETE", ENTITY, {}, "*", tx.ENTITY_DELETE),
    ("table", "DELETE", ENTITY, {}, ETAG, tx.ENTITY_DELETE),
    ("table", "POST", "/devstoreaccount1/$batch", {}, None, tx.BATCH),
    ("table", "GET", "/devstoreaccount1/captures()", {"$top": "3", "$select": "RowKey"}, None, tx.QUERY),
    (
        "table",
        "GET",
        "/devstoreaccount1/captures()",
        {"$top": "3", "$select": "RowKey", "NextPartitionKey": "cA==", "NextRowKey": "MQ=="},
        None,
        tx.QUERY_NEXT,
    ),
    ("table", "GET", "/devstoreaccount1/captures()", {"$top": "2", "$filter": "PartitionKey ge 'q'"}, None, tx.QUERY),
    (
        "table",
        "GET",
        "/devstoreaccount1/captures()",
        {"$top": "2", "$filter": "PartitionKey ge 'q'", "NextPartitionKey": "cTI=", "NextRowKey": "Yw=="},
        None,
        tx.QUERY_NEXT,
    ),
    ("queue", "PUT", "/devstoreaccount1/captureq", {}, None, tx.QUEUE_CREATE),
    ("queue", "POST", "/devstoreaccount1/captureq/messages", {}, None, tx.MESSAGE_PUT),
    (
        "queue",
        "POST",
        "/devstoreaccount1/captureq/messages",
        {"visibilitytimeout": "1", "messagettl": "604801"},
        None,
        tx.MESSAGE_PUT,
    ),
    (
        "queue",
        "GET",
        "/devstoreaccount1/captureq/messages",
        {"numofmessages": "16", "visibilitytimeout": "30"},
        None,
        tx.MESSAGE_GET,
    ),
    (
        "queue",
        "PUT",
        MESSAGE,
        {"popreceipt": "MDdEZWMyMDI2MDU6MDE6MDlhMTg4", "visibilitytimeout": "30"},
        None,
        tx.MESSAGE_UPDATE,
    ),
    ("queue", "DELETE", MESSAGE, {"popreceipt": "MDdEZWMyMDI2MDU6MDE6MDliYjBm"}, None, tx.MESSAGE_DELETE),
    (
        "queue",
        "GET",
        "/devstoreaccount1/captureq/messages",
        {"numofmessages": "32", "peekonly": "true"},
        None,
        tx.MESSAGE_PEEK,
    ),
    ("queue", "GET", "/devstoreaccount1/captureq", {"comp": "metadata"}, None, tx.QUEUE_PROPERTIES),
    ("queue", "DELETE", "/devstoreaccount1/captureq/messages", {}, None, tx.QUEUE_CLEAR),
]

# A batch as azure-data-tables sent it (submit_transaction: a create, a merge upsert and a delete), its boundaries
# shortened and most headers of its parts left out.
BATCH_BODY = (
    b"--batch_05404895\r\nContent-Type: multipart/mixed; boundary=changeset_2035075e\r\n\r\n"
    b"--changeset_2035075e\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    b"Content-ID: 0\r\n\r\nPOST http://127.0.0.1:33267/devstoreaccount1/captures HTTP/1.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 112\r\nx-ms-version: 2019-02-02\r\n\r\n"
    b'{"PartitionKey": "p", "PartitionKey@odata.type": "Edm.String", "RowKey": "1"}\r\n'
    b"--changeset_2035075e\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    b"Content-ID: 1\r\n\r\nPATCH http://127.0.0.1:33267/devstoreaccount1/captures(PartitionKey='p',RowKey='2') "
    b"HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 112\r\n\r\n"
    b'{"PartitionKey": "p", "RowKey": "2"}\r\n'
    b"--changeset_2035075e\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    b"Content-ID: 2\r\n\r\nDELETE http://127.0.0.1:33267/devstoreaccount1/captures(PartitionKey='p',RowKey='1') "
    b"HTTP/1.1\r\nIf-Match: *\r\n\r\n\r\n--changeset_2035075e--\r\n\r\n--batch_05404895--\r\n"
)


@pytest.mark.parametrize(
    ("service", "method", "path", "query", "if_match", "kind"),
    CAPTURED,
    ids=[f"{c[0]}-{c[1]}-{c[5]}" for c in CAPTURED],
)
def test_each_captured_request_is_classified_as_its_kind(
    service: str, method: str, path: str, query: dict[str, str], if_match: str | None, kind: str
) -> None:
    headers = {"If-Match": if_match} if if_match is not None else {}
    assert tx.classify(service, method, tx.account_path(path), query, headers) == kind


def test_every_kind_the_bot_can_cause_is_among_the_captures() -> None:
    kinds = {c[5] for c in CAPTURED}
    assert kinds == {
        *tx.ENTITY_WRITES,
        tx.ENTITY_READ,
        tx.BATCH,
        tx.QUERY,
        tx.QUERY_NEXT,
        tx.TABLE_CREATE,
        tx.MESSAGE_PUT,
        tx.MESSAGE_GET,
        tx.MESSAGE_PEEK,
        tx.MESSAGE_UPDATE,
        tx.MESSAGE_DELETE,
        tx.QUEUE_CREATE,
        tx.QUEUE_PROPERTIES,
        tx.QUEUE_CLEAR,
    }


def test_the_account_is_taken_off_azurite_paths_only() -> None:
    assert tx.account_path("/devstoreaccount1/captures()") == "/captures()"
    assert tx.account_path("/devstoreaccount1") == "/"
    assert tx.account_path("/captures()") == "/captures()"  # Azure: the account is in the host name
    assert tx.account_path("/devstoreaccount10/x") == "/devstoreaccount10/x"


def test_other_requests_are_not_mistaken_for_billable_kinds_of_the_bot() -> None:
    assert tx.classify("table", "GET", "/Tables", {}, {}) == tx.OTHER  # list tables
    assert tx.classify("queue", "GET", "/", {"comp": "list"}, {}) == tx.OTHER  # list queues
    assert tx.classify("queue", "PUT", "/q", {"comp": "metadata"}, {}) == tx.OTHER  # set metadata
    assert tx.classify("queue", "DELETE", "/q", {}, {}) == tx.OTHER  # delete the queue
    with pytest.raises(ValueError):
        tx.classify("blob", "GET", "/c/b", {}, {})


def test_a_batch_counts_its_operations() -> None:
    assert tx.batch_operations(BATCH_BODY) == 3


def test_a_get_that_found_nothing_counts_apart() -> None:
    def get(returned: int) -> tx.Record:
        return tx.Record(0.0, "queue", tx.MESSAGE_GET, "bot-jobs", 200, returned=returned)

    assert tx.tally([get(0), get(3), get(0)]) == Counter({tx.MESSAGE_GET_EMPTY: 2, tx.MESSAGE_GET: 1})

"""Azurite is reachable from tests through the Azure SDK (the base every storage test stands on)."""

from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient


def test_table_and_queue_round_trip(storage_connection_string: str, unique_name: str) -> None:
    tables = TableServiceClient.from_connection_string(storage_connection_string)
    table = tables.create_table(unique_name)
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "value": 42})
    assert table.get_entity("p", "r")["value"] == 42

    queues = QueueServiceClient.from_connection_string(storage_connection_string)
    queue = queues.create_queue(unique_name)
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]

"""The benchmark command runs end to end (smoke mode), and its seeding stores what the bot stores."""

import asyncio
import sys
from datetime import datetime

import pytest

from tests.benchsmoke import quick_bench


@pytest.mark.bench
@pytest.mark.slow
def test_the_quick_benchmark_measures_the_send_and_turn_sections(tmp_path) -> None:
    text = quick_bench(tmp_path, "cold_start,warm_turn,send_path,broadcast,economy,storage_ops")
    for section in (
        "1. Cold start",
        "2. Warm turn",
        "3. Send path",
        "4. Broadcast end to end",
        "5. Token and key economy",
        "6. Storage operations",
    ):
        assert f"## {section}\n" in text, section
    worker = "| Microsoft's worker library (azure-functions-runtime, protobuf both ways) | "
    assert "| the local host's own loader (azure-functions converters) | " in text
    assert (worker in text and f"{worker}not installed" not in text) == (sys.version_info >= (3, 13))


def test_seeded_rows_read_back_as_the_rows_the_bot_writes(storage_connection_string: str) -> None:
    """The bare client's wire encoding gives every property the type the SDK gives it (Edm.DateTime included)."""
    from bench.infra import conversation_entity, init_storage, seed
    from botcore.keys import conversation_key
    from botcore.settings import CONVERSATIONS_TABLE
    from botcore.storage import close_storage_clients, get_table
    from tests.botstack import environment

    env = {"BotStorage": storage_connection_string}
    init_storage(env)
    (seeded_id,), _ = seed(storage_connection_string, 1, "https://service.example/", "app-1")
    written_id = seeded_id.replace("seed-", "bot--")
    entity = conversation_entity("https://service.example/", "app-1", "tenant-1", written_id)

    async def read_both() -> tuple[dict, dict]:
        table = get_table(CONVERSATIONS_TABLE)
        await table.insert(entity)  # what ConversationStore.commit does with the entity
        try:
            return (
                dict(await table.get(conversation_key("msteams", seeded_id), "c")),
                dict(await table.get(entity["PartitionKey"], "c")),
            )
        finally:
            await close_storage_clients()

    with environment(env):
        seeded, written = asyncio.run(read_both())

    def comparable(row: dict, cid: str) -> dict:
        return {
            k: type(v) if isinstance(v, datetime) else v.replace(cid, "ID") if isinstance(v, str) else v
            for k, v in row.items()
        }

    assert comparable(seeded, seeded_id) == comparable(written, written_id)
    assert isinstance(written["firstSeen"], datetime) and isinstance(written["stateParts"], int)

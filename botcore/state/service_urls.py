"""The service URLs channel tokens vouched for: the record that decides where the bot's token may go
(the rule: botcore.protocol.trust).

Table `botserviceurls`: PartitionKey `encode_key(url)`, RowKey `u`, the URL normalised to one trailing slash.
A URL once verified stays so; lookups try process memory first, and a miss is remembered for UNKNOWN_FOR.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..keys import encode_key
from ..protocol.trust import base_url
from ..settings import SERVICE_URLS_TABLE
from ..storage import EntityNotFoundError, TableStore

log = logging.getLogger(__name__)

ROW_KEY = "u"
UNKNOWN_FOR = 60.0  # seconds a URL found unverified is not looked up again


class ServiceUrlRegistry(TableStore):
    """The service URLs channel tokens vouched for; remembered in the process once seen."""

    table_name = SERVICE_URLS_TABLE

    def __init__(self, table: Any = None) -> None:
        super().__init__(table)
        self._verified: set[str] = set()  # a URL once verified stays so
        self._unknown: dict[str, float] = {}

    async def record(self, url: str) -> None:
        """A channel token vouched for `url` (written once per process and URL)."""
        url = base_url(url)
        if url in self._verified:
            return
        await self.table.upsert({"PartitionKey": encode_key(url), "RowKey": ROW_KEY, "url": url})
        self._verified.add(url)
        self._unknown.pop(url, None)
        log.info("service URL %s verified by a channel token", url)

    async def is_verified(self, url: str) -> bool:
        url = base_url(url)
        if url in self._verified:
            return True
        if self._unknown.get(url, 0.0) > time.monotonic():
            return False
        try:
            await self.table.get(encode_key(url), ROW_KEY)
        except EntityNotFoundError:
            self._unknown[url] = time.monotonic() + UNKNOWN_FOR
            return False
        self._verified.add(url)
        return True

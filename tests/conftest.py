"""Shared fixtures: one Azurite per test session, on free ports in a temporary folder."""

from __future__ import annotations

import uuid

import pytest

from devhost.azurite import Azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory):
    server = Azurite(tmp_path_factory.mktemp("azurite")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def storage_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A table/queue-safe name no other test uses (tests share one Azurite)."""
    return "t" + uuid.uuid4().hex[:20]

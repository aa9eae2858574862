"""Running the app locally: the storage it needs, and trouble the user can fix said in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .app_loader import HostConfigError, load_settings


class RunError(Exception):
    """What stops the run, in one line that says what to do."""


def init_storage(app_dir: Path) -> None:
    """Create the app's tables and queues; RunError when the settings or storage do not allow it."""
    from botcore.errors import ConfigurationError, UnavailableError
    from botcore.storage import close_storage_clients, ensure_resources

    async def create() -> None:
        try:
            await ensure_resources()
        finally:
            await close_storage_clients()

    try:
        load_settings(app_dir)
        asyncio.run(create())
    except (HostConfigError, ConfigurationError) as exc:
        raise RunError(f"cannot create the tables and queues: {exc}") from None
    except UnavailableError as exc:
        raise RunError(f"cannot create the tables and queues ({exc}): is Azurite running? scripts/run starts "
                       "it") from None

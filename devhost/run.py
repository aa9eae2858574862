"""`scripts/run`: Azurite, the app's tables and queues, then the function app, on ports of the user's choice.

The bot's port is `--port` or BOT_PORT (7071); Azurite's are `--azurite-port` or AZURITE_PORT (10000) and the
next two, for blob, queue and table, as Azurite numbers them. An Azurite already answering on those ports is
used (it is recognised by its Server header, not by an open port); else one is started, with its data in
.azurite/ (.azurite/port-N/ on other ports, so that two runs never share files), and stopped at the end.
Environment variables win over local.settings.json in the local host, so the app is pointed at that Azurite
with BotStorage, and BotPublicBaseUrl names the chosen port unless the environment sets it.

Trouble the user can fix (a port taken, storage unreachable) ends in one line saying what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from . import DEFAULT_AZURITE_PORT
from .app_loader import HostConfigError, load_settings
from .azurite import Azurite, connection_string

SERVICES = ("blob", "queue", "table")
CHOOSE_AZURITE = "choose other Azurite ports with --azurite-port N or AZURITE_PORT=N (it takes N, N+1 and N+2)"


class RunError(Exception):
    """What stops the run, in one line that says what to do."""


def main(args: argparse.Namespace) -> int:
    app_dir = Path(args.app_dir).resolve()
    azurite = None
    try:
        if _server_at(args.port) is not None:
            raise RunError(f"port {args.port} (the bot's) is in use: choose another with --port N or BOT_PORT=N")
        azurite, storage = _azurite(args.azurite_port, app_dir / ".azurite")
        os.environ["BotStorage"] = os.environ["AzureWebJobsStorage"] = storage
        os.environ.setdefault("BotPublicBaseUrl", f"http://localhost:{args.port}")
        init_storage(app_dir)
        cli_storage = "UseDevelopmentStorage=true" if args.azurite_port == DEFAULT_AZURITE_PORT else storage
        _say(
            f"tables and queues are ready; for the operator CLI (python -m botcore) in another terminal: "
            f"export BotStorage={shlex.quote(cli_storage)}"
        )
        return _serve(app_dir, args.port)
    except RunError as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if azurite is not None:
            azurite.stop()


def _say(line: str) -> None:
    print(f"run: {line}", file=sys.stderr, flush=True)


def _server_at(port: int) -> str | None:
    """The Server header of what answers HTTP on 127.0.0.1:port ("" when it does not answer HTTP); None when
    nothing listens there."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/")
        return connection.getresponse().getheader("Server", "")
    except ConnectionRefusedError:
        return None
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        connection.close()


def _azurite(first_port: int, data: Path) -> tuple[Azurite | None, str]:
    """The Azurite on first_port and the next two: (None, its connection string) when one already answers there,
    else (the one started, its connection string)."""
    ports = dict(zip(SERVICES, range(first_port, first_port + 3), strict=True))
    servers = {service: _server_at(port) for service, port in ports.items()}
    span = f"127.0.0.1:{first_port}-{first_port + 2}"
    if all(server is None for server in servers.values()):
        location = data if first_port == DEFAULT_AZURITE_PORT else data / f"port-{first_port}"
        try:
            azurite = Azurite(location, *ports.values()).start()
        except RuntimeError as exc:
            last = [line for line in str(exc).splitlines() if line.strip()][-1]
            raise RunError(f"Azurite did not start on {span}: {last}") from None
        _say(f"Azurite started on {span} (data in {os.path.relpath(location)}/)")
        return azurite, azurite.connection_string
    if all((server or "").startswith(f"Azurite-{service.title()}") for service, server in servers.items()):
        _say(f"using the Azurite already running on {span}")
        urls = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
        return None, connection_string(urls["queue"], urls["table"], urls["blob"])
    for service, server in servers.items():
        if server is not None and not server.startswith(f"Azurite-{service.title()}"):
            by = f" ({server})" if server else ""
            raise RunError(
                f"port {ports[service]} (Azurite's {service} port) is in use by another program{by}: {CHOOSE_AZURITE}"
            )
    raise RunError(f"an Azurite answers on only part of {span}: stop it, or {CHOOSE_AZURITE}")


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
        raise RunError(
            f"cannot create the tables and queues ({exc}): is Azurite running? scripts/run starts it"
        ) from None


def _serve(app_dir: Path, port: int) -> int:
    """Core Tools' `func start` when it is installed, else the local host, until Ctrl-C."""
    if shutil.which("func"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches func too; it stops, then so do we
        return subprocess.call(["func", "start", "--port", str(port)], cwd=app_dir)
    from .host import Host

    try:
        asyncio.run(Host(app_dir, "127.0.0.1", port).run())
    except HostConfigError as exc:
        raise RunError(str(exc)) from None
    return 0

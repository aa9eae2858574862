"""Every setting the bot reads, in one place.

Names follow the Azure Bot / Functions conventions so that a deployed app and
`local.settings.json` use the same keys. Settings are read once per process
(`get_settings()`), never at import time, so tests and the local host can set
the environment first.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

# Tables and queues the app owns. Bicep declares the same names (infra tests check it).
CONVERSATIONS_TABLE = "botconversations"
DELIVERIES_TABLE = "botdeliveries"
REMINDERS_TABLE = "botreminders"
SERVICE_URLS_TABLE = "botserviceurls"
PACING_TABLE = "botpacing"
MEMBERS_TABLE = "botmembers"
JOBS_QUEUE = "bot-jobs"
SENDS_QUEUE = "bot-sends"
TABLES = (CONVERSATIONS_TABLE, DELIVERIES_TABLE, REMINDERS_TABLE, SERVICE_URLS_TABLE, PACING_TABLE, MEMBERS_TABLE)
QUEUES = (JOBS_QUEUE, SENDS_QUEUE)
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount: the host's last attempt at a message
QUEUE_MAX_DELAY = 7 * 86400  # seconds: the longest Queue Storage keeps a message hidden
# The longest pause a 429's Retry-After may impose (BotMaxRetryAfterSeconds). Teams' longest documented window
# is an hour (1,800 requests per conversation), so an honest Retry-After is never longer; a longer one pauses
# the whole tenant for an hour at most, after which a channel that still means it answers 429 again.
MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_RETENTION_DAYS = 3650  # BotLedgerRetentionDays: ten years at most (a date that far back is still a date)

# Name of the app's storage connection (a setting, or a `<name>__*` family of settings), and the host's,
# which the app falls back to.
STORAGE_CONNECTION = "BotStorage"
FALLBACK_CONNECTION = "AzureWebJobsStorage"

PUBLIC_CLOUD = "public"
US_GOV_CLOUD = "usgov"
PUBLIC_CHANNEL_SERVICE = "https://botframework.com"
US_GOV_CHANNEL_SERVICE = "https://botframework.azure.us"

APP_TYPES = ("MultiTenant", "SingleTenant", "UserAssignedMSI")

# Where telemetry goes (botcore.telemetry): Application Insights when its connection string is set, the console
# on request (BotTelemetry=console), else nowhere (BotTelemetry=off turns it off even with a connection string).
TELEMETRY_AZURE_MONITOR = "azuremonitor"
TELEMETRY_CONSOLE = "console"
TELEMETRY_OFF = "off"


@dataclass(frozen=True)
class Cloud:
    """Endpoints and issuers that differ between the public and US Gov clouds (docs/protocol.md)."""

    name: str
    channel_issuer: str
    channel_openid_url: str
    oauth_authority_host: str
    channel_auth_tenant: str  # the token tenant of a multi-tenant bot
    oauth_scope: str
    msi_resource: str
    emulator_openid_url: str
    emulator_tenants: tuple[str, ...]  # Emulator tokens: v1 issued by sts.windows.net/{tenant}/,
    emulator_v2_host: str  # v2 by {emulator_v2_host}/{tenant}/v2.0


CLOUDS = {
    PUBLIC_CLOUD: Cloud(
        name=PUBLIC_CLOUD,
        channel_issuer="https://api.botframework.com",
        channel_openid_url="https://login.botframework.com/v1/.well-known/openidconfiguration",
        oauth_authority_host="https://login.microsoftonline.com",
        channel_auth_tenant="botframework.com",
        oauth_scope="https://api.botframework.com/.default",
        msi_resource="https://api.botframework.com",
        emulator_openid_url="https://login.microsoftonline.com/botframework.com/v2.0/.well-known/openid-configuration",
        emulator_tenants=(
            "d6d49420-f39b-4df7-a1dc-d59a935871db",
            "f8cdef31-a31e-4b4a-93e4-5f571e91255a",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ),
        emulator_v2_host="https://login.microsoftonline.com",
    ),
    US_GOV_CLOUD: Cloud(
        name=US_GOV_CLOUD,
        channel_issuer="https://api.botframework.us",
        channel_openid_url="https://login.botframework.azure.us/v1/.well-known/openidconfiguration",
        oauth_authority_host="https://login.microsoftonline.us",
        channel_auth_tenant="MicrosoftServices.onmicrosoft.us",
        oauth_scope="https://api.botframework.us/.default",
        msi_resource="https://api.botframework.us",
        emulator_openid_url=(
            "https://login.microsoftonline.us/cab8a31a-1906-4287-a0d8-4eef66b95f6e/v2.0"
            "/.well-known/openid-configuration"
        ),
        emulator_tenants=("cab8a31a-1906-4287-a0d8-4eef66b95f6e",),
        emulator_v2_host="https://login.microsoftonline.us",
    ),
}


DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


@dataclass(frozen=True)
class StorageConnection:
    """The app's storage: a connection string, or service URIs plus a managed identity. `setting` names the
    setting it came from; `where` says where it points, for messages."""

    setting: str
    connection_string: str | None = None
    table_uri: str | None = None
    queue_uri: str | None = None
    client_id: str | None = None
    local: bool = False  # UseDevelopmentStorage=true: Azurite on its default ports

    @property
    def where(self) -> str:
        if self.local:
            return "Azurite on 127.0.0.1:10000-10002 (UseDevelopmentStorage=true)"
        if self.connection_string is not None:
            fields = dict(part.split("=", 1) for part in self.connection_string.split(";") if "=" in part)
            endpoints = [fields[k] for k in ("TableEndpoint", "QueueEndpoint") if k in fields]
            return " and ".join(endpoints) or f"account {fields.get('AccountName', '?')}"
        return f"{self.table_uri} and {self.queue_uri}, with a managed identity"


def connection_from_env(env: Mapping[str, str]) -> StorageConnection:
    """The storage connection the Functions host would understand: `BotStorage` (else `AzureWebJobsStorage`),
    a connection string or the identity-based `<name>__*` family."""
    for name in (STORAGE_CONNECTION, FALLBACK_CONNECTION):
        value = env.get(name, "").strip()
        if value:
            if value.replace(" ", "").lower() == "usedevelopmentstorage=true":
                return StorageConnection(name, DEVELOPMENT_STORAGE, local=True)
            return StorageConnection(name, value)
        prefix = name + "__"
        family = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix) and v}
        if family:
            account = family.get("accountname")
            table_uri = family.get("tableserviceuri") or (account and f"https://{account}.table.core.windows.net")
            queue_uri = family.get("queueserviceuri") or (account and f"https://{account}.queue.core.windows.net")
            if not (table_uri and queue_uri):
                raise ConfigurationError(
                    f"{prefix}tableServiceUri and {prefix}queueServiceUri (or {prefix}accountName) are required"
                )
            credential = family.get("credential", "managedidentity").lower()
            if credential != "managedidentity":
                raise ConfigurationError(f"{prefix}credential must be managedidentity")
            return StorageConnection(name, table_uri=table_uri, queue_uri=queue_uri, client_id=family.get("clientid"))
    raise ConfigurationError(
        f"no storage connection: set {STORAGE_CONNECTION} (a connection string, or "
        f"{STORAGE_CONNECTION}__tableServiceUri/__queueServiceUri with a managed identity)"
    )


@dataclass(frozen=True)
class Settings:
    app_id: str = ""
    app_password: str = field(default="", repr=False)
    tenant_id: str = ""
    app_type: str = "MultiTenant"
    cloud: Cloud = CLOUDS[PUBLIC_CLOUD]
    channel_openid_url: str = CLOUDS[PUBLIC_CLOUD].channel_openid_url
    emulator_openid_url: str = CLOUDS[PUBLIC_CLOUD].emulator_openid_url
    oauth_authority_host: str = CLOUDS[PUBLIC_CLOUD].oauth_authority_host
    identity_endpoint: str = ""
    identity_header: str = field(default="", repr=False)
    environment: str = "Production"
    max_body_bytes: int = 256 * 1024
    public_base_url: str = ""
    send_concurrency: int = 256
    tenant_rate_per_second: float = 50.0
    http_timeout: float = 30.0
    delivery_claim_seconds: float = 120.0
    max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS
    ledger_retention_days: float = 30.0
    emulator_service_hosts: tuple[str, ...] = ()
    storage_connection: StorageConnection | None = None
    storage_problem: str = ""  # why there is no storage connection (raised when one is needed)
    telemetry: str = TELEMETRY_OFF  # TELEMETRY_AZURE_MONITOR, TELEMETRY_CONSOLE or TELEMETRY_OFF
    telemetry_connection_string: str = field(default="", repr=False)  # Application Insights'

    @property
    def storage(self) -> StorageConnection:
        if self.storage_connection is None:
            raise ConfigurationError(self.storage_problem)
        return self.storage_connection

    @property
    def is_development(self) -> bool:
        return self.environment.lower() == "development"

    @property
    def auth_disabled(self) -> bool:
        """Local development without an app id: accept unauthenticated requests.

        Only ever true when the Functions environment is Development; a deployed
        app with no app id refuses requests instead (see `require_auth_config`).
        """
        return not self.app_id and self.is_development

    def require_auth_config(self) -> None:
        if self.app_id or self.is_development:
            if self.app_type not in APP_TYPES:
                raise ConfigurationError(f"MicrosoftAppType must be one of {', '.join(APP_TYPES)}")
            return
        raise ConfigurationError(
            "MicrosoftAppId is not set: the bot refuses every request. Set MicrosoftAppId "
            "(and its credential), or AZURE_FUNCTIONS_ENVIRONMENT=Development for local use."
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        storage, problem = None, ""
        try:
            storage = connection_from_env(env)
        except ConfigurationError as exc:
            problem = str(exc)
        cloud = _cloud_of(env.get("ChannelService", ""))
        telemetry_connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
        return cls(
            app_id=env.get("MicrosoftAppId", "").strip(),
            app_password=env.get("MicrosoftAppPassword", ""),
            tenant_id=env.get("MicrosoftAppTenantId", "").strip(),
            app_type=env.get("MicrosoftAppType", "").strip() or "MultiTenant",
            cloud=cloud,
            channel_openid_url=env.get("BotChannelOpenIdMetadataUrl") or cloud.channel_openid_url,
            emulator_openid_url=env.get("BotEmulatorOpenIdMetadataUrl") or cloud.emulator_openid_url,
            oauth_authority_host=(env.get("BotOAuthAuthorityHost") or cloud.oauth_authority_host).rstrip("/"),
            identity_endpoint=env.get("IDENTITY_ENDPOINT", ""),
            identity_header=env.get("IDENTITY_HEADER", ""),
            environment=env.get("AZURE_FUNCTIONS_ENVIRONMENT", "Production"),
            max_body_bytes=_number(env, "BotMaxBodyBytes", 256 * 1024, int),
            public_base_url=env.get("BotPublicBaseUrl", "").rstrip("/"),
            send_concurrency=_number(env, "BotSendConcurrency", 256, int),
            tenant_rate_per_second=_number(env, "BotTenantRatePerSecond", 50.0, float),
            http_timeout=_number(env, "BotHttpTimeoutSeconds", 30.0, float),
            delivery_claim_seconds=_number(env, "BotDeliveryClaimSeconds", 120.0, float),
            max_retry_after_seconds=_number(
                env, "BotMaxRetryAfterSeconds", MAX_RETRY_AFTER_SECONDS, float, maximum=QUEUE_MAX_DELAY
            ),
            ledger_retention_days=_number(env, "BotLedgerRetentionDays", 30.0, float, maximum=MAX_RETENTION_DAYS),
            emulator_service_hosts=tuple(
                h.strip().lower() for h in env.get("BotEmulatorServiceHosts", "").split(",") if h.strip()
            ),
            storage_connection=storage,
            storage_problem=problem,
            telemetry=_telemetry_of(env.get("BotTelemetry", ""), telemetry_connection),
            telemetry_connection_string=telemetry_connection,
        )


def _telemetry_of(choice: str, connection_string: str) -> str:
    value = choice.strip().lower()
    if value not in ("", TELEMETRY_CONSOLE, TELEMETRY_OFF):
        raise ConfigurationError(
            f"BotTelemetry must be empty, {TELEMETRY_CONSOLE} or {TELEMETRY_OFF}, not {choice[:40]!r}"
        )
    if value:
        return value
    return TELEMETRY_AZURE_MONITOR if connection_string else TELEMETRY_OFF


def _cloud_of(channel_service: str) -> Cloud:
    """ChannelService names the Bot Framework cloud; a value the bot does not know is an error, not the
    public cloud by default (a typo would otherwise send a Gov bot's tokens to the wrong place)."""
    value = channel_service.strip().rstrip("/").lower()
    if value in ("", PUBLIC_CHANNEL_SERVICE):
        return CLOUDS[PUBLIC_CLOUD]
    if value == US_GOV_CHANNEL_SERVICE:
        return CLOUDS[US_GOV_CLOUD]
    raise ConfigurationError(
        f"ChannelService must be empty (public cloud), {PUBLIC_CHANNEL_SERVICE} or "
        f"{US_GOV_CHANNEL_SERVICE}, not {channel_service.strip()[:80]!r}"
    )


def _number(env: Mapping[str, str], name: str, default: Any, cast: Any, maximum: float = math.inf) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, not {raw[:40]!r}")
    if value <= 0:
        raise ConfigurationError(f"{name} must be greater than 0")
    if value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum:g}")
    return value


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once (a function app's settings change only by a restart)."""
    return Settings.from_env()

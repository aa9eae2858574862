"""A local identity provider that behaves like the Bot Framework's and Entra ID's.

It serves channel (public and US Gov) and Emulator OpenID metadata with JWKS made
from RSA keys generated at start, a client-credentials token endpoint and a
managed-identity endpoint, counts every hit, and mints inbound tokens for tests
and benchmarks. Nothing here is used by the deployed app.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from .server import BackgroundServer

BOT_FRAMEWORK_TENANT = "d6d49420-f39b-4df7-a1dc-d59a935871db"
DEFAULT_ENDORSEMENTS = ["msteams", "webchat", "directline", "emulator", "test"]
ISSUERS = {"public": "https://api.botframework.com", "usgov": "https://api.botframework.us"}
US_GOV_CHANNEL_SERVICE = "https://botframework.azure.us"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    endorsements: list[str] | None = None

    @classmethod
    def generate(cls, endorsements: list[str] | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=uuid.uuid4().hex, private_key=key, endorsements=endorsements)

    def jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        out: dict[str, Any] = {"kty": "RSA", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}
        if self.endorsements is not None:
            out["endorsements"] = list(self.endorsements)
        return out


@dataclass
class _Client:
    secret: str


class IdentityProvider(BackgroundServer):
    def __init__(self, token_lifetime: int = 3600) -> None:
        super().__init__()
        self.token_lifetime = token_lifetime
        self.msi_header = secrets.token_hex(8)
        self.keys: dict[str, list[SigningKey]] = {
            "channel": [SigningKey.generate(list(DEFAULT_ENDORSEMENTS))],
            "usgov": [SigningKey.generate(list(DEFAULT_ENDORSEMENTS))],
            "emulator": [SigningKey.generate()],
        }
        self.hits: dict[str, int] = {}
        self.clients: dict[str, _Client] = {}
        self.issued: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.token_latency = 0.0  # seconds the token endpoint takes to answer, as a distant one does
        self._failures: list[int] = []
        self._lock = threading.Lock()

    # ---- configuration from tests -------------------------------------------------
    def add_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = _Client(secret)

    def fail_token_requests(self, status: int = 500, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def rotate_keys(self, which: str = "channel") -> SigningKey:
        """Publish a new signing key (kept beside the old ones, as real rotations do)."""
        endorsements = list(DEFAULT_ENDORSEMENTS) if which != "emulator" else None
        key = SigningKey.generate(endorsements)
        self.keys[which].append(key)
        return key

    def is_valid_access_token(self, token: str) -> bool:
        return token in self.issued

    def revoke(self, token: str) -> None:
        self.issued.discard(token)

    def count(self, name: str) -> int:
        return self.hits.get(name, 0)

    # ---- URLs and bot settings ------------------------------------------------------
    @property
    def channel_metadata_url(self) -> str:
        return f"{self.base_url}/channel/v1/.well-known/openidconfiguration"

    @property
    def gov_metadata_url(self) -> str:
        return f"{self.base_url}/usgov/v1/.well-known/openidconfiguration"

    @property
    def emulator_metadata_url(self) -> str:
        return f"{self.base_url}/emulator/v2.0/.well-known/openid-configuration"

    def bot_env(
        self,
        app_id: str,
        password: str | None = None,
        tenant: str | None = None,
        app_type: str = "MultiTenant",
        cloud: str = "public",
    ) -> dict[str, str]:
        env = {
            "MicrosoftAppId": app_id,
            "MicrosoftAppPassword": password or "",
            "MicrosoftAppTenantId": tenant or "",
            "MicrosoftAppType": app_type,
            "BotChannelOpenIdMetadataUrl": self.gov_metadata_url if cloud == "usgov" else self.channel_metadata_url,
            "BotEmulatorOpenIdMetadataUrl": self.emulator_metadata_url,
            "BotOAuthAuthorityHost": self.base_url,
            "IDENTITY_ENDPOINT": f"{self.base_url}/msi/token",
            "IDENTITY_HEADER": self.msi_header,
        }
        if cloud == "usgov":
            env["ChannelService"] = US_GOV_CHANNEL_SERVICE
        if password and app_type != "UserAssignedMSI":
            self.add_client(app_id, password)
        return env

    # ---- minting inbound tokens -------------------------------------------------------
    def sign(
        self, claims: dict[str, Any], key: SigningKey, alg: str = "RS256", headers: dict[str, Any] | None = None
    ) -> str:
        return jwt.encode(claims, key.private_key, algorithm=alg, headers={"kid": key.kid, **(headers or {})})

    def mint_channel_token(
        self,
        app_id: str,
        service_url: str,
        *,
        cloud: str = "public",
        key: SigningKey | None = None,
        alg: str = "RS256",
        lifetime: int = 3600,
        not_before: int | None = None,
        extra_claims: dict[str, Any] | None = None,
        drop_claims: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUERS[cloud],
            "aud": app_id,
            "serviceurl": service_url,
            "iat": now,
            "nbf": now if not_before is None else not_before,
            "exp": now + lifetime,
        }
        claims.update(extra_claims or {})
        for name in drop_claims:
            claims.pop(name, None)
        signing_key = key or self.keys["usgov" if cloud == "usgov" else "channel"][-1]
        return self.sign(claims, signing_key, alg)

    def mint_emulator_token(
        self,
        app_id: str,
        *,
        version: str = "1.0",
        tenant: str = BOT_FRAMEWORK_TENANT,
        cloud: str = "public",
        lifetime: int = 3600,
        extra_claims: dict[str, Any] | None = None,
        drop_claims: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        if version == "2.0":
            login = "https://login.microsoftonline.us" if cloud == "usgov" else "https://login.microsoftonline.com"
            claims: dict[str, Any] = {"iss": f"{login}/{tenant}/v2.0", "azp": app_id}
        else:
            claims = {"iss": f"https://sts.windows.net/{tenant}/", "appid": app_id}
        claims.update({"aud": app_id, "ver": version, "iat": now, "nbf": now, "exp": now + lifetime, "tid": tenant})
        claims.update(extra_claims or {})
        for name in drop_claims:
            claims.pop(name, None)
        return self.sign(claims, self.keys["emulator"][-1])

    # ---- the HTTP side ------------------------------------------------------------------
    def _hit(self, name: str) -> None:
        with self._lock:
            self.hits[name] = self.hits.get(name, 0) + 1

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/channel/v1/.well-known/openidconfiguration", self._metadata("channel", ISSUERS["public"]))
        app.router.add_get("/usgov/v1/.well-known/openidconfiguration", self._metadata("usgov", ISSUERS["usgov"]))
        app.router.add_get(
            "/emulator/v2.0/.well-known/openid-configuration",
            self._metadata("emulator", "https://login.microsoftonline.com/{tenantid}/v2.0"),
        )
        app.router.add_get("/{which}/keys", self._jwks)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/msi/token", self._msi)
        return app

    def _metadata(self, which: str, issuer: str):
        async def handler(request: web.Request) -> web.Response:
            self._hit(f"metadata:{which}")
            return web.json_response(
                {
                    "issuer": issuer,
                    "jwks_uri": f"{self.base_url}/{which}/keys",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                }
            )

        return handler

    async def _jwks(self, request: web.Request) -> web.Response:
        which = request.match_info["which"]
        if which not in self.keys:
            raise web.HTTPNotFound()
        self._hit(f"jwks:{which}")
        return web.json_response({"keys": [k.jwk() for k in self.keys[which]]})

    def _next_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _issue(self) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        self.issued.add(token)
        return token

    async def _token(self, request: web.Request) -> web.Response:
        self._hit("token")
        form = dict(await request.post())
        self.token_requests.append(
            {"tenant": request.match_info["tenant"], **{k: str(v) for k, v in form.items() if k != "client_secret"}}
        )
        await asyncio.sleep(self.token_latency)
        failure = self._next_failure()
        if failure:
            return web.json_response({"error": "temporarily_unavailable"}, status=failure)
        client = self.clients.get(str(form.get("client_id", "")))
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if client is None or client.secret != form.get("client_secret"):
            return web.json_response(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
                status=401,
            )
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": self._issue(),
            }
        )

    async def _msi(self, request: web.Request) -> web.Response:
        self._hit("msi")
        if request.headers.get("X-IDENTITY-HEADER") != self.msi_header:
            return web.json_response({"error": "invalid_request", "error_description": "bad header"}, status=400)
        query = request.query
        self.token_requests.append({"msi": "1", **dict(query)})
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            return web.json_response({"error": "invalid_request"}, status=400)
        failure = self._next_failure()
        if failure:
            return web.json_response({"error": "temporarily_unavailable"}, status=failure)
        return web.json_response(
            {
                "access_token": self._issue(),
                "expires_on": str(int(time.time()) + self.token_lifetime),
                "resource": query["resource"],
                "token_type": "Bearer",
                "client_id": query.get("client_id", ""),
            }
        )

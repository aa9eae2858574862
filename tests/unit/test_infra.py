"""Offline checks of infra/ (Bicep) against the code. Nothing is deployed.

The Bicep CLI is not needed: templates are parsed with pycep, and the checks walk
pycep's JSON tree. They hold the template to what the code expects in Azure: the
settings it reads (and nothing else), the `/api/messages` route, the tables and
queues, keyless storage, the built-in roles, and no secret in parameters or outputs.
Where parameters decide (`evaluate`), they also check one deployment's outcome: valid
resource names for any azd environment name, tags per resource, the SingleTenant
guard, and storage URIs and settings per cloud.

What only a real deployment can check is listed in docs/deploy.md.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycep import BicepParser

from botcore import settings as bot_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# The two values of main.bicep's `botAppType` parameter; mode-dependent checks run for both.
MODES = ("UserAssignedMSI", "SingleTenant")

# Clouds (`environment().name`) and their storage suffix (`environment().suffixes.storage`).
# botcore supports the public and the US Government Bot Framework.
CLOUD_STORAGE_SUFFIXES = {
    "AzureCloud": "core.windows.net",
    "AzureUSGovernment": "core.usgovcloudapi.net",
    "AzureChinaCloud": "core.chinacloudapi.cn",
}
CLOUDS = tuple(CLOUD_STORAGE_SUFFIXES)

# Resource types and API versions the templates may use (all exist; checked against
# the ARM template reference). A new type or version is a deliberate change here.
API_VERSIONS = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": "2023-01-31",
    "Microsoft.Storage/storageAccounts": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "2023-05-01",
    "Microsoft.Storage/storageAccounts/tableServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/tableServices/tables": "2023-05-01",
    "Microsoft.Storage/storageAccounts/queueServices": "2023-05-01",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "2023-05-01",
    "Microsoft.Web/serverfarms": "2024-04-01",
    "Microsoft.Web/sites": "2024-04-01",
    "Microsoft.Web/sites/config": "2024-04-01",
    "Microsoft.Authorization/roleAssignments": "2022-04-01",
    "Microsoft.OperationalInsights/workspaces": "2023-09-01",
    "Microsoft.Insights/components": "2020-02-02",
    "Microsoft.KeyVault/vaults": "2023-07-01",
    "Microsoft.KeyVault/vaults/secrets": "2023-07-01",
    "Microsoft.BotService/botServices": "2022-09-15",
    "Microsoft.BotService/botServices/channels": "2022-09-15",
}

# Built-in role definition ids (Azure built-in roles reference).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"

# Which module grants which roles (each on its own resource, to the one identity).
EXPECTED_ROLES = {
    "storage.bicep": {STORAGE_BLOB_DATA_OWNER, STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_TABLE_DATA_CONTRIBUTOR},
    "monitoring.bicep": {MONITORING_METRICS_PUBLISHER},
    "keyvault.bicep": {KEY_VAULT_SECRETS_USER},
}

# ---------------------------------------------------------------------------
# Settings: how every name the code reads is handled in Azure.
# A name the code reads that is in none of these sets must be an app setting.
# ---------------------------------------------------------------------------

# Set by the platform on every instance; an app setting would be wrong.
PLATFORM_PROVIDED = {"IDENTITY_ENDPOINT", "IDENTITY_HEADER"}

# Local or optional, with public-cloud/production defaults in the code: not set in Azure.
OPTIONAL_WITH_DEFAULTS = {
    "BotChannelOpenIdMetadataUrl",
    "BotEmulatorOpenIdMetadataUrl",
    "BotOAuthAuthorityHost",
    "BotMaxBodyBytes",
    "BotHttpTimeoutSeconds",
    "BotDeliveryClaimSeconds",
    "BotMaxRetryAfterSeconds",
    "BotEmulatorServiceHosts",  # empty: Emulator serviceUrls get the token only on loopback
    "AZURE_FUNCTIONS_ENVIRONMENT",  # unset means Production
    "LocalFunctionKey",  # the local host only
    "BotTelemetry",  # console or off, locally; in Azure the connection string below decides
}

# The client secret: a Key Vault reference in SingleTenant mode, absent with UserAssignedMSI.
SINGLE_TENANT_ONLY = {"MicrosoftAppPassword"}

# Set in the US Government cloud only (botcore's public-cloud default elsewhere).
US_GOVERNMENT_ONLY = {"ChannelService"}

# Connection-string forms of the storage connections: they need shared keys, which the
# storage account disables. The identity-based `<name>__*` forms are used instead.
CONNECTION_STRING_FORMS = {bot_settings.STORAGE_CONNECTION, bot_settings.FALLBACK_CONNECTION}

# The app's own storage connection, identity-based (names as settings.py reads them).
BOT_STORAGE_IDENTITY = {
    f"{bot_settings.STORAGE_CONNECTION}__{key}"
    for key in ("tableServiceUri", "queueServiceUri", "credential", "clientId")
}

# Read by the Functions host itself, not by the app's code: required on Flex Consumption.
# The host's storage by service URIs (blob: keys, timer leases; queue, table), which carry the
# cloud's suffix; settings.py reads the same family as its fallback, except the blob URI.
FUNCTIONS_HOST = {
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    # Also the app's (botcore.telemetry): its exporter's destination, and the identity it authenticates with.
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT",  # the host buffers bodies up to it (100 MB by default)
}
HOST_ONLY_STORAGE_KEYS = {"blobServiceUri"}

# `__accountName` makes the host and settings.py build core.windows.net URIs: public cloud only.
PUBLIC_CLOUD_ONLY = {
    f"{conn}__accountName" for conn in (bot_settings.STORAGE_CONNECTION, bot_settings.FALLBACK_CONNECTION)
}

# Added by the notify feature (send throttling); allowed even before the code reads them.
# Once the code reads them they are ordinary settings that must be set.
NOTIFY_FEATURE = {"BotSendConcurrency", "BotTenantRatePerSecond"}

# Settings that must never be app settings on this plan (the runtime is in functionAppConfig).
NEVER_ON_FLEX = {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"}

# The Python worker's own OpenTelemetry switches (Microsoft's "Use OpenTelemetry with Azure Functions"). Either one
# has the worker tell the host it exports its logs itself (the WorkerOpenTelemetryEnabled capability), after which
# the host drops them; PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY also runs configure_azure_monitor, every
# instrumentation on, as the worker starts: in every cold start, and the Azure SDK's and httpx's calls recorded twice.
# The app takes the documents' other way: configure_azure_monitor in its own code (botcore.telemetry), logs off there,
# and the host relays the worker's logs.
WORKER_TELEMETRY = {"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "PYTHON_ENABLE_OPENTELEMETRY"}

# Reads with a computed name are allowed only where the test knows what they read:
# settings.py's connection_from_env reads `BotStorage`/`AzureWebJobsStorage` and their
# `__*` families (derived below from settings.py itself).
KNOWN_DYNAMIC_READS = {("botcore/settings.py", "connection_from_env")}

CODE_FILES = sorted(ROOT.glob("botcore/**/*.py")) + [ROOT / "function_app.py"]


# ---------------------------------------------------------------------------
# Helpers: pycep's JSON tree
# ---------------------------------------------------------------------------

_parser = BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    try:
        return _parser.parse(file_path=path)
    except Exception as exc:  # lark errors carry line/column
        raise AssertionError(f"{path.relative_to(ROOT)} does not parse as Bicep: {exc}") from exc


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def unwrap(config: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """A resource or module body, its `if (...)` condition and its `[for ...]` loop.

    pycep nests the body under "config" when a condition or a loop wraps it.
    """
    if "loop_type" in config or ("condition" in config and "config" in config and "name" not in config):
        return config["config"], config.get("condition"), config.get("loop_type")
    return config, None, None


@dataclass
class Resource:
    file: Path
    symbol: str
    type: str
    api_version: str
    existing: bool
    body: dict[str, Any]
    condition: Any
    loop: dict[str, Any] | None

    @property
    def where(self) -> str:
        return f"{rel(self.file)}: resource {self.symbol} '{self.type}'"


def resources(path: Path, type_: str | None = None) -> list[Resource]:
    found = []
    for symbol, res in parse(path).get("resources", {}).items():
        body, condition, loop = unwrap(res["config"])
        if type_ is None or res["type"] == type_:
            found.append(
                Resource(path, symbol, res["type"], res["api_version"], res["existing"], body, condition, loop)
            )
    return found


def the_resource(path: Path, type_: str) -> Resource:
    found = resources(path, type_)
    assert len(found) == 1, f"{rel(path)}: expected one {type_}, found {[r.symbol for r in found]}"
    return found[0]


@dataclass
class Module:
    file: Path
    symbol: str
    path: Path
    params: dict[str, Any]
    condition: Any

    @property
    def where(self) -> str:
        return f"{rel(self.file)}: module {self.symbol} '{rel(self.path)}'"


def modules(path: Path) -> list[Module]:
    found = []
    for symbol, mod in parse(path).get("modules", {}).items():
        assert mod["type"] == "local", f"{rel(path)}: module {symbol} is not a local file"
        body, condition, _ = unwrap(mod["config"])
        found.append(
            Module(path, symbol, (path.parent / mod["detail"]["path"]).resolve(), body.get("params", {}), condition)
        )
    return found


def module_using(file_name: str) -> Module:
    found = [m for m in modules(MAIN) if m.path == (MODULES / file_name).resolve()]
    assert len(found) == 1, f"main.bicep should use modules/{file_name} exactly once"
    return found[0]


def is_required(param: dict[str, Any]) -> bool:
    return param.get("default") is None


def decorators(decl: dict[str, Any]) -> set[str]:
    return {d["type"] for d in decl.get("decorators", [])}


class Symbol(str):
    """A parameter whose value the evaluation was not given: it stands for itself (its name)."""


class TemplateFailure(Exception):
    """The evaluation reached `fail('...')`: the deployment would stop with this message."""


def known(value: Any) -> bool:
    """A value the evaluation decided: a number, a bool, or a string with nothing left to resolve."""
    if isinstance(value, str):
        return not isinstance(value, Symbol) and "${" not in value
    return isinstance(value, (bool, int))


def unique_string(*values: str) -> str:
    """A stand-in for ARM's uniqueString(): deterministic, 13 characters of [a-z2-7] (base32 of a hash)."""
    digest = int.from_bytes(hashlib.sha256("|".join(values).encode()).digest()[:9], "big")
    return "".join("abcdefghijklmnopqrstuvwxyz234567"[(digest >> (5 * i)) & 31] for i in range(13))


# Bicep string functions the evaluation computes (pycep's snake_case names).
STRING_FUNCTIONS = {
    "to_lower": str.lower,
    "replace": lambda text, old, new: text.replace(old, new),
    "take": lambda text, count: text[: max(count, 0)],
    "unique_string": unique_string,
}

_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


def evaluate(doc: dict[str, Any], expr: Any, params: dict[str, Any]) -> Any:
    """Evaluate what a template's parameters decide; leave the rest as pycep expressions.

    Resolves variables, parameters given in `params` (others become a `Symbol`), `cond ? a : b`,
    `==`, `!=`, `!`, `&&`, `||`, `empty()`, `union()` of objects, the string functions above,
    `${...}` interpolations of what it resolves, and object/array literals. `params` may also
    give deployment context by its Bicep text (`environment().suffixes.storage`). `fail()`
    raises TemplateFailure. pycep gives identifiers and string literals alike as Python
    strings: a string that names a variable or a parameter is that variable or parameter.

    pycep binds `?:` tighter than `==` and `&&` (`a && b ? x : y` parses as `a && (b ? x : y)`)
    and reads `f().x == y` as `f().(x == y)`, and it rejects ternaries split over lines:
    main.bicep gives such conditions a variable of their own and keeps ternaries on one line.
    """
    if isinstance(expr, str):
        if expr in doc.get("variables", {}):
            return evaluate(doc, doc["variables"][expr]["value"], params)
        if expr in params:
            return params[expr]
        if expr in doc.get("parameters", {}):
            return Symbol(expr)
        return _INTERPOLATION.sub(lambda match: _interpolated(doc, match, params), expr)
    if isinstance(expr, list):
        return [evaluate(doc, item, params) for item in expr]
    if not isinstance(expr, dict):
        return expr
    if "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        if kind == "conditional":
            condition = evaluate(doc, operands["condition"], params)
            assert isinstance(condition, bool), f"cannot decide the condition {render(operands['condition'])}"
            return evaluate(doc, operands["true_value" if condition else "false_value"], params)
        if kind in ("equals", "not_equals"):
            left, right = evaluate(doc, operands["operand_1"], params), evaluate(doc, operands["operand_2"], params)
            if not (known(left) and known(right)):
                return expr
            return (left == right) == (kind == "equals")
        if kind == "not":
            value = evaluate(doc, operands["bool_value"], params)
            assert isinstance(value, bool), f"cannot decide !{render(operands['bool_value'])}"
            return not value
        if kind in ("and", "or"):  # short-circuit, as Bicep does
            first = evaluate(doc, operands["operand_1"], params)
            if not isinstance(first, bool):
                return expr
            if first == (kind == "or"):
                return first
            second = evaluate(doc, operands["operand_2"], params)
            return second if isinstance(second, bool) else expr
        if kind == "property_accessor" and render(expr) in params:
            return params[render(expr)]
        return expr
    if "function" in expr:
        kind = expr["function"]["type"]
        args = [arg for arg in expr["function"].get("parameters", {}).values() if arg is not None]
        if kind == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                value = evaluate(doc, arg, params)
                assert isinstance(value, dict), f"union() of something that is not a known object: {render(arg)}"
                merged.update(value)
            return merged
        if kind == "fail":
            raise TemplateFailure(evaluate(doc, args[0], params))
        if kind in STRING_FUNCTIONS:
            values = [evaluate(doc, arg, params) for arg in args]
            return STRING_FUNCTIONS[kind](*values) if all(known(v) for v in values) else expr
        if kind == "empty":
            value = evaluate(doc, args[0], params)
            return value == "" if known(value) else expr
        return expr
    return {unquote(key): evaluate(doc, value, params) for key, value in expr.items()}


def _interpolated(doc: dict[str, Any], match: re.Match[str], params: dict[str, Any]) -> str:
    """The text of one `${...}`: its value if the evaluation knows it, else the `${...}` unchanged."""
    inner = match.group(1).strip()
    if inner in params:
        value = params[inner]
    elif inner in doc.get("variables", {}) or inner in doc.get("parameters", {}):
        value = evaluate(doc, inner, params)
    else:
        return match.group(0)
    return str(value) if known(value) and not isinstance(value, bool) else match.group(0)


def unquote(key: str) -> str:
    """pycep keeps the quotes of quoted object keys: `'azd-service-name': ...`."""
    return key[1:-1] if len(key) > 1 and key[0] == key[-1] == "'" else key


def render(expr: Any) -> str:
    """A pycep expression written back as (approximately) Bicep, for comparisons and messages."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        if kind == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if kind == "function_accessor":
            return f"{render(operands['operand_1'])}.{operands['func_name']}()"
        return f"{kind}({', '.join(render(v) for v in operands.values())})"
    if isinstance(expr, dict) and "function" in expr:
        args = ", ".join(render(v) for v in expr["function"].get("parameters", {}).values() if v is not None)
        name = re.sub(r"_(\w)", lambda m: m.group(1).upper(), expr["function"]["type"])  # to_lower -> toLower
        return f"{name}({args})"
    return json.dumps(expr, sort_keys=True)


def strings(tree: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a pycep tree (identifiers, literals, interpolations) with its path."""
    if isinstance(tree, str):
        yield path, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from strings(value, f"{path}[{index}]")


def nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object (dict) in a pycep tree, outermost first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from nodes(value)


def references(tree: Any, name: str) -> list[str]:
    """Paths where the identifier `name` is used, bare or inside a `${...}` interpolation."""
    inside = re.compile(r"\$\{[^}]*(?<![\w.])" + re.escape(name) + r"(?!\w)")
    return [path for path, text in strings(tree) if text == name or inside.search(text)]


def deployment(mode: str, cloud: str = "AzureCloud", **params: Any) -> dict[str, Any]:
    """What one deployment of main.bicep decides: the parameters (as azd passes them in `mode`,
    overridden by `params`) and the context it reads from environment(), subscription() and
    resourceGroup(), keyed by their Bicep text."""
    single_tenant = mode == "SingleTenant"
    given = {
        "environmentName": "mybot",
        "botAppType": mode,
        "botAppId": "11111111-2222-3333-4444-555555555555" if single_tenant else "",
        "botAppPassword": "app-registration-secret" if single_tenant else "",
        "tags": {},
        "environment().name": cloud,
        "environment().suffixes.storage": CLOUD_STORAGE_SUFFIXES[cloud],
        "subscription().id": "/subscriptions/00000000-0000-0000-0000-000000000000",
        "resourceGroup().id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-mybot",
    }
    given.update(params)
    return given


def app_settings(mode: str, cloud: str = "AzureCloud", **params: Any) -> dict[str, Any]:
    """The function app's settings (name -> expression) as main.bicep builds them for `mode` in `cloud`."""
    main = parse(MAIN)
    settings = evaluate(
        main, module_using("appsettings.bicep").params["appSettings"], deployment(mode, cloud, **params)
    )
    assert isinstance(settings, dict), "appSettings should evaluate to an object of name -> value"
    return settings


def module_params(module: Module, params: dict[str, Any]) -> dict[str, Any]:
    """A module's parameters as main.bicep passes them for `params`, with the module's defaults."""
    given = {name: evaluate(parse(MAIN), value, params) for name, value in module.params.items()}
    doc = parse(module.path)
    for name, decl in doc["parameters"].items():
        if name not in given and decl.get("default") is not None:
            given[name] = evaluate(doc, decl["default"], {})
    return given


def resource_tags(params: dict[str, Any] | None = None) -> list[tuple[Resource, dict[str, Any]]]:
    """Every resource that has tags, with its tags as one deployment (`params`) sets them."""
    params = deployment("UserAssignedMSI") if params is None else params
    found = [(res, evaluate(parse(MAIN), res.body["tags"], params)) for res in resources(MAIN) if "tags" in res.body]
    for module in modules(MAIN):
        given = module_params(module, params)
        for res in resources(module.path):
            if "tags" in res.body:
                found.append((res, evaluate(parse(module.path), res.body["tags"], given)))
    for res, tags in found:
        assert isinstance(tags, dict), f"{res.where}: tags do not evaluate to an object: {render(tags)}"
    return found


def named_resources() -> list[tuple[Resource, Any]]:
    """Resources whose name main.bicep decides, with that name as an expression of main.bicep:
    its own resources, and module resources named by a module parameter."""
    found = [(res, res.body["name"]) for res in resources(MAIN) if not res.existing]
    for module in modules(MAIN):
        declared = parse(module.path)["parameters"]
        for res in resources(module.path):
            name = res.body.get("name")
            if not res.existing and isinstance(name, str) and name in declared:
                assert name in module.params, (
                    f"{module.where}: {res.where} is named by {name}, which main.bicep does not set"
                )
                found.append((res, module.params[name]))
    return found


def parameter_dependencies(doc: dict[str, Any], expr: Any) -> set[str]:
    """The parameters an expression depends on, through variables and `${...}` interpolations."""
    found: set[str] = set()
    for _, text in strings(expr):
        names = {text} | {n for inner in _INTERPOLATION.findall(text) for n in re.findall(r"[A-Za-z_]\w*", inner)}
        for name in names:
            if name in doc.get("parameters", {}):
                found.add(name)
            elif name in doc.get("variables", {}):
                found |= parameter_dependencies(doc, doc["variables"][name]["value"])
    return found


# ---------------------------------------------------------------------------
# Helpers: what the code reads
# ---------------------------------------------------------------------------


def _is_environment(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("env", "environ")) or (
        isinstance(node, ast.Attribute) and node.attr == "environ"
    )


@dataclass(frozen=True)
class _Read:
    file: str
    function: str  # enclosing function, "<module>" at top level
    line: int
    key: ast.AST  # the name read: a literal, or an expression
    params: tuple[str, ...]  # parameters of the enclosing function


class _EnvReads(ast.NodeVisitor):
    """`env.get(k)`, `os.environ.get(k)`, `os.getenv(k)`, `environ[k]`, `k in environ`."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.stack: list[tuple[str, tuple[str, ...]]] = [("<module>", ())]
        self.reads: list[_Read] = []
        self.calls: list[tuple[str, ast.Call, str]] = []  # (callee name, call, enclosing function)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = node.args
        self.stack.append((node.name, tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])))
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _read(self, key: ast.AST, node: ast.AST) -> None:
        function, params = self.stack[-1]
        self.reads.append(_Read(self.file, function, node.lineno, key, params))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and node.args
            and ((func.attr == "get" and _is_environment(func.value)) or func.attr == "getenv")
        ):
            self._read(node.args[0], node)
        callee = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if callee:
            self.calls.append((callee, node, self.stack[-1][0]))
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _is_environment(node.value):
            self._read(node.slice, node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        if isinstance(node.ops[0], (ast.In, ast.NotIn)) and _is_environment(node.comparators[0]):
            self._read(node.left, node)
        self.generic_visit(node)


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


@cache
def code_env_reads() -> tuple[frozenset[str], tuple[tuple[str, str, int], ...]]:
    return scan_env_reads(tuple(CODE_FILES))


def scan_env_reads(paths: tuple[Path, ...]) -> tuple[frozenset[str], tuple[tuple[str, str, int], ...]]:
    """Names of the settings the code reads, and where it reads names it computes.

    A function that reads the setting named by one of its parameters (a helper such
    as `_number(env, "BotMaxBodyBytes", ...)`) is followed to its callers: each call
    with a literal name is a read of that name.
    """
    visitors = []
    for path in paths:
        visitor = _EnvReads(rel(path) if path.is_relative_to(ROOT) else path.name)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        visitors.append(visitor)
    literal: set[str] = set()
    dynamic: list[tuple[str, str, int]] = []
    helpers: dict[str, tuple[int, str]] = {}  # function -> (position, name) of the parameter it reads
    for read in (r for v in visitors for r in v.reads):
        name = _literal(read.key)
        if name is not None:
            literal.add(name)
        elif isinstance(read.key, ast.Name) and read.key.id in read.params and read.function != "<module>":
            position = read.params.index(read.key.id)
            if read.params[0] in ("self", "cls"):  # called as obj.method(...): one argument fewer
                position -= 1
            helpers[read.function] = (position, read.key.id)
        else:
            dynamic.append((read.file, read.function, read.line))
    for visitor in visitors:
        for callee, call, function in visitor.calls:
            if callee not in helpers:
                continue
            position, keyword = helpers[callee]
            given = {k.arg: k.value for k in call.keywords}.get(keyword)
            if given is None and 0 <= position < len(call.args):
                given = call.args[position]
            name = _literal(given)
            if name is not None:
                literal.add(name)
            elif not (isinstance(given, ast.Name) and function in helpers):  # a helper calling a helper
                dynamic.append((visitor.file, function, call.lineno))
    return frozenset(literal), tuple(dynamic)


@cache
def storage_family_keys() -> frozenset[str]:
    """The `<connection>__<key>` keys settings.py accepts: literals of `family.get("...")`."""
    keys = set()
    for node in ast.walk(ast.parse((ROOT / "botcore" / "settings.py").read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "family"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
    assert keys, "found no family.get(...) in botcore/settings.py: update storage_family_keys()"
    return frozenset(keys)


def storage_family_names() -> set[str]:
    """Lower-cased `<connection>__<key>` names settings.py accepts (it matches them case-insensitively)."""
    return {f"{conn}__{key}".lower() for conn in CONNECTION_STRING_FORMS for key in storage_family_keys()}


def must_set(mode: str, cloud: str) -> set[str]:
    literal, _ = code_env_reads()
    unclassified = (
        literal
        - PLATFORM_PROVIDED
        - OPTIONAL_WITH_DEFAULTS
        - SINGLE_TENANT_ONLY
        - US_GOVERNMENT_ONLY
        - CONNECTION_STRING_FORMS
    )
    required = unclassified | BOT_STORAGE_IDENTITY | FUNCTIONS_HOST
    required |= SINGLE_TENANT_ONLY if mode == "SingleTenant" else set()
    return required | (US_GOVERNMENT_ONLY if cloud == "AzureUSGovernment" else set())


def must_not_set(mode: str, cloud: str) -> set[str]:
    forbidden = PLATFORM_PROVIDED | OPTIONAL_WITH_DEFAULTS | CONNECTION_STRING_FORMS | NEVER_ON_FLEX | PUBLIC_CLOUD_ONLY
    forbidden |= WORKER_TELEMETRY
    forbidden |= SINGLE_TENANT_ONLY if mode == "UserAssignedMSI" else set()
    return forbidden | (US_GOVERNMENT_ONLY if cloud != "AzureUSGovernment" else set())


# ---------------------------------------------------------------------------
# Templates parse, use pinned API versions, and wire modules correctly
# ---------------------------------------------------------------------------


def test_infra_has_the_expected_files():
    names = {rel(p) for p in BICEP_FILES}
    assert "infra/main.bicep" in names
    for module in ("storage", "monitoring", "keyvault", "functionapp", "appsettings", "bot"):
        assert f"infra/modules/{module}.bicep" in names


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_bicep_file_parses(path: Path):
    doc = parse(path)
    assert doc.get("resources") or doc.get("modules"), f"{rel(path)} declares nothing"


def test_resource_types_and_api_versions_are_pinned():
    problems = []
    for path in BICEP_FILES:
        for res in resources(path):
            pinned = API_VERSIONS.get(res.type)
            if pinned is None:
                problems.append(f"{res.where}: type not on the allow-list in tests/test_infra.py")
            elif res.api_version != pinned:
                problems.append(f"{res.where}@{res.api_version}: the pinned version is {pinned}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_module_params_match_the_module_files(path: Path):
    problems = []
    for module in modules(path):
        if not module.path.is_file():
            problems.append(f"{module.where}: no such file")
            continue
        declared = parse(module.path)["parameters"]
        unknown = sorted(set(module.params) - set(declared))
        missing = sorted(name for name, decl in declared.items() if is_required(decl) and name not in module.params)
        if unknown:
            problems.append(f"{module.where}: unknown params {unknown}")
        if missing:
            problems.append(f"{module.where}: missing required params {missing}")
    assert not problems, "\n".join(problems)


def test_module_outputs_used_in_main_exist():
    outputs = {m.symbol: set(parse(m.path).get("outputs", {})) for m in modules(MAIN)}
    used = [render(node) for node in nodes(parse(MAIN)) if node.get("operator", {}).get("type") == "property_accessor"]
    used += [text for _, text in strings(parse(MAIN))]  # interpolations: '${functionApp.outputs.name}'
    problems = set()
    for text in used:
        for symbol, output in re.findall(r"(?<![\w.])(\w+)!?\.outputs\.(\w+)", text):
            if symbol in outputs and output not in outputs[symbol]:
                problems.add(f"main.bicep uses {symbol}.outputs.{output}, which that module does not declare")
    assert not problems, "\n".join(sorted(problems))


# ---------------------------------------------------------------------------
# App settings: what the code reads in Azure, and nothing else
# ---------------------------------------------------------------------------


def test_code_reads_settings_only_by_literal_names_or_known_families():
    literal, dynamic = code_env_reads()
    assert literal, "found no settings read by the code: has the scan in tests/test_infra.py gone stale?"
    unknown = [
        f"{file}:{line} in {function}()"
        for file, function, line in dynamic
        if (file, function) not in KNOWN_DYNAMIC_READS
    ]
    assert not unknown, (
        "the code reads settings whose names are computed; tests/test_infra.py cannot tell which: " + ", ".join(unknown)
    )


def test_env_scan_finds_literal_helper_and_computed_reads(tmp_path: Path):
    code = tmp_path / "sample.py"
    code.write_text(
        "import os\n"
        "def _number(env, name, default):\n"
        "    return env.get(name) or default\n"
        "def settings(env):\n"
        "    a = env.get('A'), os.environ['B'], os.getenv('C'), 'D' in os.environ\n"
        "    return a, _number(env, 'E', 1), _number(env, name='F', default=2)\n"
        "def computed(env, prefix):\n"
        "    return os.environ.get(prefix + '_X')\n"
        "class Config:\n"
        "    def setting(self, name):\n"
        "        return os.environ.get(name)\n"
        "    def all(self):\n"
        "        return self.setting('G')\n"
    )
    literal, dynamic = scan_env_reads((code,))
    assert literal == {"A", "B", "C", "D", "E", "F", "G"}
    assert [(function, line) for _, function, line in dynamic] == [("computed", 8)]


def test_identity_storage_settings_are_names_storage_py_accepts():
    accepted = storage_family_names()
    host_storage = {n for n in FUNCTIONS_HOST if n.startswith(f"{bot_settings.FALLBACK_CONNECTION}__")}
    host_only = {f"{bot_settings.FALLBACK_CONNECTION}__{key}" for key in HOST_ONLY_STORAGE_KEYS}
    for name in BOT_STORAGE_IDENTITY | (host_storage - host_only):
        assert name.lower() in accepted, f"botcore/settings.py does not read {name}"
    for name in host_only:
        assert name.lower() not in accepted, f"botcore/settings.py reads {name}: it is no longer host-only"


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("mode", MODES)
def test_every_setting_the_code_needs_is_set(mode: str, cloud: str):
    settings = app_settings(mode, cloud)
    missing = sorted(must_set(mode, cloud) - set(settings))
    assert not missing, (
        f"{mode} in {cloud}: settings the code or the Functions host read are not set in infra/main.bicep: {missing}. "
        "Set them there, or classify them in tests/test_infra.py (platform-provided, optional with defaults, ...)."
    )


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("mode", MODES)
def test_no_setting_is_set_that_nothing_reads(mode: str, cloud: str):
    settings = app_settings(mode, cloud)
    literal, _ = code_env_reads()
    readable = literal | FUNCTIONS_HOST | NOTIFY_FEATURE | BOT_STORAGE_IDENTITY
    unread = sorted(name for name in settings if name not in readable and name.lower() not in storage_family_names())
    assert not unread, f"{mode} in {cloud}: app settings that neither the code nor the Functions host read: {unread}"
    forbidden = sorted(set(settings) & must_not_set(mode, cloud))
    assert not forbidden, f"{mode} in {cloud}: app settings that must not be set in Azure: {forbidden}"


@pytest.mark.parametrize("mode", MODES)
def test_setting_values(mode: str):
    s = {name: render(value) for name, value in app_settings(mode).items()}
    client_id = "identity.properties.clientId"
    for service in ("blob", "queue", "table"):
        assert s[f"AzureWebJobsStorage__{service}ServiceUri"] == f"storage.outputs.{service}ServiceUri"
    assert s["AzureWebJobsStorage__credential"] == "managedidentity"
    assert s["AzureWebJobsStorage__clientId"] == client_id
    assert s["BotStorage__tableServiceUri"] == "storage.outputs.tableServiceUri"
    assert s["BotStorage__queueServiceUri"] == "storage.outputs.queueServiceUri"
    assert s["BotStorage__credential"] == "managedidentity"
    assert s["BotStorage__clientId"] == client_id
    assert s["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "monitoring.outputs.connectionString"
    assert (
        s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identity.properties.clientId};Authorization=AAD"
    )
    assert s["MicrosoftAppType"] == mode
    assert s["MicrosoftAppTenantId"] == "tenant().tenantId"
    assert s["MicrosoftAppId"] == (client_id if mode == "UserAssignedMSI" else deployment(mode)["botAppId"])
    assert s["BotPublicBaseUrl"] == "https://${functionApp.outputs.defaultHostName}"
    if mode == "SingleTenant":
        assert s["MicrosoftAppPassword"] == "@Microsoft.KeyVault(SecretUri=${keyVault!.outputs.secretUri})"


def test_storage_service_uris_have_the_form_storage_py_builds():
    outputs = parse(MODULES / "storage.bicep")["outputs"]
    for service in ("blob", "table", "queue"):
        uri = outputs[f"{service}ServiceUri"]["value"]
        assert uri == f"https://${{account.name}}.{service}.${{environment().suffixes.storage}}", uri


def resolved_storage_settings(cloud: str, account: str = "stexample") -> dict[str, str]:
    """The storage connection settings (BotStorage__*, AzureWebJobsStorage__*) with the storage
    module's outputs evaluated as they would be in `cloud`."""
    storage = parse(MODULES / "storage.bicep")
    context = {"account.name": account, "environment().suffixes.storage": CLOUD_STORAGE_SUFFIXES[cloud]}
    resolved = {}
    for name, value in app_settings("UserAssignedMSI", cloud).items():
        if not name.startswith(tuple(f"{conn}__" for conn in CONNECTION_STRING_FORMS)):
            continue
        text = render(value)
        output = re.fullmatch(r"storage\.outputs\.(\w+)", text)
        if output:
            text = evaluate(storage, storage["outputs"][output.group(1)]["value"], context)
        assert known(text), f"{name}: cannot resolve {text}"
        resolved[name] = text
    return resolved


@pytest.mark.parametrize("cloud", CLOUDS)
def test_storage_uris_are_those_of_the_cloud(cloud: str):
    suffix = CLOUD_STORAGE_SUFFIXES[cloud]
    settings = resolved_storage_settings(cloud)
    uris = {name: value for name, value in settings.items() if name.lower().endswith("serviceuri")}
    assert len(uris) == 5, sorted(uris)  # BotStorage table/queue, the host's blob/queue/table
    for name, uri in uris.items():
        service = re.search(r"__(\w+)ServiceUri$", name).group(1)
        assert uri == f"https://stexample.{service}.{suffix}", f"{name} in {cloud}: {uri}"
    # What botcore/settings.py makes of each family, on its own (AzureWebJobsStorage is its fallback).
    for conn in (bot_settings.STORAGE_CONNECTION, bot_settings.FALLBACK_CONNECTION):
        family = {name: value for name, value in settings.items() if name.startswith(f"{conn}__")}
        connection = bot_settings.connection_from_env(family)
        assert (connection.table_uri, connection.queue_uri) == (
            f"https://stexample.table.{suffix}",
            f"https://stexample.queue.{suffix}",
        ), f"{conn} in {cloud}: {connection}"
        assert connection.client_id == "identity.properties.clientId"


def test_no_template_names_a_cloud():
    for path in BICEP_FILES:
        for where, text in strings(parse(path)):
            for suffix in CLOUD_STORAGE_SUFFIXES.values():
                assert suffix not in text, f"{rel(path)} {where} names {suffix}: use environment().suffixes.storage"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_channel_service_only_in_the_us_government_cloud(cloud: str):
    settings = app_settings("UserAssignedMSI", cloud)
    if cloud == "AzureUSGovernment":
        assert settings.get("ChannelService") == bot_settings.US_GOV_CHANNEL_SERVICE
        plain = {name: value for name, value in settings.items() if known(value)}
        assert bot_settings.Settings.from_env(plain).cloud.name == bot_settings.US_GOV_CLOUD
    else:
        assert "ChannelService" not in settings


def test_app_settings_are_applied_only_by_the_appsettings_module():
    config = the_resource(MODULES / "appsettings.bicep", "Microsoft.Web/sites/config")
    assert config.body["name"] == "appsettings"
    assert config.body["properties"] == "appSettings", "the module should apply its appSettings param unchanged"
    others = [
        r.where
        for p in BICEP_FILES
        for r in resources(p, "Microsoft.Web/sites/config")
        if r is not config and r.file != config.file
    ]
    assert not others, f"app settings set elsewhere too: {others}"
    site = the_resource(MODULES / "functionapp.bicep", "Microsoft.Web/sites")
    assert "appSettings" not in site.body["properties"].get("siteConfig", {}), (
        "siteConfig.appSettings would be replaced by the appsettings module: set settings in main.bicep only"
    )


# ---------------------------------------------------------------------------
# Function app, storage, monitoring, Key Vault, bot
# ---------------------------------------------------------------------------


def test_function_app_is_flex_consumption_on_a_tested_python_with_the_identity():
    path = MODULES / "functionapp.bicep"
    plan = the_resource(path, "Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}, f"plan sku {plan.body['sku']}: FC1"
    assert plan.body["properties"]["reserved"] is True, "Linux plan"
    site = the_resource(path, "Microsoft.Web/sites")
    props = site.body["properties"]
    assert site.body["kind"] == "functionapp,linux"
    assert props["httpsOnly"] is True
    assert site.body["identity"]["type"] == "UserAssigned"
    assert props["keyVaultReferenceIdentity"] == "identityId"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}, f"runtime {config['runtime']}"
    assert config["scaleAndConcurrency"] == {
        "maximumInstanceCount": "maximumInstanceCount",
        "instanceMemoryMB": "instanceMemoryMB",
    }, "scale settings come from parameters"
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    main = module_using("functionapp.bicep")
    assert render(main.params["identityId"]) == "identity.id"
    assert render(main.params["deploymentContainerUrl"]) == "storage.outputs.deploymentContainerUrl"
    assert main.params["maximumInstanceCount"] == "maximumInstanceCount"
    assert main.params["instanceMemoryMB"] == "instanceMemoryMB"
    assert main.params["pythonVersion"] == "pythonVersion"


def test_python_is_a_parameter_limited_to_the_versions_setup_installs_and_3_13_by_default():
    decl = parse(MAIN)["parameters"]["pythonVersion"]
    allowed = {d["type"]: d["argument"] for d in decl["decorators"]}["allowed"]
    setup = (ROOT / "scripts" / "setup").read_text()
    [accepted] = re.findall(r'case "\$version" in ([^)]+)\)', setup)
    assert allowed == [v.removesuffix(".*") for v in accepted.split("|")], (allowed, accepted)
    assert decl["default"] == "3.13" == max(allowed, key=lambda v: tuple(map(int, v.split("."))))


def test_one_user_assigned_identity():
    identities = [r for p in BICEP_FILES for r in resources(p, "Microsoft.ManagedIdentity/userAssignedIdentities")]
    assert [r.file for r in identities] == [MAIN], [r.where for r in identities]


def test_storage_account_is_keyless_tls12_and_private():
    account = the_resource(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts")
    props = account.body["properties"]
    assert props.get("allowSharedKeyAccess") is False, "storage: allowSharedKeyAccess must be false (identity only)"
    assert props.get("minimumTlsVersion") == "TLS1_2", "storage: minimumTlsVersion must be TLS1_2"
    assert props.get("allowBlobPublicAccess") is False, "storage: allowBlobPublicAccess must be false"
    assert props.get("supportsHttpsTrafficOnly") is True, "storage: supportsHttpsTrafficOnly must be true"
    container = the_resource(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container.body["properties"]["publicAccess"] == "None", "deployment container: no public access"
    assert container.body["name"] == "deploymentContainerName"


def _looped_names(path: Path, type_: str) -> list[str]:
    res = the_resource(path, type_)
    assert res.loop is not None and res.body["name"] == res.loop["detail"]["item_name"], (
        f"{res.where}: expected [for name in <list>: ...]"
    )
    names = evaluate(parse(path), res.loop["detail"]["array_name"], {})
    assert isinstance(names, list) and all(isinstance(n, str) for n in names), f"{res.where}: not a literal list"
    return names


def test_tables_and_queues_are_the_ones_the_code_uses():
    path = MODULES / "storage.bicep"
    tables = _looped_names(path, "Microsoft.Storage/storageAccounts/tableServices/tables")
    queues = _looped_names(path, "Microsoft.Storage/storageAccounts/queueServices/queues")
    expected_queues = sorted(q for queue in bot_settings.QUEUES for q in (queue, f"{queue}-poison"))
    assert sorted(tables) == sorted(bot_settings.TABLES), (
        f"storage.bicep tables {sorted(tables)} != botcore.settings.TABLES {sorted(bot_settings.TABLES)}"
    )
    assert sorted(queues) == expected_queues, (
        f"storage.bicep queues {sorted(queues)} != botcore.settings.QUEUES plus -poison {expected_queues}"
    )


def test_role_assignments_are_the_built_in_roles():
    granted: dict[str, set[str]] = {}
    for path in BICEP_FILES:
        doc = parse(path)
        for res in resources(path, "Microsoft.Authorization/roleAssignments"):
            props = res.body["properties"]
            ref = props["roleDefinitionId"].get("function", {}) if isinstance(props["roleDefinitionId"], dict) else {}
            assert ref.get("type") == "subscription_resource_id", f"{res.where}: use subscriptionResourceId(...)"
            assert ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role = ref["parameters"]["resource_name_1"]
            if res.loop is not None and role == res.loop["detail"]["item_name"]:
                ids = evaluate(doc, res.loop["detail"]["array_name"], {})
            else:
                ids = [evaluate(doc, role, {})]
            granted.setdefault(path.name, set()).update(ids)
            assert props["principalType"] == "ServicePrincipal", res.where
            assert props["principalId"] == "principalId", f"{res.where}: granted to the identity passed in"
            assert isinstance(res.body.get("scope"), str), f"{res.where}: scope it to the resource, not the group"
    assert granted == EXPECTED_ROLES, f"role definition ids per module: {granted}, expected {EXPECTED_ROLES}"


def test_every_module_grants_to_the_one_identity():
    for module in modules(MAIN):
        if "principalId" in module.params:
            assert render(module.params["principalId"]) == "identity.properties.principalId", module.where


def test_telemetry_is_opentelemetry_from_the_host_and_the_app_to_the_one_application_insights():
    """As Microsoft documents OpenTelemetry for Python functions: host.json's telemetryMode, the connection string
    the app's own configure_azure_monitor reads (with the identity in the authentication string), and none of the
    worker's own switches (WORKER_TELEMETRY: the app configures the distro itself, after its first invocation)."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host.get("telemetryMode") == "OpenTelemetry"
    assert (
        "azure.monitor.opentelemetry import configure_azure_monitor" in (ROOT / "botcore" / "telemetry.py").read_text()
    )
    for mode in MODES:
        settings = app_settings(mode)
        assert render(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "monitoring.outputs.connectionString"
        assert "Authorization=AAD" in render(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
        assert not WORKER_TELEMETRY & set(settings), f"{mode}: {sorted(WORKER_TELEMETRY & set(settings))}"


def test_application_insights_takes_only_entra_auth():
    path = MODULES / "monitoring.bicep"
    insights = the_resource(path, "Microsoft.Insights/components")
    assert insights.body["properties"].get("DisableLocalAuth") is True, (
        "Application Insights: DisableLocalAuth must be true"
    )
    assert render(insights.body["properties"]["WorkspaceResourceId"]) == "workspace.id"
    the_resource(path, "Microsoft.OperationalInsights/workspaces")


def test_key_vault_only_in_single_tenant_mode_with_rbac():
    module = module_using("keyvault.bicep")
    main = parse(MAIN)
    deployed = {mode: evaluate(main, module.condition, {"botAppType": mode}) for mode in MODES}
    assert deployed == {"UserAssignedMSI": False, "SingleTenant": True}, (
        f"the Key Vault module must be deployed only when botAppType is SingleTenant; condition gives {deployed}"
    )
    assert module.params["secretValue"] == "botAppPassword"
    vault = the_resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults")
    assert vault.body["properties"]["enableRbacAuthorization"] is True
    secret = the_resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults/secrets")
    assert secret.body["properties"]["value"] == "secretValue"


def test_the_client_secret_goes_only_to_key_vault():
    main = parse(MAIN)
    uses = references({k: v for k, v in main.items() if k != "parameters"}, "botAppPassword")
    checks = [
        f"variables.{name}.{path}"
        for name, var in main["variables"].items()
        for path, text in strings(var)
        if text == "botAppPassword" and path.endswith("function.parameters.item_to_test")  # empty(botAppPassword)
    ]
    assert sorted(uses) == sorted(["modules.keyVault.config.config.params.secretValue", *checks]), uses


@pytest.mark.parametrize("mode", MODES)
def test_bot_resource(mode: str):
    main = parse(MAIN)
    module = module_using("bot.bicep")
    expected = ("appType", "appId", "tenantId", "msiResourceId", "sku", "endpoint")
    assert set(expected) <= set(module.params), f"{module.where}: set {sorted(set(expected) - set(module.params))}"
    params = {name: render(evaluate(main, module.params[name], deployment(mode))) for name in expected}
    assert params["sku"] == "botSku"
    assert params["appType"] == mode
    assert params["appId"] == render(app_settings(mode)["MicrosoftAppId"]), (
        "the bot's app id is the app's MicrosoftAppId"
    )
    assert params["tenantId"] == "tenant().tenantId"
    assert params["msiResourceId"] == ("identity.id" if mode == "UserAssignedMSI" else "")
    assert main["parameters"]["botSku"]["default"] == "F0"
    path = MODULES / "bot.bicep"
    bot = the_resource(path, "Microsoft.BotService/botServices")
    assert bot.body["kind"] == "azurebot"
    assert bot.body["location"] == "global"
    assert bot.body["sku"] == {"name": "sku"}
    props = bot.body["properties"]
    assert (props["endpoint"], props["msaAppType"], props["msaAppId"], props["msaAppTenantId"]) == (
        "endpoint",
        "appType",
        "appId",
        "tenantId",
    )
    assert "msaAppMSIResourceId" in props
    channels = {r.body["name"]: r for r in resources(path, "Microsoft.BotService/botServices/channels")}
    assert set(channels) == {"MsTeamsChannel", "DirectLineChannel"}
    for name, channel in channels.items():
        assert channel.body["parent"] == "bot" and channel.body["properties"]["channelName"] == name


def test_bot_endpoint_is_the_messages_route():
    endpoint = evaluate(parse(MAIN), module_using("bot.bicep").params["endpoint"], {})
    assert endpoint == "https://${functionApp.outputs.defaultHostName}/api/messages"

    host = json.loads((ROOT / "host.json").read_text())
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    assert prefix == "api", f"host.json routePrefix {prefix!r}: the bot endpoint assumes /api"

    routes = {}
    for node in ast.walk(ast.parse((ROOT / "function_app.py").read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "route":
                    kwargs = {k.arg: k.value for k in deco.keywords}
                    route = kwargs.get("route")
                    if isinstance(route, ast.Constant):
                        routes[route.value] = kwargs
    assert "messages" in routes, f'function_app.py has no route="messages" (routes: {sorted(routes)})'
    assert endpoint.endswith(f"/{prefix}/messages")
    auth = routes["messages"].get("auth_level")
    assert isinstance(auth, ast.Attribute) and auth.attr == "ANONYMOUS", (
        "the Bot Service calls /api/messages without a function key: it must stay anonymous (the JWT is the auth)"
    )


# ---------------------------------------------------------------------------
# Names, tags and redeploys
# ---------------------------------------------------------------------------

# Naming rules of each named resource type (Azure resource name rules), as full-match patterns.
NAME_RULES = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}",
    "Microsoft.OperationalInsights/workspaces": r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
    "Microsoft.Insights/components": r"[^%&\\?/\x00-\x1f]{0,259}[^%&\\?/\x00-\x1f .]",
    "Microsoft.Storage/storageAccounts": r"[a-z0-9]{3,24}",
    "Microsoft.Storage/storageAccounts/blobServices/containers": r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]",
    "Microsoft.KeyVault/vaults": r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
    "Microsoft.KeyVault/vaults/secrets": r"[A-Za-z0-9-]{1,127}",
    "Microsoft.Web/serverfarms": r"[A-Za-z0-9-]{1,60}",
    "Microsoft.Web/sites": r"[a-z0-9][a-z0-9-]{0,58}[a-z0-9]",  # also the label of <name>.azurewebsites.net
    "Microsoft.BotService/botServices": r"[A-Za-z0-9][A-Za-z0-9_.-]{1,63}",
}

# What azd accepts as an environment name (AZURE_ENV_NAME).
AZD_ENVIRONMENT_NAME = r"[a-zA-Z0-9\-()_.]{1,64}"

HOSTILE_ENVIRONMENT_NAMES = [
    "a",
    "Z",
    "7",
    "9lives",
    "-",
    "_",
    ".",
    "(",
    ")",
    "()",
    "--",
    "My_Bot.(prod)",
    "prod.v2(eu)_blue",
    "-leading",
    "trailing-",
    "UPPER_CASE",
    "a" * 19 + "_",
    "a" * 20,
    "a" * 21,
    "x" * 64,
    "X" * 64,
    "_" * 64,
    "(" * 32 + ")" * 32,
    "0" * 64,
    ("Ab9_.()-" * 8),
]

# The names resources had before environment names were sanitised: one deployed with such
# a name (at most 20 letters, digits and hyphens) must find its resources under these names.
NAMES_BEFORE = {
    "Microsoft.ManagedIdentity/userAssignedIdentities": "id-{prefix}-{token}",
    "Microsoft.OperationalInsights/workspaces": "log-{prefix}-{token}",
    "Microsoft.Insights/components": "appi-{prefix}-{token}",
    "Microsoft.Storage/storageAccounts": "st{token}",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "app-package-{token}",
    "Microsoft.KeyVault/vaults": "kv-{token}",
    "Microsoft.KeyVault/vaults/secrets": "MicrosoftAppPassword",
    "Microsoft.Web/serverfarms": "plan-{prefix}-{token}",
    "Microsoft.Web/sites": "func-{prefix}-{token}",
    "Microsoft.BotService/botServices": "bot-{prefix}-{token}",
}


def resource_names(environment_name: str) -> dict[str, str]:
    """Resource type -> name, as main.bicep names them for `environment_name`."""
    params = deployment("SingleTenant", environmentName=environment_name)
    names = {}
    for res, expr in named_resources():
        name = evaluate(parse(MAIN), expr, params)
        assert known(name), f"{res.where}: cannot evaluate the name {render(expr)} -> {render(name)}"
        names[res.type] = name
    return names


def test_environment_name_takes_what_azd_accepts():
    decl = parse(MAIN)["parameters"]["environmentName"]
    limits = {d["type"]: d["argument"] for d in decl["decorators"] if d["type"] in ("min_length", "max_length")}
    assert limits == {"min_length": 1, "max_length": 64}, f"environmentName length limits {limits}: azd allows 1-64"


def test_every_named_resource_type_has_a_naming_rule():
    types = {res.type for res, _ in named_resources()}
    assert types == set(NAME_RULES), f"named types without a rule here: {sorted(types - set(NAME_RULES))}"


def check_names(environment_name: str) -> None:
    for type_, name in resource_names(environment_name).items():
        assert re.fullmatch(NAME_RULES[type_], name), (
            f"{environment_name!r}: {type_} name {name!r} breaks its naming rule"
        )


@pytest.mark.parametrize("environment_name", HOSTILE_ENVIRONMENT_NAMES)
def test_resource_names_are_valid_for_hostile_environment_names(environment_name: str):
    assert re.fullmatch(AZD_ENVIRONMENT_NAME, environment_name)
    check_names(environment_name)


@settings(max_examples=150, deadline=None)
@given(st.from_regex(AZD_ENVIRONMENT_NAME, fullmatch=True))
def test_resource_names_are_valid_for_any_azd_environment_name(environment_name: str):
    check_names(environment_name)


def test_distinct_environment_names_give_distinct_resources():
    # "a.b" and "a_b" share a prefix; the token (from the raw name) still tells them apart.
    first, second = resource_names("a.b"), resource_names("a_b")
    same = [type_ for type_ in first if type_.count("/") == 1 and first[type_] == second[type_]]
    assert not same, f"a.b and a_b share the names of {same}"


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True))
def test_environments_named_as_before_keep_their_resource_names(environment_name: str):
    token = evaluate(parse(MAIN), "resourceToken", deployment("SingleTenant", environmentName=environment_name))
    expected = {
        type_: pattern.format(prefix=environment_name.lower(), token=token) for type_, pattern in NAMES_BEFORE.items()
    }
    assert resource_names(environment_name) == expected


def test_the_identity_survives_redeploys():
    # The identity's client id is the bot's app id (msaAppId, fixed when the bot is created):
    # its name must depend on the environment name only (with subscription and resource
    # group, through the token), never on a parameter a redeploy may change.
    main = parse(MAIN)
    identity = the_resource(MAIN, "Microsoft.ManagedIdentity/userAssignedIdentities")
    assert parameter_dependencies(main, identity.body["name"]) == {"environmentName"}
    assert render(main["variables"]["resourceToken"]["value"]) == (
        "toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))"
    ), "the token names every resource: changing it recreates them all, the identity included"
    assert identity.condition is None and identity.loop is None


def test_resources_tagged_for_azd():
    params = deployment("UserAssignedMSI", environmentName="My_Env")
    tagged = resource_tags(params)
    for res, tags in tagged:
        assert tags.get("azd-env-name") == "My_Env", f"{res.where}: azd-env-name tag {tags.get('azd-env-name')!r}"
    carriers = [res.where for res, tags in tagged if "azd-service-name" in tags]
    site = the_resource(MODULES / "functionapp.bicep", "Microsoft.Web/sites")
    assert carriers == [site.where], f"azd-service-name must name one resource, the function app: {carriers}"
    # Every top-level resource that takes tags has them (role assignments take none).
    untagged = [
        res.where
        for path in BICEP_FILES
        for res in resources(path)
        if res.type.count("/") == 1
        and not res.existing
        and res.type != "Microsoft.Authorization/roleAssignments"
        and "tags" not in res.body
    ]
    assert not untagged, f"resources without tags: {untagged}"


# ---------------------------------------------------------------------------
# SingleTenant parameters
# ---------------------------------------------------------------------------


def deploy_variables(params: dict[str, Any]) -> dict[str, Any]:
    """main.bicep's variables evaluated in order, as ARM evaluates a template's variables
    before it creates anything: a fail() among them stops the deployment there."""
    main = parse(MAIN)
    return {name: evaluate(main, name, params) for name in main["variables"]}


@pytest.mark.parametrize(
    ("app_id", "password", "missing"),
    [
        ("", "app-registration-secret", "botAppId"),
        ("11111111-2222-3333-4444-555555555555", "", "botAppPassword"),
        ("", "", "botAppId"),
    ],
)
def test_single_tenant_without_its_app_registration_fails_before_any_resource(app_id: str, password: str, missing: str):
    params = deployment("SingleTenant", botAppId=app_id, botAppPassword=password)
    for evaluation in (
        lambda: deploy_variables(params),
        lambda: app_settings("SingleTenant", botAppId=app_id, botAppPassword=password)["MicrosoftAppId"],
        lambda: evaluate(parse(MAIN), module_using("bot.bicep").params["appId"], params),
    ):
        with pytest.raises(TemplateFailure) as failure:
            evaluation()
        message = str(failure.value)
        assert missing in message and "SingleTenant" in message, message


def test_single_tenant_with_its_app_registration_and_msi_without_one_deploy():
    deploy_variables(deployment("UserAssignedMSI"))  # botAppId and botAppPassword stay empty
    params = deployment("SingleTenant")
    deploy_variables(params)
    assert app_settings("SingleTenant")["MicrosoftAppId"] == params["botAppId"]
    main = parse(MAIN)
    for name in ("botAppId", "botAppPassword"):
        assert main["parameters"][name]["default"] == "", f"{name} must stay optional for UserAssignedMSI"


# ---------------------------------------------------------------------------
# Scale
# ---------------------------------------------------------------------------


def test_maximum_instance_count_is_described_per_scale_group():
    for path in (MAIN, MODULES / "functionapp.bicep"):
        decl = parse(path)["parameters"]["maximumInstanceCount"]
        args = {d["type"]: d["argument"] for d in decl["decorators"]}
        assert (args.get("min_value"), args.get("max_value")) == (1, 1000), f"{rel(path)}: {args}"
        assert "per scale group" in args.get("description", ""), f"{rel(path)}: say that the limit is per scale group"
    description = {d["type"]: d["argument"] for d in parse(MAIN)["parameters"]["maximumInstanceCount"]["decorators"]}
    assert "per tenant" in description["description"], "say that more instances do not mean more sends per tenant"


# ---------------------------------------------------------------------------
# Secrets: parameters and outputs
# ---------------------------------------------------------------------------

_SECRET_WORDS = re.compile(
    r"password|passwd|pwd|secret|token|credential|connectionstring|(?:api|access|account|shared)key|key$",
    re.IGNORECASE,
)
_NOT_A_SECRET = re.compile(r"(Name|Uri|Url|Id|Type|Names)$")


def looks_secret(name: str) -> bool:
    """`botAppPassword`, `secretValue`, `apiKey`: yes. `secretName`, `keyVaultName`: no."""
    return bool(_SECRET_WORDS.search(name)) and not _NOT_A_SECRET.search(name)


def test_secret_detector():
    assert looks_secret("botAppPassword") and looks_secret("secretValue") and looks_secret("apiKey")
    assert not looks_secret("secretName") and not looks_secret("keyVaultName") and not looks_secret("botAppId")


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_secret_like_params_are_secure(path: Path):
    for name, decl in parse(path)["parameters"].items():
        if looks_secret(name):
            assert "secure" in decorators(decl), f"{rel(path)}: param {name} looks like a secret: add @secure()"
        if "secure" in decorators(decl):
            assert decl.get("default") in (None, ""), f"{rel(path)}: @secure() param {name} has a default value"


# Outputs named like secrets that are not: with DisableLocalAuth, the Application Insights
# connection string only addresses the resource; sending telemetry needs an Entra token.
NOT_SECRET_OUTPUTS = {("monitoring.bicep", "connectionString")}


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_outputs_hold_no_secrets(path: Path):
    doc = parse(path)
    secure = [name for name, decl in doc["parameters"].items() if "secure" in decorators(decl)]
    for name, output in doc.get("outputs", {}).items():
        for param in secure:
            assert not references(output["value"], param), f"{rel(path)}: output {name} uses @secure() param {param}"
        text = json.dumps(output["value"])
        assert not re.search(r"\blist[A-Z_]\w*|getSecret", text), f"{rel(path)}: output {name} calls list*/getSecret"
        if (path.name, name) not in NOT_SECRET_OUTPUTS:
            assert not looks_secret(name), f"{rel(path)}: output {name} is named like a secret"


def test_outputs_a_user_needs_next():
    outputs = parse(MAIN)["outputs"]
    for name in (
        "AZURE_FUNCTION_APP_NAME",
        "SERVICE_BOT_BASE_URL",
        "AZURE_BOT_MESSAGING_ENDPOINT",
        "AZURE_BOT_NAME",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_MANAGED_IDENTITY_CLIENT_ID",
        "AZURE_BOT_APP_ID",
        "API_KEY_COMMAND",
    ):
        assert name in outputs, f"main.bicep should output {name}"


def _keyed_functions() -> dict[str, str]:
    """function_app.py's HTTP functions that need a key (all but the anonymous ones), with their routes."""
    keyed = {}
    for node in ast.parse((ROOT / "function_app.py").read_text()).body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "route":
                options = {k.arg: k.value for k in deco.keywords}
                auth = options.get("auth_level")
                if not (isinstance(auth, ast.Attribute) and auth.attr == "ANONYMOUS"):
                    keyed[node.name] = ast.literal_eval(options["route"])
    return keyed


def test_the_api_key_command_prints_the_host_key_that_opens_every_keyed_function():
    """Function keys are per function in Azure; the host key opens every function-level route. The output prints
    that one, as docs/deploy.md shows it, and the docs name each function that has a key of its own."""
    assert _keyed_functions() == {"notify": "notify", "notify_job": "notify/{id}", "reminders": "reminders"}
    app_level = re.search(r"http_auth_level=func\.AuthLevel\.(\w+)", (ROOT / "function_app.py").read_text())
    assert app_level and app_level.group(1) == "FUNCTION", "the host key opens function-level routes, not admin ones"
    command = parse(MAIN)["outputs"]["API_KEY_COMMAND"]["value"]
    assert command == (
        "az functionapp keys list --resource-group ${resourceGroup().name} --name "
        "${functionApp.outputs.name} --query functionKeys.default --output tsv"
    )
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    section = deploy.split("## The API's key", 1)[1].split("\n## ", 1)[0]
    documented = command.replace("${resourceGroup().name}", "rg-mybot").replace(
        "${functionApp.outputs.name}", "<AZURE_FUNCTION_APP_NAME>"
    )
    assert documented in section
    assert (
        "az functionapp function keys list --resource-group rg-mybot --name <AZURE_FUNCTION_APP_NAME> "
        "--function-name notify --query default --output tsv" in section
    )
    for name, route in _keyed_functions().items():
        assert f"`{name}` (" in section and f"/api/{route}" in section, name
    assert 'eval "$(azd env get-value API_KEY_COMMAND)"' in section and "azd env get-values" in section


# ---------------------------------------------------------------------------
# azd
# ---------------------------------------------------------------------------


def test_azd_project_and_parameters():
    azure_yaml = (ROOT / "azure.yaml").read_text()
    service = re.search(r"^services:\s*\n\s+([\w-]+):", azure_yaml, re.MULTILINE)
    assert service, "azure.yaml should declare one service"
    assert re.search(r"^\s+host:\s*function\s*$", azure_yaml, re.MULTILINE)
    assert re.search(r"^\s+language:\s*(python|py)\s*$", azure_yaml, re.MULTILINE)
    carriers = {res.where: tags["azd-service-name"] for res, tags in resource_tags() if "azd-service-name" in tags}
    site = the_resource(MODULES / "functionapp.bicep", "Microsoft.Web/sites")
    assert carriers == {site.where: service.group(1)}, (
        f"azd-service-name must be on the function app only, naming the azure.yaml service: {carriers}"
    )

    declared = parse(MAIN)["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    read = set(re.findall(r"\$\{(\w+)", json.dumps(given)))  # ${BOT_APP_ID=}: the azd variables it reads
    assert {"AZURE_ENV_NAME", "BOT_APP_ID"} <= read
    for name in parse(MAIN)["outputs"]:
        # azd keeps every output in the environment under its name: in its UPPER_SNAKE form, as Microsoft's azd
        # templates name them, and never a variable the parameters read (it would feed the next provision).
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", name), f"output {name} is not in azd's UPPER_SNAKE form"
        assert name not in read, f"output {name} would become the value of the parameter that reads it"
    assert not set(given) - set(declared), (
        f"main.parameters.json sets unknown params {sorted(set(given) - set(declared))}"
    )
    missing = {name for name, decl in declared.items() if is_required(decl)} - set(given)
    assert not missing, f"main.parameters.json misses required params {sorted(missing)}"

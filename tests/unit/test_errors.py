"""One error model: every error botcore raises has a kind, and each edge maps every kind."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path

import botcore
from botcore.errors import BadInputError, BotError, ConfigurationError, ConflictError, NotFoundError, UnavailableError
from botcore.responses import response_for
from botcore.worker import _hopeless

KINDS = (BadInputError, NotFoundError, ConflictError, UnavailableError, ConfigurationError)
KIND_CODES = {
    BadInputError: "BadRequest",
    NotFoundError: "NotFound",
    ConflictError: "Conflict",
    UnavailableError: "ServiceUnavailable",
    ConfigurationError: "BotMisconfigured",
}
PROGRAMMING_ERRORS = {"TypeError", "NotImplementedError"}  # misuse of an API by botcore itself, never input


def _modules() -> list:
    return [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(botcore.__path__, "botcore.")
        if not m.name.endswith("__main__")
    ]


def _error_classes() -> list[type[BaseException]]:
    found = {
        cls
        for module in _modules()
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("botcore")
    }
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__name__}")


# The arguments of each constructor botcore defines, by the class that defines it, from the error's text and
# the code the upstream service answered with. A class without a constructor of its own takes its text.
CONSTRUCTORS: dict[str, Callable[[str, str], tuple]] = {
    "ConnectorError": lambda text, service_code: (503, service_code, text, "operation-1"),
    "RetryableConnectorError": lambda text, service_code: (503, service_code, text, "operation-1", 2.0),
    "StorageError": lambda text, service_code: (503, service_code, text),
    "TransactionFailedError": lambda text, service_code: (409, service_code, text, 3),
    "TokenError": lambda text, service_code: (text, 503, service_code),
    "AuthenticationError": lambda text, service_code: (text,),
}


def _constructor_owner(cls: type[BaseException]) -> type:
    return next(c for c in cls.__mro__ if "__init__" in vars(c))


def _instance(
    cls: type[BaseException], text: str = "what went wrong", service_code: str = "ServerBusy"
) -> BaseException:
    """`cls` built through its own constructor, as botcore builds it."""
    owner = _constructor_owner(cls)
    if not owner.__module__.startswith("botcore"):
        return cls(text)
    return cls(*CONSTRUCTORS[owner.__name__](text, service_code))


def _kind(cls: type[BaseException]) -> type[BotError]:
    return next(k for k in KINDS if issubclass(cls, k))


def test_every_constructor_of_botcore_is_exercised() -> None:
    owners = {_constructor_owner(cls) for cls in _error_classes()}
    own = {owner.__name__ for owner in owners if owner.__module__.startswith("botcore")}
    assert own == set(CONSTRUCTORS), "a new constructor needs its arguments in CONSTRUCTORS"


def test_the_scan_sees_the_errors_of_every_layer() -> None:
    names = {c.__name__ for c in _error_classes()}
    assert {
        "ActivityError",
        "AuthenticationError",
        "ConversationGoneError",
        "EntityChangedError",
        "JobError",
        "TokenError",
        "UntrustedServiceUrlError",
        "StateTooLargeError",
    } <= names
    assert len(names) >= 30


def test_every_error_has_exactly_one_kind() -> None:
    for cls in _error_classes():
        assert issubclass(cls, BotError), f"{cls.__module__}.{cls.__name__} is not a BotError"
        if cls in (BotError, *KINDS) or cls.__name__ in ("ConnectorError", "StorageError"):
            continue  # the root, the kinds, and two bases whose subclasses each pick a kind
        kinds = [k for k in KINDS if issubclass(cls, k)]
        assert len(kinds) == 1, f"{cls.__name__} has kinds {kinds}"


def test_every_error_maps_at_the_http_edge_to_an_explained_status() -> None:
    for cls in _error_classes():
        if cls in (BotError, ConflictError.__base__) or not any(issubclass(cls, k) for k in KINDS):
            continue
        response = response_for(_instance(cls), "test")
        error = response.body["error"]
        assert error["code"] != "InternalError" and error["message"], cls
        assert error["code"] == (cls.code or KIND_CODES[_kind(cls)]), cls  # the public code, never the service's
        if issubclass(cls, ConfigurationError):
            assert (response.status, error["code"]) == (500, "BotMisconfigured"), cls
        else:
            assert 400 <= response.status < 500 or response.status == 503, (cls, response.status)
        if issubclass(cls, UnavailableError):
            assert response.status == 503 and int(response.headers["Retry-After"]) >= 1, cls


def test_every_error_maps_at_the_queue_edge_to_retry_or_poison() -> None:
    for cls in _error_classes():
        exc = _instance(cls)
        hopeless = _hopeless(exc)
        if issubclass(cls, BadInputError) or getattr(cls, "permanent", False):
            assert hopeless, f"{cls.__name__} can never succeed: it must go to poison at once"
        else:
            assert not hopeless, f"{cls.__name__} may succeed later: the host must retry it"


def test_anything_else_is_a_logged_500_without_its_text(caplog) -> None:
    response = response_for(RuntimeError("secret detail"), "test")
    assert response.status == 500 and "secret detail" not in response.json_bytes().decode()
    assert "secret detail" in caplog.text  # the traceback is in the log


def test_botcore_raises_only_its_own_errors() -> None:
    """Every `raise X(...)` under botcore/ names a BotError, or a programming error that input never causes."""
    classes = {c.__name__: c for c in _error_classes()}
    for path in Path(botcore.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                name = node.exc.func.id
                assert name in PROGRAMMING_ERRORS or issubclass(classes.get(name, type(None)), BotError), (
                    f"{path.name}:{node.lineno} raises {name}"
                )


def test_a_5xx_answer_says_fixed_words_and_only_the_log_has_the_detail(caplog) -> None:
    """An error's text may name a storage host and port, an SDK's exception, a setting's value: a 4xx is the
    caller's own mistake, so it is shown; a 5xx is not, so it is logged, with the invocation."""
    detail = "table botconversations: read: ServiceRequestError: Cannot connect to host 127.0.0.1:10002"
    answered = 0
    for cls in _error_classes():
        if cls in (BotError, ConflictError.__base__) or not any(issubclass(cls, k) for k in KINDS):
            continue
        exc = _instance(cls, detail, service_code="ServerBusy")  # as storage or the Connector answered
        caplog.clear()
        response = response_for(exc, "handle_notify (invocation 0f8c)")
        if response.status < 500:
            continue
        answered += 1
        body = response.json_bytes().decode()
        for leak in ("127.0.0.1", "10002", "ServiceRequestError", "botconversations", "ServerBusy", cls.__name__):
            assert leak not in body, (cls, body)
        assert detail in caplog.text and "invocation 0f8c" in caplog.text, cls
    assert answered >= 10


def test_an_upstream_code_is_the_service_code_and_never_the_public_code() -> None:
    carriers = 0
    for cls in _error_classes():
        exc = _instance(cls, service_code="ConversationBlockedByUser")
        if not hasattr(exc, "service_code"):
            continue
        carriers += 1
        assert exc.service_code == "ConversationBlockedByUser" and exc.code == cls.code, cls
    assert carriers >= 12  # storage's, the Connector's and the token errors

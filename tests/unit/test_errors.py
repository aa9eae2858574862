"""One error model: every error botcore raises has a kind, and each edge maps every kind."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import botcore
from botcore.errors import BadInputError, BotError, ConfigurationError, ConflictError, NotFoundError, UnavailableError
from botcore.responses import response_for
from botcore.worker import _hopeless

KINDS = (BadInputError, NotFoundError, ConflictError, UnavailableError, ConfigurationError)
PROGRAMMING_ERRORS = {"TypeError", "NotImplementedError"}  # misuse of an API by botcore itself, never input


def _modules() -> list:
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(botcore.__path__, "botcore.")
            if not m.name.endswith("__main__")]


def _error_classes() -> list[type[BaseException]]:
    found = {cls for module in _modules() for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, BaseException) and cls.__module__.startswith("botcore")}
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__name__}")


def _instance(cls: type[BaseException]) -> BaseException:
    exc = cls.__new__(cls)
    Exception.__init__(exc, "what went wrong")
    return exc


def test_the_scan_sees_the_errors_of_every_layer() -> None:
    names = {c.__name__ for c in _error_classes()}
    assert {"ActivityError", "AuthenticationError", "ConversationGoneError", "EntityChangedError", "JobError",
            "TokenError", "UntrustedServiceUrlError", "StateTooLargeError"} <= names
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
                assert name in PROGRAMMING_ERRORS or issubclass(classes.get(name, type(None)), BotError), \
                    f"{path.name}:{node.lineno} raises {name}"


def test_a_5xx_answer_says_fixed_words_and_only_the_log_has_the_detail(caplog) -> None:
    """An error's text may name a storage host and port, an SDK's exception, a setting's value: a 4xx is the
    caller's own mistake, so it is shown; a 5xx is not, so it is logged, with the invocation."""
    detail = "table botconversations: read: ServiceRequestError: Cannot connect to host 127.0.0.1:10002"
    answered = 0
    for cls in _error_classes():
        if cls in (BotError, ConflictError.__base__) or not any(issubclass(cls, k) for k in KINDS):
            continue
        exc = cls.__new__(cls)
        Exception.__init__(exc, detail)
        exc.code = "ServerBusy"  # as a storage or Connector error carries the code the service answered
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

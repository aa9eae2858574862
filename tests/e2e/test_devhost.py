"""The local Functions host, run as a subprocess and driven over HTTP and Azurite only."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient

from tests.botstack import BotStack, wait_until
from tests.hostproc import REPO, HostProcess, free_port

APP = Path(__file__).parent / "devhost_app"
KEY = "test-function-key"


def make_app(tmp_path: Path, encoding: str) -> Path:
    app = tmp_path / f"app-{encoding}"
    shutil.copytree(APP, app)
    host = json.loads((app / "host.json").read_text())
    host["extensions"]["queues"]["messageEncoding"] = encoding
    (app / "host.json").write_text(json.dumps(host))
    return app


class Seen:
    def __init__(self, connection: str) -> None:
        service = TableServiceClient.from_connection_string(connection)
        try:
            service.create_table("devhostseen")
        except ResourceExistsError:
            pass
        self.table = service.get_table_client("devhostseen")

    def of(self, kind: str) -> list[dict]:
        rows = [json.loads(e["data"]) for e in self.table.query_entities(f"PartitionKey eq '{kind}'")]
        return rows

    def wait(self, kind: str, predicate, timeout: float = 15.0) -> list[dict]:
        assert wait_until(lambda: predicate(self.of(kind)), timeout=timeout, interval=0.1), (
            f"timed out waiting for {kind}: {self.of(kind)}"
        )
        return self.of(kind)


@pytest.fixture(scope="module", params=["base64", "none"])
def hosted(request, storage_connection_string, tmp_path_factory):
    encoding = request.param
    queue = f"work-{encoding}"
    tmp = tmp_path_factory.mktemp("devhost")
    env = {
        "TestStorage": storage_connection_string,
        "LocalFunctionKey": KEY,
        "WorkQueue": queue,
        "TickSchedule": "*/2 * * * * *",
    }
    host = HostProcess(make_app(tmp, encoding), env, tmp / "host.log")
    try:
        yield (
            host,
            encoding,
            QueueClient.from_connection_string(storage_connection_string, queue),
            QueueClient.from_connection_string(storage_connection_string, f"{queue}-poison"),
            Seen(storage_connection_string),
        )
    finally:
        host.stop()


def encode(text: str, encoding: str) -> str:
    return base64.b64encode(text.encode()).decode() if encoding == "base64" else text


def test_http_function_answers_under_the_prefix_with_route_parameters(hosted) -> None:
    host = hosted[0]
    r = httpx.post(f"{host.base_url}/api/items/42/widget?x=1", content=b"hello")
    assert r.status_code == 200
    assert r.json() == {"route": {"id": "42", "name": "widget"}, "query": {"x": "1"}, "body": "hello", "method": "POST"}
    assert httpx.get(f"{host.base_url}/api/items/7").json()["route"] == {"id": "7"}
    assert httpx.get(f"{host.base_url}/api/items/notanumber").status_code == 404
    assert httpx.get(f"{host.base_url}/items/7").status_code == 404
    assert httpx.delete(f"{host.base_url}/api/items/7").status_code == 405


def test_function_key_routes_need_the_key(hosted) -> None:
    host = hosted[0]
    assert httpx.get(f"{host.base_url}/api/secret").status_code == 401
    assert httpx.get(f"{host.base_url}/api/secret?code=wrong").status_code == 401
    assert httpx.get(f"{host.base_url}/api/secret?code={KEY}").text == "the secret"
    assert httpx.get(f"{host.base_url}/api/secret", headers={"x-functions-key": KEY}).status_code == 200


def test_a_failing_function_is_a_500_and_the_host_carries_on(hosted) -> None:
    host = hosted[0]
    failed = httpx.get(f"{host.base_url}/api/boom")
    assert failed.status_code == 500
    assert failed.json() == {"error": {"code": "InternalError", "message": "the function failed; see the host log"}}
    assert httpx.get(f"{host.base_url}/api/items/1").status_code == 200
    assert "deliberate failure" in host.log()


def test_queue_message_reaches_its_function_and_is_deleted(hosted) -> None:
    host, encoding, queue, _, seen = hosted
    sent = queue.send_message(encode("hello-queue", encoding))
    rows = seen.wait("work", lambda rows: any(r["id"] == sent.id for r in rows))
    assert next(r for r in rows if r["id"] == sent.id) == {"id": sent.id, "body": "hello-queue", "dequeue_count": 1}
    assert wait_until(lambda: queue.get_queue_properties().approximate_message_count == 0, timeout=5)


def test_failing_message_is_retried_then_lands_in_poison(hosted) -> None:
    host, encoding, queue, poison, seen = hosted
    sent = queue.send_message(encode("fail-me", encoding))
    rows = seen.wait("work", lambda rows: len([r for r in rows if r["id"] == sent.id]) >= 3)
    assert sorted(r["dequeue_count"] for r in rows if r["id"] == sent.id) == [1, 2, 3]
    assert wait_until(
        lambda: encode("fail-me", encoding) in [m.content for m in poison.peek_messages(32)], timeout=10
    ), "the original message body goes to the poison queue"


def test_undecodable_base64_goes_straight_to_poison(hosted) -> None:
    host, encoding, queue, poison, seen = hosted
    if encoding != "base64":
        pytest.skip("only base64 encoding can be malformed")
    queue.send_message("not base64 !!!")
    assert wait_until(lambda: "not base64 !!!" in [m.content for m in poison.peek_messages(32)], timeout=10)
    assert "not valid base64" in host.log()


@pytest.mark.slow
def test_timer_runs_on_startup_and_on_its_schedule(hosted) -> None:
    seen = hosted[4]
    rows = seen.wait("tick", lambda rows: len(rows) >= 3, timeout=10)
    assert all(r["past_due"] is False for r in rows)


@pytest.mark.slow
def test_ctrl_c_loses_no_queue_message(storage_connection_string, tmp_path) -> None:
    queue_name = "work-shutdown"
    env = {
        "TestStorage": storage_connection_string,
        "LocalFunctionKey": KEY,
        "WorkQueue": queue_name,
        "TickSchedule": "0 0 0 1 1 *",
    }
    host = HostProcess(make_app(tmp_path, "none"), env, tmp_path / "host.log")
    queue = QueueClient.from_connection_string(storage_connection_string, queue_name)
    seen = Seen(storage_connection_string)
    try:
        sent = [queue.send_message(f"slow:1.5:{i}") for i in range(3)]
        assert wait_until(lambda: host.log().count("Executing 'Functions.work'") >= 3, timeout=10)
        assert host.interrupt() == 0  # while all three are still running
    finally:
        host.stop()
    done = {r["id"] for r in seen.of("work")}
    left = {m.id for m in queue.peek_messages(32)}
    hidden = queue.get_queue_properties().approximate_message_count
    assert {m.id for m in sent} <= done | left and hidden == len(left), (done, left, hidden)
    assert "waiting for 3 running invocation(s)" in host.log() and "Host stopped" in host.log()
    assert done >= {m.id for m in sent}, "in-flight invocations finish before the host exits"


def test_the_host_log_writes_lines_in_bursts_and_warnings_at_once(tmp_path) -> None:
    import logging

    from devhost.logs import DELAY, BurstHandler

    path = tmp_path / "host.log"
    with open(path, "w", buffering=1 << 16) as stream:
        handler = BurstHandler(stream)
        logger = logging.getLogger("devhost-test-burst")
        logger.addHandler(handler)
        logger.propagate, logger.level = False, logging.INFO
        try:
            for i in range(100):
                logger.info("line %d", i)
            assert wait_until(lambda: path.read_text().count("\n") >= 100, timeout=5, interval=DELAY)
            assert path.read_text().splitlines() == [f"line {i}" for i in range(100)]
            logger.info("quiet")
            logger.warning("loud")  # written at once, with what came before it
            assert path.read_text().splitlines()[-2:] == ["quiet", "loud"]
        finally:
            logger.removeHandler(handler)
            handler.close()


@pytest.mark.slow
def test_the_banner_names_the_key_and_a_notify_request_to_paste(storage_connection_string, tmp_path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("the banner's request is a curl command")
    env = {
        "BotStorage": storage_connection_string,
        "AzureWebJobsStorage": storage_connection_string,
        "LocalFunctionKey": "banner-key",
    }
    BotStack._init_storage(env)
    host = HostProcess(REPO, env, tmp_path / "host.log")
    try:
        assert wait_until(lambda: "Talk to the bot" in host.log())  # the log is written in bursts
        banner = host.log()
        runner = "Microsoft's Python worker library" if sys.version_info >= (3, 13) else "the host's own loader"
        assert f"Functions, run through {runner} (" in banner
        assert (
            "Function key: banner-key (LocalFunctionKey), sent as ?code=<key> or the x-functions-key header" in banner
        )
        [request] = [line.strip() for line in banner.splitlines() if line.strip().startswith("curl ")]
        assert request.startswith(
            f"curl -X POST http://localhost:{host.port}/api/notify -H 'x-functions-key: banner-key'"
        )
        pasted = subprocess.run(request, shell=True, capture_output=True, text=True, timeout=30)
        assert json.loads(pasted.stdout)["status"].startswith("/api/notify/"), pasted
        assert f"-m devhost chat --bot http://localhost:{host.port}/api/messages\n" in banner
        assert f"Bot Framework Emulator at http://localhost:{host.port}/api/messages (no app id" in banner
    finally:
        host.stop()


@pytest.mark.slow
def test_without_local_function_key_the_banner_shows_the_key_made_for_the_run(
    storage_connection_string, tmp_path
) -> None:
    env = {
        "TestStorage": storage_connection_string,
        "LocalFunctionKey": "",
        "WorkQueue": "work-key",
        "TickSchedule": "0 0 0 1 1 *",
    }
    host = HostProcess(make_app(tmp_path, "none"), env, tmp_path / "host.log")
    try:
        assert wait_until(lambda: "Function key: " in host.log())
        [line] = [line for line in host.log().splitlines() if line.startswith("Function key: ")]
        key = line.split()[2]
        assert line == (
            f"Function key: {key} (made for this run: set LocalFunctionKey in local.settings.json to "
            "keep one), sent as ?code=<key> or the x-functions-key header"
        )
        assert httpx.get(f"{host.base_url}/api/secret?code={key}").text == "the secret"
    finally:
        host.stop()


def devhost(*args: str, env: dict[str, str], app_dir: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devhost", "--app-dir", str(app_dir), *args],
        cwd=str(REPO),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_in_use_is_one_line_naming_it_and_the_flag(storage_connection_string, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "TestStorage": storage_connection_string,
            "LocalFunctionKey": KEY,
            "WorkQueue": "work-port",
            "TickSchedule": "0 0 0 1 1 *",
        }
        result = devhost("start", "--port", str(port), env=env, app_dir=make_app(tmp_path, "none"))
    assert result.returncode == 2
    [line] = (result.stdout + result.stderr).strip().splitlines()
    assert line.endswith(
        f"ERROR devhost: cannot start: port {port} is in use (another host?): choose another port with --port"
    )


def test_a_queue_lease_that_is_no_whole_number_of_seconds_is_one_line(storage_connection_string, tmp_path) -> None:
    env = {
        "TestStorage": storage_connection_string,
        "LocalFunctionKey": KEY,
        "WorkQueue": "work-lease",
        "TickSchedule": "0 0 0 1 1 *",
        "LocalQueueLeaseSeconds": "0.5",
    }
    result = devhost("start", "--port", str(free_port()), env=env, app_dir=make_app(tmp_path, "none"))
    assert result.returncode == 2
    [line] = (result.stdout + result.stderr).strip().splitlines()
    assert line.endswith(
        "ERROR devhost: cannot start: LocalQueueLeaseSeconds must be a whole number of seconds, at least 3, not '0.5'"
    )


def test_unreachable_storage_is_one_line_naming_the_endpoint(tmp_path) -> None:
    from devhost.azurite import connection_string

    dead = f"http://127.0.0.1:{free_port()}"
    storage = {"BotStorage": connection_string(dead, dead), "AzureWebJobsStorage": connection_string(dead, dead)}
    started = devhost("start", "--port", str(free_port()), env=storage)
    assert started.returncode == 2
    [line] = (started.stdout + started.stderr).strip().splitlines()
    assert line.endswith(
        f"ERROR devhost: cannot start: cannot reach storage at {dead} (setting BotStorage) for "
        "queue bot-jobs: is Azurite running? scripts/run starts it"
    )
    init = devhost("init-storage", env=storage)
    assert init.returncode == 1
    [line] = (init.stdout + init.stderr).strip().splitlines()
    assert "ERROR devhost: cannot create the tables and queues (" in line and dead.split("//")[1] in line
    assert line.endswith("): is Azurite running? scripts/run starts it")

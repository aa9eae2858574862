"""The fake Connector's Teams mode over real HTTP: rate limits, latency, members paging, create conversation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from devhost.channel import FakeConnector, TeamsLimits, Window

FAST = 0.001  # a service time median that keeps the limit tests quick


def activity(text: str, conversation_id: str, tenant_id: str | None = None) -> dict[str, Any]:
    conversation: dict[str, Any] = {"id": conversation_id}
    if tenant_id:
        conversation["tenantId"] = tenant_id
    return {"type": "message", "text": text, "conversation": conversation}


def send(http: httpx.AsyncClient, conversation_id: str, text: str, tenant_id: str | None = "t1"):
    return http.post(f"/v3/conversations/{conversation_id}/activities", json=activity(text, conversation_id, tenant_id))


class Clock:
    """A clock for Teams mode's windows that moves only when the test moves it: the limits then count the
    requests a test sends together as sent at one instant, however busy the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def teams(clock):
    with FakeConnector(teams=TeamsLimits(latency_median=FAST), clock=clock) as fake:
        yield fake


@pytest.fixture
async def http(teams):
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=teams.base_url, limits=limits, timeout=10) as client:
        yield client


async def test_a_tenant_gets_50_requests_a_second_then_429_with_a_retry_after_that_works(teams, http, clock) -> None:
    delivered: list[str] = []
    teams.on_activity(lambda r: delivered.append(r.body["text"]))
    await asyncio.gather(*(http.get("/v3/conversations/warm/pagedmembers") for _ in range(60)))  # connections
    teams.clear()  # (the warm-up counted for the unknown tenant, not t1)
    messages = [(f"c{i % 20}", f"m{i}") for i in range(60)]  # 3 per conversation: under its own limits
    answers = await asyncio.gather(*(send(http, cid, text) for cid, text in messages))  # in the same second

    refused = [(m, a) for m, a in zip(messages, answers, strict=True) if a.status_code == 429]
    assert sorted(a.status_code for a in answers) == [200] * 50 + [429] * 10
    for _, answer in refused:
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["error"]["code"] == "Throttled"
    assert len(teams.requests) == len(delivered) == 50  # a refused request is not a delivery
    assert [r.status for r in teams.faulted] == [429] * 10
    assert (teams.tenants["t1"].accepted, teams.tenants["t1"].refused, teams.tenants["t1"].peak) == (50, 10, 50)

    clock.advance(max(int(a.headers["Retry-After"]) for _, a in refused))
    again = await asyncio.gather(*(send(http, cid, text) for (cid, text), _ in refused))
    assert [a.status_code for a in again] == [200] * 10
    assert sorted(delivered) == sorted(text for _, text in messages)
    assert teams.tenants["t1"].peak == 50  # never more than the limit in any second


async def test_a_conversation_gets_7_a_second_and_8_in_2_seconds(teams, http, clock) -> None:
    cid = "19:chat@thread.v2"
    operations = [
        send(http, cid, "a"),
        send(http, cid, "b"),
        http.post(f"/v3/conversations/{cid}/activities/act-1", json=activity("reply", cid, "t1")),
        http.put(f"/v3/conversations/{cid}/activities/act-1", json=activity("edited", cid, "t1")),
        http.delete(f"/v3/conversations/{cid}/activities/act-1"),
        send(http, cid, "c"),
        send(http, cid, "d"),
    ]
    assert [(await op).status_code for op in operations] == [200] * 7  # sends, replies, updates, deletes all count
    eighth = await send(http, cid, "e")
    assert eighth.status_code == 429 and eighth.headers["Retry-After"] == "1"
    assert (await http.get(f"/v3/conversations/{cid}/pagedmembers")).status_code == 200  # not a conversation op

    clock.advance(1)
    assert (await send(http, cid, "e")).status_code == 200  # the 1 s window has room again, the 2 s one just did
    ninth = await send(http, cid, "f")
    assert ninth.status_code == 429 and ninth.headers["Retry-After"] == "1"  # 8 in 2 s, though 1 in the last second
    assert (teams.conversations[cid].accepted, teams.conversations[cid].refused) == (9, 2)  # members included
    assert (await send(http, "19:other@thread.v2", "x")).status_code == 200  # other conversations are not held up


async def test_retry_after_is_when_the_longest_full_window_frees(clock) -> None:
    limits = TeamsLimits(conversation=(Window(1, 0.2), Window(3, 30.0)), latency_median=FAST)
    with FakeConnector(teams=limits, clock=clock) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            answers = []
            for text, pause in [("a", 0.25), ("b", 0.25), ("c", 0), ("d", 0)]:
                answers.append(await send(http, "c", text))
                clock.advance(pause)
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    # Both windows are full: the 30 s one frees 30 s after "a", 29.5 s on; whole seconds, rounded up.
    assert answers[3].headers["Retry-After"] == "30"


async def test_tenants_are_counted_apart_and_found_in_the_request_or_the_record(clock) -> None:
    with FakeConnector(teams=TeamsLimits(tenant=Window(3, 1.0), latency_median=FAST), clock=clock) as fake:
        fake.set_roster("team-2", 2, "t2")
        fake.require_token(lambda token: token == "good")
        async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": "Bearer good"}) as http:
            assert (await send(http, "a1", "x", "t1")).status_code == 200
            assert (await send(http, "a1", "y", tenant_id=None)).status_code == 200  # a1's tenant was recorded
            by_channel_data = {"text": "z", "conversation": {"id": "a2"}, "channelData": {"tenant": {"id": "t1"}}}
            assert (await http.post("/v3/conversations/a2/activities", json=by_channel_data)).status_code == 200
            assert (await send(http, "a3", "w", "t1")).status_code == 429  # t1's fourth in a second
            assert (await send(http, "b1", "x", "t2")).status_code == 200  # t2 is not held up by t1
            assert (await http.get("/v3/conversations/team-2/pagedmembers")).status_code == 200  # t2, by the roster
            assert (await send(http, "u1", "x", tenant_id=None)).status_code == 200  # nobody's: the unknown tenant
            forged = await http.post(
                "/v3/conversations/b1/activities",
                json=activity("x", "b1", "t2"),
                headers={"Authorization": "Bearer bad"},
            )
            assert forged.status_code == 401
    assert {t: (n.accepted, n.refused) for t, n in fake.tenants.items()} == {
        "t1": (3, 1),
        "t2": (2, 0),
        "unknown": (1, 0),
    }  # the 401 counted for no one
    assert (fake.tenant_of("a1"), fake.tenant_of("a2"), fake.tenant_of("team-2"), fake.tenant_of("u1")) == (
        "t1",
        "t1",
        "t2",
        None,
    )


async def test_service_time_is_lognormal_around_the_median() -> None:
    median = 0.03
    limits = TeamsLimits(tenant=Window(10**6, 1.0), conversation=(), latency_median=median, latency_sigma=0.5, seed=7)
    with FakeConnector(teams=limits) as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            timings: list[float] = []

            async def worker(n: int) -> None:  # few at a time: the client shares this process's CPU
                for i in range(30):
                    start = time.perf_counter()
                    assert (await send(http, f"c{n}", str(i))).status_code == 200
                    timings.append(time.perf_counter() - start)

            await asyncio.gather(*(worker(n) for n in range(8)))
    drawn = sorted(fake.service_times)
    assert len(drawn) == len(timings) == 240
    p50, p90 = drawn[len(drawn) // 2], drawn[len(drawn) * 9 // 10]
    assert median * 0.85 < p50 < median * 1.35
    assert 1.4 < p90 / p50 < 2.6  # exp(1.28 * 0.5) = 1.9 for a lognormal of sigma 0.5
    # Each answer came no sooner than its service time (the machine's own delays only add to it): the times the
    # client saw are at least the drawn ones, quantile by quantile.
    assert all(seen >= took for seen, took in zip(sorted(timings), drawn, strict=True))


async def test_members_page_as_in_teams(teams, http) -> None:
    roster = teams.set_roster("19:team@thread.tacv2", 1234, "t9")
    assert roster == FakeConnector().set_roster("19:team@thread.tacv2", 1234, "t9")  # repeatable
    assert all(m["id"].startswith("29:") and m["aadObjectId"] and m["tenantId"] == "t9" for m in roster)
    assert len({m["id"] for m in roster}) == len({m["aadObjectId"] for m in roster}) == 1234
    path = "/v3/conversations/19:team@thread.tacv2/pagedmembers"

    sizes = {
        size: len((await http.get(path, params={"pageSize": size})).json()["members"])
        for size in (1, 50, 120, 500, 5000)
    }
    assert sizes == {1: 50, 50: 50, 120: 120, 500: 500, 5000: 500}
    assert len((await http.get(path)).json()["members"]) == 200

    seen, token, pages = [], None, 0
    while True:
        query = {"pageSize": 500, **({"continuationToken": token} if token else {})}
        page = (await http.get(path, params=query)).json()
        seen += page["members"]
        pages += 1
        token = page.get("continuationToken")
        if not token:
            break
        assert not token.isdigit()  # opaque
    assert pages == 3 and seen == roster

    first = (await http.get(path, params={"pageSize": 50})).json()["continuationToken"]
    teams.set_roster("19:other@thread.tacv2", 1, "t9")
    elsewhere = await http.get(
        "/v3/conversations/19:other@thread.tacv2/pagedmembers", params={"continuationToken": first}
    )
    bogus = await http.get(path, params={"continuationToken": "50"})
    assert elsewhere.status_code == bogus.status_code == 400
    assert bogus.json()["error"]["code"] == "BadArgument"
    assert teams.tenants["t9"].accepted == 6 + pages + 3  # roster reads count against the tenant


async def test_create_conversation_reuses_a_members_one_to_one_chat(teams, http) -> None:
    def params(member: str, tenant: str, **extra: Any) -> dict[str, Any]:
        return {
            "bot": {"id": "28:bot"},
            "members": [{"id": member}],
            "isGroup": False,
            "tenantId": tenant,
            "channelData": {"tenant": {"id": tenant}},
            **extra,
        }

    first = await http.post("/v3/conversations", json=params("29:alice", "t1"))
    assert first.status_code == 201 and set(first.json()) == {"id"}
    cid = first.json()["id"]
    by_channel_data = {"members": [{"id": "29:alice"}], "channelData": {"tenant": {"id": "t1"}}}
    assert (await http.post("/v3/conversations", json=by_channel_data)).json()["id"] == cid
    others = [
        (await http.post("/v3/conversations", json=body)).json()["id"]
        for body in (params("29:bob", "t1"), params("29:alice", "t2"), params("29:alice", "t1", isGroup=True))
    ]
    assert len({cid, *others}) == 4
    assert (teams.tenant_of(cid), teams.tenant_of(others[1])) == ("t1", "t2")

    no_members = await http.post("/v3/conversations", json={"tenantId": "t1", "members": []})
    no_tenant = await http.post("/v3/conversations", json={"members": [{"id": "29:alice"}]})
    assert no_members.status_code == no_tenant.status_code == 400
    assert no_tenant.json()["error"] == {"code": "BadArgument", "message": "tenantId is required"}
    assert [r.status for r in teams.faulted] == [400, 400] and len(teams.requests) == 5

    await send(http, cid, "hello", tenant_id=None)  # counted for the tenant the create recorded
    assert teams.tenants["t1"].accepted == 5 + 1  # 4 creates, the one without members, this send


async def test_duplicates_are_accepted_sends_of_one_text_to_one_conversation(teams, http) -> None:
    for cid, text in [("c1", "a"), ("c1", "a"), ("c1", "b"), ("c2", "a")]:
        await send(http, cid, text)
    assert teams.duplicates() == {("c1", "a"): 2}
    assert teams.duplicates("c2") == {}


async def test_the_default_mode_limits_nothing_and_answers_as_before() -> None:
    with FakeConnector() as fake:
        async with httpx.AsyncClient(base_url=fake.base_url) as http:
            answers = await asyncio.gather(*(send(http, "c1", str(i)) for i in range(80)))
            created = await http.post("/v3/conversations", json={"members": [{"id": "29:alice"}]})
            fake.members["c1"] = [{"id": f"29:{i}"} for i in range(3)]
            page = (await http.get("/v3/conversations/c1/pagedmembers", params={"pageSize": 2})).json()
    assert {a.status_code for a in answers} == {200} and len(fake.requests) == 82 and not fake.faulted
    assert created.status_code == 200 and created.json()["id"].startswith("conv-")
    assert set(created.json()) == {"id", "serviceUrl", "activityId"}
    assert (len(page["members"]), page["continuationToken"]) == (2, "2")
    assert fake.teams is None and fake.tenants == fake.conversations == {}


def test_the_bench_channel_server_runs_in_teams_mode_with_a_roster_and_teams_stats() -> None:
    from bench.infra import RemoteChannel

    with RemoteChannel.start(teams=True, latency_median=FAST) as channel:
        members = channel.roster("19:team@thread.tacv2", 3, "t1")
        env = channel.env
        token = httpx.post(
            f"{env['BotOAuthAuthorityHost']}/botframework.com/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["MicrosoftAppId"],
                "client_secret": env["MicrosoftAppPassword"],
                "scope": "https://api.botframework.com/.default",
            },
        ).json()["access_token"]
        with httpx.Client(base_url=channel.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            page = http.get("/v3/conversations/19:team@thread.tacv2/pagedmembers").json()
            answers = [
                http.post("/v3/conversations/c1/activities", json=activity(str(i), "c1", "t1")).status_code
                for i in range(8)
            ]
        stats = channel.stats()
    assert page["members"] == members and len(members) == 3
    assert answers == [200] * 7 + [429]
    assert stats["received"] == 8  # as before: accepted requests, the roster read included
    assert stats["teams"] == {
        "tenants": {"t1": {"accepted": 8, "refused": 1, "peak": 8}},
        "conversations": 2,
        "conversations_refused": 1,
        "conversation_max_accepted": 7,
        "duplicates": 0,
    }

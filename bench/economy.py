"""Benchmark 5: token and key economy.

How often the bot asks the identity provider for its own token (token endpoint) and for the
channel's signing keys (JWKS, and the OpenID metadata that points to them), per 10,000 sends and per
10,000 turns, from the local IdP's hit counters. Target: one of each per process lifetime.

The counts come from the processes of benchmarks 1–4 (whose whole lifetimes the IdP saw); run alone,
this benchmark drives one host with turns and a broadcast itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from . import stats
from .infra import azurite, bot_stack, log, seed
from .report import Section


def _own_measurement(tmp: Path, quick: bool) -> dict[str, Any]:
    """Turns, then a broadcast, through one host: counts for each phase of its lifetime."""
    from tests.botstack import APP_ID

    from .broadcast import STACK_ENV, _broadcast
    from .warm_turn import TurnClient

    turns, sends = (200, 500) if quick else (2000, 2000)
    with azurite(tmp / "azurite") as storage, bot_stack(storage.connection_string, tmp / "stack", STACK_ENV) as stack:

        async def talk() -> None:
            async with aiohttp.ClientSession() as session:
                client = TurnClient(stack, session)
                for i in range(turns):
                    await client.post(client.body("economy", "hi" if i == 0 else "help"))

        log(f"economy: {turns} turns through the host")
        asyncio.run(talk())
        after_turns = dict(stack.idp.hits)
        seed(storage.connection_string, sends, stack.service_url, APP_ID)
        log(f"economy: a broadcast to {sends} references through the same host")
        result = _broadcast(stack, storage, sends + 1, timeout=120)  # +1: the talking conversation
        return {
            "turn_economy": {"turns_lifetime": turns, "hits_lifetime": after_turns},
            "broadcast_economy": {
                "sends": result["received"],
                "hits": [{k: result["hits"].get(k, 0) - after_turns.get(k, 0) for k in result["hits"]}],
            },
        }


def _per_10k(count: int, events: int) -> str:
    return stats.number(count * 10_000 / events, 2) if events else "n/a"


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    missing = [k for k in ("turn_economy", "broadcast_economy") if k not in context]
    if missing:  # benchmark 2 or 4 did not run (or failed): measure here
        measured = _own_measurement(tmp, quick)
        for key in missing:
            context[key] = measured[key]
    own = {key: key in missing for key in ("turn_economy", "broadcast_economy")}
    section = Section(
        "5. Token and key economy",
        "Requests the bot made to the local identity provider, from its hit counters, over whole process "
        "lifetimes. `token`: the bot's outbound token (client credentials); `JWKS` / `metadata`: the channel's "
        "signing keys and the OpenID document pointing to them (inbound JWT validation).",
    )
    t = section.table(
        [
            "workload",
            "process",
            "events in its lifetime",
            "token requests",
            "JWKS requests",
            "metadata requests",
            "token per 10,000",
            "JWKS per 10,000",
            "target (per process)",
            "",
        ]
    )

    turns = context["turn_economy"]
    hits, events = turns["hits_lifetime"], turns["turns_lifetime"]
    token, jwks, meta = hits.get("token", 0), hits.get("jwks:channel", 0), hits.get("metadata:channel", 0)
    met = token <= 1 and jwks <= 1
    t.add(
        "turns (measured here)" if own["turn_economy"] else "warm turns (benchmark 2)",
        "local host",
        f"{events:,} turns",
        token,
        jwks,
        meta,
        _per_10k(token, events),
        _per_10k(jwks, events),
        "1 token, 1 JWKS",
        stats.verdict(met),
    )
    section.target(
        "token and JWKS requests per host lifetime, turns", f"{token} token, {jwks} JWKS over {events:,} turns", met
    )

    b = context["broadcast_economy"]
    for i, run_hits in enumerate(b["hits"]):
        token, jwks = run_hits.get("token", 0), run_hits.get("jwks:channel", 0)
        meta = run_hits.get("metadata:channel", 0)
        met = token <= 1 and jwks <= 1
        label = (
            "broadcast (measured here, same host after its turns)"
            if own["broadcast_economy"]
            else f"broadcast run {i + 1} (benchmark 4)"
        )
        t.add(
            label,
            "local host",
            f"{b['sends']:,} sends",
            token,
            jwks,
            meta,
            _per_10k(token, b["sends"]),
            _per_10k(jwks, b["sends"]),
            "1 token, 0–1 JWKS",
            stats.verdict(met),
        )
        if i == 0:
            section.target(
                "token requests per host lifetime, broadcast sends",
                f"{token} token, {jwks} JWKS over {b['sends']:,} sends",
                met,
            )

    if "send_economy" in context:
        s = context["send_economy"]
        token, jwks = s["hits"].get("token", 0), s["hits"].get("jwks:channel", 0)
        t.add(
            "send path (benchmark 3)",
            "benchmark process (`ConnectorClient`)",
            f"{s['sends']:,} sends",
            token,
            jwks,
            s["hits"].get("metadata:channel", 0),
            _per_10k(token, s["sends"]),
            _per_10k(jwks, s["sends"]),
            "1 token",
            stats.verdict(token <= 1),
        )
    for hits in context.get("cold_start_hits", [])[:1]:
        t.add(
            "cold start (benchmark 1)",
            "one fresh process",
            "1 turn",
            hits.get("token", 0),
            hits.get("jwks:channel", 0),
            hits.get("metadata:channel", 0),
            "",
            "",
            "1 token, 1 JWKS",
            stats.verdict(hits.get("token", 0) <= 1 and hits.get("jwks:channel", 0) <= 1),
        )
    section.notes.append(
        '"Per 10,000" scales the lifetime count to 10,000 events; with one request per lifetime '
        "it is simply 10,000 ÷ events. Field notes reference: botbuilder-python makes one token "
        "request per outbound message."
    )
    return section

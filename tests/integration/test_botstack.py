"""The harness itself: what it does so that the fake channel measures the bot, not the process it runs in."""

from __future__ import annotations

import gc

from devhost.channel import TeamsLimits
from tests.botstack import BotStack


def test_a_teams_mode_stack_collects_no_garbage_cycles_while_it_runs_and_all_of_them_once_it_stops(
    storage_connection_string, tmp_path
) -> None:
    """The fake counts Teams' windows in this process: a collection here would stop it, and the requests that
    waited would count as arriving together."""
    collections: list[int] = []

    def collected(phase: str, info: dict) -> None:
        if phase == "stop":
            collections.append(info["generation"])

    gc.callbacks.append(collected)
    try:
        stack = BotStack(storage_connection_string, tmp_path, teams=TeamsLimits(), hosted=False)
        collections.clear()  # those of its start
        try:
            for _ in range(200_000):  # about 300 collections' worth of cycles at the default thresholds
                cycle: list[object] = []
                cycle.append(cycle)
            assert collections == []
        finally:
            stack.stop()
        stack.stop()  # a second stop changes nothing
        assert gc.isenabled() and collections  # the cycles left are collected at once
    finally:
        gc.callbacks.remove(collected)

"""The claim rules (botcore.delivery.claims.decide), pure: whose turn it is to do a piece of work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from botcore.delivery.claims import BUSY, CLAIMED, DONE, decide

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=120)


def _decide(row: dict) -> str:
    return decide(row, status="sending", ttl=TTL, now=NOW, done=("done",))


def test_a_free_row_is_claimed_and_a_finished_one_is_done() -> None:
    assert _decide({}) == CLAIMED
    assert _decide({"status": "planned"}) == CLAIMED
    assert _decide({"status": "released", "claimedAt": NOW}) == CLAIMED  # given up for the next run
    assert _decide({"status": "done", "claimedAt": NOW - timedelta(days=1)}) == DONE


def test_a_live_workers_claim_is_busy_and_a_stopped_ones_is_taken_over() -> None:
    assert _decide({"status": "sending", "claimedAt": NOW - TTL + timedelta(seconds=1)}) == BUSY
    assert _decide({"status": "sending", "claimedAt": NOW - TTL}) == CLAIMED
    assert _decide({"status": "sending"}) == CLAIMED  # a claim with no time is no claim

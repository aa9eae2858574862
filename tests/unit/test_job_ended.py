"""When a job has ended (botcore.delivery.ledger: JobStatus.ended, RevisionJobStatus.ended): what retention may
delete once it is old enough. A job still running, in any way its status can say, has not."""

from __future__ import annotations

import pytest

from botcore.delivery.ledger import JobStatus, Revision, RevisionCounts, RevisionJobStatus, Status

UPDATE = Revision(1, "update", "u1", {"text": "edited"})
DELETE = Revision(1, "delete", "d1")


def status(kind: str = "notify", *, fanned_out: bool = True, targets: int = 2, **fields) -> JobStatus:
    counts = fields.pop("counts", {Status.SENT: 2})
    return JobStatus("j", kind, "2026-01-01T00:00:00Z", fanned_out, targets, counts, **fields)


@pytest.mark.parametrize(
    "job, state, ended",
    [
        (status("reminder", fanned_out=False, targets=0, counts={}), "scheduled", False),
        (status(fanned_out=False, counts={}), "fanning-out", False),
        (status("beginDialog", counts={}), "queued", False),
        (status(counts={Status.SENT: 1}), "sending", False),
        (status(revision=RevisionCounts(UPDATE, revised=1, pending=1)), "done", False),  # revising
        (status(), "done", True),
        (status(counts={Status.SENT: 1, Status.GONE: 1}), "done", True),
        (status(revision=RevisionCounts(UPDATE, revised=2)), "done", True),
        (status(revision=RevisionCounts(DELETE, revised=2)), "deleted", True),
        (status(counts={Status.SENT: 1}, error="given up"), "failed", True),
    ],
)
def test_a_notification_has_ended_once_done_deleted_or_failed_and_revised(job: JobStatus, state: str, ended: bool):
    assert (job.state, job.ended) == (state, ended)


@pytest.mark.parametrize(
    "job, ended",
    [
        (RevisionJobStatus("u1", "update", "t", "j", 0, None), False),  # queued: not numbered yet
        (RevisionJobStatus("u1", "update", "t", "j", 1, RevisionCounts(UPDATE, pending=3)), False),  # revising
        (RevisionJobStatus("u1", "update", "t", "j", 1, RevisionCounts(UPDATE, revised=3)), True),
        (RevisionJobStatus("u1", "update", "t", "j", 1, RevisionCounts(Revision(2, "delete", "d2"))), True),
        (RevisionJobStatus("u1", "update", "t", "j", 1, None, error="given up"), True),
    ],
)
def test_an_update_or_delete_has_ended_once_done_superseded_or_failed(job: RevisionJobStatus, ended: bool) -> None:
    assert job.ended == ended

"""A notification to every member of a Teams team, each in their one-to-one conversation with the bot.

When the bot is installed in a team, the conversation that says so is stored with the team's id (its
tenant, its service URL: botcore.state.conversations). A job whose target is `{"team": id}` reads the
team's roster page by page through the Connector, finds each member's one-to-one conversation (stored
ones are reused; a missing one is created, as the Connector API describes, and stored), and hands the
conversations to the usual paced send batches. Every call (roster pages, creations, sends) takes its slot
in the tenant's pace calendar.

Idempotent: the roster's continuation token is the fan-out's cursor, batches are named by their place in
the roster, and a rerun finds the conversations a first run created, so nothing is created or sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING

from ..jobs import Job
from ..protocol.activity import TEAMS_CHANNEL, ChannelAccount, ConversationAccount, ConversationReference
from ..protocol.connector import ConversationGoneError, RequestRejectedError
from .ledger import Delivered, JobHeader, Status
from .pacing import pace_key
from .plan import SentAtOnce, enqueue_paced, save_page

if TYPE_CHECKING:
    from ..state.conversations import ConversationRecord
    from .context import DeliveryContext

log = logging.getLogger(__name__)

ROSTER_PAGE = 500  # the most members Teams returns in one page
MAX_PAGES = 100  # twice the pages of Teams' largest team (25,000 members): a roster past it is not a roster
PAGES_PER_INVOCATION = 4
CREATING_AT_ONCE = 16


async def fan_out_team(ctx: DeliveryContext, job: Job, header: JobHeader) -> str:
    team_id = job.target.team
    assert team_id is not None
    team = await ctx.conversations.team(TEAMS_CHANNEL, team_id)  # a job's team is a Teams team
    if team is None or not team.active:
        await ctx.ledger.fail_job(job, f"the bot is not installed in team {team_id!r} (or was removed)")
        return "unknown team"
    async with SentAtOnce(ctx, job) as at_once:
        return await _fan_out_pages(ctx, job, header, team_id, team.reference, at_once)


async def _fan_out_pages(
    ctx: DeliveryContext,
    job: Job,
    header: JobHeader,
    team_id: str,
    reference: ConversationReference,
    at_once: SentAtOnce,
) -> str:
    pace = pace_key(reference.channel_id, reference.tenant_id)
    for _ in range(PAGES_PER_INVOCATION):
        await _take_slot(ctx, pace)
        page = await ctx.connector.get_paged_members(reference.endpoint, team_id, ROSTER_PAGE, header.cursor)
        place = f"{header.targets}."  # batches are named by their place in the roster: the same on a rerun
        members = list({m.id: m for m in reversed(page.members)}.values())[::-1]  # each id once, first place kept
        ours = await ctx.ledger.first_sightings(job.id, str(header.pages), [m.id for m in members])
        if len(ours) < len(members):
            log.info(
                "job %s: %d members of page %d were on an earlier page",
                job.id,
                len(members) - len(ours),
                header.pages + 1,
            )
        members = [m for m in members if m.id in ours]
        found = await asyncio.gather(
            *(ctx.conversations.personal(reference.channel_id, reference.tenant_id or "", m.id) for m in members)
        )
        conversations: dict[str, str] = {}
        failed = {
            f"member|#{place}{i}": Delivered(Status.FAILED, error=f"not a member: {reason}")
            for i, reason in enumerate(page.invalid)
        }
        missing = [m for m, record in zip(members, found, strict=True) if record is None or not record.active]
        created = await _create_all(ctx, pace, reference, missing)
        for member, stored in zip(members, found, strict=True):
            record = created.get(member.id, stored)
            if isinstance(record, Delivered):
                failed[f"member|{member.id}"] = record
            elif record is not None:
                conversations[record.key] = record.reference.to_json()
        if conversations:
            await enqueue_paced(ctx, job.id, pace, list(conversations.items()), f"{place}0.", at_once)
        if failed:
            await ctx.ledger.record_undeliverable(job.id, f"{header.targets}.u", failed)
        token, overrun = _next_page(job, header, page.continuation_token)
        stop = await save_page(ctx, job, header, token, len(conversations) + len(failed))
        if overrun and stop != "duplicate":
            await ctx.ledger.fail_job(job, overrun)
            return "failed"
        if stop is not None:
            return stop
    await ctx.jobs.send(job.to_json())  # the rest of the roster, in a fresh invocation
    return "continuing"


def _next_page(job: Job, header: JobHeader, token: str | None) -> tuple[str | None, str]:
    """The continuation token to read next, or None to stop: at the roster's end, at a token the Connector gave
    before (it would page in a circle: the job ends with a warning), or past MAX_PAGES (the job fails: the
    second value says why)."""
    header.pages += 1
    if token is None:
        return None, ""
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    if digest in header.tokens:
        header.warning = (
            f"the Connector gave a continuation token it had given before, after {header.pages} pages "
            "of the roster; the roster was read up to there"
        )
        log.warning("job %s: %s", job.id, header.warning)
        return None, ""
    if header.pages >= MAX_PAGES:
        return None, (
            f"the team's roster runs past {MAX_PAGES} pages ({MAX_PAGES * ROSTER_PAGE} members): the "
            "members of those pages were notified, the rest not"
        )
    header.tokens.append(digest)
    return token, ""


async def _take_slot(ctx: DeliveryContext, pace: str) -> None:
    """Wait for this instance's next slot of the key (a roster read or a creation: one request each)."""
    slot = await ctx.pacing.reserve(pace, 1, lead=0.0)
    await asyncio.sleep(max(0.0, slot.start - time.time()))


async def _create_all(
    ctx: DeliveryContext, pace: str, team: ConversationReference, members: list[ChannelAccount]
) -> dict[str, ConversationRecord | Delivered]:
    """Members' new one-to-one conversations, stored; or why a member has none."""
    gate = asyncio.Semaphore(CREATING_AT_ONCE)
    out: dict[str, ConversationRecord | Delivered] = {}

    async def create(member: ChannelAccount) -> None:
        async with gate:
            await _take_slot(ctx, pace)
            try:
                out[member.id] = await _personal(ctx, team, member)
            except ConversationGoneError as exc:
                out[member.id] = Delivered(Status.GONE, error=exc.service_code or f"HTTP {exc.status}")
            except RequestRejectedError as exc:
                out[member.id] = Delivered(Status.FAILED, error=str(exc))

    await asyncio.gather(*(create(m) for m in members))
    return out


async def _personal(ctx: DeliveryContext, team: ConversationReference, member: ChannelAccount) -> ConversationRecord:
    """Create (or, as Teams does for an existing one, get back) the member's conversation with the bot, and
    store its reference. The Connector answers on the team's service URL, so the conversation is trusted as the
    team's is: vouched for by a channel token, or (in Development, unauthenticated) not at all."""
    tenant = team.tenant_id or ""
    created = await ctx.connector.create_conversation(
        team.endpoint,
        {
            "isGroup": False,
            "bot": team.bot.to_dict() if team.bot else None,
            "members": [{"id": member.id}],
            "tenantId": tenant,
            "channelData": {"tenant": {"id": tenant}},
        },
    )
    reference = ConversationReference(
        conversation=ConversationAccount(id=created.id, is_group=False, conversation_type="personal", tenant_id=tenant),
        channel_id=team.channel_id,
        service_url=team.service_url,
        user=member,
        bot=team.bot,
        locale=team.locale,
        service_url_trust=team.service_url_trust,
    ).bounded()
    return await ctx.conversations.record_activity(reference)  # stored, or refreshed and active again

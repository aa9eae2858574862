"""The root: greets, knows the commands, and takes over when no dialog runs.

Adding a command is one entry in COMMANDS.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ...jobs import MAX_REMINDER_SECONDS
from .engine import Context, ScheduleDialog, ScheduleReminder

SURVEY_DELAY_SECONDS = 5
HELP_HINT = "Type help for the list of commands."


@dataclass(frozen=True)
class Command:
    usage: str  # what to type, as help shows it
    description: str
    run: Callable[[Context, str], None]
    interrupts: bool = False  # also works while another dialog waits for an answer
    pattern: re.Pattern[str] | None = None  # what the command matches; else its usage alone

    def matches(self, text: str) -> bool:
        if self.pattern is not None:
            return self.pattern.fullmatch(text.strip()) is not None
        return text.strip().lower() == self.usage


def _help(ctx: Context, text: str) -> None:
    lines = [f"- {c.usage}: {c.description}" for c in COMMANDS]
    ctx.send("Here's what I understand:\n" + "\n".join(lines))


def _profile(ctx: Context, text: str) -> None:
    ctx.begin("profile")


def _survey(ctx: Context, text: str) -> None:
    if ctx.is_scheduled("survey"):
        # Said once; asked once more, it is scheduled anew: a job that never came (its enqueue failed after
        # the commit) cannot hold the survey back for good, and a job for a survey that runs starts nothing.
        ctx.unschedule("survey")
        ctx.send("A survey is already on its way: it starts in a few seconds.")
        return
    message = f"In {SURVEY_DELAY_SECONDS} seconds I'll interrupt this conversation and start a survey."
    if ctx.info.notify_url:
        message += f" Meanwhile, any service can send you a notification through {ctx.info.notify_url}"
    ctx.send(message)
    ctx.schedule(ScheduleDialog("survey", SURVEY_DELAY_SECONDS))


UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
REMIND = re.compile(r"remind me in (\d{1,6}) (second|minute|hour|day)s? (?:to )?(.+)", re.IGNORECASE | re.DOTALL)
REMIND_EXAMPLE = "remind me in 10 minutes to stretch"


def _remind(ctx: Context, text: str) -> None:
    match = REMIND.fullmatch(text.strip())
    if match is None:
        ctx.send(
            "To set a reminder, type: remind me in <number> <seconds, minutes, hours or days> to <what>, "
            f"for example: {REMIND_EXAMPLE}"
        )
        return
    seconds = int(match[1]) * UNITS[match[2].lower()]
    if seconds == 0:
        ctx.send(f"I can only remind you later than now: for example, {REMIND_EXAMPLE}")
        return
    if seconds > MAX_REMINDER_SECONDS:
        ctx.send("I can remind you at most a year ahead.")
        return
    what = match[3].strip()[:1000]
    due = ctx.info.now + timedelta(seconds=seconds)
    ctx.emit(ScheduleReminder(f"Reminder: {what}", due))
    when = due.strftime("%H:%M:%S UTC") if seconds < 86400 else due.strftime("%Y-%m-%d %H:%M:%S UTC")
    ctx.send(
        f"OK, in {match[1]} {match[2].lower()}{'s' if match[1] != '1' else ''} (at {when}) I'll remind you to {what}."
    )


def _cancel(ctx: Context, text: str) -> None:
    if ctx.stack:
        ctx.cancel_all()
        ctx.send(f"Cancelled. What next? {HELP_HINT}")
    else:
        ctx.send(f"Nothing to cancel. {HELP_HINT}")


def _hello(ctx: Context, text: str) -> None:
    if ctx.replies:  # a conversation's first message: greet() has just said hello
        ctx.send(HELP_HINT)
    else:
        ctx.send(f"Hello{_name(ctx)}! {HELP_HINT}")


def _name(ctx: Context) -> str:
    return f" {ctx.info.user_name}" if ctx.info.user_name else ""


GREETING = re.compile(
    r"(hi|hello|hey|hiya|howdy|good (morning|afternoon|evening|day))( there| bot)?[ !.]*", re.IGNORECASE
)

COMMANDS = [
    Command("profile", "answer two questions and get a summary", _profile),
    Command(
        "survey",
        f"in {SURVEY_DELAY_SECONDS} seconds I interrupt whatever we're doing with a survey, until you type done",
        _survey,
        interrupts=True,
    ),
    Command(
        REMIND_EXAMPLE,
        "a reminder, in seconds, minutes, hours or days, up to a year ahead",
        _remind,
        interrupts=True,
        pattern=re.compile(r"remind\b.*", re.IGNORECASE | re.DOTALL),
    ),
    Command("cancel", "stop the questions we're in the middle of", _cancel, interrupts=True),
    Command("help", "this list", _help, interrupts=True),
    # Not an interruption: to a dialog waiting for free text (a name, a survey answer), "hello" is an answer.
    Command("hi", "I say hello back (hello, hey, good morning work too)", _hello, pattern=GREETING),
]


def _command(text: str) -> Command | None:
    return next((c for c in COMMANDS if c.matches(text)), None)


class RootDialog:
    def greet(self, ctx: Context) -> None:
        ctx.send(f"Hello{_name(ctx)}! I now know your address, so I can send you notifications later.")

    def interrupts(self, ctx: Context, text: str) -> bool:
        if ctx.active == "survey":
            return False  # the survey holds the conversation until done
        command = _command(text)
        return command is not None and command.interrupts

    def handle(self, ctx: Context, text: str) -> None:
        command = _command(text)
        if command is not None:
            command.run(ctx, text)
        elif not ctx.replies:  # a first message that is not a command: the greeting answers it
            ctx.send(f'I didn\'t understand "{text.strip()[:100]}". {HELP_HINT}')
        else:
            ctx.send(HELP_HINT)

    def resume(self, ctx: Context, ended: str, result: Any) -> None:
        if ended == "survey":
            ctx.send(f"Nothing else was running, so we're back at the start. {HELP_HINT}")

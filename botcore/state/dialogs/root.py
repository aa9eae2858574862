"""The root: greets, knows the commands, and takes over when no dialog runs.

Adding a command is one entry in COMMANDS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from ...delivery.jobs import MAX_REMINDER_SECONDS
from .engine import Context, ScheduleDialog, ScheduleReminder

SURVEY_DELAY_SECONDS = 5


@dataclass(frozen=True)
class Command:
    word: str
    description: str
    run: Callable[[Context, str], None]
    interrupts: bool = False  # also works while another dialog waits for an answer
    pattern: re.Pattern[str] | None = None  # a command with arguments; else the word alone

    def matches(self, text: str) -> bool:
        if self.pattern is not None:
            return self.pattern.fullmatch(text.strip()) is not None
        return text.strip().lower() == self.word


def _help(ctx: Context, text: str) -> None:
    lines = [f"- {c.word}: {c.description}" for c in COMMANDS]
    ctx.send("Here's what I understand:\n" + "\n".join(lines))


def _profile(ctx: Context, text: str) -> None:
    ctx.begin("profile")


def _survey(ctx: Context, text: str) -> None:
    message = (f"In {SURVEY_DELAY_SECONDS} seconds I'll interrupt this conversation and start a survey.")
    if ctx.info.notify_url:
        message += f" Meanwhile, any service can send you a notification through {ctx.info.notify_url}"
    ctx.send(message)
    ctx.emit(ScheduleDialog("survey", SURVEY_DELAY_SECONDS))


UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
REMIND = re.compile(r"remind me in (\d{1,6}) (second|minute|hour|day)s? (?:to )?(.+)", re.IGNORECASE | re.DOTALL)


def _remind(ctx: Context, text: str) -> None:
    match = REMIND.fullmatch(text.strip())
    assert match is not None
    seconds = int(match[1]) * UNITS[match[2].lower()]
    if seconds > MAX_REMINDER_SECONDS:
        ctx.send("I can remind you at most a year ahead.")
        return
    what = match[3].strip()[:1000]
    ctx.emit(ScheduleReminder(f"Reminder: {what}", seconds))
    ctx.send(f"OK, in {match[1]} {match[2].lower()}{'s' if match[1] != '1' else ''} I'll remind you to {what}.")


def _cancel(ctx: Context, text: str) -> None:
    if ctx.stack:
        ctx.cancel_all()
        ctx.send("Cancelled. What next? Type help for the list of commands.")
    else:
        ctx.send("Nothing to cancel. Type help for the list of commands.")


COMMANDS = [
    Command("help", "list what I understand", _help, interrupts=True),
    Command("profile", "answer two questions and get a summary", _profile),
    Command("survey", f"I interrupt you with a survey in {SURVEY_DELAY_SECONDS} seconds", _survey, interrupts=True),
    Command("remind", "remind me in 10 minutes to stretch", _remind, interrupts=True, pattern=REMIND),
    Command("cancel", "stop what we're doing", _cancel, interrupts=True),
]


def _command(text: str) -> Command | None:
    return next((c for c in COMMANDS if c.matches(text)), None)


class RootDialog:
    def greet(self, ctx: Context) -> None:
        name = f" {ctx.info.user_name}" if ctx.info.user_name else ""
        ctx.send(f"Hello{name}! I now know your address, so I can send you notifications later.")

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
            ctx.send(f"I didn't understand \"{text.strip()[:100]}\". Type help for the list of commands.")
        else:
            ctx.send("Type help for the list of commands.")

    def resume(self, ctx: Context, ended: str, result: Any) -> None:
        if ended == "survey":
            ctx.send("Nothing else was running, so we're back at the start. Type help for the list of commands.")

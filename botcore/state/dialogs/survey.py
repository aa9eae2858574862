"""`survey`: the dialog started proactively; it holds the conversation until the user types done.

Everything else is an answer, but for the two words the root's help promises work anywhere: `help` says what
the survey accepts, and `cancel` stops the survey's questions (as done does, without another answer) and
hands the conversation back to what ran before, which it does not cancel.
"""

from __future__ import annotations

from typing import Any

from .engine import Context


class SurveyDialog:
    name = "survey"

    def begin(self, ctx: Context, options: Any) -> None:
        ctx.state["answers"] = 0
        ctx.send(
            "Sorry to interrupt: I'm starting a quick survey. "
            "Tell me anything you like, and type done to resume our conversation."
        )

    def continue_(self, ctx: Context, text: str) -> None:
        word = text.strip().lower()
        if word == "done":
            ctx.send("Thanks for taking the survey! Back to the original conversation.")
            ctx.end({"answers": ctx.state["answers"]})
            return
        if word == "cancel":
            ctx.send("Survey cancelled. Back to the original conversation.")
            ctx.end({"answers": ctx.state["answers"], "cancelled": True})
            return
        if word == "help":
            ctx.send(
                "We're in a survey: anything you type is an answer. Type done when you're finished, or cancel "
                "to stop the survey; either way we go back to what we were doing."
            )
            return
        ctx.state["answers"] += 1
        ctx.send(f'Survey: noted "{text.strip()[:200]}". Type done to go back.')

    def resume(self, ctx: Context, result: Any) -> None:
        self.reprompt(ctx)

    def reprompt(self, ctx: Context) -> None:
        ctx.send("We're still in the survey. Type done to go back.")

"""`survey`: the dialog started proactively; it holds the conversation until the user types done."""

from __future__ import annotations

from typing import Any

from .engine import Context


class SurveyDialog:
    name = "survey"

    def begin(self, ctx: Context, options: Any) -> None:
        ctx.state["answers"] = 0
        ctx.send("Sorry to interrupt: I'm starting a quick survey. "
                 "Tell me anything you like, and type done to resume our conversation.")

    def continue_(self, ctx: Context, text: str) -> None:
        if text.strip().lower() == "done":
            ctx.send("Thanks for taking the survey! Back to the original conversation.")
            ctx.end({"answers": ctx.state["answers"]})
            return
        ctx.state["answers"] += 1
        ctx.send(f"Survey: noted \"{text.strip()[:200]}\". Type done to go back.")

    def resume(self, ctx: Context, result: Any) -> None:
        self.reprompt(ctx)

    def reprompt(self, ctx: Context) -> None:
        ctx.send("We're still in the survey. Type done to go back.")

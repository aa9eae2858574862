"""`profile`: two questions, then a summary. Worth interrupting: it waits between questions."""

from __future__ import annotations

from typing import Any

from .engine import Context

QUESTIONS = {
    "name": "What's your name?",
    "colour": "What's your favourite colour?",
}


class ProfileDialog:
    name = "profile"

    def begin(self, ctx: Context, options: Any) -> None:
        ctx.state.update(step="name", answers={})
        ctx.send(f"Let's build your profile. {QUESTIONS['name']}")

    def continue_(self, ctx: Context, text: str) -> None:
        answer = text.strip()
        if not answer:
            self.reprompt(ctx)
            return
        ctx.state["answers"][ctx.state["step"]] = answer
        if ctx.state["step"] == "name":
            ctx.state["step"] = "colour"
            ctx.send(f"Nice to meet you, {answer}. {QUESTIONS['colour']}")
            return
        answers = ctx.state["answers"]
        ctx.send(f"Thanks! Your profile: name {answers['name']}, favourite colour {answers['colour']}.")
        ctx.end(answers)

    def resume(self, ctx: Context, result: Any) -> None:
        self.reprompt(ctx)

    def reprompt(self, ctx: Context) -> None:
        ctx.send(f"Back to your profile. {QUESTIONS[ctx.state['step']]}")

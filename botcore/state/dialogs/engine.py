"""A small dialog engine: named dialogs on a per-conversation stack, pure and deterministic.

A turn takes the stored state and the user's input and returns the new state, the
replies and the effects (work for the caller to do after committing, such as
scheduling a proactive dialog). It does no I/O, so the caller can re-run a turn
after losing an ETag race without anything having been sent twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ...errors import BadInputError

RECENT_JOBS = 20
RECENT_ACTIVITIES = 20


class UnknownDialogError(BadInputError):
    """A job or a dialog named a dialog the engine does not have."""


@dataclass(frozen=True)
class TurnInfo:
    notify_url: str | None = None
    user_name: str | None = None
    now: datetime = datetime(2026, 1, 1, tzinfo=UTC)  # the turn's clock: dialogs stay pure


@dataclass(frozen=True)
class ScheduleDialog:
    """Effect: start `dialog` proactively in this conversation after a delay."""

    dialog: str
    delay_seconds: float


@dataclass(frozen=True)
class ScheduleReminder:
    """Effect: send `text` into this conversation at `due` (UTC)."""

    text: str
    due: datetime


Effect = ScheduleDialog | ScheduleReminder  # work a committed turn hands on


@dataclass
class TurnResult:
    state: dict[str, Any]
    replies: list[dict[str, Any]]
    effects: list[Effect]
    changed: bool


class Dialog(Protocol):
    name: str

    def begin(self, ctx: Context, options: Any) -> None: ...
    def continue_(self, ctx: Context, text: str) -> None: ...
    def resume(self, ctx: Context, result: Any) -> None: ...
    def reprompt(self, ctx: Context) -> None: ...


class Context:
    """What a dialog may do during a turn: speak, and move itself on the stack."""

    def __init__(self, engine: Engine, state: dict[str, Any], info: TurnInfo) -> None:
        self.engine, self.info = engine, info
        self._conversation = state
        self.stack: list[dict[str, Any]] = state["stack"]
        self.replies: list[dict[str, Any]] = []
        self.effects: list[Effect] = []

    @property
    def state(self) -> dict[str, Any]:
        """The running dialog's own state (its stack frame)."""
        state: dict[str, Any] = self.stack[-1]["state"]
        return state

    @property
    def active(self) -> str | None:
        return self.stack[-1]["dialog"] if self.stack else None

    def send(self, text: str, **fields: Any) -> None:
        self.replies.append({"type": "message", "text": text, **fields})

    def emit(self, effect: Effect) -> None:
        self.effects.append(effect)

    def schedule(self, effect: ScheduleDialog) -> None:
        """Emit `effect`; the state remembers that its dialog is coming until the dialog's job arrives."""
        scheduled = self._conversation.setdefault("scheduled", [])
        if effect.dialog not in scheduled:
            scheduled.append(effect.dialog)
        self.emit(effect)

    def is_scheduled(self, dialog: str) -> bool:
        return dialog in self._conversation.get("scheduled", ())

    def unschedule(self, dialog: str) -> None:
        _unschedule(self._conversation, dialog)

    def begin(self, name: str, options: Any = None) -> None:
        dialog = self.engine.dialog(name)
        self.stack.append({"dialog": name, "state": {}})
        dialog.begin(self, options)

    def end(self, result: Any = None) -> None:
        """Pop the running dialog and hand `result` to the one below (or to the root)."""
        ended = self.stack.pop()["dialog"]
        if self.stack:
            self.engine.dialog(self.active).resume(self, result)  # type: ignore[arg-type]
        else:
            self.engine.root.resume(self, ended, result)

    def replace(self, name: str, options: Any = None) -> None:
        self.stack.pop()
        self.begin(name, options)

    def cancel_all(self) -> None:
        self.stack.clear()


class Root(Protocol):
    """The conversation's ground floor: commands, and what happens when the stack is empty."""

    def greet(self, ctx: Context) -> None: ...
    def interrupts(self, ctx: Context, text: str) -> bool: ...
    def handle(self, ctx: Context, text: str) -> None: ...
    def resume(self, ctx: Context, ended: str, result: Any) -> None: ...


class Engine:
    def __init__(self, root: Root, dialogs: list[Dialog]) -> None:
        self.root = root
        self.dialogs = {d.name: d for d in dialogs}

    def dialog(self, name: str) -> Dialog:
        try:
            return self.dialogs[name]
        except KeyError:
            raise UnknownDialogError(f"no dialog named {name!r}") from None

    def _run(
        self, state: dict[str, Any] | None, info: TurnInfo, step: Callable[[Context, dict[str, Any]], None]
    ) -> TurnResult:
        working = copy.deepcopy(state) if state else {"stack": [], "jobs": []}
        ctx = Context(self, working, info)
        step(ctx, working)
        return TurnResult(working, ctx.replies, ctx.effects, changed=working != state)

    def run_turn(
        self,
        state: dict[str, Any] | None,
        text: str,
        *,
        ctx_info: TurnInfo = TurnInfo(),
        activity_id: str | None = None,
    ) -> TurnResult:
        """A turn for the user's `text`. A turn that changes the state remembers its activity's id with it,
        so that the same activity delivered again (a channel retrying) changes and says nothing."""
        if activity_id and state and activity_id in state.get("activities", ()):
            return TurnResult(state, [], [], changed=False)

        def step(ctx: Context, working: dict[str, Any]) -> None:
            if state is None:
                self.root.greet(ctx)
            # Forget frames of dialogs that no longer exist (after a deployment removed one).
            ctx.stack[:] = [f for f in ctx.stack if f["dialog"] in self.dialogs]
            if ctx.stack and not self.root.interrupts(ctx, text):
                self.dialog(ctx.active).continue_(ctx, text)  # type: ignore[arg-type]
            else:
                self.root.handle(ctx, text)

        result = self._run(state, ctx_info, step)
        if result.changed and activity_id:
            seen = result.state.setdefault("activities", [])
            seen.append(activity_id)
            del seen[:-RECENT_ACTIVITIES]
        return result

    def begin_proactive(
        self,
        state: dict[str, Any] | None,
        dialog: str,
        *,
        job_id: str,
        options: Any = None,
        ctx_info: TurnInfo = TurnInfo(),
    ) -> TurnResult:
        """Start `dialog` on top of whatever runs; the same job, or a second start, never stacks it twice."""
        self.dialog(dialog)

        def step(ctx: Context, working: dict[str, Any]) -> None:
            jobs = working.setdefault("jobs", [])
            if job_id in jobs:
                return
            jobs.append(job_id)
            del jobs[:-RECENT_JOBS]
            _unschedule(working, dialog)  # whether it starts now or already runs, it is no longer coming
            if any(frame["dialog"] == dialog for frame in ctx.stack):
                return
            ctx.begin(dialog, options)

        return self._run(state, ctx_info, step)


def _unschedule(state: dict[str, Any], dialog: str) -> None:
    scheduled = state.get("scheduled", [])
    if dialog in scheduled:
        scheduled.remove(dialog)
        if not scheduled:
            del state["scheduled"]

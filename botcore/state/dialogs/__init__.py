"""Dialogs: the engine, the root and each dialog in a file of its own."""

from .engine import Context, Effect, Engine, ScheduleDialog, ScheduleReminder, TurnInfo, TurnResult
from .profile import ProfileDialog
from .root import COMMANDS, RootDialog
from .survey import SurveyDialog

__all__ = [
    "COMMANDS",
    "Context",
    "Effect",
    "Engine",
    "ScheduleDialog",
    "ScheduleReminder",
    "TurnInfo",
    "TurnResult",
    "default_engine",
]


def default_engine() -> Engine:
    return Engine(RootDialog(), [ProfileDialog(), SurveyDialog()])

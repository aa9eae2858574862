"""The dialog engine and the product's dialogs, as pure functions of (state, input)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from botcore.state.dialogs import ScheduleDialog, TurnInfo, default_engine

ENGINE = default_engine()
INFO = TurnInfo(
    notify_url="https://bot.example/api/notify", user_name="Ann", now=datetime(2026, 12, 1, 14, 3, 12, tzinfo=UTC)
)


class Conversation:
    def __init__(self) -> None:
        self.state: dict | None = None

    def _apply(self, result):
        assert json.loads(json.dumps(result.state)) == result.state
        self.state = result.state
        return result

    def say(self, text: str):
        return self._apply(ENGINE.run_turn(self.state, text, ctx_info=INFO))

    def proactive(self, dialog: str, job_id: str):
        return self._apply(ENGINE.begin_proactive(self.state, dialog, job_id=job_id, ctx_info=INFO))


def texts(result) -> list[str]:
    return [r["text"] for r in result.replies]


def test_the_whole_survey_story_resumes_the_interrupted_profile() -> None:
    c = Conversation()
    first = c.say("hi")
    assert "now know your address" in texts(first)[0] and "Ann" in texts(first)[0]
    assert "name" in texts(c.say("profile"))[-1]
    assert "colour" in texts(c.say("Ann"))[-1]
    survey_cmd = c.say("survey")
    assert "5 seconds" in texts(survey_cmd)[0] and INFO.notify_url in texts(survey_cmd)[0]
    assert survey_cmd.effects == [ScheduleDialog("survey", 5)]
    assert [f["dialog"] for f in c.state["stack"]] == ["profile"], "the command did not disturb profile"
    started = c.proactive("survey", "job-1")
    assert "interrupt" in texts(started)[0] and "done" in texts(started)[0]
    assert [f["dialog"] for f in c.state["stack"]] == ["profile", "survey"]
    for text in ("blue", "profile", "survey"):
        assert texts(c.say(text))[0].startswith("Survey:"), "the survey takes all but done, cancel, help as answers"
    back = texts(c.say("done"))
    assert "Back to the original conversation" in back[0]
    assert "favourite colour" in back[1], "profile re-asks its pending question"
    summary = texts(c.say("green"))[0]
    assert "name Ann" in summary and "colour green" in summary, "the earlier answer is kept"
    assert c.state["stack"] == []


def test_survey_with_nothing_running_hands_back_to_the_root() -> None:
    c = Conversation()
    c.say("hello")
    c.proactive("survey", "j1")
    back = texts(c.say("DONE "))
    assert "Back to the original conversation" in back[0] and "help" in back[1]
    assert "didn't understand" in texts(c.say("what?"))[0]


def test_a_redelivered_or_second_start_never_stacks_two_surveys() -> None:
    c = Conversation()
    c.say("hi")
    assert c.proactive("survey", "j1").replies
    again = c.proactive("survey", "j1")
    assert again.replies == [] and not again.changed
    second = c.proactive("survey", "j2")
    assert second.replies == []
    assert [f["dialog"] for f in c.state["stack"]] == ["survey"]


def test_help_cancel_and_unknown_text_always_answer() -> None:
    c = Conversation()
    c.say("hi")
    assert all(w in texts(c.say("help"))[0] for w in ("profile", "survey", "cancel"))
    c.say("profile")
    assert "profile" in texts(c.say("help"))[0] and c.state["stack"][0]["dialog"] == "profile"
    assert "Cancelled" in texts(c.say("cancel"))[0] and c.state["stack"] == []
    assert "Nothing to cancel" in texts(c.say("cancel"))[0]
    assert texts(c.say("xyzzy")) and "help" in texts(c.say("xyzzy"))[0]


def test_a_turn_that_changes_nothing_says_so_and_turns_are_deterministic() -> None:
    c = Conversation()
    c.say("hi")
    assert not c.say("help").changed
    assert c.say("profile").changed
    state = c.state
    assert ENGINE.run_turn(state, "Bob", ctx_info=INFO) == ENGINE.run_turn(state, "Bob", ctx_info=INFO)
    assert state == c.state, "a turn never mutates the state it was given"


def test_help_lists_exactly_what_works() -> None:
    c = Conversation()
    c.say("hi")
    listing = texts(c.say("help"))[0].splitlines()[1:]
    usages = [line[2:].split(": ", 1)[0] for line in listing]
    assert usages == ["profile", "survey", "remind me in 10 minutes to stretch", "cancel", "help", "hi"]
    for usage in usages:
        fresh = Conversation()
        fresh.say("hi")
        answer = texts(fresh.say(usage))
        assert answer and not any("didn't understand" in t or "To set a reminder" in t for t in answer), usage


def test_remind_alone_or_malformed_explains_the_format() -> None:
    c = Conversation()
    c.say("hi")
    for text in ("remind", "Remind me", "remind me in 10 minutes", "remind me tomorrow to stretch"):
        result = c.say(text)
        assert texts(result) == [
            "To set a reminder, type: remind me in <number> <seconds, minutes, hours or days> "
            "to <what>, for example: remind me in 10 minutes to stretch"
        ], text
        assert result.effects == []
    ok = c.say("remind me in 10 minutes to stretch")
    assert [(e.text, e.due) for e in ok.effects] == [("Reminder: stretch", INFO.now + timedelta(minutes=10))]
    assert texts(ok) == [
        f"OK, in 10 minutes (at {(INFO.now + timedelta(minutes=10)):%H:%M:%S} UTC) I'll remind you to stretch."
    ]


def test_a_reminder_in_zero_time_is_refused() -> None:
    c = Conversation()
    c.say("hi")
    for text in ("remind me in 0 minutes to stretch", "remind me in 000 seconds to stretch"):
        result = c.say(text)
        assert (
            texts(result) == ["I can only remind you later than now: for example, remind me in 10 minutes to stretch"]
            and result.effects == []
        )
    assert c.say("remind me in 1 second to stretch").effects


def test_a_greeting_works_at_any_time_the_root_listens() -> None:
    c = Conversation()
    assert texts(c.say("hello")) == [
        "Hello Ann! I now know your address, so I can send you notifications later.",
        "Type help for the list of commands.",
    ]
    c.say("help")
    for greeting in ("hi", "Hello!", "hey there", "Good morning", "HI BOT"):
        assert texts(c.say(greeting)) == ["Hello Ann! Type help for the list of commands."], greeting
    c.say("profile")
    assert "Nice to meet you, hello" in texts(c.say("hello"))[0], "to a question, a greeting is an answer"


def test_a_second_survey_while_one_is_coming_says_so() -> None:
    c = Conversation()
    c.say("hi")
    first = c.say("survey")
    assert first.effects == [ScheduleDialog("survey", 5)] and "In 5 seconds" in texts(first)[0]
    again = c.say("survey")
    assert texts(again) == ["A survey is already on its way: it starts in a few seconds."] and again.effects == []
    c.proactive("survey", "job-1")
    assert "scheduled" not in c.state, "the survey started: no longer coming"
    c.say("done")
    after = c.say("survey")
    assert after.effects == [ScheduleDialog("survey", 5)] and "In 5 seconds" in texts(after)[0]


def test_a_survey_whose_job_never_came_can_be_asked_for_again() -> None:
    c = Conversation()
    c.say("hi")
    c.say("survey")
    assert texts(c.say("survey"))[0].startswith("A survey is already on its way")
    third = c.say("survey")
    assert third.effects == [ScheduleDialog("survey", 5)], "said once, then scheduled anew"
    c.proactive("survey", "job-1")
    late = c.proactive("survey", "job-2")  # the first job, late: the survey already runs
    assert late.replies == [] and [f["dialog"] for f in c.state["stack"]] == ["survey"]
    assert "scheduled" not in c.state


def test_inside_the_survey_help_says_what_it_accepts_and_cancel_hands_back_what_ran_before() -> None:
    c = Conversation()
    c.say("hi")
    c.say("profile")
    c.say("Ann")  # the profile now waits for a colour
    c.proactive("survey", "job-1")
    helped = texts(c.say("help"))
    assert len(helped) == 1 and "anything you type is an answer" in helped[0] and "cancel" in helped[0]
    assert [f["dialog"] for f in c.state["stack"]] == ["profile", "survey"]  # help was no answer
    cancelled = texts(c.say("cancel"))
    assert cancelled[0] == "Survey cancelled. Back to the original conversation."
    assert "colour" in cancelled[-1]  # the profile carries on where it stopped: it was not cancelled
    assert [f["dialog"] for f in c.state["stack"]] == ["profile"]
    assert texts(c.say("teal"))[-1] == "Thanks! Your profile: name Ann, favourite colour teal."

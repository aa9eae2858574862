"""The dialog engine and the product's dialogs, as pure functions of (state, input)."""

from __future__ import annotations

import json

from botcore.state.dialogs import ScheduleDialog, TurnInfo, default_engine

ENGINE = default_engine()
INFO = TurnInfo(notify_url="https://bot.example/api/notify", user_name="Ann")


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
    for text in ("blue", "help", "profile"):
        assert texts(c.say(text))[0].startswith("Survey:"), "the survey answers everything but done"
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

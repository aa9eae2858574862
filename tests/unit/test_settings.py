"""Settings read from the environment: numbers are finite, positive, and within what they bound."""

from __future__ import annotations

import pytest

from botcore.settings import MAX_RETRY_AFTER_SECONDS, QUEUE_MAX_DELAY, ConfigurationError, Settings


def test_the_longest_retry_after_pause_is_an_hour_unless_set() -> None:
    assert Settings.from_env({}).max_retry_after_seconds == MAX_RETRY_AFTER_SECONDS == 3600
    assert Settings.from_env({"BotMaxRetryAfterSeconds": "30"}).max_retry_after_seconds == 30
    longest = Settings.from_env({"BotMaxRetryAfterSeconds": str(QUEUE_MAX_DELAY)})
    assert longest.max_retry_after_seconds == QUEUE_MAX_DELAY


@pytest.mark.parametrize(
    "value, reason",
    [
        ("inf", "finite"),
        ("nan", "finite"),
        ("0", "greater than 0"),
        ("-5", "greater than 0"),
        (str(QUEUE_MAX_DELAY + 1), "at most 604800"),
        ("soon", "a number"),
    ],
)
def test_a_retry_after_cap_the_queue_could_not_keep_is_refused(value: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=f"BotMaxRetryAfterSeconds must be.*{reason}"):
        Settings.from_env({"BotMaxRetryAfterSeconds": value})


@pytest.mark.parametrize("name", ["BotTenantRatePerSecond", "BotHttpTimeoutSeconds", "BotDeliveryClaimSeconds"])
def test_no_number_setting_takes_infinity_or_nan(name: str) -> None:
    for value in ("inf", "nan"):
        with pytest.raises(ConfigurationError, match=f"{name} must be a finite number"):
            Settings.from_env({name: value})


def test_finished_jobs_are_kept_30_days_unless_set_and_ten_years_at_most() -> None:
    assert Settings.from_env({}).ledger_retention_days == 30
    assert Settings.from_env({"BotLedgerRetentionDays": "7"}).ledger_retention_days == 7
    assert Settings.from_env({"BotLedgerRetentionDays": "0.5"}).ledger_retention_days == 0.5


@pytest.mark.parametrize(
    "value, reason",
    [("0", "greater than 0"), ("3651", "at most 3650"), ("inf", "finite"), ("a month", "a number")],
)
def test_a_retention_that_is_no_number_of_days_is_refused(value: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=f"BotLedgerRetentionDays must be.*{reason}"):
        Settings.from_env({"BotLedgerRetentionDays": value})

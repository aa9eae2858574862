"""The quick benchmark's delivery sections (tests.benchsmoke: beside the others, on another worker)."""

import pytest

from tests.benchsmoke import quick_bench


@pytest.mark.bench
@pytest.mark.slow
def test_the_quick_benchmark_measures_teams_delivery_and_reminders(tmp_path) -> None:
    text = quick_bench(tmp_path, "teams,reminders")
    assert "## 7. Teams delivery\n" in text and "## 8. Reminders\n" in text
    assert "## Targets at a glance" in text

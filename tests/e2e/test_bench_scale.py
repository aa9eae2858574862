"""The quick benchmark's cost and scale sections (tests.benchsmoke: beside the others, on another worker)."""

import pytest

from tests.benchsmoke import quick_bench


@pytest.mark.bench
@pytest.mark.slow
def test_the_quick_benchmark_measures_cost_scale_and_hours_of_sending(tmp_path) -> None:
    text = quick_bench(tmp_path, "cost,scale,long_run")
    for section in ("9. Cost: storage transactions and executions", "10. Scale", "11. Hours of sending, time-scaled"):
        assert f"## {section}\n" in text, section

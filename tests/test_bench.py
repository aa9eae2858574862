"""The benchmark command runs end to end (smoke mode): every section measured, none failed."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_quick_benchmark_measures_every_section(tmp_path) -> None:
    output = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = output.read_text()
    for section in ("1. Cold start", "2. Warm turn", "3. Send path", "4. Broadcast end to end",
                    "5. Token and key economy"):
        assert f"## {section}\n" in text, section
    assert "FAILED" not in text and "## Targets at a glance" in text

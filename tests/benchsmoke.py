"""The quick benchmark as the suite runs it: sections in groups, a test file each, so that the suite's workers
run the groups side by side (the sections of a group share figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def quick_bench(tmp_path: Path, sections: str) -> str:
    """`python -m bench --quick --only SECTIONS`: its Markdown, once it passed with nothing failed."""
    output = tmp_path / "RESULTS.md"
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--only", sections, "--output", str(output)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = bench.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        bench.terminate()  # SIGTERM: the bench stops the hosts and Azurites it started (a kill would orphan them)
        _, stderr = bench.communicate(timeout=60)
        pytest.fail(f"the quick benchmark ({sections}) took over {TIMEOUT} s:\n{stderr[-3000:]}")
    assert bench.returncode == 0, stderr[-3000:]
    text = output.read_text()
    assert "FAILED" not in text, text[-3000:]
    return text

"""`python -m bench [--quick] [--only NAME,...]`: run the benchmarks, write bench/RESULTS.md, print it.

--quick is a smoke run (small N, 1–2 repeats, under a minute); the default full run takes a
few minutes. Every process a benchmark starts (Azurite, the local host, the fake Connector's
process) is stopped on the way out, also on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import procfs, report
from .infra import log

BENCHMARKS = [
    "cold_start",
    "warm_turn",
    "send_path",
    "broadcast",
    "economy",
    "storage_ops",
    "teams",
    "reminders",
    "cost",
    "scale",
    "long_run",
]


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every `finally` that stops a process

    signal.signal(signal.SIGTERM, handler)


def _load_note(elapsed: float, busy: float, own: float) -> str:
    """How long a benchmark took, and whether other processes competed for the CPU meanwhile."""
    if elapsed < 1.0:  # too short for CPU shares to mean anything (process exits land in it whole)
        return f"This benchmark took {elapsed * 1000:.0f} ms."
    others = max(0.0, busy - own) / elapsed if elapsed else 0.0
    note = (
        f"This benchmark took {elapsed:.0f} s; its processes used {own / elapsed:.2f} cores on average, "
        f"other processes on the machine {others:.2f}."
    )
    if others > 0.15:
        note += " **Other load competed for the CPU: treat these figures with care.**"
    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode: small N, 1-2 repeats (< 60 s)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, default=report.RESULTS, help="where to write the Markdown")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or BENCHMARKS
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    _stop_on_sigterm()

    mode = "quick" if args.quick else "full"
    command = "python -m bench" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    context: dict = {}  # figures one benchmark measures for another (floors, IdP counters)
    sections: list[report.Section] = []
    failed = False
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in chosen:
            module = importlib.import_module(f"bench.{name}")
            log(f"--- {name} ({mode})")
            t0, busy0, own0 = time.monotonic(), procfs.machine_busy_seconds(), procfs.own_tree_seconds()
            try:
                section = module.run(Path(tmp) / name, args.quick, context)
            except Exception:
                failed = True
                log(f"{name} failed:\n{traceback.format_exc()}")
                section = report.Section(f"{name}: FAILED", notes=[f"```\n{traceback.format_exc()[-2000:]}\n```"])
            section.notes.append(
                _load_note(
                    time.monotonic() - t0, procfs.machine_busy_seconds() - busy0, procfs.own_tree_seconds() - own0
                )
            )
            sections.append(section)
    elapsed = time.monotonic() - started
    text = report.document(sections, procfs.machine(), mode, elapsed, command)
    path = report.write(text, args.output)
    print(text)
    log(f"wrote {path} ({elapsed:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

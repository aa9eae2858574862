"""Markdown for bench/RESULTS.md: one section per benchmark, each with its tables and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    title: str | None = None

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        def line(cells: list[Any]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

        out = [f"**{self.title}**", ""] if self.title else []
        out.append(line(self.headers))
        out.append("|" + "|".join("---" for _ in self.headers) + "|")
        out.extend(line(r) for r in self.rows)
        return "\n".join(out)


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, measured, met)

    def table(self, headers: list[str], title: str | None = None) -> Table:
        t = Table(headers, title=title)
        self.tables.append(t)
        return t

    def target(self, what: str, measured: str, met: bool) -> None:
        self.targets.append((what, measured, met))

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        if self.intro:
            out += [self.intro, ""]
        for t in self.tables:
            out += [t.markdown(), ""]
        if self.targets:
            out += ["Targets:", ""]
            out += [f"- {what}: {measured} — **{'met' if met else 'MISSED'}**" for what, measured, met in self.targets]
            out.append("")
        if self.notes:
            out += [f"- {n}" for n in self.notes]
            out.append("")
        return "\n".join(out)


def document(sections: list[Section], machine: dict[str, str], mode: str, elapsed: float, command: str) -> str:
    out = ["# Benchmark results", ""]
    out.append(
        f"Command: `{command}` ({mode} mode, {elapsed:.0f} s). "
        "Each figure is the median over repeated runs, with the spread as min–max over those runs; "
        "ratios compare with a floor measured in the same run on the same machine."
    )
    out.append("")
    out.append(" · ".join(f"{k}: {v}" for k, v in machine.items()))
    out.append("")
    summary = [(s.title, what, measured, met) for s in sections for what, measured, met in s.targets]
    if summary:
        out += ["## Targets at a glance", "", "| benchmark | target | measured | |", "|---|---|---|---|"]
        out += [
            f"| {title} | {what} | {measured} | {'met' if met else '**MISSED**'} |"
            for title, what, measured, met in summary
        ]
        out.append("")
    out += [s.markdown() for s in sections]
    return "\n".join(out).rstrip() + "\n"


def write(text: str, path: Path = RESULTS) -> Path:
    path.write_text(text)
    return path

"""What a template check reports: each finding at its file and line, and the report that
gathers them for the command line (text or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: str
    """Path relative to the templates folder."""
    line: int | None
    message: str
    context: str = ""
    """Which render showed it, e.g. "persona business, locale fr, sample user 'sam'"."""

    def located(self) -> str:
        """`file:line: message  (context)`."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.message}"
        return f"{text}  ({self.context})" if self.context else text

    def __str__(self) -> str:
        return f"{self.severity}: {self.located()}"


@dataclass
class CheckReport:
    findings: list[Finding]
    rendered: int
    """How many renders were done."""
    templates: int = 0
    """How many template files were checked."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        errors, warnings = len(self.errors), len(self.warnings)
        return (
            f"Checked {self.rendered} renders of {self.templates} templates: "
            f"{errors} error{'' if errors == 1 else 's'}, "
            f"{warnings} warning{'' if warnings == 1 else 's'}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rendered": self.rendered,
            "templates": self.templates,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }

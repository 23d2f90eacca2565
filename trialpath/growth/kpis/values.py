"""What every KPI is read by and gives: the trials it counts (`Filters`), the splits and
their group labels, one value per group (`KpiValue`), and CSV.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Protocol, get_args

Split = Literal["persona", "cohort", "arm", "channel", "source", "qualifier", "journey"]
SPLITS: tuple[Split, ...] = get_args(Split)
UNRECORDED_VERSION = "unrecorded"
Unit = Literal["hours", "%", "score", "count", "EUR", "pts"]

ALL = "all"
UNKNOWN_PERSONA = "unknown"
UNKNOWN_SOURCE = "unknown"
"""Trials recorded before their source was."""
NO_EXPERIMENT_ARM = "default"
"""The arm of every trial started while no experiment ran."""
SMALL_N = 30
"""Below this many users a value is shown as indicative only, and the experiment report
needs at least this many per arm for medians and means."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class KpiError(ValueError):
    """Bad filters or split, or a database these KPIs cannot read."""


@dataclass(frozen=True)
class Filters:
    """Which trials: signed up at or after `since` and before `until` (UTC; naive = UTC)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is None:
                continue
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
                object.__setattr__(self, name, value)
            # Far-off bounds would overflow the date arithmetic (retention's "7 days before").
            if not EARLIEST <= value <= LATEST:
                raise KpiError(f"{name} must be between 1970 and 9000, got {value:%Y-%m-%d}")
        if self.since and self.until and self.since >= self.until:
            raise KpiError(f"since ({self.since:%Y-%m-%d %H:%M}) must be before until")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


def parse_bound(text: str, *, end: bool = False) -> datetime:
    """A filter bound from `YYYY-MM-DD` or an ISO 8601 date-time (naive = UTC). A bare date
    given as the end (`until`) includes that whole day: it means the next midnight."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if len(text) == 10:
            start = datetime.combine(day, time(0), tzinfo=UTC)
            return start + timedelta(days=1) if end and day < date.max else start
    try:
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise KpiError(f"{text!r} is not a date (YYYY-MM-DD) nor an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_filters(since: str | None = None, until: str | None = None) -> Filters:
    """Filters from the text the CLI and the API receive."""
    return Filters(
        since=parse_bound(since) if since else None,
        until=parse_bound(until, end=True) if until else None,
    )


def check_split(by: str | None) -> Split | None:
    if by is None:
        return None
    for split in SPLITS:
        if by == split:
            return split
    raise KpiError(f"--by must be one of {', '.join(SPLITS)}, got {by!r}")


@dataclass
class KpiValue:
    """One KPI for one group. `n` is the denominator (users, or answers for surveys) so that
    small groups show; `value` is None when there is nothing to measure."""

    kpi: str
    group: str
    value: float | None
    n: int
    unit: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Row(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def to_csv(rows: Sequence[Row]) -> str:
    """KPI values or arm comparisons (`growth.experiments`) as CSV with a header row; `detail`
    as JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header: list[str] = []
    for row in rows:
        record = row.as_dict()
        if not header:
            header = list(record)
            writer.writerow(header)
        writer.writerow([_csv_cell(record[key]) for key in header])
    if not header:
        writer.writerow(["kpi", "group", "value", "n", "unit", "detail"])
    return out.getvalue()


def _csv_cell(value: object) -> object:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return round(value, 6)
    return "" if value is None else value

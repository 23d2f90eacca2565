"""The dashboard's date filter: `Period`, the `since` and `until` of the page's address as
typed and as `kpis.Filters`."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from trialpath.growth import kpis


@dataclass(frozen=True)
class Period:
    """The page's date filter as typed (`since`, `until`: whole days, both included) and as
    `kpis.Filters` (read by `kpis.make_filters`, as the CLI and `GET /v1/kpis` read theirs)."""

    since: str = ""
    until: str = ""
    filters: kpis.Filters = field(default_factory=kpis.Filters)
    error: str = ""

    @classmethod
    def parse(cls, since: str | None, until: str | None) -> Period:
        since, until = (since or "").strip(), (until or "").strip()
        try:
            filters = kpis.make_filters(since or None, until or None)
        except kpis.KpiError as err:
            return cls(since, until, error=str(err))
        return cls(since, until, filters)

    def query(self) -> str:
        values = {"since": self.since, "until": self.until}
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def filtered(self) -> bool:
        return bool(self.since or self.until)

    def describe(self) -> str:
        if self.since and self.until:
            return f"trials signed up from {self.since} to {self.until}"
        if self.since:
            return f"trials signed up since {self.since}"
        if self.until:
            return f"trials signed up until {self.until}"
        return "every trial"

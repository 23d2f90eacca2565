"""Warehouse exports: trials, events and messages as CSV or Parquet files, incremental by time
(`trialpath export`, docs/export.md).

Each run writes, per table, the rows changed in a half-open window [since, until) of the table's
own clock: `trials.updated_at` (a trial's row changes as it goes: stage, activation,
conversion), `trial_events.recorded_at` (events are written once) and `messages.updated_at` (sent,
then delivered, opened or read). A row changed twice between runs is in the next file once, as
it is then; a row changed again after an export is in a later file again: the warehouse keeps the
latest copy per key (`trials.user_id`, `trial_events.id`, `messages.key`).

Without `since`, a run continues where the last one into the same folder stopped: the folder's
`export-state.json` holds each table's `until`, written (atomically) only after the files. A cron
job runs `trialpath export --out DIR`; nothing is missed between runs nor written twice by one.
`until` defaults to a minute ago: a transaction still open when the export reads commits its row
with an earlier time, which the next run takes.

No personal data by default: names, e-mail addresses, phone numbers, recipients, referrers,
landing pages and event properties (which can hold anything the product sent) are left out, and
message subjects and bodies always are. `include_personal_data` adds the identity columns,
decrypted (encryption at rest, trialpath/operations/sealing.py), and is recorded in the audit log.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Column, Engine, Table, func, select
from sqlmodel import SQLModel

import trialpath.operations.models  # noqa: F401  (the tables, registered in the metadata)

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")
STATE_FILE = "export-state.json"
SAFETY_LAG = timedelta(minutes=1)
BATCH = 2000


@dataclass(frozen=True)
class Spec:
    table: str
    clock: str
    """The column the window cuts on."""
    key: str
    columns: tuple[str, ...]
    personal: tuple[str, ...] = ()
    """Added with `include_personal_data` only."""


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SPECS: dict[str, Spec] = {
    "trials": Spec(
        "trials",
        "updated_at",
        "user_id",
        _names(
            "user_id workflow_id persona persona_source persona_at stage urgency activated "
            "activated_at experiment_arm journey_version cs_owner converted_plan mrr "
            "converted_at signup_at trial_ends_at ended_at seconds_per_day locale timezone "
            "source utm_source utm_medium utm_campaign erased_at updated_at"
        ),
        _names("name email phone company referrer landing_page"),
    ),
    "events": Spec(
        "trial_events",
        "recorded_at",
        "id",
        _names("id user_id name occurred_at recorded_at counted"),
        ("properties",),
    ),
    "messages": Spec(
        "messages",
        "updated_at",
        "key",
        _names(
            "key workflow_id user_id step message channel category persona locale template "
            "status provider attempts created_at attempted_at sent_at delivery_status read_at "
            "updated_at"
        ),
        ("recipient",),
    ),
}
TABLES = tuple(SPECS)


class ExportError(ValueError):
    """Bad arguments, or a folder that cannot be written."""


@dataclass
class TableResult:
    table: str
    since: datetime | None
    until: datetime
    rows: int = 0
    file: Path | None = None


@dataclass
class ExportResult:
    out: Path
    format: Format
    tables: list[TableResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "tables": [
                {
                    "table": t.table,
                    "since": t.since.isoformat() if t.since else None,
                    "until": t.until.isoformat(),
                    "rows": t.rows,
                    "file": t.file.name if t.file else None,
                }
                for t in self.tables
            ],
        }


def read_state(out: Path) -> dict[str, datetime]:
    path = out / STATE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: datetime.fromisoformat(v) for name, v in data["until"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{path} is not an export state file ({err}): move it away") from err


def _write_state(out: Path, state: dict[str, datetime]) -> None:
    path = out / STATE_FILE
    temporary = path.with_suffix(".json.tmp")
    data = {"until": {name: at.isoformat() for name, at in sorted(state.items())}}
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def _arrow_type(column: Column[Any]) -> pa.DataType:
    python = _python_type(column)
    if python is datetime:
        return pa.timestamp("us", tz="UTC")
    if python is bool:
        return pa.bool_()
    if python is int:
        return pa.int64()
    if python is float:
        return pa.float64()
    return pa.string()


def _python_type(column: Column[Any]) -> type:
    kind = getattr(column.type, "impl", column.type)  # through our TypeDecorators
    if isinstance(kind, type):
        kind = kind()
    try:
        return kind.python_type
    except NotImplementedError:  # JSON
        return dict


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value


def export(
    engine: Engine,
    out: Path,
    *,
    fmt: Format = "parquet",
    tables: tuple[str, ...] = TABLES,
    since: datetime | None = None,
    until: datetime | None = None,
    include_personal_data: bool = False,
    now: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ExportResult:
    """Writes one file per table for its window; see the module. `progress(table, done,
    total)` is called after each batch."""
    if fmt not in FORMATS:
        raise ExportError(f"the format is csv or parquet, not {fmt!r}")
    unknown = [t for t in tables if t not in SPECS]
    if unknown or not tables:
        raise ExportError(f"tables are among {', '.join(TABLES)}, got {', '.join(unknown)}")
    until = until or (now or datetime.now(UTC)) - SAFETY_LAG
    if since is not None and since >= until:
        raise ExportError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(f"cannot create {out}: {err.strerror or err}") from err
    state = read_state(out)
    result = ExportResult(out, fmt)
    for name in tables:
        start = since if since is not None else state.get(name)
        if start is not None and start >= until:
            result.tables.append(TableResult(name, start, until))
            continue
        table_result = _export_table(
            engine, out, SPECS[name], name, fmt, start, until, include_personal_data, progress
        )
        result.tables.append(table_result)
        state[name] = until
        _write_state(out, state)
    return result


def _export_table(
    engine: Engine,
    out: Path,
    spec: Spec,
    name: str,
    fmt: Format,
    since: datetime | None,
    until: datetime,
    include_personal_data: bool,
    progress: Callable[[str, int, int], None] | None,
) -> TableResult:
    table: Table = SQLModel.metadata.tables[spec.table]
    names = [*spec.columns, *(spec.personal if include_personal_data else ())]
    columns = [table.c[c] for c in names]
    clock = table.c[spec.clock]
    window = [clock < until, *([clock >= since] if since is not None else [])]
    stamp = f"{_compact(since) if since else 'start'}_{_compact(until)}"
    path = out / f"{name}_{stamp}.{fmt}"
    result = TableResult(name, since, until, file=path)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(table).where(*window)).scalar_one()
        if not total:
            return TableResult(name, since, until)  # no empty file
        query = select(*columns).where(*window).order_by(clock, table.c[spec.key])
        rows = conn.execution_options(yield_per=BATCH).execute(query)
        batches = _batches(rows, BATCH)
        if fmt == "parquet":
            schema = pa.schema([(c.name, _arrow_type(c)) for c in columns])
            temporary = path.with_suffix(".parquet.tmp")
            with pq.ParquetWriter(temporary, schema) as writer:
                for batch in batches:
                    data = {c: [_cell(row[i]) for row in batch] for i, c in enumerate(names)}
                    writer.write_table(pa.table(data, schema=schema))
                    result.rows += len(batch)
                    if progress:
                        progress(name, result.rows, total)
        else:
            temporary = path.with_suffix(".csv.tmp")
            with temporary.open("w", newline="", encoding="utf-8") as handle:
                writer_csv = csv.writer(handle)
                writer_csv.writerow(names)
                for batch in batches:
                    for row in batch:
                        writer_csv.writerow([_csv(v) for v in row])
                    result.rows += len(batch)
                    if progress:
                        progress(name, result.rows, total)
    os.replace(temporary, path)
    return result


def _batches(rows: Any, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return _cell(value)


def _compact(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

"""Outcomes to record, from a ``.csv`` or ``.parquet`` file.

Columns: ``request_id`` (the request id the score was answered with) and ``defaulted`` (``0``,
``1``, ``true`` or ``false``), optionally ``observed_at`` (ISO 8601, e.g. ``2026-01-15`` or
``2026-01-15T09:30:00+01:00``; UTC when it has no offset; empty: the gateway's clock) and
``entity_id``. Any other column is refused (a misspelt ``observed_at`` must not be ignored). A
bad value raises :class:`~finpredict.gateway.cli.applications.InputError` naming the file, the
line (CSV) or row (Parquet, counted from 1) and the column.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.gateway.cli.applications import InputError

REQUIRED = ("request_id", "defaulted")
COLUMNS = (*REQUIRED, "observed_at", "entity_id")
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


@dataclass(frozen=True)
class OutcomeRow:
    outcome: spb.Outcome
    where: str  # "line 3" (CSV) or "row 3" (Parquet)


def _text(value: object) -> str | None:
    """A string or integer cell as text (None for anything else)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _defaulted(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):  # an integer column with nulls, via pandas
        return value == 1.0
    text = _text(value)
    if text is not None and text.lower() in _TRUE:
        return True
    if text is not None and text.lower() in _FALSE:
        return False
    return None


def _observed_at(value: object) -> datetime | str | None:
    """The time (None when empty), or why the value is not one."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _observed_at(datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
    return f"{str(value)[:40]!r} is not an ISO 8601 time (e.g. 2026-01-15T09:30:00Z)"


def outcome_from_cells(cells: Mapping[str, object], where: str) -> spb.Outcome:
    """One outcome from a row's cells (strings from CSV, typed values from Parquet)."""

    def bad(column: str, problem: str) -> InputError:
        return InputError(f"{where}, column {column!r}: {problem}")

    request_id = _text(cells.get("request_id"))
    if not request_id:
        raise bad("request_id", "required (the request id the score was answered with)")
    defaulted = _defaulted(cells.get("defaulted"))
    if defaulted is None:
        got = cells.get("defaulted")
        raise bad(
            "defaulted", f"expected 0, 1, true or false, got {'nothing' if got in (None, '') else repr(got)}"
        )
    outcome = spb.Outcome(request_id=request_id, defaulted=defaulted)
    observed = _observed_at(cells.get("observed_at"))
    if isinstance(observed, str):
        raise bad("observed_at", observed)
    if observed is not None:
        outcome.observed_at.FromDatetime(observed)
    entity = cells.get("entity_id")
    if entity is not None and entity != "":
        text = _text(entity)
        if text is None:
            raise bad("entity_id", f"expected a string, got {entity!r}")
        outcome.entity_id = text
    return outcome


def _check_header(path: Path, where: str, names: Sequence[str]) -> None:
    for i, name in enumerate(names):
        if name not in COLUMNS:
            raise InputError(
                f"{path}, {where}: unknown column {name or f'#{i + 1} (no name)'!r}; "
                f"the columns are {', '.join(COLUMNS)}"
            )
        if name in names[:i]:
            raise InputError(f"{path}, {where}, column {name!r}: appears twice")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise InputError(f"{path}, {where}: no {' or '.join(repr(c) for c in missing)} column")


def read_outcomes_csv(path: Path) -> list[OutcomeRow]:
    """A header row, then one outcome per row; blank rows are skipped."""
    rows: list[OutcomeRow] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (expected a header row: {', '.join(COLUMNS)})")
            names = [h.strip() for h in header]
            _check_header(path, f"line {reader.line_num}", names)
            for record in reader:
                if not record or all(not cell.strip() for cell in record):
                    continue
                where = f"line {reader.line_num}"
                if len(record) != len(names):
                    raise InputError(
                        f"{path}, {where}: {len(record)} fields, but the header has {len(names)}"
                    )
                cells = dict(zip(names, (cell.strip() for cell in record), strict=True))
                rows.append(OutcomeRow(outcome_from_cells(cells, f"{path}, {where}"), where))
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: bad CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from None
    return rows


def read_outcomes_parquet(path: Path) -> list[OutcomeRow]:
    """One outcome per row of the file's columns."""
    import polars as pl  # only this command needs it

    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # the reader of an untrusted file may raise anything; name the file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a readable Parquet file ({first})") from None
    _check_header(path, "schema", frame.columns)
    rows = []
    for i, cells in enumerate(frame.iter_rows(named=True)):
        where = f"row {i + 1}"
        rows.append(OutcomeRow(outcome_from_cells(cells, f"{path}, {where}"), where))
    return rows


def read_outcomes(path: Path) -> list[OutcomeRow]:
    """Outcomes from a ``.csv`` or ``.parquet`` file (raises :class:`InputError`); one request
    id with two different outcomes is refused."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: unknown file type {suffix or '(none)'!r}: use .csv or .parquet")
    try:
        rows = read_outcomes_csv(path) if suffix == ".csv" else read_outcomes_parquet(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{path}: no outcomes in the file")
    first: dict[str, OutcomeRow] = {}
    for row in rows:
        seen = first.setdefault(row.outcome.request_id, row)
        if seen is not row and seen.outcome.defaulted != row.outcome.defaulted:
            raise InputError(
                f"{path}, {row.where}, column 'defaulted': request {row.outcome.request_id!r} has a "
                f"different outcome on {seen.where}"
            )
    return rows

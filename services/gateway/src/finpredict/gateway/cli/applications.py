"""Applications to score from ``.jsonl`` and ``.csv`` files or a ``--features`` JSON object.

Numbers become numeric features, strings categories, empty or null values missing ones; every
application needs an ``entity_id`` (routing is sticky per entity). A bad one raises
:class:`InputError` naming the file, the line and the key.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpredict.api.common.v1 import types_pb2
from finpredict.api.scoring.v1 import scoring_pb2 as spb

ENTITY_KEY = "entity_id"


class InputError(Exception):
    """A bad application in an input file; the message names the file, the line and the key."""


@dataclass
class Row:
    application: spb.Application
    line: int  # where it came from (0 for --features)


def _where(path: Path, line: int, key: str | None, noun: str) -> str:
    return f"{path}, line {line}" + (f", {noun} {key!r}" if key is not None else "")


def _locator(path: Path, line: int, noun: str) -> Callable[[str | None], str]:
    return lambda key: _where(path, line, key, noun)


def _json_value(value: Any) -> types_pb2.FeatureValue | str:
    """A JSON value as a feature (or the reason it cannot be one)."""
    if value is None or value == "":
        return types_pb2.FeatureValue()
    if isinstance(value, bool):
        return f"{json.dumps(value)} is neither a number nor a string"
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return "the number is too large"
        return types_pb2.FeatureValue(number=number)
    if isinstance(value, str):
        return types_pb2.FeatureValue(category=value)
    kind = (
        "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "another value"
    )
    return f"expected a number, a string or null, got {kind}"


def _entity_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def application_from_object(
    doc: Any, where: Callable[[str | None], str], entity_id: str = ""
) -> spb.Application:
    if not isinstance(doc, dict):
        raise InputError(f"{where(None)}: expected a JSON object, got {json.dumps(doc)[:40]}")
    app = spb.Application()
    if ENTITY_KEY in doc:
        eid = _entity_id(doc[ENTITY_KEY])
        if eid is None:
            raise InputError(f"{where(ENTITY_KEY)}: must be a non-empty string (or an integer)")
        app.entity_id = eid
    if entity_id:
        app.entity_id = entity_id
    if not app.entity_id:
        raise InputError(f"{where(ENTITY_KEY)}: required (routing is sticky per entity)")
    for key, value in doc.items():
        if key == ENTITY_KEY:
            continue
        got = _json_value(value)
        if isinstance(got, str):
            raise InputError(f"{where(key)}: {got}")
        app.features[key].CopyFrom(got)
    return app


def read_jsonl(path: Path) -> list[Row]:
    """One JSON object per line: ``entity_id`` and features; blank lines are skipped."""
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig") as f:
        n = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}, line {n + 1}: not UTF-8 text ({exc.reason})") from None
            if not line:
                break
            n += 1
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}, line {n}: not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except RecursionError:
                raise InputError(f"{path}, line {n}: JSON nested too deeply") from None
            rows.append(Row(application_from_object(doc, _locator(path, n, "key")), n))
    return rows


def _csv_value(text: str) -> types_pb2.FeatureValue:
    stripped = text.strip()
    if not stripped or stripped.lower() == "null":
        return types_pb2.FeatureValue()
    try:
        return types_pb2.FeatureValue(number=float(stripped))
    except ValueError:
        return types_pb2.FeatureValue(category=stripped)


def read_csv(path: Path) -> list[Row]:
    """A header row with an ``entity_id`` column; one application per row; empty cells are missing."""
    rows: list[Row] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (expected a header row with an {ENTITY_KEY} column)")
            names = [h.strip() for h in header]
            for i, name in enumerate(names):
                if not name:
                    raise InputError(f"{path}, line {reader.line_num}: column {i + 1} has no name")
                if name in names[:i]:
                    raise InputError(f"{path}, line {reader.line_num}, column {name!r}: appears twice")
            if ENTITY_KEY not in names:
                raise InputError(f"{path}, line {reader.line_num}: no {ENTITY_KEY!r} column in the header")
            for record in reader:
                line = reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) != len(names):
                    raise InputError(
                        f"{path}, line {line}: {len(record)} fields, but the header has {len(names)}"
                    )
                app = spb.Application()
                for name, cell in zip(names, record, strict=True):
                    if name == ENTITY_KEY:
                        if not cell.strip():
                            raise InputError(f"{_where(path, line, name, 'column')}: empty entity id")
                        app.entity_id = cell.strip()
                    else:
                        app.features[name].CopyFrom(_csv_value(cell))
                rows.append(Row(app, line))
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: bad CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from None
    return rows


def read_applications(path: Path) -> list[Row]:
    """Applications from a ``.jsonl``/``.ndjson`` or ``.csv`` file (raises :class:`InputError`)."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputError(
            f"{path}: unknown file type {suffix or '(none)'!r}: use .jsonl (one JSON object per line) or .csv"
        )
    try:
        rows = read_csv(path) if suffix == ".csv" else read_jsonl(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{path}: no applications in the file")
    return rows

"""The SageMaker / MLflow container contract: ``POST /invocations`` bodies and answers.

JSON in one of MLflow's four layouts (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``) or ``text/csv`` with a header row. The answer is
``{"predictions": [...], "model": {"name", "version", "sha256"}}``, one prediction per row.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson

from dscloud.cells import parse_cells
from dscloud.columns import MISSING
from dscloud.errors import PayloadError, UnsupportedMediaError
from dscloud.schema import OUTPUT_KINDS, Schema
from dscloud.scorer import Predictions, Scorer
from dscloud.server.protocols import Batch, check_known, loads

__all__ = ["INVOCATION_FORMATS", "decode_invocations", "encode_invocations"]

INVOCATION_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_JSON_TYPES = ("application/json", "")
_CSV_TYPES = ("text/csv", "application/csv")


def decode_invocations(body: bytes, content_type: str, schema: Schema) -> Batch:
    """A ``POST /invocations`` body (JSON in one of four layouts, or CSV) as a Batch.

    Raises :class:`UnsupportedMediaError` for another content type, :class:`PayloadError`
    or :class:`SchemaError` for a body that does not fit.
    """
    media = content_type.partition(";")[0].strip().lower()
    if media in _CSV_TYPES:
        return _from_csv(body, schema)
    if media in _JSON_TYPES or media.endswith("+json"):
        return _from_json(loads(body), schema)
    raise UnsupportedMediaError(
        f"content type {media!r} is not supported; send application/json "
        f"({', '.join(INVOCATION_FORMATS)}) or text/csv with a header row"
    )


def _from_json(payload: Any, schema: Schema) -> Batch:
    if (
        not isinstance(payload, dict)
        or len(payload) != 1
        or next(iter(payload)) not in INVOCATION_FORMATS
    ):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise PayloadError(
            f"expected a JSON object with exactly one of {list(INVOCATION_FORMATS)}, got {keys}",
            field="body",
        )
    fmt, value = next(iter(payload.items()))
    if fmt == "dataframe_split":
        return _from_split(value, schema)
    if fmt == "inputs" and isinstance(value, dict):
        return _from_columns(value, schema)
    if fmt == "dataframe_records" or (
        isinstance(value, list) and value and isinstance(value[0], dict)
    ):
        return _from_records(value, schema, fmt)
    return _from_rows(value, schema, fmt)


def _from_split(value: Any, schema: Schema) -> Batch:
    if not isinstance(value, dict):
        raise PayloadError(
            '"dataframe_split" must be an object {"columns": [...], "data": [[...]]}',
            field="dataframe_split",
        )
    columns, data = value.get("columns"), value.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise PayloadError(
            '"dataframe_split.columns" must be a list of column names',
            field="dataframe_split.columns",
        )
    if not isinstance(data, list):
        raise PayloadError(
            '"dataframe_split.data" must be a list of rows', field="dataframe_split.data"
        )
    check_known(schema, columns)
    if len(set(columns)) != len(columns):
        raise PayloadError(
            "dataframe_split.columns names a column twice", field="dataframe_split.columns"
        )
    return _transpose(columns, data, "dataframe_split.data")


def _transpose(names: list[str], rows: list[Any], field: str) -> Batch:
    width = len(names)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise PayloadError(
                f"{field}[{i}]: expected a list of {width} values ({names}), got {got}",
                field=field,
                row=i,
            )
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return Batch(dict(zip(names, columns, strict=True)), len(rows))


def _from_records(value: Any, schema: Schema, fmt: str) -> Batch:
    if not isinstance(value, list):
        raise PayloadError(f'"{fmt}" must be a list of row objects', field=fmt)
    if not value:
        return Batch({c: [] for c in schema.names}, 0)
    keys: set[str] = set()
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise PayloadError(
                f"{fmt}[{i}]: expected an object of columns, got {type(row).__name__}",
                field=fmt,
                row=i,
            )
        keys.update(row)
    check_known(schema, sorted(keys))
    # A row without a column is the core's to judge (MISSING), as for a stream record.
    columns = {c: [r.get(c, MISSING) for r in value] for c in schema.names}
    return Batch(columns, len(value))


def _from_columns(value: dict[str, Any], schema: Schema) -> Batch:
    check_known(schema, list(value))
    n_rows: int | None = None
    for name, values in value.items():
        if not isinstance(values, list):
            raise PayloadError(f'"inputs.{name}" must be a list of values', field=name)
        if n_rows is not None and len(values) != n_rows:
            raise PayloadError(
                f'"inputs.{name}" has {len(values)} values, earlier columns have {n_rows}',
                field=name,
            )
        n_rows = len(values)
    return Batch(dict(value), n_rows or 0)


def _from_rows(value: Any, schema: Schema, fmt: str) -> Batch:
    # TF-serving style rows without names: values in the schema's column order.
    if not isinstance(value, list):
        raise PayloadError(
            f'"{fmt}" must be a list of rows (objects, or lists in the order {schema.names})',
            field=fmt,
        )
    if len(schema.columns) == 1 and not any(isinstance(v, list) for v in value):
        return Batch({schema.names[0]: value}, len(value))
    return _transpose(schema.names, value, fmt)


def _from_csv(body: bytes, schema: Schema) -> Batch:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"CSV body is not UTF-8: {exc}") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise PayloadError(f"malformed CSV: {exc}") from None
    if not rows:
        raise PayloadError(f"empty CSV: expected a header row naming the columns {schema.names}")
    header = [h.strip() for h in rows[0]]
    check_known(schema, header)
    if len(set(header)) != len(header):
        raise PayloadError("the CSV header names a column twice", field="header")
    data = rows[1:]
    width = len(header)
    for i, row in enumerate(data):
        if len(row) != width:
            raise PayloadError(
                f"CSV row {i + 1}: expected {width} values ({header}), got {len(row)}", row=i
            )
    raw = list(zip(*data, strict=True)) if data else [() for _ in header]
    # Cells become values by the core's one rule for text (dscloud.cells), as in batch.
    columns = {
        name: parse_cells(schema.column(name), values)
        for name, values in zip(header, raw, strict=True)
    }
    return Batch(columns, len(data))


def encode_invocations(preds: Predictions, scorer: Scorer) -> bytes:
    """``{"predictions": [{label, probabilities, value}...], "model": {name, version, sha256}}``."""
    # Column-wise tolist() is the same numbers as Predictions.to_records(), built faster.
    fields = [(k, a) for k in OUTPUT_KINDS if (a := getattr(preds, k)) is not None]
    names = [k for k, _ in fields]
    lists = [a.tolist() for _, a in fields]
    records = [dict(zip(names, values, strict=True)) for values in zip(*lists, strict=True)]
    body = {
        "predictions": records,
        "model": scorer.identity.to_dict(),
    }
    return orjson.dumps(body)

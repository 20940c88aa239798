"""The SageMaker / MLflow container contract: ``POST /invocations`` bodies and answers.

JSON in one of MLflow's four layouts (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``) or ``text/csv`` with a header row. The answer is
``{"predictions": [...], "model": {"name", "version", "sha256"}}``, one prediction per row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import repeat
from typing import Any

import numpy as np
import orjson

from dscloud.cells import parse_cells
from dscloud.columns import MISSING
from dscloud.errors import PayloadError, UnsupportedMediaError
from dscloud.json_input import named_columns, rows_to_columns, tensor_rows
from dscloud.schema import OUTPUT_KINDS, Schema
from dscloud.scorer import Predictions, Scorer
from dscloud.server.protocols import Batch, check_known, loads

__all__ = ["INVOCATION_FORMATS", "decode_invocations", "encode_invocations", "is_csv"]

INVOCATION_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_JSON_TYPES = ("application/json", "")
_CSV_TYPES = ("text/csv", "application/csv")


def is_csv(content_type: str) -> bool:
    """Whether a body of ``content_type`` is decoded as CSV."""
    return content_type.partition(";")[0].strip().lower() in _CSV_TYPES


def decode_invocations(body: bytes, content_type: str, schema: Schema) -> Batch:
    """A ``POST /invocations`` body (JSON in one of four layouts, or CSV) as a Batch.

    Raises :class:`UnsupportedMediaError` for another content type, :class:`PayloadError`
    or :class:`SchemaError` for a body that does not fit.
    """
    media = content_type.partition(";")[0].strip().lower()
    if is_csv(media):
        batch = _from_csv(body, schema)
    elif media in _JSON_TYPES or media.endswith("+json"):
        batch = _from_json(loads(body), schema)  # the parsed document is freed on return
    else:
        raise UnsupportedMediaError(
            f"content type {media!r} is not supported; send application/json "
            f"({', '.join(INVOCATION_FORMATS)}) or text/csv with a header row"
        )
    if isinstance(batch.columns, dict):
        schema.compact(batch.columns, batch.n_rows)
    return batch


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
    return Batch(rows_to_columns(rows, names, field), len(rows))


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
    rows = tensor_rows(value, schema.names, schema.matrix_input)
    if rows is not None:
        return _from_rows(rows, schema, f"inputs.{schema.matrix_input}")
    check_known(schema, list(value))
    return Batch(*named_columns(value, "inputs"))


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


#: Rows decoded at a time. Each block's cells become values before the next block is read,
#: so the text of every cell never exists at once (bench/memory.md: CSV went from 34x its
#: body size at peak to a fraction of that).
BLOCK_ROWS = 8192
#: Distinct texts per string column shared between equal cells, at most.
_SHARED_TEXTS = 10_000


def _from_csv(body: bytes, schema: Schema) -> Batch:
    # Lines are decoded as they are read (no text copy of the body, no StringIO of it).
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig", newline=""))
    try:
        header = [h.strip() for h in next((row for row in reader if row), [])]
        if not header:
            raise PayloadError(
                f"empty CSV: expected a header row naming the columns {schema.names}"
            )
        check_known(schema, header)
        if len(set(header)) != len(header):
            raise PayloadError("the CSV header names a column twice", field="header")
        columns: dict[str, list[Any]] = {name: [] for name in header}
        shared: dict[str, dict[str, str]] = {name: {} for name in header}
        n_rows = 0
        for block in _blocks(reader, header, BLOCK_ROWS):
            for name, texts in zip(header, zip(*block, strict=True), strict=True):
                column = schema.column(name)
                values = parse_cells(column, texts)
                if not column.numeric:
                    values = _share(values, shared[name])
                columns[name].extend(values)
            n_rows += len(block)
            del block
    except UnicodeDecodeError as exc:
        raise PayloadError(f"CSV body is not UTF-8: {exc}") from None
    except csv.Error as exc:
        raise PayloadError(f"malformed CSV: {exc}") from None
    return Batch(columns, n_rows)


def _blocks(reader: Any, header: list[str], size: int) -> Iterator[list[list[str]]]:
    """Lists of up to ``size`` non-empty rows of ``reader``, each checked to be as wide as
    ``header``.

    Raises :class:`PayloadError` naming the first row of another width.
    """
    block: list[list[str]] = []
    index, width = 0, len(header)
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            raise PayloadError(
                f"CSV row {index + 1}: expected {width} values ({header}), got {len(row)}",
                row=index,
            )
        block.append(row)
        index += 1
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def _share(values: list[Any], seen: dict[str, str]) -> list[Any]:
    """``values`` with equal texts as one object (a category repeats on every row)."""
    if len(seen) >= _SHARED_TEXTS:
        return values
    return [seen.setdefault(v, v) if type(v) is str else v for v in values]


def encode_invocations(preds: Predictions, scorer: Scorer) -> bytes:
    """``{"predictions": [{label, probabilities, value}...], "model": {name, version, sha256}}``."""
    # The same JSON as orjson.dumps(Predictions.to_records()), built without a dict, a list
    # and a float object per row: each output is serialised whole by orjson and cut into
    # one fragment per row, and the rows are joined from the fragments. In blocks, so that
    # a 300,000-row answer never holds every fragment at once.
    fields = [(k, a) for k in OUTPUT_KINDS if (a := getattr(preds, k)) is not None]
    parts = []
    for start in range(0, len(preds), BLOCK_ROWS):
        columns: list[Any] = []
        for i, (kind, array) in enumerate(fields):
            columns.append(repeat(b'{"' if i == 0 else b',"'))
            columns.append(repeat(kind.encode() + (b'":[' if array.ndim == 2 else b'":')))
            columns.append(_fragments(array[start : start + BLOCK_ROWS]))
            columns.append(repeat(b"]" if array.ndim == 2 else b""))
        columns.append(repeat(b"}"))
        parts.append(b",".join(map(b"".join, zip(*columns, strict=False))))  # repeat() is endless
    model = orjson.dumps(scorer.identity.to_dict())
    return b'{"predictions":[' + b",".join(parts) + b'],"model":' + model + b"}"


def _fragments(array: Any) -> list[bytes]:
    """The JSON of each row of ``array`` (a 2-D row without its brackets), as orjson writes
    the row's Python values (float32 widened first, so the digits are the float64 ones)."""
    if len(array) == 0:
        return []
    if array.dtype.kind == "f":
        array = array.astype(np.float64, copy=False)
    if array.dtype.kind not in "fiub" or (array.ndim == 2 and array.shape[1] == 0):
        return [
            orjson.dumps(v)[1:-1] if array.ndim == 2 else orjson.dumps(v) for v in array.tolist()
        ]
    text = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)
    if array.ndim == 2:
        return text[2:-2].split(b"],[")
    return text[1:-1].split(b",")

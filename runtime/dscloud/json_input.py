"""JSON documents as every runtime reads them: standard JSON, by one rule.

The server parses with orjson for speed, the stream handler with the standard library;
left alone they disagree on valid JSON orjson cannot hold and on what is not JSON at all.
The rule, which :func:`parse_json` applies and the server falls back to when orjson
refuses a body:

- A lone surrogate escape (``"\\ud800"``) is valid JSON, so it is read, and the core
  refuses the value with a reason that names its column (it is not UTF-8 for ONNX
  Runtime), as for any other bad value. Integers are read exactly at any size; orjson
  reads one beyond 64 bits as the nearest float instead, which an int64 column refuses
  as out of range all the same (the reason then shows the float).
- ``NaN``, ``Infinity`` and ``-Infinity`` are read as the floats they name, although the
  standard forbids them: Python's ``json.dumps`` writes them, so ``tritonclient`` and any
  Python client send a missing FP32 value as ``NaN``, and MLflow's server reads it. ``NaN``
  is then a missing value, as ``null`` is (accepted where the column is nullable, refused
  naming the column where it is not); an infinity meets the same rule as a number beyond
  float32 (the core's, :mod:`dscloud.columns`). Any other bare word is malformed.

Then JSON values become columns, for every adapter that takes JSON rows or MLflow's
``inputs`` object (:func:`rows_to_columns`, :func:`tensor_rows`, :func:`named_columns`):

- **Rows without names** (``dataframe_split.data``, ``instances``, ``inputs`` as a list)
  are lists of values in the column order given; a row of another length or type is
  refused naming its index.
- **MLflow's tensor form by ONNX input name**, ``{"inputs": {"<onnx input>": [[...]]}}``,
  is taken for a model with one ``[N, k]`` input whose name is not also a column: each
  row lists the columns in the schema's order, as MLflow's onnx flavor reads it.
- **Named columns** (``{"inputs": {"<column>": [...]}}``) are lists of the same length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dscloud.errors import PayloadError

__all__ = ["NUMBER_TOKENS", "named_columns", "parse_json", "rows_to_columns", "tensor_rows"]


#: The non-standard number tokens the rule reads (what :func:`parse_json` accepts beyond JSON).
NUMBER_TOKENS = (b"NaN", b"Infinity")


def parse_json(data: bytes | str) -> Any:
    """The value of the JSON document ``data``; ``NaN``, ``Infinity`` and ``-Infinity``
    become the floats they name.

    Raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for a document
    that is not JSON, and ``RecursionError`` for one nested too deeply.
    """
    return json.loads(data)


def rows_to_columns(rows: Any, names: Sequence[str], field: str) -> dict[str, Sequence[Any]]:
    """JSON rows, each a list of values in the order of ``names``, as ``{name: values}``.

    Raises :class:`PayloadError` naming ``field`` and the first row that is not a list of
    ``len(names)`` values.
    """
    width = len(names)
    # One C pass over the rows' types and lengths; the loop that names the first bad row
    # runs only when there is one.
    if not {list}.issuperset(map(type, rows)) or not {width}.issuperset(map(len, rows)):
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
                raise PayloadError(
                    f"{field}[{i}]: expected a list of {width} values ({list(names)}), got {got}",
                    field=field,
                    row=i,
                )
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return dict(zip(names, columns, strict=True))


def tensor_rows(
    value: Mapping[str, Any], names: Sequence[str], matrix_input: str | None
) -> Any | None:
    """The rows of MLflow's tensor form by ONNX input name (``{"<onnx input>": [[...]]}``),
    or None when ``value`` is not that form (named columns, or a model without a single
    matrix input). The rows are unchecked: :func:`rows_to_columns` checks them."""
    if matrix_input is not None and list(value) == [matrix_input] and matrix_input not in names:
        return value[matrix_input]
    return None


def named_columns(value: Mapping[str, Any], field: str) -> tuple[dict[str, Any], int]:
    """Named columns ``{name: [values]}`` and their common length.

    Raises :class:`PayloadError` naming the first column that is not a list, or whose
    length differs from the columns before it.
    """
    n_rows: int | None = None
    for name, values in value.items():
        if not isinstance(values, list):
            raise PayloadError(f'"{field}.{name}" must be a list of values', field=name)
        if n_rows is not None and len(values) != n_rows:
            raise PayloadError(
                f'"{field}.{name}" has {len(values)} values, earlier columns have {n_rows}',
                field=name,
            )
        n_rows = len(values)
    return dict(value), n_rows or 0

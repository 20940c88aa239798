"""Whole data sets as columns, for commands that join or summarise rather than stream
(``dsc evaluate``, ``dsc import-onnx --baseline``).

Scoring streams chunks (:mod:`dscloud.batch.job`); joining predictions with labels needs
every key at once, so this reads every data file at a location (any registered format)
into one column per name. Memory is the size of the columns asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pyarrow as pa

from dscloud.baseline import Baseline, build_baseline
from dscloud.batch import formats
from dscloud.batch.locations import Location
from dscloud.drift import pick
from dscloud.errors import ConfigError
from dscloud.scorer import Scorer

__all__ = ["input_baseline", "read_columns"]


def read_columns(
    location: Location, *, format: str | None = None, wanted: Sequence[str] | None = None
) -> dict[str, Any]:
    """The columns of every data file at ``location``, concatenated in path order.

    Numeric columns come as numpy arrays (nulls as NaN), others as lists (nulls as None).
    ``wanted`` None means every column of the first file; files without one of ``wanted``
    are refused. Returns name -> values. Raises :class:`ConfigError` when nothing is found
    or a column is absent, :class:`~dscloud.errors.DataError` when a file cannot be read.
    """
    tables: list[pa.Table] = []
    names: list[str] | None = list(wanted) if wanted is not None else None
    for file in formats.list_inputs(location, format=format):
        table = formats.named(file.format).read_table(location, file.path)
        if names is None:
            names = list(table.column_names)
        absent = [n for n in names if n not in table.column_names]
        if absent:
            raise ConfigError(
                f"{location.uri_of(file.path)} has no column {absent[0]!r}; "
                f"it has {table.column_names}"
            )
        tables.append(table.select(names))
    assert names is not None  # list_inputs raises when it finds nothing
    table = pa.concat_tables(tables, promote_options="permissive")
    return {name: _values(table.column(name)) for name in names}


def input_baseline(location: Location, scorer: Scorer) -> Baseline:
    """The training baseline of the data set at ``location`` (``dsc import-onnx --baseline``):
    the features of the rows ``scorer`` accepts and its outputs on them, as packaging
    builds it. Reads the whole data set. Raises :class:`ConfigError` when a schema column
    is absent or no row is accepted.
    """
    schema = scorer.schema
    columns = read_columns(location, wanted=schema.names)
    n = len(next(iter(columns.values()))) if columns else 0
    preds = scorer.score_columns(columns, n)
    if len(preds) == 0:
        raise ConfigError(f"baseline {location.uri}: the model accepts none of its {n} rows")
    # Raw columns in, raw columns out (pick passes a Tally through; there is none here).
    accepted = cast("dict[str, Any]", dict(pick(columns, schema.names, preds.rows)))
    return build_baseline(schema, accepted, preds)


def _values(column: pa.ChunkedArray) -> Any:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        if column.null_count == 0 or pa.types.is_floating(kind):
            return column.to_numpy()
        return column.cast(pa.float64()).to_numpy()
    return column.to_pylist()

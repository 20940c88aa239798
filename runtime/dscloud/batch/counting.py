"""Drift counting for batch data: a scored chunk's rows into the baseline's bins.

The one drift computation is :class:`dscloud.drift.DriftCounts`; this module only hands it
a chunk the way that is cheapest for Arrow data. Numeric columns go as the numpy columns
the scorer took; a text column goes as a :class:`~dscloud.drift.Tally` of its dictionary
codes (one ``bincount`` of the accepted rows), so no string is touched per row. Only the
rows the scorer accepted are counted: rejects are reported with their reason instead.

:func:`count_input` counts a whole data set (any registered format, a file or a prefix)
for ``dsc drift``, chunk by chunk, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from dscloud.baseline import Baseline, CategoricalBins
from dscloud.batch import formats
from dscloud.batch.arrays import dictionary_codes
from dscloud.batch.locations import Location
from dscloud.batch.plan import WorkUnit
from dscloud.batch.reader import columns_for_scoring
from dscloud.drift import ColumnValues, DriftCounts, Tally
from dscloud.scorer import Predictions, Scorer

__all__ = ["count_chunk", "count_input"]


def count_chunk(
    counts: DriftCounts,
    batch: pa.RecordBatch,
    decoded: Mapping[str, Any],
    predictions: Predictions,
) -> None:
    """Add the accepted rows of ``batch`` (scored from ``decoded``) to ``counts``.

    Categorical features whose Arrow column is text are tallied from dictionary codes;
    every other feature is counted from ``decoded``. Raises what
    :meth:`DriftCounts.add_scored` raises.
    """
    rows = predictions.rows
    every_row = len(rows) == batch.num_rows
    columns: dict[str, ColumnValues] = {}
    for name, bins in counts.baseline.features.items():
        array = batch.column(name)
        value_type = array.type.value_type if pa.types.is_dictionary(array.type) else array.type
        text = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        if isinstance(bins, CategoricalBins) and text:
            encoded = array if pa.types.is_dictionary(array.type) else array.dictionary_encode()
            codes = dictionary_codes(encoded)
            columns[name] = Tally.from_codes(
                codes if every_row else codes[rows], encoded.dictionary.to_pylist()
            )
        else:
            values = decoded[name]
            columns[name] = values if every_row else _take(values, rows)
    counts.add(columns, predictions)


def _take(values: Any, rows: Any) -> Any:
    if isinstance(values, list):
        return [values[i] for i in rows.tolist()]
    return values[rows]


def count_input(
    location: Location,
    scorer: Scorer,
    baseline: Baseline,
    *,
    format: str | None = None,
    chunk_rows: int = 100_000,
) -> DriftCounts:
    """Score every row at ``location`` (a file or a prefix of data files) and count them.

    Returns the counts of the accepted rows. Raises :class:`~dscloud.errors.ConfigError`
    when there are no data files or a schema column is absent, and
    :class:`~dscloud.errors.DataError` when a file cannot be read.
    """
    counts = DriftCounts(baseline)
    schema = scorer.schema
    for file in formats.list_inputs(location, format=format):
        unit = WorkUnit(path=file.path, format=file.format, weight=file.size)
        fmt = formats.named(file.format)
        for chunk in fmt.chunks(location, unit, schema.names, schema, chunk_rows):
            decoded = columns_for_scoring(chunk.batch, schema)
            predictions = scorer.score_columns(decoded, chunk.num_rows)
            count_chunk(counts, chunk.batch, decoded, predictions)
    return counts

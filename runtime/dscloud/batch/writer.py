"""Output of one shard: a Parquet part of predictions and a Parquet file of rejects.

Both are written under ``_temporary/`` and only *published* (moved to their final name)
once the shard has read its last row, so a killed shard never leaves a partial part where
readers look, and a re-run replaces, never duplicates. Names are fixed by the shard
(``part-00003-of-00010.parquet``), which is what makes a re-run idempotent.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dscloud.batch.arrays import arrow_array, arrow_strings
from dscloud.batch.formats import Chunk
from dscloud.batch.locations import Location
from dscloud.errors import DataError
from dscloud.scorer import Predictions

__all__ = [
    "MODEL_COLUMNS",
    "SOURCE_COLUMNS",
    "PartWriter",
    "part_name",
    "prediction_table",
    "rejects_name",
    "rejects_table",
]

MODEL_COLUMNS = ("model_name", "model_version", "model_sha256")
#: Where a row came from: key columns of last resort, and always present in rejects.
SOURCE_COLUMNS = ("source_file", "source_row")
REASON_COLUMN = "reason"


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.parquet"


def rejects_name(index: int, count: int) -> str:
    return posixpath.join("_rejects", f"rejects-{index:05d}-of-{count:05d}.parquet")


def _constant(value: str, n: int) -> pa.Array:
    """``n`` copies of ``value`` as a dictionary array: one value stored, n small indices."""
    return pa.DictionaryArray.from_arrays(
        arrow_array(np.zeros(n, dtype=np.int8)), arrow_strings([value])
    )


def _source_columns(chunk: Chunk, rows: Any) -> list[tuple[str, pa.Array]]:
    n = len(rows)
    return [
        (SOURCE_COLUMNS[0], _constant(chunk.source, n)),
        (SOURCE_COLUMNS[1], arrow_array(np.asarray(rows, dtype=np.int64) + chunk.first_row)),
    ]


def prediction_table(chunk: Chunk, keys: Sequence[str], preds: Predictions) -> pa.Table:
    """Keys (or source file and row when there are none), predictions and the model.

    Predictions are ``label`` and one ``probability_<class>`` column per class for a
    classifier, ``value`` for a regressor.
    """
    n = len(preds.rows)
    whole = n == chunk.num_rows
    take = None if whole else arrow_array(preds.rows)
    columns: list[tuple[str, pa.Array]] = []
    if keys:
        for key in keys:
            column = chunk.batch.column(key)
            columns.append((key, column if take is None else column.take(take)))
    else:
        columns.extend(_source_columns(chunk, preds.rows))
    if preds.label is not None:
        columns.append(("label", arrow_array(preds.label)))
    if preds.probabilities is not None:
        classes = preds.classes or list(range(preds.probabilities.shape[1]))
        for j, cls in enumerate(classes):
            columns.append((f"probability_{cls}", arrow_array(preds.probabilities[:, j])))
    if preds.value is not None:
        columns.append(("value", arrow_array(preds.value)))
    model = preds.envelope.identity
    columns.append((MODEL_COLUMNS[0], _constant(model.name, n)))
    columns.append((MODEL_COLUMNS[1], arrow_array(np.full(n, model.version or 0, dtype=np.int64))))
    columns.append((MODEL_COLUMNS[2], _constant(model.sha256, n)))
    return pa.table(dict(columns))


def rejects_table(
    chunk: Chunk, keys: Sequence[str], features: Sequence[str], rejects: dict[int, str]
) -> pa.Table:
    """One row per rejected input row: keys, source file and row, reason, the raw values."""
    rows = np.fromiter(rejects, dtype=np.int64, count=len(rejects))
    take = arrow_array(rows)
    columns: list[tuple[str, pa.Array]] = [(k, chunk.batch.column(k).take(take)) for k in keys]
    columns.extend(_source_columns(chunk, rows))
    columns.append((REASON_COLUMN, arrow_strings(list(rejects.values()))))
    for name in features:
        if name not in keys:
            columns.append((name, chunk.batch.column(name).take(take)))
    return pa.table(dict(columns))


class PartWriter:
    """A Parquet file written under a temporary name and published by :meth:`commit`.

    Opened on the first :meth:`write`; a writer that never wrote publishes nothing.
    """

    def __init__(
        self, location: Location, final: str, *, dictionary: Sequence[str] | None = None
    ) -> None:
        self.location = location
        # Dictionary-encode only columns known to repeat (labels, the model): trying it on
        # unique keys and probabilities costs more than the whole rest of the write.
        self.dictionary: bool | list[str] = True if dictionary is None else list(dictionary)
        self.final = final
        self.temp = location.temp_path(final)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None

    def write(self, table: pa.Table) -> None:
        """Append ``table``; raises :class:`DataError` when the output cannot be written."""
        try:
            if self._writer is None:
                self._stream = self.location.open_output(self.temp)
                self._writer = pq.ParquetWriter(
                    self._stream,
                    table.schema,
                    compression="zstd",
                    use_dictionary=self.dictionary,
                )
            elif table.schema != self._writer.schema:
                table = table.cast(self._writer.schema)
            self._writer.write_table(table)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{self.location.uri_of(self.temp)}: cannot write ({exc})") from exc
        self.rows += table.num_rows

    def commit(self) -> str | None:
        """Finish the file and move it to its final name; returns that path, or None if empty."""
        if self._writer is None:
            self.location.delete(self.final)  # an earlier attempt's part, now stale
            return None
        try:
            self._writer.close()
            self._stream.close()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{self.location.uri_of(self.temp)}: cannot write ({exc})") from exc
        self._writer = None
        self.location.publish(self.temp, self.final)
        return self.final

    def abort(self) -> None:
        """Drop the temporary file (on an error); nothing is published."""
        if self._writer is not None:
            try:
                self._writer.close()
                self._stream.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        self.location.delete(self.temp)

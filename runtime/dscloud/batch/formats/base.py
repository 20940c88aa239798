"""The interface every batch input format implements, and the chunk of rows it yields.

A format knows how to read one kind of file: its column names, its row count when the file
says so without being read, whether (and where) it can be cut into row groups that shards
take apart, its rows in bounded chunks of Arrow record batches, and the whole file as one
table (for training). Everything after a chunk (turning Arrow columns into the scorer's
numpy columns, writing parts and rejects) is the same for every format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from dscloud.batch.locations import Location
from dscloud.batch.plan import RowGroup, WorkUnit
from dscloud.errors import ConfigError
from dscloud.schema import Schema

__all__ = ["Chunk", "Format", "require_columns"]


@dataclass
class Chunk:
    """Up to ``chunk_rows`` consecutive rows of one file, starting at ``first_row``."""

    batch: pa.RecordBatch
    source: str
    first_row: int
    #: The schema columns as JSON values, from a format whose values are JSON: the core
    #: scores these by its JSON rule (the rule of ``/invocations``), not the Arrow columns,
    #: which the writer still copies (keys, features of rejects). None: score the batch.
    values: dict[str, list[Any]] | None = None

    @property
    def num_rows(self) -> int:
        return int(self.batch.num_rows)


class Format(ABC):
    """One input file format. Subclasses set :attr:`name` and :attr:`suffixes`.

    Reading errors are :class:`~dscloud.errors.DataError` naming the file; a column the
    model needs that the file lacks is a :class:`~dscloud.errors.ConfigError`
    (:func:`require_columns`). A value that cannot be a model input is *not* an error
    here: it is passed on as text, and the scoring core rejects its row with the reason.
    """

    #: The name ``--format`` takes and :class:`~dscloud.batch.plan.WorkUnit` records.
    name: ClassVar[str]
    #: File name endings (lower case, with the dot) that mean this format.
    suffixes: ClassVar[tuple[str, ...]]

    def row_groups(self, location: Location, path: str) -> list[RowGroup] | None:
        """The pieces shards may take apart (rows, bytes), or None: read the file whole.

        The default is None: a format without an index of its rows cannot be cut safely.
        Raises :class:`~dscloud.errors.DataError` when the file cannot be read.
        """
        return None

    def rows(self, location: Location, path: str) -> int | None:
        """The file's row count when known without reading the rows, else None (default)."""
        return None

    @abstractmethod
    def columns(self, location: Location, path: str) -> list[str]:
        """The file's column names. Raises :class:`~dscloud.errors.DataError`."""

    @abstractmethod
    def chunks(
        self,
        location: Location,
        unit: WorkUnit,
        columns: Sequence[str],
        schema: Schema,
        chunk_rows: int,
    ) -> Iterator[Chunk]:
        """``unit``'s rows holding ``columns``, in order, at most ``chunk_rows`` a chunk.

        ``schema`` says which columns the model reads as text, for formats that can read
        those cheaper. Raises :class:`~dscloud.errors.ConfigError` when a column is absent
        from the file and :class:`~dscloud.errors.DataError` when the file cannot be read.
        """

    @abstractmethod
    def read_table(self, location: Location, path: str) -> pa.Table:
        """The whole file as one table, types inferred (for training, not scoring).

        Raises :class:`~dscloud.errors.DataError` when the file cannot be read.
        """


def require_columns(
    location: Location, path: str, have: Sequence[str], want: Sequence[str]
) -> None:
    """Raises :class:`ConfigError` naming the first of ``want`` that ``have`` lacks."""
    absent = [c for c in want if c not in have]
    if absent:
        raise ConfigError(
            f"{location.uri_of(path)} has no column {absent[0]!r}; it has {list(have)}. "
            "The model needs every schema column; --key names must exist too."
        )

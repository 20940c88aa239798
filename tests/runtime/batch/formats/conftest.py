"""Writers of test data, one per registered batch input format.

Every registered format must have a writer here: the conformance tests in
``test_formats.py`` run once per format, so a new format is held to what the others do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    path = path.with_suffix(".parquet")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    return path


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    path = path.with_suffix(".csv.gz")  # gzip too: the suffix decides the decompression
    frame.to_csv(path, index=False, compression="gzip")
    return path


def _jsonl(frame: pd.DataFrame, path: Path) -> Path:
    path = path.with_suffix(".jsonl")
    frame.to_json(path, orient="records", lines=True)
    return path


#: ``write(frame, path_without_suffix) -> the file written``, by format name.
WRITERS: dict[str, Callable[[pd.DataFrame, Path], Path]] = {
    "parquet": _parquet,
    "csv": _csv,
    "jsonl": _jsonl,
}

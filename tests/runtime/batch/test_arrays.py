"""numpy <-> Arrow through the buffers: the same values pyarrow's own conversions give."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from dscloud.batch.arrays import (
    arrow_array,
    arrow_strings,
    dictionary_codes,
    integer_array,
    numpy_array,
)

ARRAYS = [
    pa.array([1.5, None, -2.0, float("nan")], type=pa.float64()),
    pa.array([1.5, 2.5], type=pa.float32()),
    pa.array([1, None, 3], type=pa.int64()),
    pa.array([1, 2, 3], type=pa.int32()),
    pa.array([0, 255], type=pa.uint8()),
    pa.array([True, False, True] * 5),
    pa.array([True, None]),
    pa.array([], type=pa.float64()),
    pa.array([1.0, None, 3.0, 4.0, None, 6.0, 7.0, 8.0, 9.0, 10.0]).slice(3, 5),
    pa.array([True, False, False, True, True, False, True, False, True, True]).slice(3, 6),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.type}-{len(a)}-{a.offset}")
def test_numpy_array_matches_pyarrow(array: pa.Array) -> None:
    expected = np.asarray(array.to_numpy(zero_copy_only=False))
    if pa.types.is_integer(array.type) and array.null_count:
        expected = expected.astype(np.float64)

    got = numpy_array(array)

    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_dictionary_codes_mark_nulls() -> None:
    array = pa.array(["b", None, "a", "b"]).dictionary_encode()

    codes = dictionary_codes(array)

    labels = array.dictionary.to_pylist()
    assert [labels[c] if c >= 0 else None for c in codes.tolist()] == ["b", None, "a", "b"]


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.25, np.nan, 3.0], dtype=np.float32),
        np.array([1, -2, 3], dtype=np.int64),
        np.array([[1.0, 2.0], [3.0, 4.0]])[:, 1],  # a strided column, as probabilities are
        np.array([True, False, True, True, False, False, True, False, True]),
        np.array(["yes", "no", "yes"], dtype=object),
        np.array(["yes", "no", "yes"]),
        np.array([], dtype=np.int64),
    ],
    ids=lambda v: f"{v.dtype}-{len(v)}",
)
def test_arrow_array_matches_pa_array(values: Any) -> None:
    expected = pa.array(values)

    got = arrow_array(values)

    assert got.type == expected.type
    assert got.null_count == expected.null_count == 0
    assert list(map(repr, got.to_pylist())) == list(map(repr, expected.to_pylist()))  # NaN too


def test_arrow_strings() -> None:
    assert arrow_strings(["", "é", "abc"]).equals(pa.array(["", "é", "abc"]))


def test_scoring_a_parquet_file_does_not_import_pandas(tmp_path: Any) -> None:
    # pyarrow's own numpy conversions would import it (0.2 s a process): see arrays.py.
    path = tmp_path / "x.parquet"
    code = f"""
import sys
import numpy as np
import pyarrow.parquet as pq
from dscloud.batch.arrays import arrow_array, numpy_array
from dscloud.batch.reader import columns_for_scoring
from dscloud.schema import Column, Output, Schema
schema = Schema((Column("n", "float32", nullable=True), Column("s", "string")), (Output("y", "value"),))
batch = pq.ParquetFile({str(path)!r}, read_dictionary=["s"]).read_row_group(0).to_batches()[0]
columns = columns_for_scoring(batch, schema)
arrow_array(np.zeros(3)); arrow_array(np.array(["a", "b"]))
print("pandas" in sys.modules)
"""
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"n": [1.0, None], "s": ["a", "b"]}), path)

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_integer_array_keeps_integers_exact_and_reports_nulls() -> None:
    array = pa.array([None, 2**62 + 1, None, 5], type=pa.int64()).slice(1)

    values, valid = integer_array(array)

    assert values.dtype == np.int64
    assert values.tolist() == [2**62 + 1, 0, 5]
    assert valid is not None and valid.tolist() == [True, False, True]
    assert integer_array(pa.array([1, 2], type=pa.int32()))[1] is None

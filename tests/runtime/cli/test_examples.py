"""`dsc example`: the bundled data set, the same rows for the same seed."""

from __future__ import annotations

import pandas as pd


def test_example_data_is_deterministic(dsc, tmp_path) -> None:
    for name in ("a.parquet", "b.parquet"):
        assert (
            dsc("example", "data", "--rows", "100", "--out", str(tmp_path / name), "--seed", "7")[0]
            == 0
        )
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert a["user_id"].is_unique and len(a) == 100 and "churned" in a

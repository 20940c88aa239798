"""The format registry: names and suffixes decide a file's format, one format per file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dscloud.batch import formats
from dscloud.batch.formats import list_inputs
from dscloud.batch.formats.csv import Csv
from dscloud.batch.formats.parquet import Parquet
from dscloud.batch.locations import Location
from dscloud.cli import main
from dscloud.errors import ConfigError


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("s3://b/users.parquet", "parquet"),
        ("data/users.PQ", "parquet"),
        ("users.csv", "csv"),
        ("users.csv.gz", "csv"),
        ("users.txt", None),
        ("users.gz", None),
    ],
)
def test_a_files_format_is_the_longest_registered_suffix_it_ends_with(
    path: str, name: str | None
) -> None:
    fmt = formats.of_path(path)

    assert (fmt.name if fmt else None) == name


def test_an_unknown_format_name_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        formats.named("xml")

    assert "'xml'" in str(error.value)
    assert all(name in str(error.value) for name in formats.names())


def test_a_name_or_suffix_cannot_be_registered_twice() -> None:
    class Tsv(Csv):
        name = "tsv"

    with pytest.raises(ValueError, match="already registered"):
        formats.register(Parquet())
    with pytest.raises(ValueError, match=r"\.csv"):
        formats.register(Tsv())
    assert "tsv" not in formats.names()


def test_a_prefix_of_mixed_formats_needs_a_format_to_pick_one(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1, 2]})
    frame.to_parquet(tmp_path / "a.parquet")
    frame.to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "_SUCCESS").write_text("{}")
    (tmp_path / "notes.txt").write_text("not data")
    location = Location(str(tmp_path))

    with pytest.raises(ConfigError, match="mixes formats"):
        list_inputs(location)
    picked = list_inputs(location, format="csv")

    assert [(Path(f.path).name, f.format) for f in picked] == [("b.csv", "csv")]


def test_a_single_file_with_any_name_reads_with_a_format_given(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "export.txt", index=False)
    location = Location(str(tmp_path / "export.txt"))

    with pytest.raises(ConfigError, match="unknown format"):
        list_inputs(location)

    assert [f.format for f in list_inputs(location, format="csv")] == ["csv"]


def test_dsc_score_format_takes_only_registered_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(
            ["score", "m@1", "--input", str(tmp_path), "--output", str(tmp_path), "--format", "xml"]
        )

    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--format" in err
    assert all(name in err for name in formats.names())

"""ShardPlan: every unit in exactly one shard, contiguous, deterministic, split by row group."""

from __future__ import annotations

import pytest

from dscloud.batch import InputFile, RowGroup, ShardPlan
from dscloud.errors import ConfigError


def parquet(name: str, groups: int, rows: int = 100, size: int = 1000) -> InputFile:
    return InputFile(path=name, size=groups * size, format="parquet")


def footers(groups: dict[str, int]) -> object:
    def read(f: InputFile) -> list[RowGroup]:
        return [RowGroup(rows=100, bytes=1000)] * groups[f.path]

    return read


def covered(plan: ShardPlan) -> list[tuple[str, int | None]]:
    """(path, row group) of every unit, in shard order."""
    out: list[tuple[str, int | None]] = []
    for i in range(plan.count):
        for unit in plan.units_for(i):
            out.extend((unit.path, g) for g in (unit.row_groups or [None]))
    return out


def test_one_shard_takes_every_file_whole_in_path_order() -> None:
    files = [parquet("b", 3), parquet("a", 2)]

    plan = ShardPlan.build(files, 1, footers=footers({"a": 2, "b": 3}))

    assert [u.path for u in plan.units_for(0)] == ["a", "b"]
    assert all(u.row_groups is None for u in plan.units)


@pytest.mark.parametrize("count", [2, 3, 5, 7, 11, 40])
def test_every_row_group_lands_in_exactly_one_shard_in_input_order(count: int) -> None:
    # given three files of 4, 1 and 6 row groups; more shards than files for count > 3
    groups = {"a": 4, "b": 1, "c": 6}
    files = [parquet(name, n) for name, n in groups.items()]

    # when
    plan = ShardPlan.build(files, count, footers=footers(groups))

    # then the shards, concatenated, are the input in order with nothing missing or twice
    expected: list[tuple[str, int | None]] = []
    for unit in plan.units:
        expected.extend((unit.path, g) for g in (unit.row_groups or [None]))
    assert covered(plan) == expected
    assert sorted(plan.shards) == list(plan.shards)  # contiguous ranges
    assert {p for p, _ in covered(plan)} == {"a", "b", "c"}


def test_large_files_split_by_row_group_small_ones_stay_whole() -> None:
    groups = {"big": 8, "small": 1}

    plan = ShardPlan.build([parquet("big", 8), parquet("small", 1)], 4, footers=footers(groups))

    assert [u.row_groups for u in plan.units if u.path == "big"] == [(i,) for i in range(8)]
    assert [u.row_groups for u in plan.units if u.path == "small"] == [None]
    assert [u.first_row for u in plan.units if u.path == "big"] == [i * 100 for i in range(8)]


def test_adjacent_row_groups_of_a_shard_are_merged_into_one_read() -> None:
    plan = ShardPlan.build([parquet("big", 8)], 2, footers=footers({"big": 8}))

    first, second = plan.units_for(0), plan.units_for(1)

    assert [(u.row_groups, u.first_row, u.rows) for u in first] == [((0, 1, 2, 3), 0, 400)]
    assert [(u.row_groups, u.first_row, u.rows) for u in second] == [((4, 5, 6, 7), 400, 400)]


def test_more_shards_than_units_leaves_some_shards_empty() -> None:
    files = [InputFile("a.csv", 10, "csv"), InputFile("b.csv", 10, "csv")]

    plan = ShardPlan.build(files, 5)

    sizes = [len(plan.units_for(i)) for i in range(5)]
    assert sum(sizes) == 2
    assert sizes.count(0) == 3


def test_a_file_without_row_groups_is_never_split() -> None:
    # given a large file whose format has no row groups (its footer reader answers None)
    calls: list[str] = []

    def read(f: InputFile) -> list[RowGroup] | None:
        calls.append(f.path)
        return None

    # when it is planned over four shards
    plan = ShardPlan.build([InputFile("big.csv", 10_000, "csv")], 4, footers=read)

    # then it was asked, and stays one unit, read whole by one shard
    assert calls == ["big.csv"]
    assert len(plan.units) == 1
    assert plan.units[0].row_groups is None


def test_the_plan_is_deterministic_and_its_fingerprint_tracks_the_input() -> None:
    groups = {"a": 4, "b": 2}
    files = [parquet("a", 4), parquet("b", 2)]

    one = ShardPlan.build(files, 3, footers=footers(groups))
    two = ShardPlan.build(list(reversed(files)), 3, footers=footers(groups))
    other = ShardPlan.build(files, 4, footers=footers(groups))

    assert one == two
    assert one.fingerprint == two.fingerprint
    assert one.fingerprint != other.fingerprint


def test_empty_files_are_spread_by_position() -> None:
    files = [InputFile(f"{i}.parquet", 0, "parquet") for i in range(4)]

    plan = ShardPlan.build(files, 2)

    assert plan.shards == (0, 0, 1, 1)


def test_bad_counts_and_indices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        ShardPlan.build([], 0)
    plan = ShardPlan.build([parquet("a", 1)], 2)
    with pytest.raises(ConfigError, match=r"outside 0\.\.1"):
        plan.units_for(2)


def test_a_row_group_bigger_than_a_share_splits_into_row_ranges() -> None:
    # given one file of one 1,000-row group (what pandas writes), four shards
    def one_group(f: InputFile) -> list[RowGroup]:
        return [RowGroup(rows=1000, bytes=40_000)]

    plan = ShardPlan.build([InputFile("users.parquet", 40_000, "parquet")], 4, footers=one_group)

    ranges = [[u.row_range for u in plan.units_for(i)] for i in range(4)]
    assert ranges == [[(0, 250)], [(250, 500)], [(500, 750)], [(750, 1000)]]
    assert [u.first_row for u in plan.units] == [0, 250, 500, 750]

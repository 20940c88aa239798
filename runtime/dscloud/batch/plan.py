"""Which rows shard *i* of *n* scores: a deterministic plan every array-job child agrees on.

The input files, sorted by path, are cut into *units*: a whole file, or, for a file larger
than one shard's share of the bytes whose format has row groups (Parquet), each of its row
groups. Units are laid
end to end by size and shard ``i`` takes the units whose midpoint falls in the ``i``-th
``1/n`` of the total. So:

- every unit (and so every row) belongs to exactly one shard;
- each shard's units are contiguous, so concatenating shards ``0..n-1`` gives the input
  order, and the union of all shards' outputs equals an unsharded run row for row;
- ``n`` may exceed the number of files: big files split by row group, and a row group
  bigger than one shard's share splits into row ranges (each shard then decodes the whole
  group but scores only its range: files written by pandas hold up to a million rows in
  one group). With more shards than rows, some shards have nothing to do, and say so in
  their manifest;
- the plan depends only on the listing and the row groups (Parquet footers) of the large
  files, so
  10,000 children computing it independently get the same answer; its ``fingerprint``
  goes into every shard manifest and the run refuses to finalize shards of different plans.

A file whose format has no row groups (CSV, JSON Lines) is never split: a byte range cannot
be cut safely through quoted newlines, and only an index of rows says where rows start.
The plan knows no format by name: ``footers`` (the format's
:meth:`~dscloud.batch.formats.Format.row_groups`) answers None for such a file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dscloud.batch.locations import InputFile
from dscloud.errors import ConfigError

__all__ = ["RowGroup", "ShardPlan", "WorkUnit"]


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: its row count and its size in bytes."""

    rows: int
    bytes: int


@dataclass(frozen=True)
class WorkUnit:
    """Rows of one file: all of it (``row_groups`` None) or a run of its row groups.

    ``first_row`` is the index in the file of the unit's first row; ``rows`` is None when
    it is not known before reading (a format without a footer, or a footer not read).
    """

    path: str
    format: str
    weight: int
    row_groups: tuple[int, ...] | None = None
    first_row: int = 0
    rows: int | None = None
    #: ``(start, stop)`` rows inside the unit's single row group, when it is split further.
    row_range: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.row_groups is None:
            return self.path
        first, last = self.row_groups[0], self.row_groups[-1]
        groups = f"{first}" if first == last else f"{first}-{last}"
        if self.row_range is not None:
            return f"{self.path} [row group {groups}, rows {self.row_range[0]}-{self.row_range[1]}]"
        return f"{self.path} [row groups {groups}]"


#: The row groups of one file (a Parquet footer), or None when its format cannot split.
FooterReader = Callable[[InputFile], Sequence[RowGroup] | None]


@dataclass(frozen=True)
class ShardPlan:
    """The work units of a run and the shard each one belongs to."""

    count: int
    units: tuple[WorkUnit, ...]
    shards: tuple[int, ...]

    @classmethod
    def build(
        cls, files: Sequence[InputFile], count: int, *, footers: FooterReader | None = None
    ) -> ShardPlan:
        """Plan ``count`` shards over ``files`` (taken in path order).

        ``footers`` reads the row groups of a file (None: the file stays whole); it is
        called only for files larger than one shard's share, and only when ``count > 1``.
        Raises
        :class:`ConfigError` when ``count < 1``.
        """
        if count < 1:
            raise ConfigError(f"shard count {count}: expected at least 1")
        ordered = sorted(files, key=lambda f: f.path)
        total = sum(f.size for f in ordered)
        share = total / count
        units: list[WorkUnit] = []
        for f in ordered:
            groups = None
            if count > 1 and f.size > share and footers is not None:
                groups = footers(f)
            if groups is not None:
                units.extend(_row_group_units(f, groups, share))
            else:
                units.append(WorkUnit(path=f.path, format=f.format, weight=f.size))
        return cls(count=count, units=tuple(units), shards=_assign(units, count))

    def units_for(self, index: int) -> list[WorkUnit]:
        """Shard ``index``'s units in input order, adjacent row groups of a file merged.

        Raises :class:`ConfigError` when ``index`` is outside ``0..count-1``.
        """
        if not 0 <= index < self.count:
            raise ConfigError(f"shard index {index} is outside 0..{self.count - 1}")
        merged: list[WorkUnit] = []
        for unit, shard in zip(self.units, self.shards, strict=True):
            if shard != index:
                continue
            last = merged[-1] if merged else None
            if (
                last is not None
                and unit.row_groups is not None
                and last.row_groups is not None
                and last.path == unit.path
                and last.row_range is None
                and unit.row_range is None
                and last.row_groups[-1] + 1 == unit.row_groups[0]
            ):
                merged[-1] = WorkUnit(
                    path=last.path,
                    format=last.format,
                    weight=last.weight + unit.weight,
                    row_groups=last.row_groups + unit.row_groups,
                    first_row=last.first_row,
                    rows=None if last.rows is None or unit.rows is None else last.rows + unit.rows,
                )
            else:
                merged.append(unit)
        return merged

    @property
    def fingerprint(self) -> str:
        """A hash of the listing and the assignment: equal plans, equal fingerprints."""
        described = [
            [u.path, u.format, u.weight, list(u.row_groups or []), u.row_range, s]
            for u, s in zip(self.units, self.shards, strict=True)
        ]
        raw = json.dumps({"count": self.count, "units": described}, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _row_group_units(f: InputFile, groups: Sequence[RowGroup], share: float) -> list[WorkUnit]:
    units = []
    first_row = 0
    for i, group in enumerate(groups):
        pieces = 1
        if group.bytes > share > 0:
            pieces = max(1, min(group.rows, -int(-group.bytes // share)))
        bounds = [group.rows * k // pieces for k in range(pieces + 1)]
        for start, stop in itertools.pairwise(bounds):
            units.append(
                WorkUnit(
                    path=f.path,
                    format=f.format,
                    weight=group.bytes * (stop - start) // max(1, group.rows),
                    row_groups=(i,),
                    first_row=first_row + start,
                    rows=stop - start,
                    row_range=None if pieces == 1 else (start, stop),
                )
            )
        first_row += group.rows
    return units


def _assign(units: Sequence[WorkUnit], count: int) -> tuple[int, ...]:
    """Shard of each unit: the ``1/count`` slice of the total weight holding its midpoint."""
    total = sum(u.weight for u in units)
    if total == 0:
        # Nothing has a size (empty files): spread units evenly by position instead.
        return tuple(min(count - 1, i * count // max(1, len(units))) for i in range(len(units)))
    shards = []
    start = 0
    for u in units:
        # Integer arithmetic: (start + weight / 2) / total * count, floored, exactly.
        shards.append(min(count - 1, (2 * start + u.weight) * count // (2 * total)))
        start += u.weight
    return tuple(shards)

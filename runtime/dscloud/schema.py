"""The model's input/output interface, and turning rows into ONNX feeds.

A :class:`Schema` is recorded in every envelope. It knows how the ONNX graph wants its
inputs (one ``[N, 1]`` tensor per column, or one ``[N, k]`` matrix holding every column in
order) and checks each value on the way in. Validation is per row: a bad row is reported
with its reason and the good rows still score, so the stream and batch adapters can route
rejects somewhere a person can find them while the server refuses the request as a whole.

No pandas here: values arrive as Python lists (JSON) or numpy arrays (Parquet/CSV);
:mod:`dscloud.columns` converts one column at a time.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from dscloud.columns import DTYPES, F32_MAX, MISSING, Column, convert, encodable, exact
from dscloud.errors import EnvelopeError, SchemaError

__all__ = ["DTYPES", "OUTPUT_KINDS", "SHARE_ROWS", "Column", "Encoded", "Output", "Schema"]

#: The outputs a model can have, in the order every answer lists them.
OUTPUT_KINDS = ("label", "probabilities", "value")
#: Up to this many rows, input whose every value is already exact (no null, no conversion)
#: is encoded with one array per dtype: scoring a single row is dominated by this cost.
SMALL_BATCH = 16

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Output:
    """One ONNX output: the predicted ``label``, per-class ``probabilities``, or a ``value``."""

    name: str
    kind: str
    classes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise EnvelopeError(f"output {self.name!r}: kind {self.kind!r} not in {OUTPUT_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Output:
        classes = data.get("classes")
        return cls(
            name=str(data["name"]),
            kind=str(data["kind"]),
            classes=tuple(classes) if classes is not None else None,
        )


@dataclass
class Encoded:
    """ONNX feeds for the rows that passed validation, and the reasons the others did not."""

    feeds: dict[str, Array]
    rows: Array  # indices (into the input) of the rows in ``feeds``
    rejects: dict[int, str] = field(default_factory=dict)
    reject_columns: dict[int, str] = field(default_factory=dict)  # first bad column per row
    #: True when ``feeds`` are the thread's reused one-row buffers (:meth:`Schema.encode_one`):
    #: valid until that thread encodes again.
    shared: bool = False

    @property
    def n_ok(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Schema:
    """Columns in, outputs out. ``matrix_input`` names a single ``[N, k]`` ONNX input."""

    columns: tuple[Column, ...]
    outputs: tuple[Output, ...]
    matrix_input: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def feeds_like(self, other: Schema) -> bool:
        """True when ``other`` builds the same ONNX feeds from the same rows (same columns,
        types and constraints, same matrix input), so feeds built by one can be run by a
        session of the other."""
        return self.columns == other.columns and self.matrix_input == other.matrix_input

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise SchemaError(f"unknown column {name!r}; the model expects {self.names}", field=name)

    def output(self, kind: str) -> Output | None:
        return next((o for o in self.outputs if o.kind == kind), None)

    def describe(self) -> dict[str, str]:
        """``{column: what it accepts}``, the expected schema quoted in error messages."""
        return {c.name: c.describe() for c in self.columns}

    def expected(self) -> str:
        """The expected schema as error messages quote it: ``{name: a number, ...}``."""
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.describe().items()) + "}"

    def unknown_columns(self, names: Sequence[str]) -> list[str]:
        known = set(self.names)
        return [n for n in names if n not in known]

    # -- encoding ---------------------------------------------------------------------

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> Encoded:
        """Validate row dicts; a row lacking a column is rejected, extra keys are ignored."""
        not_rows = [
            i for i, r in enumerate(records) if type(r) is not dict and not isinstance(r, Mapping)
        ]
        rows = records
        if not_rows:
            empty: Mapping[str, Any] = {}
            rows = [empty if i in not_rows else r for i, r in enumerate(records)]
        encoded = self.encode_columns(self._gather(rows), len(rows))
        for i in not_rows:
            encoded.reject_columns.pop(i, None)
            encoded.rejects[i] = (
                f"row {i}: expected an object of columns, got {type(records[i]).__name__}"
            )
        return encoded

    @cached_property
    def _one_plan(self) -> list[tuple[str, Any, int, float, frozenset[str] | None]]:
        """Per column: name, numpy dtype, kind (0 float, 1 int64, 2 string), the largest
        magnitude its dtype holds, and the categories it is limited to (if any)."""
        plan = []
        for col in self.columns:
            code = 2 if col.dtype == "string" else 1 if col.dtype == "int64" else 0
            strict = code == 2 and col.categories is not None and not col.allow_unknown
            allowed = frozenset(col.categories or ()) if strict else None
            limit = F32_MAX if col.dtype == "float32" else math.inf
            plan.append((col.name, DTYPES[col.dtype], code, limit, allowed))
        return plan

    def encode_one(self, record: Any) -> dict[str, Array] | None:
        """Feeds for one row whose values all pass as they are, or None.

        The single-row hot path of the server and the Lambda: one type check and one
        assignment per column, into arrays this thread reuses (so use the feeds before the
        next call on the same thread, as :class:`~dscloud.scorer.Scorer` does). None (anything unusual: a missing column, a null, a wrong type) sends
        the row through :meth:`encode_records`, which says what is wrong.
        """
        if type(record) is not dict:
            return None
        values = []
        for name, _dtype, code, limit, allowed in self._one_plan:
            v = record.get(name, MISSING)
            t = type(v)
            if code == 0:
                if t is not float and t is not int:
                    return None
                if not -limit <= v <= limit:
                    return None  # NaN or beyond the dtype: the general path decides
            elif code == 1:
                if t is not int:
                    return None
            elif (
                t is not str
                or (allowed is not None and v not in allowed)
                or not (v.isascii() or encodable(v))
            ):
                return None
            values.append(v)
        feeds = self._one_buffers()
        try:
            if self.matrix_input is not None:
                feeds[self.matrix_input][0] = values
            else:
                for plan, v in zip(self._one_plan, values, strict=True):
                    feeds[plan[0]][0, 0] = v
        except (OverflowError, ValueError):
            return None
        return feeds

    def _one_buffers(self) -> dict[str, Array]:
        """This thread's one-row feed arrays, reused across calls: ONNX Runtime reads them
        during ``run`` and keeps nothing, and a thread runs one session call at a time."""
        local = self._local
        feeds: dict[str, Array] | None = getattr(local, "feeds", None)
        if feeds is None:
            if self.matrix_input is not None:
                dtype = self._one_plan[0][1]
                feeds = {self.matrix_input: np.zeros((1, len(self.columns)), dtype=dtype)}
            else:
                feeds = {name: np.zeros((1, 1), dtype=dtype) for name, dtype, *_ in self._one_plan}
            local.feeds = feeds
        return feeds

    @cached_property
    def _local(self) -> threading.local:
        return threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # Caches (thread-local buffers among them) stay behind when a schema is pickled to
        # a worker process.
        return {f: self.__dict__[f] for f in ("columns", "outputs", "matrix_input")}

    def _gather(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
        """Rows into columns. Gathering dominates encoding many rows: when every row has
        every column, C does it (itemgetter per row, zip to transpose)."""
        names = self.names
        if rows and len(names) > 1:
            try:
                table = list(map(operator.itemgetter(*names), rows))
            except KeyError:
                pass  # a row lacks a column: the general gather marks it missing
            else:
                return dict(zip(names, zip(*table, strict=True), strict=True))
        return {name: [r.get(name, MISSING) for r in rows] for name in names}

    def compact(self, columns: dict[str, Any], n_rows: int) -> None:
        """Replace, in ``columns``, each column of Python values that converts without a
        reject by its array: the same input to :meth:`encode_columns` (which then only
        checks it), held in a fraction of the memory.

        A decoder calls this as soon as it has the columns, so that a large body's boxed
        values (a float object and a pointer for every cell, a string object for every text
        cell) are freed one column at a time before the model runs, instead of living until
        the answer is sent (bench/memory.md). A column with a bad value stays as it is, for
        :meth:`encode_columns` to give each row its reason. Up to :data:`SMALL_BATCH` rows
        nothing changes (the single-row path wants the Python values).
        """
        if n_rows <= SMALL_BATCH:
            return
        for col in self.columns:
            values = columns.get(col.name)
            if values is None or isinstance(values, np.ndarray) or len(values) != n_rows:
                continue
            array, bad = convert(col, values)
            if not bad:
                columns[col.name] = array if col.numeric else _shared_texts(array)
            del values, array  # the column's Python values go now, not after the last one

    def encode_columns(self, columns: Mapping[str, Sequence[Any] | Array], n_rows: int) -> Encoded:
        """Validate columnar input and build feeds for the valid rows.

        Raises :class:`SchemaError` when a whole column is absent or has the wrong length;
        per-row problems are returned in ``Encoded.rejects`` instead.
        """
        if 0 < n_rows <= SMALL_BATCH:
            exact = self._encode_exact(columns, n_rows)
            if exact is not None:
                return exact
        converted: list[Array] = []
        reasons: dict[int, list[str]] = {}
        first_bad: dict[int, str] = {}
        for col in self.columns:
            if col.name not in columns:
                raise SchemaError(
                    f"missing column {col.name!r}: expected {col.describe()}; "
                    f"the model expects {self.names}",
                    field=col.name,
                )
            values = columns[col.name]
            if len(values) != n_rows:
                raise SchemaError(
                    f"column {col.name!r} has {len(values)} values, expected {n_rows}",
                    field=col.name,
                )
            array, bad = convert(col, values)
            for i, why in bad.items():
                reasons.setdefault(i, []).append(why)
                first_bad.setdefault(i, col.name)
            converted.append(array)

        rejects = {i: "; ".join(why) for i, why in sorted(reasons.items())}
        if rejects:
            ok = np.ones(n_rows, dtype=bool)
            ok[np.fromiter(rejects, dtype=np.int64, count=len(rejects))] = False
            keep = np.flatnonzero(ok).astype(np.int64, copy=False)
            converted = [a[keep] for a in converted]
        else:
            keep = np.arange(n_rows, dtype=np.int64)
        return Encoded(
            feeds=self._feeds(converted), rows=keep, rejects=rejects, reject_columns=first_bad
        )

    @cached_property
    def _dtype_groups(self) -> list[tuple[Any, list[Column]]]:
        groups: dict[str, list[Column]] = {}
        for col in self.columns:
            groups.setdefault(col.dtype, []).append(col)
        return [(DTYPES[dtype], cols) for dtype, cols in groups.items()]

    def _encode_exact(
        self, columns: Mapping[str, Sequence[Any] | Array], n_rows: int
    ) -> Encoded | None:
        """Feeds for a few rows whose values all pass as they are, built with one array
        per dtype; None leaves the input to the general path, which says what is wrong."""
        feeds: dict[str, Array] = {}
        for dtype, group in self._dtype_groups:
            values = [columns.get(col.name) for col in group]
            for col, v in zip(group, values, strict=True):
                if v is None or isinstance(v, np.ndarray) or len(v) != n_rows or not exact(col, v):
                    return None
            try:
                with np.errstate(over="ignore"):
                    block = np.array(values, dtype=dtype)  # [columns, rows]
            except (OverflowError, ValueError, TypeError):
                return None
            if block.dtype.kind == "f" and np.isinf(block).any():
                return None  # an infinity or a float32 overflow: the general path decides
            if self.matrix_input is not None:
                if len(self._dtype_groups) != 1:
                    return None
                feeds[self.matrix_input] = np.ascontiguousarray(block.T)
            else:
                for j, col in enumerate(group):
                    feeds[col.name] = block[j].reshape(n_rows, 1)
        return Encoded(feeds=feeds, rows=np.arange(n_rows, dtype=np.int64))

    def _feeds(self, arrays: list[Array]) -> dict[str, Array]:
        if self.matrix_input is not None:
            dtype = DTYPES[self.columns[0].dtype]
            return {self.matrix_input: np.stack(arrays, axis=1).astype(dtype, copy=False)}
        return {col.name: a.reshape(-1, 1) for col, a in zip(self.columns, arrays, strict=True)}

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "columns": [c.to_dict() for c in self.columns],
            "outputs": [o.to_dict() for o in self.outputs],
        }
        if self.matrix_input is not None:
            out["matrix_input"] = self.matrix_input
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        try:
            return cls(
                columns=tuple(Column.from_dict(c) for c in data["columns"]),
                outputs=tuple(Output.from_dict(o) for o in data["outputs"]),
                matrix_input=data.get("matrix_input"),
            )
        except (KeyError, TypeError) as exc:
            raise EnvelopeError(f"invalid schema: missing or malformed {exc}") from exc


#: From this many rows, equal texts of a compacted column are made one object.
SHARE_ROWS = 4096


def _shared_texts(array: Array) -> Array:
    """A string column with equal texts as one object (a category repeats on every row), in
    two C passes; unchanged when it is short or mostly distinct (identifiers)."""
    if len(array) < SHARE_ROWS:
        return array
    canonical = dict(zip(array.tolist(), array.tolist(), strict=True))
    if len(canonical) > len(array) // 4:
        return array
    return np.fromiter(
        map(canonical.__getitem__, array.tolist()), dtype=np.object_, count=len(array)
    )

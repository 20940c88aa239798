"""The scoring core: one verified ONNX Runtime session per model version.

The web server, the Lambda handler and the batch job only decode into and encode out of
:class:`Scorer`; none of them touches onnxruntime. A scorer is built from an
:class:`~dscloud.envelope.Artifact` whose sha256 was already checked by the archive, and it
replays the envelope's golden examples before anyone can use it: a model whose goldens fail
is never served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from dscloud.envelope import Artifact, Envelope, Golden, ModelIdentity
from dscloud.errors import GoldenMismatchError, ModelLoadError, SchemaError
from dscloud.schema import Encoded

__all__ = ["GOLDEN_ATOL", "GOLDEN_RTOL", "Predictions", "Scorer", "session_options"]

Array = npt.NDArray[Any]

_ONE_ROW = np.zeros(1, dtype=np.int64)
_ONE_ROW.flags.writeable = False

#: How closely a runtime must reproduce the golden outputs recorded at packaging time.
#: Same ONNX Runtime, same bytes: differences only come from CPU kernels and thread counts.
GOLDEN_ATOL = 1e-5
GOLDEN_RTOL = 1e-5


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Explicit thread settings: one intra-op thread per worker unless told otherwise."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads <= 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


@dataclass
class Predictions:
    """Outputs for the rows that passed validation, plus the reasons the others did not.

    ``rows[i]`` is the input index of output ``i``. ``probabilities`` is ``[n, classes]``.
    """

    envelope: Envelope
    rows: Array
    label: Array | None = None
    probabilities: Array | None = None
    value: Array | None = None
    rejects: dict[int, str] = field(default_factory=dict)
    reject_columns: dict[int, str] = field(default_factory=dict)  # first bad column per row

    @property
    def classes(self) -> list[Any] | None:
        out = self.envelope.schema.output("probabilities")
        return list(out.classes) if out is not None and out.classes is not None else None

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, i: int) -> dict[str, Any]:
        """Output ``i`` as JSON-ready values keyed by kind."""
        out: dict[str, Any] = {}
        if self.label is not None:
            out["label"] = self.label[i].item()
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities[i].tolist()
        if self.value is not None:
            out["value"] = float(self.value[i])
        return out

    def to_records(self) -> list[dict[str, Any]]:
        return [self.row(i) for i in range(len(self.rows))]

    def raise_for_rejects(self) -> None:
        """Raise :class:`SchemaError` for the first rejected row (the server's all-or-nothing)."""
        if self.rejects:
            row = min(self.rejects)
            reason = self.rejects[row]
            more = f" (and {len(self.rejects) - 1} more rows)" if len(self.rejects) > 1 else ""
            raise SchemaError(
                f"row {row}: {reason}{more}; expected {self.envelope.schema.expected()}",
                field=self.reject_columns.get(row),
                row=row,
            )


class Scorer:
    """Score rows with one model version. Thread-safe: ONNX Runtime sessions are."""

    def __init__(self, artifact: Artifact, *, threads: int = 1, check_goldens: bool = True) -> None:
        self.envelope = artifact.envelope
        self.schema = artifact.envelope.schema
        try:
            self.session = ort.InferenceSession(
                artifact.model,
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise ModelLoadError(
                f"{artifact.envelope.ref} (sha256 {artifact.envelope.sha256[:12]}): ONNX Runtime "
                f"cannot load model.onnx: {type(exc).__name__}: {exc}"
            ) from exc
        self._output_names = [o.name for o in self.schema.outputs]
        self._kinds = [o.kind for o in self.schema.outputs]
        if check_goldens:
            self.check_goldens()

    @property
    def name(self) -> str:
        return self.envelope.name

    @property
    def version(self) -> int | None:
        return self.envelope.version

    @property
    def sha256(self) -> str:
        return self.envelope.sha256

    @property
    def identity(self) -> ModelIdentity:
        """Name, version and sha256 of the model this scorer runs."""
        return self.envelope.identity

    # -- scoring ------------------------------------------------------------------------

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> Predictions:
        """Score row dicts in one session call; invalid rows land in ``rejects``."""
        if len(records) == 1:
            feeds = self.schema.encode_one(records[0])
            if feeds is not None:
                return self._run(feeds, Predictions(envelope=self.envelope, rows=_ONE_ROW))
        return self.score_encoded(self.schema.encode_records(records))

    def score_columns(
        self, columns: Mapping[str, Sequence[Any] | Array], n_rows: int
    ) -> Predictions:
        """Score columnar input (lists or numpy arrays) in one session call."""
        return self.score_encoded(self.encode(columns, n_rows))

    def encode(self, columns: Mapping[str, Sequence[Any] | Array], n_rows: int) -> Encoded:
        """Validate columnar input into feeds (:meth:`score_encoded` runs them).

        One row (the servers' common case) takes the same single-row path as
        :meth:`score_records`, into the thread's reused buffers (``Encoded.shared``);
        anything it does not pass goes the general way."""
        if n_rows == 1 and len(columns) == len(self.schema.columns):
            feeds = self.schema.encode_one({name: values[0] for name, values in columns.items()})
            if feeds is not None:
                return Encoded(feeds, _ONE_ROW, shared=True)
        return self.schema.encode_columns(columns, n_rows)

    def score_encoded(self, encoded: Encoded) -> Predictions:
        """Run feeds in one session call: the encoder's own (:meth:`encode`) or, when the
        schemas build the same feeds (:meth:`Schema.feeds_like`), another version's."""
        preds = Predictions(
            envelope=self.envelope,
            rows=encoded.rows,
            rejects=encoded.rejects,
            reject_columns=encoded.reject_columns,
        )
        if encoded.n_ok == 0:
            return preds
        return self._run(encoded.feeds, preds)

    def _run(self, feeds: dict[str, Array], preds: Predictions) -> Predictions:
        results = self.session.run(self._output_names, feeds)
        for kind, result in zip(self._kinds, results, strict=True):
            if kind == "probabilities":
                preds.probabilities = result
            elif kind == "label":
                preds.label = result if result.ndim == 1 else result.reshape(-1)
            else:
                preds.value = result if result.ndim == 1 else result.reshape(-1)
        return preds

    # -- golden examples ----------------------------------------------------------------

    def golden_outputs(self, inputs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """What this session answers for ``inputs``: the outputs a golden example records."""
        preds = self.score_records(inputs)
        preds.raise_for_rejects()
        return preds.to_records()

    def check_goldens(self) -> int:
        """Replay the envelope's golden examples; returns how many passed.

        Raises :class:`GoldenMismatchError` naming the first example and output that differ.
        """
        goldens = self.envelope.goldens
        if not goldens:
            return 0
        try:
            got = self.golden_outputs([g.inputs for g in goldens])
        except SchemaError as exc:
            raise GoldenMismatchError(
                f"{self.envelope.ref}: a golden example no longer fits the schema: {exc}"
            ) from exc
        for i, (golden, actual) in enumerate(zip(goldens, got, strict=True)):
            problem = compare_outputs(golden, actual)
            if problem:
                raise GoldenMismatchError(
                    f"{self.envelope.ref} (sha256 {self.sha256[:12]}): golden example {i} "
                    f"{problem}; this runtime does not reproduce the packaged model, refusing it"
                )
        return len(goldens)


def compare_outputs(golden: Golden, actual: Mapping[str, Any]) -> str | None:
    """None when ``actual`` reproduces ``golden.outputs``, else what differs."""
    for kind, expected in golden.outputs.items():
        if kind not in actual:
            return f"has output {kind!r} that the model no longer produces"
        got = actual[kind]
        if kind == "label":
            if got != expected:
                return f"label: expected {expected!r}, got {got!r}"
            continue
        exp = np.asarray(expected, dtype=np.float64)
        act = np.asarray(got, dtype=np.float64)
        if exp.shape != act.shape or not np.allclose(
            act, exp, atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL, equal_nan=True
        ):
            diff = float(np.max(np.abs(act - exp))) if exp.shape == act.shape else math.inf
            return f"{kind}: expected {expected!r}, got {got!r} (max abs diff {diff:.3g})"
    return None

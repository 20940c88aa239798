"""Models trained elsewhere (LightGBM, XGBoost, PyTorch, Spark, R...): bring an ``.onnx``
file plus golden examples, get an envelope.

The schema is read from the graph unless given: one ``[N, k]`` float input becomes a
matrix of columns ``f0..f{k-1}`` (or the names a schema file gives), several ``[N, 1]``
inputs become one column each. Outputs are classified by type and shape: an integer or
string vector is the ``label``, a float ``[N, C]`` matrix the ``probabilities``, a float
``[N]``/``[N, 1]`` the ``value``. The goldens are replayed through ONNX Runtime before the
envelope is returned: a model that does not reproduce what its owner says it outputs is
refused.
"""

from __future__ import annotations

import collections
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import onnx

from dscloud.envelope import Artifact, Envelope, Golden, sha256_hex
from dscloud.errors import ExportError
from dscloud.schema import Column, Output, Schema
from dscloud.scorer import Scorer, compare_outputs

__all__ = ["graph_info", "import_onnx", "infer_schema", "library_versions"]

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.STRING: "string",
}


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (plus python), ``"absent"`` for missing ones."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _load(model: bytes) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(model)
    except Exception as exc:
        raise ExportError(f"not an ONNX model: {exc}") from exc


def graph_info(model: bytes) -> dict[str, Any]:
    """Opsets, producer and a summary of the graph (node counts by op type, size)."""
    proto = _load(model)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    return {
        "ir_version": proto.ir_version,
        "opset": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "producer": proto.producer_name,
        "producer_version": proto.producer_version,
        "size_bytes": len(model),
        "nodes": len(proto.graph.node),
        "op_types": dict(sorted(ops.items())),
        "inputs": [i.name for i in proto.graph.input],
        "outputs": [o.name for o in proto.graph.output],
    }


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
    ]


def infer_schema(model: bytes, columns: Sequence[str] | None = None) -> Schema:
    """Read a :class:`Schema` from the graph's inputs and outputs (see module docstring)."""
    proto = _load(model)
    inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    for i in inputs:
        if not i.type.HasField("tensor_type") or i.type.tensor_type.elem_type not in _ONNX_DTYPES:
            raise ExportError(
                f"input {i.name!r}: only float, double, int64 and string tensors are supported"
            )
    if len(inputs) == 1 and [*_dims(inputs[0]), None, None][1] not in (None, 1):
        width = _dims(inputs[0])[1]
        assert width is not None
        names = list(columns) if columns else [f"f{j}" for j in range(width)]
        if len(names) != width:
            raise ExportError(
                f"input {inputs[0].name!r} has {width} columns, the schema names {len(names)}"
            )
        dtype = _ONNX_DTYPES[inputs[0].type.tensor_type.elem_type]
        cols = tuple(Column(name=n, dtype=dtype) for n in names)
        return Schema(columns=cols, outputs=_outputs(proto), matrix_input=inputs[0].name)
    cols = tuple(
        Column(name=i.name, dtype=_ONNX_DTYPES[i.type.tensor_type.elem_type]) for i in inputs
    )
    return Schema(columns=cols, outputs=_outputs(proto))


def _outputs(proto: onnx.ModelProto) -> tuple[Output, ...]:
    outs = []
    for o in proto.graph.output:
        if not o.type.HasField("tensor_type"):
            raise ExportError(
                f"output {o.name!r} is not a tensor (a ZipMap?); convert with zipmap disabled"
            )
        elem = o.type.tensor_type.elem_type
        dims = _dims(o)
        if elem in (onnx.TensorProto.INT64, onnx.TensorProto.STRING):
            outs.append(Output(name=o.name, kind="label"))
        elif len(dims) == 2 and dims[1] not in (None, 1):
            outs.append(Output(name=o.name, kind="probabilities"))
        else:
            outs.append(Output(name=o.name, kind="value"))
    kinds = [o.kind for o in outs]
    if len(set(kinds)) != len(kinds):
        raise ExportError(f"cannot tell the outputs apart by kind ({kinds}); pass a schema")
    return tuple(outs)


def _golden_outputs(raw: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
    by_name = {o.name: o.kind for o in schema.outputs}
    out = {}
    for key, value in raw.items():
        kind = by_name.get(key, key)
        if schema.output(kind) is None:
            raise ExportError(
                f"golden output {key!r}: the model's outputs are "
                f"{[(o.name, o.kind) for o in schema.outputs]}"
            )
        out[kind] = value
    return out


def import_onnx(
    model: bytes,
    goldens: Sequence[Mapping[str, Any]],
    *,
    name: str,
    schema: Schema | None = None,
    columns: Sequence[str] | None = None,
    description: str = "",
    created_by: str = "",
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Artifact:
    """Wrap a foreign ONNX model in an envelope after replaying its golden examples.

    Raises :class:`ExportError` when no goldens are given, they do not fit the schema, or
    ONNX Runtime does not reproduce them.
    """
    if not goldens:
        raise ExportError("import needs golden examples: rows with the outputs you expect")
    schema = schema or infer_schema(model, columns)
    golds = tuple(
        Golden(inputs=dict(g["inputs"]), outputs=_golden_outputs(g["outputs"], schema))
        for g in goldens
    )
    envelope = Envelope(
        name=name,
        sha256=sha256_hex(model),
        size_bytes=len(model),
        schema=schema,
        goldens=golds,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        created_by=created_by,
        description=description,
        onnx=graph_info(model),
        provenance={
            "source": "import-onnx",
            "libraries": library_versions("onnxruntime", "onnx", "numpy", "dscloud"),
            "argv": sys.argv,
            **dict(provenance or {}),
        },
        quality={"metrics": dict(metrics or {})},
    )
    artifact = Artifact(envelope=envelope, model=model)
    scorer = Scorer(artifact, check_goldens=False)
    got = scorer.golden_outputs([g.inputs for g in golds])
    for i, (golden, actual) in enumerate(zip(golds, got, strict=True)):
        problem = compare_outputs(golden, actual)
        if problem:
            raise ExportError(
                f"golden example {i}: {problem}; ONNX Runtime disagrees, not importing"
            )
    return artifact

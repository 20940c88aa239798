"""The Open Inference Protocol v2 (KServe, Triton, MLServer) REST payloads.

Inputs are tensors named by the model's columns, each with ``shape`` ``[n]`` or ``[n, 1]``,
a ``datatype`` and row-major ``data`` (flat or nested); a model with a single ``[N, k]``
ONNX input also takes that one tensor. Outputs are one tensor per kind (``label``,
``probabilities``, ``value``), and the answer names model, version and sha256.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from dscloud.errors import PayloadError, SchemaError
from dscloud.schema import OUTPUT_KINDS, Column, Output, Schema
from dscloud.scorer import Predictions, Scorer
from dscloud.server.protocols import Batch, check_known

__all__ = ["OIP_DATATYPES", "decode_infer", "encode_infer", "model_metadata"]

#: OIP v2 tensor datatypes, and whether a numeric column accepts them.
OIP_DATATYPES = {
    "BOOL": False,
    "UINT8": True,
    "UINT16": True,
    "UINT32": True,
    "UINT64": True,
    "INT8": True,
    "INT16": True,
    "INT32": True,
    "INT64": True,
    "FP16": True,
    "FP32": True,
    "FP64": True,
    "BYTES": False,
}
_COLUMN_DATATYPE = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}


def decode_infer(payload: Any, schema: Schema) -> Batch:
    """An OIP v2 inference request as a :class:`Batch`.

    Raises :class:`PayloadError` for a request that is not shaped like the protocol says,
    and :class:`SchemaError` for a tensor that names no column or has the wrong datatype.
    """
    if not isinstance(payload, dict):
        raise PayloadError(
            'expected a JSON object {"inputs": [{"name", "shape", "datatype", "data"}]}'
        )
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError(
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}, '
            f"one per column: {schema.expected()}",
            field="inputs",
        )
    request_id = payload.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not _utf8(request_id)):
        raise PayloadError('"id" must be a string of valid UTF-8 text', field="id")
    outputs = _requested_outputs(payload.get("outputs"), schema)
    first = inputs[0]
    if (
        schema.matrix_input is not None
        and len(inputs) == 1
        and isinstance(first, dict)
        and first.get("name") == schema.matrix_input
    ):
        matrix, rows = _matrix_tensor(first, schema)
        if isinstance(matrix, dict):
            schema.compact(matrix, rows)  # boxed values freed with the payload (bench/memory.md)
        return Batch(matrix, rows, request_id, outputs)

    columns = {}
    n_rows: int | None = None
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise PayloadError(f"inputs[{i}] must be an object", field=f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise PayloadError(f'inputs[{i}]: "name" must be a string', field=f"inputs[{i}].name")
        check_known(schema, [name])
        if name in columns:
            raise PayloadError(f"input {name!r} appears twice", field=name)
        column = schema.column(name)
        rows, data = _column_tensor(tensor, column)
        if n_rows is None:
            n_rows = rows
        elif rows != n_rows:
            raise PayloadError(
                f"input {name!r} has shape [{rows}], but earlier inputs have {n_rows} rows; "
                "every input needs the same first dimension",
                field=name,
            )
        columns[name] = data
    schema.compact(columns, n_rows or 0)  # boxed values freed with the payload (bench/memory.md)
    return Batch(columns, n_rows or 0, request_id, outputs)


def _requested_outputs(value: Any, schema: Schema) -> tuple[str, ...] | None:
    if value is None:
        return None
    available = [o.kind for o in schema.outputs]
    if not isinstance(value, list):
        raise PayloadError(
            f'"outputs" must be a list of {{"name"}}, names in {available}', field="outputs"
        )
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in available:
            raise PayloadError(
                f"unknown output {name!r}; the model produces {available}", field="outputs"
            )
        names.append(name)
    return tuple(names)


def _shape(tensor: dict[str, Any], field: str) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise PayloadError(
            f'input {field!r}: "shape" must be a list of non-negative integers', field=field
        )
    return shape


def _utf8(text: str) -> bool:
    """False for text with a lone surrogate: valid JSON, but not UTF-8 we can answer with."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _datatype(tensor: dict[str, Any], column: Column) -> None:
    datatype = tensor.get("datatype")
    expected = _COLUMN_DATATYPE[column.dtype]
    if not isinstance(datatype, str) or datatype not in OIP_DATATYPES:
        shown = (
            repr(datatype[:40])
            if isinstance(datatype, str)
            else f"of type {type(datatype).__name__}"
        )
        raise SchemaError(
            f"input {column.name!r}: datatype {shown} is not an OIP v2 datatype; "
            f"expected {expected} ({column.describe()})",
            field=column.name,
        )
    ok = datatype == "BYTES" if not column.numeric else OIP_DATATYPES[datatype]
    if not ok:
        raise SchemaError(
            f"input {column.name!r}: datatype {datatype} does not fit the column; "
            f"expected {expected} ({column.describe()})",
            field=column.name,
        )


def _flat(tensor: dict[str, Any], field: str, shape: list[int]) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise PayloadError(f'input {field!r}: "data" must be a list', field=field)
    # Row-major nested data ([[1], [2]]) is as valid as flat data; flatten up to the rank.
    for _ in range(len(shape) - 1):
        if not data or not isinstance(data[0], list):
            break
        if not all(isinstance(row, list) for row in data):
            raise PayloadError(f'input {field!r}: "data" mixes lists and scalars', field=field)
        data = [v for row in data for v in row]
    if len(data) != math.prod(shape):
        raise PayloadError(
            f"input {field!r}: shape {shape} needs {math.prod(shape)} values, "
            f'"data" has {len(data)}',
            field=field,
        )
    return data


def _column_tensor(tensor: dict[str, Any], column: Column) -> tuple[int, list[Any]]:
    shape = _shape(tensor, column.name)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise PayloadError(
            f"input {column.name!r}: shape {shape} is not a column; expected [n] or [n, 1]",
            field=column.name,
        )
    _datatype(tensor, column)
    return shape[0], _flat(tensor, column.name, shape)


def _matrix_tensor(tensor: dict[str, Any], schema: Schema) -> tuple[dict[str, Sequence[Any]], int]:
    name = str(schema.matrix_input)
    shape = _shape(tensor, name)
    k = len(schema.columns)
    if len(shape) != 2 or shape[1] != k:
        raise PayloadError(
            f"input {name!r}: shape {shape} does not fit; expected [n, {k}] with columns "
            f"{schema.names}",
            field=name,
        )
    _datatype(tensor, schema.columns[0])
    flat = _flat(tensor, name, shape)
    return {c.name: flat[j::k] for j, c in enumerate(schema.columns)}, shape[0]


def _datatype_of(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind == "f":
        return "FP64" if array.dtype.itemsize == 8 else "FP32"
    if kind in "iu":
        return f"{'UINT' if kind == 'u' else 'INT'}{array.dtype.itemsize * 8}"
    if kind == "b":
        return "BOOL"
    return "BYTES"


def _plain(array: np.ndarray[Any, Any]) -> Any:
    """Something orjson writes exactly: float32 widened to float64 (the same number, printed
    so it parses back to what ``Predictions.to_records`` gives), strings as a list."""
    kind = array.dtype.kind
    if kind == "f":
        return np.ascontiguousarray(array, dtype=np.float64)
    if kind in "iub":
        return np.ascontiguousarray(array)
    return array.tolist()


def encode_infer(preds: Predictions, scorer: Scorer, batch: Batch) -> bytes:
    """The OIP v2 inference response for ``preds``, naming model, version and sha256."""
    wanted = batch.outputs or OUTPUT_KINDS
    outputs: list[dict[str, Any]] = []
    n = len(preds)
    for kind in OUTPUT_KINDS:
        array = getattr(preds, kind)
        if array is None or kind not in wanted:
            continue
        tensor: dict[str, Any] = {
            "name": kind,
            "datatype": _datatype_of(array),
            "shape": [n, *array.shape[1:]],
            "data": _plain(array.reshape(-1)),
        }
        if kind == "probabilities":
            tensor["parameters"] = {"classes": preds.classes}
        outputs.append(tensor)
    model = scorer.identity
    body: dict[str, Any] = {
        "model_name": model.name,
        "model_version": str(model.version),
        "parameters": {"sha256": model.sha256},
        "outputs": outputs,
    }
    if batch.request_id is not None:
        body["id"] = batch.request_id
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _output_datatype(out: Output) -> str:
    if out.kind != "label":
        return "FP32"
    classes = out.classes or ()
    return "INT64" if all(type(c) is int for c in classes) else "BYTES"


def model_metadata(scorer: Scorer, *, ref: str, last_error: str | None) -> dict[str, Any]:
    """The OIP v2 model metadata answer, with the envelope's identity in ``parameters``."""
    env = scorer.envelope
    outputs = []
    for out in env.schema.outputs:
        width = len(out.classes) if out.kind == "probabilities" and out.classes else None
        outputs.append(
            {
                "name": out.kind,
                "datatype": _output_datatype(out),
                "shape": [-1, width] if width else [-1],
            }
        )
    return {
        "name": env.name,
        "versions": [str(env.version)],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": c.name, "datatype": _COLUMN_DATATYPE[c.dtype], "shape": [-1, 1]}
            for c in env.schema.columns
        ],
        "outputs": outputs,
        "parameters": {
            "sha256": env.sha256,
            "version": env.version,
            "ref": ref,
            "created_at": env.created_at,
            "created_by": env.created_by,
            "description": env.description,
            "metrics": env.metrics,
            "schema": env.schema.to_dict(),
            "last_refresh_error": last_error,
        },
    }

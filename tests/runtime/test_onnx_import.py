"""Foreign ONNX models come in with golden examples that ONNX Runtime must reproduce."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dscloud.errors import ExportError
from dscloud.onnx_import import import_onnx, infer_schema
from dscloud.scorer import Scorer

W = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
B = np.array([0.25], dtype=np.float32)


def linear_model() -> bytes:
    """A hand-built graph (not skl2onnx): score = input @ W + b, like an exported torch model."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["score"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [3, 1], W.ravel().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [1], B.tolist()),
        ],
    )
    model = helper.make_model(
        graph, producer_name="torch-like", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def golden(x: list[float], names=("f0", "f1", "f2")) -> dict:
    value = float((np.array([x], dtype=np.float32) @ W + B)[0, 0])
    return {"inputs": dict(zip(names, x, strict=True)), "outputs": {"score": value}}


def test_schema_is_read_from_the_graph() -> None:
    schema = infer_schema(linear_model(), ["age", "income", "visits"])
    assert schema.matrix_input == "input"
    assert schema.names == ["age", "income", "visits"]
    assert [(o.name, o.kind) for o in schema.outputs] == [("score", "value")]


def test_import_replays_goldens_and_scores() -> None:
    goldens = [golden([1.0, 2.0, 3.0]), golden([0.0, -1.0, 0.5])]
    artifact = import_onnx(linear_model(), goldens, name="linear")
    env = artifact.envelope
    assert env.onnx["producer"] == "torch-like"
    assert env.provenance["source"] == "import-onnx"
    assert [g.outputs for g in env.goldens] == [{"value": g["outputs"]["score"]} for g in goldens]
    preds = Scorer(artifact).score_records([{"f0": 1.0, "f1": 1.0, "f2": 1.0}])
    assert preds.value is not None and preds.value[0] == pytest.approx(1.75)


def test_goldens_that_do_not_reproduce_are_refused() -> None:
    wrong = golden([1.0, 2.0, 3.0])
    wrong["outputs"]["score"] += 0.5
    with pytest.raises(
        ExportError, match=r"golden example 0: value: expected 5.25, got 4.75 \(max abs diff 0.5\)"
    ):
        import_onnx(linear_model(), [wrong], name="linear")


def test_import_needs_goldens_and_valid_outputs() -> None:
    with pytest.raises(ExportError, match="needs golden examples"):
        import_onnx(linear_model(), [], name="linear")
    bad = golden([1.0, 2.0, 3.0])
    bad["outputs"] = {"probabilities": [0.1, 0.9]}
    with pytest.raises(ExportError, match="golden output 'probabilities'"):
        import_onnx(linear_model(), [bad], name="linear")
    with pytest.raises(ExportError, match="not an ONNX model"):
        import_onnx(b"not onnx", [golden([1.0, 2.0, 3.0])], name="linear")

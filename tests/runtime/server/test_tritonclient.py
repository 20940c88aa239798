"""Triton's own Python client (``tritonclient.http``, OIP v2) against ``dsc serve``.

The most common OIP client: it sends a missing FP32 value as the ``NaN`` token
(``json.dumps``), flat ``data`` with an ``[N, 1]`` shape, and its own request parameters.
The numbers it gets back must be the ones ``/invocations`` answers for the same rows.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from dscloud.envelope import Artifact
from tests.runtime.server.conftest import Server

#: Our column dtypes as Triton datatypes and the numpy types tritonclient encodes from.
DATATYPES: dict[str, tuple[str, Any]] = {
    "float32": ("FP32", np.float32),
    "string": ("BYTES", np.object_),
}


def triton_inputs(artifact: Artifact, rows: list[dict[str, Any]]) -> list[triton.InferInput]:
    """One ``[N, 1]`` tensor per column, built the way a tritonclient user builds them:
    a missing number is NaN in a float32 array."""
    inputs = []
    for col in artifact.envelope.schema.columns:
        datatype, np_type = DATATYPES[col.dtype]
        values = [np.nan if r[col.name] is None else r[col.name] for r in rows]
        array = np.array(values, dtype=np_type).reshape(len(rows), 1)
        tensor = triton.InferInput(col.name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        inputs.append(tensor)
    return inputs


@pytest.fixture
def triton_client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)


def test_health_and_metadata_through_tritonclient(
    triton_client: triton.InferenceServerClient, churn_artifact: Artifact
) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("churn")
    meta = triton_client.get_model_metadata("churn")
    schema = churn_artifact.envelope.schema
    assert meta["name"] == "churn"
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {
        (c.name, DATATYPES[c.dtype][0]) for c in schema.columns
    }


def test_infer_through_tritonclient_with_a_missing_value_equals_invocations(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    churn_artifact: Artifact,
    churn_rows: list[dict[str, Any]],
) -> None:
    # given rows where the nullable column "age" is missing in one of them
    nullable = [c.name for c in churn_artifact.envelope.schema.columns if c.nullable]
    assert nullable == ["age"]
    rows = [dict(r) for r in churn_rows[:3]]
    rows[1]["age"] = None
    # when tritonclient sends them (the missing value as NaN) and /invocations gets null
    result = triton_client.infer(
        "churn",
        triton_inputs(churn_artifact, rows),
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
    )
    answer = client.post("/invocations?model=churn", json={"dataframe_records": rows})
    # then both score the same numbers
    assert answer.status_code == 200, answer.text
    expected = np.array([p["probabilities"] for p in answer.json()["predictions"]])
    got = result.as_numpy("probabilities")
    assert got is not None and got.shape == expected.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert not np.allclose(got[1], got[0])  # the missing age was scored, not dropped


def test_nan_in_a_column_that_is_not_nullable_names_the_column(
    triton_client: triton.InferenceServerClient,
    churn_artifact: Artifact,
    churn_rows: list[dict[str, Any]],
) -> None:
    rows = [dict(churn_rows[0], tenure_months=None)]
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("churn", triton_inputs(churn_artifact, rows))
    assert caught.value.status() == "400"
    assert "tenure_months" in str(caught.value)

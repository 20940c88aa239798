"""Open Inference Protocol v2 over real HTTP: health, metadata, inference, parity."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from dscloud import example
from dscloud.envelope import Artifact
from dscloud.scorer import Scorer

DATATYPE = {"float32": "FP32", "string": "BYTES"}


def oip_request(
    artifact: Artifact, rows: list[dict[str, Any]], *, nested: bool = False
) -> dict[str, Any]:
    """One tensor per column, as a KServe / Triton client sends them."""
    inputs = []
    for col in artifact.envelope.schema.columns:
        data = [r[col.name] for r in rows]
        inputs.append(
            {
                "name": col.name,
                "shape": [len(rows), 1] if nested else [len(rows)],
                "datatype": DATATYPE[col.dtype],
                "data": [[v] for v in data] if nested else data,
            }
        )
    return {"id": "req-1", "inputs": inputs}


def as_records(body: dict[str, Any]) -> list[dict[str, Any]]:
    """An OIP answer back into ``Predictions.to_records()`` form."""
    outs = {o["name"]: o for o in body["outputs"]}
    n = outs["label"]["shape"][0]
    records = []
    for i in range(n):
        rec: dict[str, Any] = {"label": outs["label"]["data"][i]}
        if "probabilities" in outs:
            width = outs["probabilities"]["shape"][1]
            rec["probabilities"] = outs["probabilities"]["data"][i * width : (i + 1) * width]
        records.append(rec)
    return records


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert sorted(m["name"] for m in meta["models"]) == ["churn", "forest", "strict"]


def test_model_metadata_names_version_and_sha256(
    client: httpx.Client, churn_artifact: Artifact
) -> None:
    # when
    r = client.get("/v2/models/churn")
    # then
    body = r.json()
    assert body["name"] == "churn" and body["versions"] == ["1"]
    assert body["parameters"]["sha256"] == churn_artifact.envelope.sha256
    assert [i["name"] for i in body["inputs"]] == churn_artifact.envelope.schema.names
    assert r.headers["x-model-sha256"] == churn_artifact.envelope.sha256
    assert client.get("/v2/models/churn/versions/1").json() == body
    assert client.get("/v2/models/churn/ready").json()["ready"] is True
    assert client.get("/v2/models/churn/versions/1/ready").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/v2/models/nope", "/v2/models/churn/versions/7", "/v2/models/churn/versions/7/ready"],
)
def test_unknown_model_or_version_is_404(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert "churn" in r.json()["error"]


@pytest.mark.parametrize("nested", [False, True])
def test_infer_equals_goldens_exactly(
    client: httpx.Client, churn_artifact: Artifact, churn_rows: list[dict[str, Any]], nested: bool
) -> None:
    # when
    r = client.post(
        "/v2/models/churn/infer", json=oip_request(churn_artifact, churn_rows, nested=nested)
    )
    # then
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "churn" and body["model_version"] == "1"
    assert body["parameters"]["sha256"] == churn_artifact.envelope.sha256
    assert body["id"] == "req-1"
    assert as_records(body) == [g.outputs for g in churn_artifact.envelope.goldens]


def test_versioned_infer_and_requested_outputs(
    client: httpx.Client, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    request = {**oip_request(churn_artifact, churn_rows), "outputs": [{"name": "label"}]}
    body = client.post("/v2/models/churn/versions/1/infer", json=request).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]
    assert body["outputs"][0]["data"] == [
        g.outputs["label"] for g in churn_artifact.envelope.goldens
    ]
    stale = client.post("/v2/models/churn/versions/2/infer", json=request)
    assert stale.status_code == 404


def test_infer_parity_with_in_process_scorer(
    client: httpx.Client, churn_artifact: Artifact, churn_example: example.TrainedExample
) -> None:
    # given 300 rows with missing ages (null in JSON)
    frame = churn_example.X_test.head(300)
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        for rec in frame.to_dict("records")
    ]
    expected = Scorer(churn_artifact).score_records(rows).to_records()
    # when
    r = client.post("/v2/models/churn/infer", json=oip_request(churn_artifact, rows))
    # then: same numbers to the last bit
    assert r.status_code == 200, r.text
    assert as_records(r.json()) == expected
    inv = client.post("/invocations?model=churn", json={"dataframe_records": rows})
    assert inv.json()["predictions"] == expected


def test_matrix_model_by_columns_or_one_matrix_tensor(
    client: httpx.Client, forest_artifact: Artifact
) -> None:
    # given
    rows = [g.inputs for g in forest_artifact.envelope.goldens]
    names = forest_artifact.envelope.schema.names
    matrix_name = forest_artifact.envelope.schema.matrix_input
    assert matrix_name is not None
    by_matrix = {
        "inputs": [
            {
                "name": matrix_name,
                "shape": [len(rows), len(names)],
                "datatype": "FP32",
                "data": [[r[c] for c in names] for r in rows],
            }
        ]
    }
    # when
    a = client.post("/v2/models/forest/infer", json=oip_request(forest_artifact, rows))
    b = client.post("/v2/models/forest/infer", json=by_matrix)
    # then
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    expected = [g.outputs for g in forest_artifact.envelope.goldens]
    assert as_records(a.json()) == as_records(b.json()) == expected

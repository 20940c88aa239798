"""The SageMaker / MLflow container contract: /ping and /invocations in every format."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from dscloud.envelope import Artifact
from dscloud.scorer import Predictions, Scorer
from dscloud.server.invocations import BLOCK_ROWS, encode_invocations


@pytest.fixture(scope="module")
def goldens(churn_artifact: Artifact) -> list[dict[str, Any]]:
    return [g.outputs for g in churn_artifact.envelope.goldens]


def bodies(rows: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """The same rows in each JSON layout MLflow's scoring server accepts."""
    return {
        "dataframe_split": {
            "dataframe_split": {"columns": names, "data": [[r[c] for c in names] for r in rows]}
        },
        "dataframe_records": {"dataframe_records": rows},
        "instances_records": {"instances": rows},
        "instances_lists": {"instances": [[r[c] for c in names] for r in rows]},
        "inputs_columns": {"inputs": {c: [r[c] for r in rows] for c in names}},
        "inputs_records": {"inputs": rows},
    }


def test_ping(client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200


@pytest.mark.parametrize(
    "layout",
    [
        "dataframe_split",
        "dataframe_records",
        "instances_records",
        "instances_lists",
        "inputs_columns",
        "inputs_records",
    ],
)
def test_every_json_layout_scores_the_goldens(
    client: httpx.Client,
    churn_artifact: Artifact,
    churn_rows: list[dict[str, Any]],
    goldens: list[dict[str, Any]],
    layout: str,
) -> None:
    body = bodies(churn_rows, churn_artifact.envelope.schema.names)[layout]
    r = client.post("/invocations", params={"model": "churn"}, json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["predictions"] == goldens
    assert answer["model"] == {
        "name": "churn",
        "version": 1,
        "sha256": churn_artifact.envelope.sha256,
    }
    assert r.headers["x-model-version"] == "1"


def test_csv_with_header_row(
    client: httpx.Client,
    churn_artifact: Artifact,
    churn_rows: list[dict[str, Any]],
    goldens: list[dict[str, Any]],
) -> None:
    # given columns in another order than the schema's, as a spreadsheet would write them
    names = list(reversed(churn_artifact.envelope.schema.names))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(names)
    writer.writerows([[r[c] for c in names] for r in churn_rows])
    # when
    r = client.post(
        "/invocations",
        headers={"content-type": "text/csv", "x-dsc-model": "churn"},
        content=out.getvalue().encode(),
    )
    # then: the text round trip of each float32 value still gives the golden answers
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == goldens


def test_csv_empty_cell_is_null(client: httpx.Client, churn_rows: list[dict[str, Any]]) -> None:
    names = list(churn_rows[0])
    row = ["" if c == "age" else str(churn_rows[0][c]) for c in names]
    text = ",".join(names) + "\n" + ",".join(row) + "\n"
    r = client.post("/invocations?model=churn", headers={"content-type": "text/csv"}, content=text)
    assert r.status_code == 200, r.text
    bad = text.replace(f",{churn_rows[0]['plan']},", ",,")
    refused = client.post(
        "/invocations?model=churn", headers={"content-type": "text/csv"}, content=bad
    )
    assert refused.status_code == 400
    assert "column 'plan' is null" in refused.json()["error"]


def test_model_choice_when_several_are_served(
    client: httpx.Client, churn_rows: list[dict[str, Any]]
) -> None:
    body = {"dataframe_records": churn_rows}
    # no choice: the answer says how to choose
    r = client.post("/invocations", json=body)
    assert r.status_code == 404
    assert "?model=NAME" in r.json()["error"]
    # by query parameter and by header
    assert client.post("/invocations?model=strict", json=body).json()["model"]["name"] == "strict"
    by_header = client.post("/invocations", json=body, headers={"x-dsc-model": "strict"})
    assert by_header.json()["model"]["name"] == "strict"
    assert client.post("/invocations?model=nope", json=body).status_code == 404
    # an empty ?model= names no model, even beside the header (schemathesis found it taken
    # as absent): a 400 naming the field
    empty = client.post("/invocations?model=", json=body, headers={"x-dsc-model": "strict"})
    assert empty.status_code == 400 and "?model= is empty" in empty.json()["error"]


def test_empty_batch_answers_no_predictions(client: httpx.Client) -> None:
    r = client.post("/invocations?model=churn", json={"dataframe_records": []})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == []


def test_mlflow_tensor_form_by_onnx_input_name_for_a_matrix_model(
    client: httpx.Client, forest_artifact: Artifact
) -> None:
    # given the forest (one [N, k] ONNX input) and rows in MLflow's tensor form by input name
    schema = forest_artifact.envelope.schema
    assert schema.matrix_input is not None
    rows = [g.inputs for g in forest_artifact.envelope.goldens]
    tensor = [[r[c] for c in schema.names] for r in rows]
    # when sent as {"inputs": {"<onnx input>": [[...]]}} and as named columns
    by_input = client.post(
        "/invocations", params={"model": "forest"}, json={"inputs": {schema.matrix_input: tensor}}
    )
    by_columns = client.post(
        "/invocations", params={"model": "forest"}, json={"dataframe_records": rows}
    )
    # then both are the goldens
    assert by_input.status_code == 200, by_input.text
    assert by_input.json()["predictions"] == by_columns.json()["predictions"]
    assert by_input.json()["predictions"] == [g.outputs for g in forest_artifact.envelope.goldens]


def test_nan_token_is_a_missing_value_where_the_column_is_nullable(
    client: httpx.Client, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    # given the same row with the nullable "age" as JSON null and as Python's NaN token
    row = dict(churn_rows[0], age=None)
    as_null = orjson_body({"dataframe_records": [row]})
    as_nan = as_null.replace(b'"age":null', b'"age":NaN')
    assert b"NaN" in as_nan
    # when both are posted
    answers = [
        client.post("/invocations?model=churn", content=b, headers=JSON_HEADERS)
        for b in (as_null, as_nan)
    ]
    # then they score the same
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[0].json()["predictions"] == answers[1].json()["predictions"]


@pytest.mark.parametrize("path", ["/invocations?model=churn", "/v2/models/churn/infer"])
def test_nan_token_where_the_column_is_not_nullable_is_a_400_naming_it(
    client: httpx.Client, churn_rows: list[dict[str, Any]], path: str
) -> None:
    row = dict(churn_rows[0], tenure_months=0.5)
    if path.startswith("/invocations"):
        body = orjson_body({"dataframe_records": [row]})
    else:
        body = orjson_body({"inputs": oip_tensors(row)})
    r = client.post(path, content=body.replace(b"0.5", b"NaN", 1), headers=JSON_HEADERS)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "tenure_months" and "null" in r.json()["error"]


def test_infinity_tokens_are_read_as_a_csv_inf_cell_is(
    client: httpx.Client, churn_artifact: Artifact, churn_rows: list[dict[str, Any]]
) -> None:
    # given an infinite value as a JSON token and as a CSV cell (the core's one rule)
    names = churn_artifact.envelope.schema.names
    row = dict(churn_rows[0], monthly_charges=0.5)
    as_token = orjson_body({"dataframe_records": [row]}).replace(b"0.5", b"-Infinity", 1)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(names)
    writer.writerow(["-inf" if c == "monthly_charges" else row[c] for c in names])
    # when both are posted
    json_answer = client.post("/invocations?model=churn", content=as_token, headers=JSON_HEADERS)
    csv_answer = client.post(
        "/invocations?model=churn", content=text.getvalue(), headers={"content-type": "text/csv"}
    )
    # then the answers agree, whichever the rule decides
    assert json_answer.status_code == csv_answer.status_code, (json_answer.text, csv_answer.text)
    assert json_answer.json().get("predictions") == csv_answer.json().get("predictions")


JSON_HEADERS = {"content-type": "application/json"}


def orjson_body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def oip_tensors(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``[1]`` tensor per column (FP32 for numbers, BYTES for strings)."""
    return [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "FP32",
            "data": [v],
        }
        for k, v in row.items()
    ]


# -- the answer, built from whole output arrays ----------------------------------------------


def _outputs(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(n)
    return [
        {"label": rng.integers(0, 3, n), "probabilities": rng.random((n, 3)).astype(np.float32)},
        {"label": np.array(['a,"b"]', "c"] * n, dtype=object)[:n]},
        {"label": rng.integers(0, 2, n).astype(bool), "value": rng.random(n) * 1e-7},
        {"probabilities": np.full((n, 2), np.nan, np.float32), "value": rng.random(n)},
    ]


@pytest.mark.parametrize("n", [0, 1, 3, BLOCK_ROWS + 5])
def test_the_answer_is_the_json_of_every_row_as_the_core_gives_it(
    churn_artifact: Artifact, n: int
) -> None:
    # given outputs of every kind and dtype (strings with JSON's own characters, NaN)
    scorer = Scorer(churn_artifact)
    for outputs in _outputs(n):
        preds = Predictions(envelope=churn_artifact.envelope, rows=np.arange(n), **outputs)
        # then the answer is byte for byte orjson's of the rows' Python values
        rows = [
            {k: (a[i].tolist() if a.ndim == 2 else a.tolist()[i]) for k, a in outputs.items()}
            for i in range(n)
        ]
        expected = {"predictions": rows, "model": scorer.identity.to_dict()}
        assert encode_invocations(preds, scorer) == orjson.dumps(expected)

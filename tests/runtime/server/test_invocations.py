"""The SageMaker / MLflow container contract: /ping and /invocations in every format."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from dscloud.envelope import Artifact


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


def test_empty_batch_answers_no_predictions(client: httpx.Client) -> None:
    r = client.post("/invocations?model=churn", json={"dataframe_records": []})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == []

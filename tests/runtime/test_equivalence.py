"""The same rows through every runtime: the same outputs to the bit, the same rejects with
the same reasons.

Runtimes: the core :class:`Scorer` (rows and columns), ``POST /invocations`` over a real
socket (JSON ``dataframe_records``, ``dataframe_split``, ``instances`` and ``inputs``, and
``text/csv``), OIP v2 ``/infer``, the stream handler (moto DynamoDB and SQS, one Kinesis
batch) and ``dsc score`` (Parquet with typed columns, Parquet with text columns, CSV,
JSON Lines). Every runtime must also name the model by the same identity. JSON Lines rows
go to the core as JSON values, so they follow the rule JSON sent to ``/invocations`` follows
(a missing key, a lone surrogate, ``true`` and ``"12"`` in a number column are rejected
with the core's reasons), not the text-cell rule of CSV.

The model is a hand-built ONNX graph, ``probe``, whose outputs show every input exactly:
``label`` is the int64 column itself (so a big integer that lost a bit shows), ``value``
sums every column, categories through a LabelEncoder that tells a null note (the empty
string) from the text ``"NA"``. Each case is one row as JSON carries it and, where a CSV
can say the same, the text cells that mean it; the core scoring the JSON row is the
expectation, and every runtime that can carry the case must agree with it. A runtime that
cannot carry a case (a missing key in CSV, a lone surrogate in UTF-8 files) skips it, and
every case is carried by several runtimes. The text cases are the ones that split HTTP
from batch before the core owned the rule for text cells (``"NA"`` rejected over HTTP,
null in batch).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto import mock_aws
from onnx import TensorProto, helper

from dscloud.archive import Archive
from dscloud.cli import main
from dscloud.columns import MISSING, Column
from dscloud.envelope import Artifact, Envelope, Golden, sha256_hex
from dscloud.schema import Output, Schema
from dscloud.scorer import Scorer
from dscloud.settings import Settings
from dscloud.stream.handler import StreamScorer
from tests.runtime.batch.conftest import read_output, read_rejects
from tests.runtime.server.conftest import Server, publish_all
from tests.runtime.stream.conftest import (
    REGION,
    FakeContext,
    create_resources,
    drain_queue,
    kinesis_event,
    table_items,
)

COLUMNS = (
    Column("x32", "float32"),
    Column("x64", "float64", nullable=True),
    Column("n", "int64"),
    Column("plan", "string", categories=("basic", "plus"), allow_unknown=False),
    Column("note", "string", nullable=True),
)
SCHEMA = Schema(columns=COLUMNS, outputs=(Output("label", "label"), Output("value", "value")))
NAMES = SCHEMA.names


def probe_model() -> bytes:
    """value = x32 + (x64, or -1000 when null) + n + plan code + note code; label = n."""
    ml = "ai.onnx.ml"
    nodes = [
        helper.make_node("Cast", ["x32"], ["a"], to=TensorProto.DOUBLE),
        helper.make_node("IsNaN", ["x64"], ["x64_null"]),
        helper.make_node("Where", ["x64_null", "when_null", "x64"], ["b"]),
        helper.make_node("Cast", ["n"], ["c"], to=TensorProto.DOUBLE),
        helper.make_node(
            "LabelEncoder",
            ["plan"],
            ["p32"],
            domain=ml,
            keys_strings=["basic", "plus"],
            values_floats=[10.0, 20.0],
            default_float=0.0,
        ),
        helper.make_node(
            "LabelEncoder",
            ["note"],
            ["q32"],
            domain=ml,
            keys_strings=["", "NA", "hello"],
            values_floats=[100.0, 200.0, 300.0],
            default_float=400.0,
        ),
        helper.make_node("Cast", ["p32"], ["p"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["q32"], ["q"], to=TensorProto.DOUBLE),
        helper.make_node("Sum", ["a", "b", "c", "p", "q"], ["value"]),
        helper.make_node("Identity", ["n"], ["label"]),
    ]
    types = {"x32": TensorProto.FLOAT, "x64": TensorProto.DOUBLE, "n": TensorProto.INT64}
    inputs = [
        helper.make_tensor_value_info(c.name, types.get(c.name, TensorProto.STRING), [None, 1])
        for c in COLUMNS
    ]
    graph = helper.make_graph(
        nodes,
        "probe",
        inputs,
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info("value", TensorProto.DOUBLE, [None, 1]),
        ],
        initializer=[helper.make_tensor("when_null", TensorProto.DOUBLE, [], [-1000.0])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ml, 2)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@dataclass(frozen=True)
class Case:
    """One row as JSON carries it (``MISSING`` for an absent key) and, when a CSV can say
    the same thing, its text cells."""

    name: str
    row: dict[str, Any]
    text: dict[str, str] | None = None

    def values(self) -> list[Any]:
        return [self.row.get(c, MISSING) for c in NAMES]


def case(name: str, row: dict[str, Any], text: list[str] | None = None) -> Case:
    return Case(name, row, dict(zip(NAMES, text, strict=True)) if text is not None else None)


BASE = {"x32": 1.5, "x64": 2.25, "n": 7, "plan": "basic", "note": "hello"}
BASE_TEXT = ["1.5", "2.25", "7", "basic", "hello"]


def variant(name: str, changes: dict[str, Any], text: dict[str, str] | None = None) -> Case:
    """BASE with ``changes`` (MISSING drops a key); ``text`` overrides BASE_TEXT's cells,
    and None means the variant has no CSV form."""
    row = {k: v for k, v in {**BASE, **changes}.items() if v is not MISSING}
    cells = (
        None if text is None else [text.get(c, t) for c, t in zip(NAMES, BASE_TEXT, strict=True)]
    )
    return case(name, row, cells)


NULL_SPELLINGS = ["", "NA", "na", "N/A", "null", "NULL", " none ", "NaN"]

CASES: list[Case] = [
    # -- rows that score ----------------------------------------------------------------
    case("plain", BASE, BASE_TEXT),
    case(
        "nulls where allowed",
        {"x32": 0.1, "x64": None, "n": -3, "plan": "plus", "note": None},
        ["0.1", "", "-3", "plus", ""],
    ),
    *[
        variant(f"null spelled {s!r} in a nullable number", {"x64": None}, {"x64": s})
        for s in NULL_SPELLINGS
    ],
    variant("NA is text in a string column", {"note": "NA"}, {"note": "NA"}),
    variant("null is text in a string column", {"note": "null"}, {"note": "null"}),
    case(
        "beyond float64's exact integers",
        {"x32": -3.4e38, "x64": 1e100, "n": 2**53 + 1, "plan": "plus", "note": "héllo ✓"},
        ["-3.4e+38", "1e+100", "9007199254740993", "plus", "héllo ✓"],
    ),
    case(
        "int64 and float32 extremes",
        {"x32": 1e-45, "x64": 5, "n": -(2**63), "plan": "basic", "note": ""},
        ["1e-45", "5", "-9223372036854775808", "basic", '""'],
    ),
    variant("integral text", {"x32": 4.0, "n": 3}, {"x32": " 4 ", "n": "3.0"}),
    # -- rows every runtime rejects with the same reason -----------------------------------
    variant("text in a number column", {"x32": "abc"}, {"x32": "abc"}),
    variant("null in a non-nullable number", {"x32": None}, {"x32": ""}),
    *[
        variant(f"null spelled {s!r} in a non-nullable number", {"x32": None}, {"x32": s})
        for s in ["NA", "null", "none"]
    ],
    variant("null in an integer column", {"n": None}, {"n": "NA"}),
    variant("missing column", {"n": MISSING}),
    variant("unknown category", {"plan": "gold"}, {"plan": "gold"}),
    variant("null category", {"plan": None}, {"plan": ""}),
    variant("quoted empty category", {"plan": None}, {"plan": '""'}),
    variant("NA is not a category", {"plan": "NA"}, {"plan": "NA"}),
    variant("float32 overflow", {"x32": 1e39}, {"x32": "1e+39"}),
    variant("not an integer", {"n": 2.5}, {"n": "2.5"}),
    variant("beyond int64", {"n": 2**63}, {"n": "9223372036854775808"}),
    variant("lone surrogate", {"note": "\ud800"}),
    variant("boolean in a number column", {"x64": True}),
    variant("false in a number column", {"x32": False}),
    variant("boolean in an integer column", {"n": True}),
    variant("NaN in a nullable number", {"x64": math.nan}, {"x64": "NaN"}),
    variant("NaN in a non-nullable number", {"x32": math.nan}, {"x32": "nan"}),
    variant("a list in a number column", {"x64": [1.0]}),
    variant("a number in a string column", {"note": 5}),
    variant("a number as a JSON string", {"x32": "12"}),
    variant("two bad columns", {"x32": "abc", "plan": "gold"}, {"x32": "abc", "plan": "gold"}),
]

Outcome = tuple[str, ...]  # ("scored", label, value.hex()) or ("rejected", reason)


def scored(label: Any, value: Any) -> Outcome:
    assert type(label) is int, f"label {label!r} is not an int"
    return ("scored", str(label), float(value).hex())


def rejected(reason: str) -> Outcome:
    return ("rejected", reason)


def published(probe: Artifact) -> dict[str, Any]:
    """How every runtime must name the model: probe, version 1, the sha256 of its bytes."""
    return {"name": "probe", "version": 1, "sha256": sha256_hex(probe.model)}


def archive_probe(archive: Archive) -> Artifact:
    return archive.load("probe@production")


# -- the expectation: the core scoring the JSON rows -----------------------------------------


@pytest.fixture(scope="module")
def probe() -> Artifact:
    model = probe_model()
    envelope = Envelope(
        name="probe", sha256=sha256_hex(model), size_bytes=len(model), schema=SCHEMA, goldens=()
    )
    unchecked = Artifact(envelope=envelope, model=model)
    golden = Golden(inputs=BASE, outputs=Scorer(unchecked).golden_outputs([BASE])[0])
    return Artifact(envelope=dataclasses.replace(envelope, goldens=(golden,)), model=model)


@pytest.fixture(scope="module")
def scorer(probe: Artifact) -> Scorer:
    return Scorer(probe)


@pytest.fixture(scope="module")
def expected(scorer: Scorer) -> dict[str, Outcome]:
    """Each case scored alone by the core from its JSON row."""
    out = {}
    for c in CASES:
        preds = scorer.score_records([c.row])
        if preds.rejects:
            out[c.name] = rejected(preds.rejects[0])
        else:
            out[c.name] = scored(preds.row(0)["label"], preds.row(0)["value"])
    return out


def test_the_cases_cover_what_they_claim(expected: dict[str, Outcome]) -> None:
    # given the cases as written, then the core scores the valid ones and rejects the others
    # with reasons that name the column and what it expected
    assert expected["plain"] == scored(7, 1.5 + 2.25 + 7 + 10 + 300)
    assert expected["beyond float64's exact integers"][1] == str(2**53 + 1)
    assert expected["NA is text in a string column"] != expected["nulls where allowed"]
    assert expected["text in a number column"] == rejected(
        "column 'x32': expected a number, got str 'abc'"
    )
    assert expected["null in a non-nullable number"] == rejected(
        "column 'x32' is null: expected a number"
    )
    assert expected["missing column"] == rejected("column 'n' is missing: expected an integer")
    assert expected["float32 overflow"] == rejected(
        "column 'x32': float 1e+39 is out of range for float32 (at most 3.403e+38 in magnitude)"
    )
    assert expected["lone surrogate"] == rejected(
        "column 'note': '\\ud800' is not valid UTF-8 (a lone surrogate)"
    )
    assert expected["two bad columns"][1].count("; ") == 1
    assert sum(o[0] == "rejected" for o in expected.values()) >= 15


# -- how each runtime carries a case ---------------------------------------------------------


def has_missing(c: Case) -> bool:
    return any(v is MISSING for v in c.values())


def utf8(c: Case) -> bool:
    return all(not isinstance(v, str) or _encodable(v) for v in c.values())


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def csv_body(cases: list[Case]) -> bytes:
    """A CSV of the cases' text cells; ``'""'`` in a case is a quoted empty cell."""
    lines = [",".join(NAMES)]
    for c in cases:
        assert c.text is not None
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow([c.text[n] for n in NAMES])
        lines.append(out.getvalue().replace('""""""', '""'))
    return ("\n".join(lines) + "\n").encode()


def typed_columns(c: Case) -> bool:
    """True when Parquet can hold the JSON row in natural column types."""
    if has_missing(c) or not utf8(c):
        return False
    for col, v in zip(COLUMNS, c.values(), strict=True):
        if v is None:
            continue
        if col.dtype == "int64" and not (type(v) is int and -(2**63) <= v < 2**63):
            return False
        if col.dtype.startswith("float") and type(v) not in (int, float):
            return False
        if col.dtype == "string" and type(v) is not str:
            return False
    return True


TYPES = {"float32": pa.float64(), "float64": pa.float64(), "int64": pa.int64()}


def parquet_typed(cases: list[Case], path: Path) -> None:
    """The JSON rows in typed columns (floats as float64: a float32 overflow must survive)."""
    columns = {
        col.name: pa.array([c.row[col.name] for c in cases], type=TYPES.get(col.dtype, pa.string()))
        for col in COLUMNS
    }
    pq.write_table(pa.table(columns), path)


def parquet_text(cases: list[Case], path: Path) -> None:
    """Numbers as the text cells a CSV holds (a string column keeps the JSON value)."""
    columns = {}
    for col in COLUMNS:
        if col.numeric:
            values = [_unquote(c.text[col.name]) for c in cases if c.text is not None]
        else:
            values = [c.row[col.name] for c in cases]
        columns[col.name] = pa.array(values, type=pa.string())
    pq.write_table(pa.table(columns), path)


def _unquote(cell: str) -> str:
    return "" if cell == '""' else cell


# -- the runtimes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, probe: Artifact) -> Archive:
    return publish_all(tmp_path_factory.mktemp("equivalence") / "archive", probe)


@pytest.fixture(scope="module")
def http(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server = Server(archive, ["probe@production"], tmp_path_factory.mktemp("log") / "server.log")
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


def server_outcome(response: httpx.Response, label: Callable[[Any], Any]) -> Outcome:
    """One row's answer: its prediction, or the reason in a 400 (``row 0: ...``)."""
    if response.status_code == 400:
        message = response.json()["error"]
        prefix, suffix = "row 0: ", f"; expected {SCHEMA.expected()}"
        assert message.startswith(prefix) and message.endswith(suffix), message
        return rejected(message[len(prefix) : -len(suffix)])
    assert response.status_code == 200, response.text
    return label(response.json())


def invocation(body: Any) -> Outcome:
    prediction = body["predictions"][0]
    return scored(prediction["label"], prediction["value"])


def post_json(client: httpx.Client, path: str, doc: Any) -> httpx.Response:
    # json.dumps writes a lone surrogate as its escape (\ud800), which is valid JSON.
    return client.post(path, content=json.dumps(doc), headers={"content-type": "application/json"})


def via_records(client: httpx.Client, c: Case) -> Outcome:
    return server_outcome(
        post_json(client, "/invocations", {"dataframe_records": [c.row]}), invocation
    )


def via_split(client: httpx.Client, c: Case) -> Outcome:
    doc = {"dataframe_split": {"columns": NAMES, "data": [c.values()]}}
    return server_outcome(post_json(client, "/invocations", doc), invocation)


def via_instances(client: httpx.Client, c: Case) -> Outcome:
    # TF-serving rows: values in the schema's column order
    doc = {"instances": [c.values()]}
    return server_outcome(post_json(client, "/invocations", doc), invocation)


def via_inputs(client: httpx.Client, c: Case) -> Outcome:
    doc = {"inputs": {n: [v] for n, v in zip(NAMES, c.values(), strict=True)}}
    return server_outcome(post_json(client, "/invocations", doc), invocation)


def via_csv(client: httpx.Client, c: Case) -> Outcome:
    response = client.post(
        "/invocations", content=csv_body([c]), headers={"content-type": "text/csv"}
    )
    return server_outcome(response, invocation)


OIP_TYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}


def oip_inputs(c: Case) -> list[dict[str, Any]]:
    return [
        {"name": col.name, "shape": [1, 1], "datatype": OIP_TYPES[col.dtype], "data": [v]}
        for col, v in zip(COLUMNS, c.values(), strict=True)
    ]


def via_oip(client: httpx.Client, c: Case) -> Outcome:
    inputs = oip_inputs(c)

    def answer(body: Any) -> Outcome:
        tensors = {t["name"]: t["data"] for t in body["outputs"]}
        return scored(tensors["label"][0], tensors["value"][0])

    return server_outcome(post_json(client, "/v2/models/probe/infer", {"inputs": inputs}), answer)


HTTP_RUNTIMES: dict[str, tuple[Callable[[httpx.Client, Case], Outcome], Callable[[Case], bool]]] = {
    "invocations dataframe_records": (via_records, lambda c: True),
    "invocations dataframe_split": (via_split, lambda c: not has_missing(c)),
    "invocations instances": (via_instances, lambda c: not has_missing(c)),
    "invocations inputs": (via_inputs, lambda c: not has_missing(c)),
    "invocations text/csv": (via_csv, lambda c: c.text is not None),
    # OIP tensor data may be nested by its shape: a list there is values, not one bad value
    "OIP v2 infer": (
        via_oip,
        lambda c: not has_missing(c) and not any(isinstance(v, list) for v in c.values()),
    ),
}


@pytest.mark.parametrize("runtime", list(HTTP_RUNTIMES))
def test_http_agrees_with_the_core_row_by_row(
    http: httpx.Client, expected: dict[str, Outcome], runtime: str
) -> None:
    send, carries = HTTP_RUNTIMES[runtime]
    cases = [c for c in CASES if carries(c)]
    got = {c.name: send(http, c) for c in cases}
    assert got == {c.name: expected[c.name] for c in cases}


def test_http_scores_many_rows_as_the_core_does(
    http: httpx.Client, expected: dict[str, Outcome], probe: Artifact
) -> None:
    # given every valid case in one request of each form
    valid = [c for c in CASES if expected[c.name][0] == "scored"]
    want = [expected[c.name] for c in valid]
    texts = [c for c in valid if c.text is not None]

    records = post_json(http, "/invocations", {"dataframe_records": [c.row for c in valid]})
    split = post_json(
        http,
        "/invocations",
        {"dataframe_split": {"columns": NAMES, "data": [c.values() for c in valid]}},
    )
    text = http.post("/invocations", content=csv_body(texts), headers={"content-type": "text/csv"})

    def outcomes(response: httpx.Response) -> list[Outcome]:
        assert response.status_code == 200, response.text
        return [scored(p["label"], p["value"]) for p in response.json()["predictions"]]

    assert outcomes(records) == want
    assert outcomes(split) == want
    assert outcomes(text) == [expected[c.name] for c in texts]
    # and every answer names the model by the core's one identity
    oip = post_json(http, "/v2/models/probe/infer", {"inputs": oip_inputs(valid[0])}).json()
    identity = published(probe)
    assert records.json()["model"] == text.json()["model"] == identity
    assert (oip["model_name"], oip["model_version"], oip["parameters"]["sha256"]) == (
        identity["name"],
        str(identity["version"]),
        identity["sha256"],
    )


def test_the_core_scores_rows_and_columns_alike(
    scorer: Scorer, expected: dict[str, Outcome]
) -> None:
    # every case in one call, as a batch or a stream would send them
    by_rows = outcomes_of(scorer.score_records([c.row for c in CASES]), CASES)
    columnar = [c for c in CASES if not has_missing(c)]
    by_columns = outcomes_of(
        scorer.score_columns({n: [c.row[n] for c in columnar] for n in NAMES}, len(columnar)),
        columnar,
    )
    assert by_rows == expected
    assert by_columns == {c.name: expected[c.name] for c in columnar}


#: Clean rows around a case in a many-row batch: numbers of 0 and 1 (where a boolean could
#: hide from a vectorised conversion) and nulls where they are allowed.
FILLERS = (
    BASE,
    {**BASE, "x32": 1.0, "x64": 0.0, "n": 1},
    {"x32": 0, "x64": None, "n": 0, "plan": "plus", "note": None},
)


def many_rows(c: Case, n_rows: int) -> tuple[list[dict[str, Any]], int]:
    """``n_rows`` clean rows with the case's row among them; returns the rows and its index."""
    rows = [FILLERS[i % len(FILLERS)] for i in range(n_rows)]
    at = n_rows // 2 + 1
    rows[at] = c.row
    return rows, at


# Beyond SMALL_BATCH rows the core converts whole columns at once, and looks at booleans one
# by one up to 64 candidates (0 and 1 values), at the column's types beyond: both sizes.
@pytest.mark.parametrize("n_rows", [40, 200])
def test_one_bad_row_among_many_is_judged_as_alone(
    scorer: Scorer, expected: dict[str, Outcome], http: httpx.Client, n_rows: int
) -> None:
    alone = {scorer.score_records([f]).rows.tolist() == [0] for f in FILLERS}
    assert alone == {True}
    for c in CASES:
        rows, at = many_rows(c, n_rows)
        # given one case among clean rows, through the core as rows and as columns
        by_rows = scorer.score_records(rows)
        outcomes = [by_rows]
        if not has_missing(c):
            outcomes.append(scorer.score_columns({n: [r[n] for r in rows] for n in NAMES}, n_rows))
        for preds in outcomes:
            # then the case is judged as it is alone, and every clean row scores
            got = outcomes_of(preds, [Case(f"filler {i}", r) for i, r in enumerate(rows)])
            assert got.pop(f"filler {at}") == expected[c.name], c.name
            assert {o[0] for o in got.values()} == {"scored"}, c.name
        if not has_missing(c):
            # and over HTTP (dataframe_split, all or nothing) as the first bad row
            doc = {
                "dataframe_split": {"columns": NAMES, "data": [[r[n] for n in NAMES] for r in rows]}
            }
            response = post_json(http, "/invocations", doc)
            if expected[c.name][0] == "scored":
                assert response.status_code == 200, (c.name, response.text)
                prediction = response.json()["predictions"][at]
                assert scored(prediction["label"], prediction["value"]) == expected[c.name]
            else:
                assert response.status_code == 400, (c.name, response.text)
                message = response.json()["error"]
                assert message == f"row {at}: {expected[c.name][1]}; expected {SCHEMA.expected()}"


def outcomes_of(preds: Any, cases: list[Case]) -> dict[str, Outcome]:
    out = {cases[i].name: rejected(reason) for i, reason in preds.rejects.items()}
    for j, i in enumerate(preds.rows.tolist()):
        row = preds.row(j)
        out[cases[i].name] = scored(row["label"], row["value"])
    return out


# -- the stream handler ----------------------------------------------------------------------


def test_the_stream_handler_agrees_with_the_core(
    archive: Archive, expected: dict[str, Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    entity = {f"case-{i:03d}": c for i, c in enumerate(CASES)}
    payloads = [
        json.dumps(
            {"entity_id": e, "features": c.row, "event_time": "2024-05-01T12:00:00Z"}
        ).encode()
        for e, c in entity.items()
    ]
    with mock_aws():
        aws = create_resources(
            boto3.client("dynamodb", region_name=REGION),
            boto3.client("sqs", region_name=REGION),
            boto3.client("kinesis", region_name=REGION),
        )
        app = StreamScorer.from_settings(
            Settings(
                archive=archive.uri,
                models=("probe@production",),
                predictions_table=aws.table,
                rejects_queue_url=aws.rejects_url,
            ),
            dynamodb=aws.dynamodb,
            sqs=aws.sqs,
            kinesis=aws.kinesis,
        )

        response = app.handle(kinesis_event(payloads), FakeContext())

        items = table_items(aws)
        rejects = drain_queue(aws.sqs, aws.rejects_url)
    assert response == {"batchItemFailures": []}
    identity = published(archive_probe(archive))
    for item in items.values():
        model = (
            item["model_name"]["S"],
            int(item["model_version"]["N"]),
            item["model_sha256"]["S"],
        )
        assert model == tuple(identity.values())
    assert all(r["model"] == identity for r in rejects)
    got = {
        entity[e].name: scored(int(i["label"]["N"]), float(i["value"]["N"]))
        for e, i in items.items()
    }
    got.update({entity[r["entity_id"]].name: rejected(r["reason"]) for r in rejects})
    assert got == {c.name: expected[c.name] for c in CASES}


# -- dsc score -------------------------------------------------------------------------------


def batch_outcomes(output: Path, cases: list[Case]) -> dict[str, Outcome]:
    out = {}
    for row in read_output(output).to_dict("records"):
        out[cases[int(row["source_row"])].name] = scored(int(row["label"]), row["value"])
    frame = read_rejects(output)
    for row in frame.to_dict("records") if len(frame) else []:
        out[cases[int(row["source_row"])].name] = rejected(row["reason"])
    return out


BATCH_FORMATS: dict[str, tuple[str, Callable[[list[Case], Path], None], Callable[[Case], bool]]] = {
    "Parquet, typed columns": ("typed.parquet", parquet_typed, typed_columns),
    "Parquet, text columns": (
        "text.parquet",
        parquet_text,
        lambda c: c.text is not None and utf8(c) and not has_missing(c),
    ),
    "CSV": (
        "rows.csv",
        lambda cases, path: path.write_bytes(csv_body(cases)),
        lambda c: c.text is not None,
    ),
    # json.dumps escapes a lone surrogate (valid JSON); the first record has every key.
    "JSON Lines": (
        "rows.jsonl",
        lambda cases, path: path.write_text("".join(json.dumps(c.row) + "\n" for c in cases)),
        lambda c: True,
    ),
}


@pytest.mark.parametrize("fmt", list(BATCH_FORMATS))
def test_dsc_score_agrees_with_the_core(
    archive: Archive,
    expected: dict[str, Outcome],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    cases, got = dsc_score(fmt, archive, tmp_path, monkeypatch)

    assert got == {c.name: expected[c.name] for c in cases}
    models = read_output(tmp_path / "out")[["model_name", "model_version", "model_sha256"]]
    identity = published(archive_probe(archive))
    assert {tuple(m) for m in models.itertuples(index=False)} == {tuple(identity.values())}


def dsc_score(
    fmt: str, archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Case], dict[str, Outcome]]:
    """``dsc score`` over the cases ``fmt`` carries, in one file; returns them and their
    outcomes (read from the parts and the rejects)."""
    name, write, carries = BATCH_FORMATS[fmt]
    cases = [c for c in CASES if carries(c)]
    write(cases, tmp_path / name)
    monkeypatch.setenv("DSC_ARCHIVE", archive.uri)
    for key in ("AWS_BATCH_JOB_ARRAY_INDEX", "DSC_SHARD_COUNT", "DSC_WORKERS"):
        monkeypatch.delenv(key, raising=False)
    ref, source, out = "probe@production", str(tmp_path / name), str(tmp_path / "out")
    # most of the cases are bad rows on purpose: the run must not fail on its rejected share
    args = ["score", ref, "--input", source, "--output", out, "--max-rejected-share", "1"]
    assert main(args) == 0
    return cases, batch_outcomes(tmp_path / "out", cases)


def test_every_case_is_carried_by_several_runtimes() -> None:
    carried = {
        c.name: sum(
            [
                *(carries(c) for _, carries in HTTP_RUNTIMES.values()),
                *(carries(c) for *_, carries in BATCH_FORMATS.values()),
                True,  # the stream handler takes every JSON row
            ]
        )
        for c in CASES
    }
    assert min(carried.values()) >= 2, carried  # besides the core itself
    text = [c for c in CASES if c.text is not None]
    assert len(text) >= 20  # the text rule is crossed by HTTP CSV, batch CSV and Parquet text

"""dscloud/client.py: requests signed with SigV4 reach a real `dsc serve`.

The calls go through `Verifier` (tests/runtime/conftest.py), which checks each signature
as API Gateway does before it forwards; a signed call must pass it and answer as the
server does, a wrong one must never reach the server.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import httpx
import pytest

from dscloud.client import EndpointClient, region_of
from dscloud.envelope import Artifact
from dscloud.errors import ConfigError, EndpointError
from tests.runtime.conftest import KEY_ID, SECRET, StaticSession, Verifier
from tests.runtime.server.conftest import Server


def signed(url: str, secret: str = SECRET) -> EndpointClient:
    return EndpointClient(url, session=StaticSession(KEY_ID, secret))


def test_a_signed_call_is_verified_and_answers_as_the_server_does(
    churn_server: Server, verifier: Verifier, rows_json: bytes
) -> None:
    direct = httpx.post(
        f"{churn_server.url}/invocations?model=churn",
        content=rows_json,
        headers={"Content-Type": "application/json"},
    )

    answer = signed(verifier.url).invocations(rows_json, model="churn")

    assert (verifier.forwarded, verifier.refusals) == (1, [])
    assert answer.status == 200
    assert answer.json() == direct.json()
    assert answer.headers["x-model-name"] == "churn"


def test_a_signed_csv_call_round_trips(
    churn_server: Server, verifier: Verifier, churn_artifact: Artifact
) -> None:
    rows = [dict(g.inputs) for g in churn_artifact.envelope.goldens]
    columns = list(rows[0])
    cell = lambda value: "" if value is None else str(value)  # noqa: E731 - missing is empty
    csv = "\n".join([",".join(columns), *(",".join(cell(r[c]) for c in columns) for r in rows)])

    answer = signed(verifier.url).invocations(csv.encode(), model="churn", content_type="text/csv")

    assert answer.status == 200
    assert len(answer.json()["predictions"]) == len(rows)


def test_a_signed_open_inference_protocol_call_round_trips(
    churn_server: Server, verifier: Verifier, churn_artifact: Artifact
) -> None:
    metadata = httpx.get(f"{churn_server.url}/v2/models/churn").json()
    golden = churn_artifact.envelope.goldens[0].inputs
    inputs = []
    for tensor in metadata["inputs"]:
        value = golden[tensor["name"]]
        inputs.append(
            {"name": tensor["name"], "shape": [1], "datatype": tensor["datatype"], "data": [value]}
        )

    answer = signed(verifier.url).infer("churn", {"inputs": inputs})

    assert answer.status == 200
    assert answer.json()["model_name"] == "churn"


def test_a_request_signed_with_a_wrong_secret_is_refused_before_the_server(
    verifier: Verifier, rows_json: bytes
) -> None:
    with pytest.raises(EndpointError) as refused:
        signed(verifier.url, secret="not-the-secret").invocations(rows_json, model="churn")

    assert refused.value.status == 403
    assert "signature" in refused.value.message
    assert verifier.forwarded == 0


def test_an_unsigned_request_is_refused(verifier: Verifier, rows_json: bytes) -> None:
    with pytest.raises(EndpointError, match="403"):
        EndpointClient(verifier.url, sign=False).invocations(rows_json, model="churn")

    assert verifier.refusals == ["Missing Authentication Token"]


def test_the_signature_covers_the_body(verifier: Verifier, rows_json: bytes) -> None:
    # given headers signed for one body
    client = signed(verifier.url)
    assert client._signer is not None
    url = f"{verifier.url}/invocations?model=churn"
    headers = client._signer.sign("POST", url, rows_json, {"Content-Type": "application/json"})
    # when another body is sent with them
    tampered = rows_json.replace(b"}", b', "extra": 1}', 1)
    request = urllib.request.Request(url, data=tampered, headers=headers, method="POST")

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)

    assert refused.value.code == 403
    assert verifier.forwarded == 0


def test_a_server_error_answer_raises_with_the_servers_message(verifier: Verifier) -> None:
    with pytest.raises(EndpointError) as error:
        signed(verifier.url).invocations(b'{"dataframe_records": [{"nope": 1}]}', model="churn")

    assert error.value.status == 400
    assert verifier.forwarded == 1


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/", "cn-north-1"),
        ("https://models.example.com", None),
        ("http://127.0.0.1:8080", None),
    ],
)
def test_the_region_comes_from_an_execute_api_url(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_a_custom_domain_without_a_region_is_a_config_error() -> None:
    class NoRegion(StaticSession):
        region_name = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="region"):
        EndpointClient("https://models.example.com", session=NoRegion(KEY_ID, SECRET))


def test_no_credentials_is_a_config_error() -> None:
    class Anonymous(StaticSession):
        def get_credentials(self) -> None:  # type: ignore[override]
            return None

    with pytest.raises(ConfigError, match="credentials"):
        EndpointClient("https://a.execute-api.eu-west-1.amazonaws.com", session=Anonymous("", ""))


def test_a_url_without_a_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="endpoint URL"):
        EndpointClient("abc.execute-api.eu-west-1.amazonaws.com", sign=False)


def test_signing_without_botocore_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "botocore.session", None)

    with pytest.raises(ConfigError, match=r"dscloud\[client\]"):
        EndpointClient("https://a.execute-api.eu-west-1.amazonaws.com")

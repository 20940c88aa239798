"""The malformed-input battery: hundreds of broken requests to every scoring route.

Each valid body (every JSON form, CSV, OIP) is truncated, has each top-level value and each
cell replaced by values of every wrong kind, gets bytes that are not UTF-8, and is sent
under the wrong content type. Every answer must be a 2xx or a 4xx with an error body,
never a 5xx, and come back within the client's timeout (never a hang).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx

#: Values of every kind a cell or a field can wrongly hold (as JSON text).
WRONG = [
    "null",
    "true",
    '""',
    '"x"',
    "[]",
    "{}",
    "[[1]]",
    '{"a": 1}',
    "-1",
    "0",
    "1e308",
    "-1e308",
    "1e999",
    "18446744073709551616",
    "123456789012345678901234567890",
    '"NaN"',
    '"\\ud800"',
    '"\\u0000"',
    '"' + "x" * 10_000 + '"',
    "[" * 200 + "1" + "]" * 200,
]


def records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


def json_bodies(rows: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    names = list(rows[0])
    return {
        "dataframe_records": ("/invocations?model=churn", {"dataframe_records": records(rows)}),
        "dataframe_split": (
            "/invocations?model=churn",
            {"dataframe_split": {"columns": names, "data": [list(r.values()) for r in rows]}},
        ),
        "instances": ("/invocations?model=churn", {"instances": records(rows)}),
        "inputs": (
            "/invocations?model=churn",
            {"inputs": {k: [r[k] for r in rows] for k in names}},
        ),
        "oip": (
            "/v2/models/churn/infer",
            {
                "id": "battery",
                "inputs": [
                    {
                        "name": k,
                        "shape": [len(rows)],
                        "datatype": "BYTES" if isinstance(rows[0][k], str) else "FP64",
                        "data": [r[k] for r in rows],
                    }
                    for k in names
                ],
            },
        ),
    }


def replace_at(doc: Any, path: tuple[Any, ...], text: str) -> str:
    """``doc`` as JSON text with the value at ``path`` replaced by the JSON text ``text``."""
    marker = "@@battery@@"
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), text)


def paths(doc: Any, prefix: tuple[Any, ...] = (), depth: int = 4) -> Iterator[tuple[Any, ...]]:
    """Every path into ``doc`` down to ``depth`` (the first element of each list only)."""
    if depth == 0:
        return
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key), depth - 1)
    elif isinstance(doc, list) and doc:
        yield (*prefix, 0)
        yield from paths(doc[0], (*prefix, 0), depth - 1)


def csv_body(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def battery(rows: list[dict[str, Any]]) -> Iterator[tuple[str, str, str, bytes]]:
    """(case id, path, content type, body) of every malformed request."""
    rows = rows[:2]
    for form, (path, doc) in json_bodies(rows).items():
        text = json.dumps(doc).encode()
        for cut in (1, len(text) // 3, len(text) - 1):
            yield f"{form} cut at {cut}", path, "application/json", text[:cut]
        yield f"{form} latin-1 byte", path, "application/json", text.replace(b'"', b'"\xff', 1)
        yield f"{form} as csv", path, "text/csv", text
        yield f"{form} as text/plain", path, "text/plain", text
        yield f"{form} as form", path, "application/x-www-form-urlencoded", text
        yield f"{form} trailing junk", path, "application/json", text + b" }"
        yield f"{form} NaN literal", path, "application/json", text.replace(b"[", b"[NaN, ", 1)
        for where in paths(doc):
            for wrong in WRONG:
                body = replace_at(doc, where, wrong).encode("utf-8", "surrogatepass")
                yield f"{form} {where} = {wrong[:20]}", path, "application/json", body
    text = csv_body(rows)
    header, *lines = text.splitlines()
    csv_cases = {
        "empty": "",
        "header only": header + "\n",
        "no header": "\n".join(lines) + "\n",
        "extra column": header + ",extra\n" + "\n".join(line + ",1" for line in lines),
        "ragged row": header + "\n" + lines[0] + ",1,2,3\n" + lines[1][:5] + "\n",
        "unbalanced quote": header + '\n"' + lines[0] + "\n",
        "bom": "\ufeff" + text,
        "nul byte": text.replace(",", "\x00,", 1),
        "cr only": text.replace("\n", "\r"),
        "semicolons": text.replace(",", ";"),
        "duplicate header": header + "," + header + "\n" + lines[0] + "," + lines[0] + "\n",
        "huge field": header + "\n" + "9" * 200_000 + lines[0][lines[0].index(",") :] + "\n",
    }
    for name, body in csv_cases.items():
        yield f"csv {name}", "/invocations?model=churn", "text/csv", body.encode()
    yield "csv latin-1", "/invocations?model=churn", "text/csv", text.encode() + b"\xff\xfe\n"
    yield "no content type", "/invocations?model=churn", "", b"\x00\x01\x02"
    yield "unknown model", "/invocations?model=nope", "application/json", b"{}"
    yield "oip unknown model", "/v2/models/nope/infer", "application/json", b"{}"


def test_the_battery_gets_no_5xx_and_no_hang(
    client: httpx.Client, churn_rows: list[dict[str, Any]]
) -> None:
    cases = list(battery(churn_rows))
    assert len(cases) > 300
    failures = []
    for case, path, content_type, body in cases:
        headers = {"content-type": content_type} if content_type else {}
        try:
            r = client.post(path, content=body, headers=headers, timeout=10)  # no hang
        except httpx.TransportError as exc:
            failures.append((case, 0, repr(exc)))
            continue
        if r.status_code >= 500 or not (200 <= r.status_code < 300 or "error" in r.json()):
            failures.append((case, r.status_code, r.text[:200]))
    assert not failures, f"{len(failures)} of {len(cases)} cases: {failures[:10]}"

"""JSON documents as every runtime reads them: standard JSON, by one rule.

The server parses with orjson for speed, the stream handler with the standard library;
left alone they disagree on valid JSON orjson cannot hold and on what is not JSON at all.
The rule, which :func:`parse_json` applies and the server falls back to when orjson
refuses a body:

- A lone surrogate escape (``"\\ud800"``) is valid JSON, so it is read, and the core
  refuses the value with a reason that names its column (it is not UTF-8 for ONNX
  Runtime), as for any other bad value. Integers are read exactly at any size; orjson
  reads one beyond 64 bits as the nearest float instead, which an int64 column refuses
  as out of range all the same (the reason then shows the float).
- ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (Python writes them, the standard
  forbids them): a document holding one is malformed. A missing number is ``null``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_json"]


def parse_json(data: bytes | str) -> Any:
    """The value of the JSON document ``data``.

    Raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for a document
    that is not JSON, and ``RecursionError`` for one nested too deeply.
    """
    return json.loads(data, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; send null for a missing number")

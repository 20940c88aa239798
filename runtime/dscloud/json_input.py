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
- ``NaN``, ``Infinity`` and ``-Infinity`` are read as the floats they name, although the
  standard forbids them: Python's ``json.dumps`` writes them, so ``tritonclient`` and any
  Python client send a missing FP32 value as ``NaN``, and MLflow's server reads it. ``NaN``
  is then a missing value, as ``null`` is (accepted where the column is nullable, refused
  naming the column where it is not); an infinity meets the same rule as a number beyond
  float32 (the core's, :mod:`dscloud.columns`). Any other bare word is malformed.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["NUMBER_TOKENS", "parse_json"]


#: The non-standard number tokens the rule reads (what :func:`parse_json` accepts beyond JSON).
NUMBER_TOKENS = (b"NaN", b"Infinity")


def parse_json(data: bytes | str) -> Any:
    """The value of the JSON document ``data``; ``NaN``, ``Infinity`` and ``-Infinity``
    become the floats they name.

    Raises ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) for a document
    that is not JSON, and ``RecursionError`` for one nested too deeply.
    """
    return json.loads(data)

"""`dsc invoke`: score rows on a deployed endpoint with a SigV4-signed request.

Registered by :mod:`dscloud.cli`; the signing lives in :mod:`dscloud.client`, so this module
only turns flags into one :meth:`~dscloud.client.EndpointClient.invocations` call and prints
the answer's body to stdout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dscloud.client import EndpointClient
from dscloud.errors import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc invoke`` to the ``dsc`` parser."""
    p = sub.add_parser(
        "invoke",
        help="score rows on a deployed endpoint (requests signed with your AWS credentials)",
        description=(
            "POST a JSON or CSV body to URL/invocations, signed with AWS Signature Version 4 "
            "for execute-api using the credentials boto would use (environment, --profile, "
            "SSO, instance or task role), and print the answer. The deployed endpoint is the "
            "Serving stack's EndpointUrl output; the caller needs execute-api:Invoke on it "
            "(the stack's InvokePolicyArn). Use --unsigned for a local `dsc serve`."
        ),
    )
    p.add_argument(
        "url", metavar="URL", help="the endpoint, e.g. https://ID.execute-api.REGION.amazonaws.com"
    )
    p.add_argument("--model", help="the model to score with (needed when the server has several)")
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument(
        "--json",
        metavar="BODY",
        help="a JSON body (MLflow forms: dataframe_split, ...); @FILE reads a file, @- stdin",
    )
    body.add_argument("--csv", metavar="FILE", help="a CSV file with a header row; - for stdin")
    p.add_argument(
        "--region",
        help="region to sign for (default: from the URL, then AWS_DEFAULT_REGION or the profile)",
    )
    p.add_argument("--profile", help="AWS profile to sign with (default: $AWS_PROFILE)")
    p.add_argument(
        "--unsigned", action="store_true", help="send without a signature (local dsc serve)"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default: 60)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.json is not None:
        payload = _read(args.json[1:]) if args.json.startswith("@") else args.json.encode()
        content_type = "application/json"
    else:
        payload, content_type = _read(args.csv), "text/csv"
    client = EndpointClient(
        args.url,
        session=None if args.unsigned else _session(args.profile),
        region=args.region,
        sign=not args.unsigned,
        timeout=args.timeout,
    )
    answer = client.invocations(payload, model=args.model, content_type=content_type)
    sys.stdout.buffer.write(answer.body.rstrip(b"\n") + b"\n")
    return 0


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the request body from {path}: {exc.strerror}") from exc


def _session(profile: str | None) -> Any:
    if profile is None:
        return None  # the client's default session
    try:
        import botocore.session
    except ImportError as exc:
        raise ConfigError("signing requests needs botocore: pip install 'dscloud[client]'") from exc
    return botocore.session.Session(profile=profile)

"""`dsc serve`: the serve adapter's command (registered by :mod:`dscloud.cli`).

The web framework is imported only when the command runs, so ``dsc`` works in an
installation without the ``serve`` extra.
"""

from __future__ import annotations

import argparse
from typing import Any

from dscloud.cli import common
from dscloud.settings import cli_argument

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc serve`` to the ``dsc`` parser."""
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP (Open Inference Protocol v2, SageMaker /invocations)",
        description=(
            "Serve models over HTTP until SIGTERM. Each NAME@ALIAS follows its alias: the "
            "archive is polled and a new version is swapped in once it verifies. With "
            "several models, /invocations picks one by ?model=NAME or the X-Dsc-Model header."
        ),
    )
    p.add_argument(
        "refs",
        nargs="*",
        metavar="NAME@REF",
        help="NAME@ALIAS, NAME@VERSION, NAME (latest) or an artifact directory "
        "(default: $DSC_MODELS)",
    )
    p.add_argument("--host", **cli_argument("host"))
    p.add_argument("--port", **cli_argument("port"))
    p.add_argument("--workers", **cli_argument("workers", help="server processes"))
    p.add_argument("--threads", **cli_argument("threads"))
    p.add_argument("--refresh-seconds", **cli_argument("refresh_seconds"))
    p.add_argument("--max-body-bytes", **cli_argument("max_body_bytes"))
    p.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from dscloud.server.run import serve

    serve(
        common.settings(
            args,
            models=args.refs or None,
            host=args.host,
            port=args.port,
            workers=args.workers,
            threads=args.threads,
            refresh_seconds=args.refresh_seconds,
            max_body_bytes=args.max_body_bytes,
        )
    )
    return 0

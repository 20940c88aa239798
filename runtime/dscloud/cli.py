"""The ``dsc`` command line. Errors are one line on stderr and a non-zero exit.

Each command group lives in its own ``cli_*`` module exposing ``register(subparsers)``;
this module parses, builds :class:`~dscloud.settings.Settings` once, and maps
:class:`~dscloud.errors.DscError` to an exit code in one place.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from dscloud import cli_batch, cli_models, cli_serve, cli_stream
from dscloud.errors import DscError
from dscloud.settings import cli_argument

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="dsc", description="Package, archive, serve, stream and batch-score ONNX models."
    )
    root.add_argument("--archive", metavar="URI", **cli_argument("archive"))
    root.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (cli_models, cli_serve, cli_stream, cli_batch):
        module.register(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.run(args)
    except DscError as exc:
        print(f"dsc: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `dsc diff ... | head`: the reader left; stop quietly like other Unix tools.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``dsc`` command line. Errors are one line on stderr and a non-zero exit.

One module per command group, each with ``register(subparsers)`` adding its commands and
one ``cmd_<command>`` function per command (``cmd_score``, ``cmd_stream_put``):
:mod:`~dscloud.cli.models` (the archive), :mod:`~dscloud.cli.examples`,
:mod:`~dscloud.cli.team`, :mod:`~dscloud.cli.serve`, :mod:`~dscloud.cli.stream` (and
``bundle``), :mod:`~dscloud.cli.batch` (``score``); :mod:`~dscloud.cli.common` holds what
they share. This module assembles the parser, and maps :class:`~dscloud.errors.DscError`
to an exit code in one place. An adapter (server, stream, batch) is imported only when its
command runs, so an image without its extra still starts ``dsc``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from dscloud.cli import batch, examples, invoke, models, rollout, serve, stream, team
from dscloud.errors import DscError
from dscloud.settings import cli_argument

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The ``dsc`` parser with every command group registered."""
    root = argparse.ArgumentParser(
        prog="dsc", description="Package, archive, serve, stream and batch-score ONNX models."
    )
    root.add_argument("--archive", metavar="URI", **cli_argument("archive"))
    root.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models, examples, team, serve, stream, batch, invoke, rollout):
        module.register(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dsc`` with ``argv`` (default: the command line); returns the exit code.

    Never raises a :class:`~dscloud.errors.DscError`: it is printed as one line.
    """
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # In a container dsc is PID 1, which the kernel spares from signals it has no handler
    # for: without this, AWS Batch's SIGTERM is ignored until SIGKILL 30 s later. `dsc serve`
    # replaces it with uvicorn's graceful shutdown.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
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


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Stop as SIGTERM's default action would (exit 143), unwinding ``finally`` blocks."""
    raise SystemExit(128 + signum)

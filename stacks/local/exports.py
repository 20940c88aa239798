"""Shell exports that drive a deployed environment from its stack outputs (`python -m stacks.local env`).

The outputs come from the file `cdk deploy --outputs-file FILE` writes: `.dsc/local/outputs.json`
for the local deploy, or the file of a deploy to AWS. Three of the variables are the ones the
runtime's `Settings` reads (`DSC_ARCHIVE`, `DSC_PREDICTIONS_TABLE`, `DSC_REJECTS_QUEUE_URL`),
so `dsc score`, `dsc serve` and `dsc stream run` pick them up unasked; the others name what
the CLI takes as arguments (`dsc stream run --stream "$DSC_STREAM"`, `dsc score ... --input
"$DSC_SCORING_INPUT" --output "$DSC_SCORING_OUTPUT"/adhoc/`) and are read by nothing else.
For the local deploy the AWS_* lines point boto3 and pyarrow at the moto server.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

__all__ = ["EXPORTS", "OutputsError", "exports", "read_outputs", "render"]

# (variable, stack, output, read by Settings): one line per variable, in this order.
EXPORTS = (
    ("DSC_ARCHIVE", "Archive", "ArchiveUri", True),
    ("DSC_PREDICTIONS_TABLE", "Online", "PredictionsTableName", True),
    ("DSC_REJECTS_QUEUE_URL", "Online", "RejectsQueueUrl", True),
    ("DSC_ARCHIVE_BUCKET", "Archive", "ArchiveBucketName", False),
    ("DSC_STREAM", "Online", "StreamName", False),
    ("DSC_SCORING_INPUT", "Batch", "ScoringInputUri", False),
    ("DSC_SCORING_OUTPUT", "Batch", "ScoringOutputUri", False),
    ("DSC_JOB_QUEUE", "Batch", "JobQueueName", False),
)


class OutputsError(ValueError):
    """The outputs file is missing, unreadable, or lacks the environment or an output."""


def read_outputs(path: Path) -> dict[str, dict[str, str]]:
    """The stacks' outputs in a `cdk deploy --outputs-file` file, keyed as the file keys them
    (the stack's artifact id); raises OutputsError when the file is missing or not JSON."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise OutputsError(
            f"{path}: no outputs file; deploy first (`make local`, or "
            "`cdk deploy --outputs-file FILE` for AWS)"
        ) from None
    except json.JSONDecodeError as error:
        raise OutputsError(f"{path}: not a cdk outputs file ({error})") from None
    if not isinstance(raw, dict):
        raise OutputsError(f"{path}: expected an object of stacks, got {type(raw).__name__}")
    return {str(k): {str(n): str(v) for n, v in dict(v).items()} for k, v in raw.items()}


def _flat(text: str) -> str:
    # The file keys a stack by its artifact id, which is its stack name (dsc-recs-dev-Online)
    # or, for a stack nested in a stage, a mangled path (dscrecsdevOnline1A2B3C4D).
    return re.sub(r"[^a-z0-9]", "", text.lower())


_STACK_KEY = re.compile(
    r"^(?P<environment>.+)(?P<stack>archive|batch|network|online|serving)(?:[0-9a-f]{8})?$"
)


def exports(outputs: Mapping[str, Mapping[str, str]], environment: str | None) -> dict[str, str]:
    """The variables of EXPORTS for `environment` (None: the file must hold exactly one);
    raises OutputsError naming the environments found or the output missing."""
    found: dict[str, dict[str, Mapping[str, str]]] = {}
    for key, values in outputs.items():
        match = _STACK_KEY.match(_flat(key))
        if match:
            found.setdefault(match["environment"], {})[match["stack"].capitalize()] = values
    if environment is None:
        if len(found) != 1:
            raise OutputsError(
                f"the outputs hold {len(found)} environments "
                f"({', '.join(sorted(found)) or 'none'}); name one"
            )
        (chosen,) = found.values()
    elif _flat(environment) in found:
        chosen = found[_flat(environment)]
    else:
        raise OutputsError(
            f"no stacks of {environment} in the outputs; found: {', '.join(sorted(found)) or 'none'}"
        )
    result: dict[str, str] = {}
    for variable, stack, output, _ in EXPORTS:
        try:
            result[variable] = chosen[stack][output]
        except KeyError:
            raise OutputsError(
                f"output {output} of the {stack} stack is missing; redeploy that stack"
            ) from None
    return result


def render(variables: Mapping[str, str], *, aws: Mapping[str, str] | None = None) -> str:
    """`export NAME=value` lines (values shell-quoted), the AWS_* ones first when given."""
    settings = {variable for variable, *_, read in EXPORTS if read}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in (aws or {}).items()]
    for name, value in variables.items():
        why = "" if name in settings else "  # pass to the dsc command that needs it"
        lines.append(f"export {name}={shlex.quote(value)}{why}")
    return "\n".join(lines) + "\n"

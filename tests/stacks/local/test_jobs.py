"""stacks/local/jobs.py: job definitions run here as AWS Batch would run them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stacks.batch import SCORING_COMMAND, TRAINING_COMMAND
from stacks.local.jobs import LifecycleError, local_command, substitute


def test_parameters_replace_their_refs_as_batch_does() -> None:
    parameters = {"model": "churn@staging", "input": "s3://b/in/", "output": "s3://b/out/run/"}

    command = substitute(SCORING_COMMAND, parameters)

    assert command == [
        "dsc", "score", "churn@staging", "--input", "s3://b/in/", "--output", "s3://b/out/run/",
    ]  # fmt: skip


def test_a_ref_without_a_parameter_is_an_error_naming_it() -> None:
    with pytest.raises(LifecycleError, match="Ref::data"):
        substitute(TRAINING_COMMAND, {})


def test_image_paths_map_to_this_checkout(tmp_path: Path) -> None:
    command = local_command(substitute(TRAINING_COMMAND, {"data": "s3://b/in/"}), tmp_path)

    assert command[:2] == [sys.executable, str(tmp_path / "examples" / "train_churn.py")]
    assert local_command(["dsc", "score"], tmp_path)[0] == str(Path(sys.executable).parent / "dsc")

"""Provenance: the code, the data and the estimator as the envelope records them."""

from __future__ import annotations

import math
import subprocess

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from dscloud.provenance import data_summary, describe, git_info, jsonable, random_state


def test_data_fingerprint_changes_with_the_data(churn_example) -> None:
    a = data_summary(churn_example.X_train)
    b = data_summary(churn_example.X_train.iloc[:-1])
    assert a["fingerprint"] != b["fingerprint"]
    assert a["fingerprint"] == data_summary(churn_example.X_train.copy())["fingerprint"]


def test_git_commit_is_detected(tmp_path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "train.py").write_text("print(1)\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-qm",
            "x",
        ],
        check=True,
    )
    clean = git_info(tmp_path)
    (tmp_path / "train.py").write_text("print(2)\n")
    dirty = git_info(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    assert dirty["dirty"] is True


def test_commit_comes_from_the_environment_outside_git(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DSC_GIT_COMMIT", "a" * 40)
    info = git_info(tmp_path)  # tmp_path is not a checkout
    assert info["commit"] == "a" * 40 and info["source"] == "DSC_GIT_COMMIT"


def test_the_estimator_is_described_with_its_seed_and_json_ready_parameters() -> None:
    pipeline = Pipeline(
        [("scale", StandardScaler()), ("model", LogisticRegression(random_state=42))]
    )

    assert describe(pipeline) == "Pipeline(StandardScaler, LogisticRegression)"
    assert random_state(pipeline) == 42
    assert jsonable({"n": np.int64(3), "bad": math.inf, 1: (np.float32(0.5),)}) == {
        "n": 3,
        "bad": "inf",
        "1": [0.5],
    }

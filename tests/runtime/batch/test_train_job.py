"""examples/train_churn.py as a batch job: data from S3, a published envelope with provenance."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType

import boto3
import pandas as pd
import pytest

from dscloud.archive import Archive
from tests.runtime.batch.conftest import REGION

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "train_churn.py"


@pytest.fixture(scope="module")
def train_churn() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_churn", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trains_on_s3_parquet_and_publishes_with_provenance(
    train_churn: ModuleType,
    users: pd.DataFrame,
    s3_endpoint: str,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given 2,000 labelled users in a Parquet file on S3
    body = io.BytesIO()
    users.head(2000).to_parquet(body, index=False)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION)
    s3.put_object(Bucket=bucket, Key="train/users.parquet", Body=body.getvalue())
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    archive = tmp_path / "archive"

    # when
    code = train_churn.main(
        [
            "--data",
            f"s3://{bucket}/train/",
            "--archive",
            str(archive),
            "--C",
            "0.5",
            "--promote",
            "staging",
        ]
    )

    # then
    assert code == 0
    assert capsys.readouterr().out.strip() == "churn@1"
    envelope = Archive.open(archive).envelope("churn@staging")
    assert envelope.provenance["hyperparameters"]["C"] == 0.5
    assert envelope.provenance["hyperparameters"]["data"] == f"s3://{bucket}/train/"
    assert envelope.provenance["code"]["entry_point"] is not None
    assert "commit" in envelope.provenance["code"]
    assert envelope.data["fingerprint"].startswith("sha256:")
    assert envelope.data["rows"] == 1600
    assert 0.5 < envelope.metrics["auc"] <= 1.0


def test_data_without_the_label_is_a_one_line_error(
    train_churn: ModuleType, users: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users.drop(columns=["churned"]).head(100).to_csv(tmp_path / "u.csv", index=False)

    code = train_churn.main(["--data", str(tmp_path / "u.csv"), "--archive", str(tmp_path / "a")])

    assert code == 2
    assert "missing columns ['churned']" in capsys.readouterr().err

"""Factories shared by every test folder: trained example models and archives holding them."""

from __future__ import annotations

from pathlib import Path

import pytest

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.envelope import Artifact
from tests.moto_s3 import serialize_conditional_puts

# moto's S3 conditional writes race where AWS's do not (tests/moto_s3.py): every test that
# races writers against moto sees AWS's compare-and-swap.
serialize_conditional_puts()


@pytest.fixture(scope="session")
def churn_example() -> example.TrainedExample:
    """The bundled churn pipeline (ColumnTransformer + LogisticRegression), trained once."""
    return example.train(seed=0, rows=3000)


@pytest.fixture(scope="session")
def churn_artifact(churn_example: example.TrainedExample) -> Artifact:
    """The churn pipeline packaged as an envelope (not yet published)."""
    ex = churn_example
    return dscloud.package(
        ex.estimator,
        ex.X_test,
        name="churn",
        metrics=ex.metrics,
        params=ex.params,
        training_data=ex.X_train,
        y=ex.y_train,
        seed=0,
    )


@pytest.fixture(scope="session")
def forest_artifact(churn_example: example.TrainedExample) -> Artifact:
    """A 100-tree random forest on the numeric churn features (one [N, k] matrix input)."""
    from sklearn.ensemble import RandomForestClassifier

    X = churn_example.X_train[example.NUMERIC].fillna(0.0)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(X, churn_example.y_train)
    sample = churn_example.X_test[example.NUMERIC].fillna(0.0)
    return dscloud.package(forest, sample, name="forest", training_data=X, y=churn_example.y_train)


@pytest.fixture
def archive(tmp_path: Path, churn_artifact: Artifact) -> Archive:
    """A fresh directory archive holding churn@1, with alias production -> 1."""
    arch = Archive.open(tmp_path / "archive")
    dscloud.publish(churn_artifact, arch)
    arch.promote("churn", 1, "production", by="tests")
    return arch

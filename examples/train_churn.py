"""Train the churn example as a batch job: read data, train, package, publish, print the version.

Runs the same on a laptop and as an AWS Batch job (``docker/batch.Dockerfile``; the
training job definition of ``stacks/batch.py`` runs it with ``--data`` set to the
environment's input prefix, a job parameter a submission may override)::

    python examples/train_churn.py                                  # generated data
    python examples/train_churn.py --data s3://bucket/churn/ --archive s3://bucket/archive
    python examples/train_churn.py --data users.csv --C 0.5 --promote staging

Data: a Parquet or CSV file or prefix, local or ``s3://`` (read with pyarrow, so
``AWS_ENDPOINT_URL`` points it at a moto server in tests), with the feature columns of
:mod:`dscloud.example` and the ``churned`` label; without ``--data``, ``--rows`` example
rows are generated from ``--seed``. The envelope records the git commit of this checkout,
the hyperparameters, the training-data fingerprint and summary, holdout metrics and the
parity report. The archive is ``--archive``, else ``DSC_ARCHIVE``, else ``.dsc/archive``.
Prints the published reference (``churn@4``) on stdout; exits non-zero with one line on
stderr when anything fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

import dscloud
from dscloud import example
from dscloud.archive import Archive
from dscloud.errors import ConfigError, DscError
from dscloud.settings import Settings

__all__ = ["load_data", "main"]


def load_data(uri: str, *, s3_endpoint: str | None = None) -> pd.DataFrame:
    """Every row of the data file or prefix at ``uri`` (any batch input format) as one DataFrame.

    Raises :class:`ConfigError` when the data lacks a feature or the label.
    """
    from dscloud.batch import Location, formats, list_inputs

    location = Location(uri, s3_endpoint=s3_endpoint)
    tables = [formats.named(f.format).read_table(location, f.path) for f in list_inputs(location)]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    missing = [c for c in [*example.FEATURES, example.LABEL] if c not in frame.columns]
    if missing:
        raise ConfigError(f"{uri}: missing columns {missing}; have {list(frame.columns)}")
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Parquet/CSV file or prefix (default: generate)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation")
    parser.add_argument("--name", default="churn")
    parser.add_argument("--archive", help="archive URI (default: $DSC_ARCHIVE)")
    parser.add_argument("--promote", metavar="ALIAS", help="also point ALIAS at the new version")
    parser.add_argument("--description", default="churn example, trained by a batch job")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(archive=args.archive)
        if args.data:
            frame = load_data(args.data, s3_endpoint=settings.s3_endpoint)
            source = args.data
        else:
            frame = example.churn_data(args.rows, seed=args.seed)
            source = f"dscloud.example.churn_data(rows={args.rows}, seed={args.seed})"
        started = time.perf_counter()
        trained = example.train(frame, seed=args.seed, C=args.C)
        artifact = dscloud.package(
            trained.estimator,
            trained.X_test,
            name=args.name,
            metrics=trained.metrics,
            params={**trained.params, "data": source},
            training_data=trained.X_train,
            y=trained.y_train,
            seed=args.seed,
            description=args.description,
            training_seconds=round(trained.seconds, 3),
            code_dir=Path(__file__).resolve().parent,
        )
        archive = Archive.open(settings.archive)
        envelope = dscloud.publish(artifact, archive)
        if args.promote:
            assert envelope.version is not None
            archive.promote(args.name, envelope.version, args.promote, by="train_churn.py")
    except DscError as exc:
        print(f"train_churn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in trained.metrics.items())
    print(
        f"trained on {len(frame):,} rows in {time.perf_counter() - started:.1f}s ({metrics}); "
        f"published to {archive.uri}",
        file=sys.stderr,
    )
    print(envelope.ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())

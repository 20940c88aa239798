"""`dsc example`: the bundled churn example (registered by :mod:`dscloud.cli`).

``example train`` trains, packages and publishes it (needs the ``export`` extra);
``example data`` writes rows of its data set.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dscloud.archive import check_name
from dscloud.cli.common import metrics_text, open_archive
from dscloud.errors import ConfigError, ExportError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``dsc example train`` and ``dsc example data`` to the ``dsc`` parser."""
    ex = sub.add_parser("example", help="the bundled churn example")
    exsub = ex.add_subparsers(dest="example_command", required=True, metavar="COMMAND")
    p = exsub.add_parser("train", help="train, package and publish the example pipeline")
    p.add_argument("--name", default="churn")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", type=int, default=5000)
    p.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    p.set_defaults(run=cmd_example_train)
    p = exsub.add_parser("data", help="write rows of the example data set")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--out", required=True, help="FILE.parquet or FILE.csv")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_example_data)


def cmd_example_train(args: argparse.Namespace) -> int:
    try:
        import dscloud
        from dscloud import example
    except ImportError as exc:
        raise ExportError(
            f"training needs the export extra: pip install 'dscloud[export]' ({exc})"
        ) from exc
    archive = open_archive(args)
    name = check_name(args.name)
    parent = archive.versions(name)[-1] if archive.versions(name) else None
    trained = example.train(seed=args.seed, rows=args.rows, C=args.C)
    artifact = dscloud.package(
        trained.estimator,
        trained.X_test,
        name=name,
        metrics=trained.metrics,
        params=trained.params,
        training_data=trained.X_train,
        y=trained.y_train,
        seed=args.seed,
        parent_version=parent,
        training_seconds=trained.seconds,
        description="bundled churn example (ColumnTransformer + LogisticRegression)",
        tags={"example": "churn"},
    )
    envelope = archive.publish(artifact.envelope, artifact.model)
    print(f"published {envelope.ref} to {archive.uri}: {metrics_text(envelope.metrics)}")
    return 0


def cmd_example_data(args: argparse.Namespace) -> int:
    from dscloud import example

    if args.rows < 1:
        raise ConfigError(f"--rows {args.rows}: expected a positive number of rows")
    out = Path(args.out)
    frame = example.churn_data(args.rows, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise ConfigError(f"--out {out}: expected a .parquet or .csv file name")
    print(f"wrote {args.rows} rows to {out}")
    return 0

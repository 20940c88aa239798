"""`dsc` commands for models and the archive (registered by :mod:`dscloud.cli`).

``list``, ``show``, ``diff``, ``history``, ``promote``, ``verify`` and ``import-onnx``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dscloud.archive import Archive, Ref, check_name, current_user
from dscloud.cli.common import metrics_text, open_archive
from dscloud.compare import diff, history
from dscloud.envelope import Envelope
from dscloud.errors import ConfigError
from dscloud.verify import promote, verify

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the model and archive commands to the ``dsc`` parser."""
    p = sub.add_parser("list", help="models in the archive, or the versions of one")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("show", help="one version's envelope: NAME, NAME@VERSION or NAME@ALIAS")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true", help="print the whole envelope as JSON")
    p.set_defaults(run=cmd_show)

    p = sub.add_parser("diff", help="what changed between two versions")
    p.add_argument("a", metavar="NAME@A")
    p.add_argument("b", metavar="NAME@B")
    p.add_argument("--all", action="store_true", help="every data-summary change, not the headline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_diff)

    p = sub.add_parser("history", help="metrics across versions, aliases marked")
    p.add_argument("name")
    p.add_argument("--metric", help="the metric to plot (default: the first recorded)")
    p.add_argument("--plot", metavar="FILE.png", help="write a chart (needs the plot extra)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_history)

    p = sub.add_parser("promote", help="point an alias at a version")
    p.add_argument("name")
    p.add_argument("version", type=_version)
    p.add_argument("--alias", required=True, help="e.g. production, staging")
    p.set_defaults(run=cmd_promote)

    p = sub.add_parser("verify", help="check integrity and replay the golden examples")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true", help="print the golden outputs as JSON")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("import-onnx", help="publish an ONNX model trained elsewhere")
    p.add_argument("file", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument(
        "--golden",
        required=True,
        type=Path,
        help='JSON list of {"inputs": {...}, "outputs": {...}}',
    )
    p.add_argument("--schema", type=Path, help="JSON interface (columns, outputs) to use")
    p.add_argument("--columns", help="comma-separated column names of a matrix input")
    p.add_argument("--description", default="")
    p.set_defaults(run=cmd_import_onnx)


def _version(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a version number, got {text!r}")
    return int(text)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- reading ------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    if args.name is not None:
        return _list_versions(archive, check_name(args.name), as_json=args.json)
    models: list[dict[str, Any]] = [
        {
            "name": name,
            "latest": archive.versions(name)[-1],
            "aliases": {a: r["version"] for a, r in sorted(archive.aliases(name).items())},
        }
        for name in archive.models()
    ]
    if args.json:
        _print_json(models)
    elif not models:
        print(f"no models in {archive.uri}")
    for m in [] if args.json else models:
        aliases = " ".join(f"{a}->{v}" for a, v in m["aliases"].items())
        print(f"{m['name']:<24} latest {m['latest']:<5} {aliases}")
    return 0


def _list_versions(archive: Archive, name: str, *, as_json: bool) -> int:
    rows = history(archive, name)
    if not rows:
        raise_not_found(archive, name)
    if as_json:
        _print_json([r.__dict__ for r in rows])
        return 0
    for r in rows:
        marks = f" [{', '.join(r.aliases)}]" if r.aliases else ""
        print(
            f"{name}@{r.version:<4} {r.created_at:<21} {r.created_by:<12} "
            f"{metrics_text(r.metrics)}{marks}"
        )
    return 0


def raise_not_found(archive: Archive, name: str) -> None:
    archive.resolve(Ref(name=name))  # raises NotFoundError listing the models


def cmd_show(args: argparse.Namespace) -> int:
    # Read through the full load (model sha256 included): show never vouches for bytes that
    # a runtime would refuse.
    env = open_archive(args).load(args.ref).envelope
    if args.json:
        print(env.to_json().decode(), end="")
        return 0
    print(_summary(env))
    return 0


def _summary(env: Envelope) -> str:
    code = env.provenance.get("code") or {}
    data = env.data
    parity = env.quality.get("parity", {})
    lines = [
        f"{env.ref}  {env.description}".rstrip(),
        f"  created      {env.created_at} by {env.created_by}",
        f"  sha256       {env.sha256} ({env.size_bytes} bytes)",
        f"  estimator    {env.provenance.get('estimator', env.provenance.get('source', '-'))}",
        f"  code         {code.get('commit') or '-'}{' (dirty)' if code.get('dirty') else ''}"
        f" {code.get('entry_point') or ''}".rstrip(),
        f"  parameters   {json.dumps(env.provenance.get('hyperparameters', {}))}",
        f"  data         {data.get('rows', '-')} rows, {data.get('fingerprint', '-')}",
        f"  metrics      {metrics_text(env.metrics)}",
    ]
    if parity:
        lines.append(
            f"  parity       max abs diff {parity.get('max_abs_diff', 0):.3g} over "
            f"{parity.get('rows')} rows, label agreement {parity.get('label_agreement', 1.0):.4f}"
        )
    lines.append(
        "  inputs       "
        + ", ".join(f"{c.name}:{c.dtype}{'?' if c.nullable else ''}" for c in env.schema.columns)
    )
    lines.append("  outputs      " + ", ".join(f"{o.name}:{o.kind}" for o in env.schema.outputs))
    lines.append(f"  goldens      {len(env.goldens)} examples")
    if env.golden_opt_out:
        lines.append(f"  opt-out      published without golden examples: {env.golden_opt_out}")
    tags = " ".join(f"{k}={v}" for k, v in env.tags.items())
    if tags:
        lines.append(f"  tags         {tags}")
    return "\n".join(lines)


def cmd_diff(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    result = diff(archive.envelope(args.a), archive.envelope(args.b))
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"{result.a.ref} -> {result.b.ref}: {len(result.changes)} changes")
    section = None
    hidden = 0
    for c in result.changes:
        if not args.all and c.section == "data" and not _headline(c.path):
            hidden += 1
            continue
        if c.section != section:
            section = c.section
            print(f"[{section}]")
        delta = f"  ({c.delta:+.4g})" if c.delta is not None else ""
        print(f"  {c.path}: {_short(c.old)} -> {_short(c.new)}{delta}")
    if hidden:
        print(f"  ... and {hidden} more data-summary changes (quantiles, min/max, counts): --all")
    return 0


def _headline(path: str) -> bool:
    """Data-summary fields worth a line by default: fingerprint, rows, means, missing."""
    return (
        path in {"fingerprint", "rows"}
        or path.endswith((".mean", ".missing", ".distinct"))
        or path.startswith("label.")
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def cmd_history(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    rows = history(archive, check_name(args.name))
    if not rows:
        raise_not_found(archive, args.name)
    metrics = sorted({m for r in rows for m in r.metrics})
    metric = args.metric or (metrics[0] if metrics else None)
    if args.metric and args.metric not in metrics:
        raise ConfigError(
            f"metric {args.metric!r} is not recorded for {args.name}; metrics: {metrics}"
        )
    if args.json:
        _print_json([r.__dict__ for r in rows])
    else:
        print(
            f"{'version':<8} {'created':<21} " + " ".join(f"{m:>10}" for m in metrics) + "  aliases"
        )
        for r in rows:
            vals = " ".join(
                f"{r.metrics[m]:>10.4f}" if m in r.metrics else f"{'-':>10}" for m in metrics
            )
            print(f"{r.version:<8} {r.created_at:<21} {vals}  {', '.join(r.aliases)}")
    if args.plot:
        if metric is None:
            raise ConfigError(f"{args.name} has no metrics to plot")
        _plot(args.name, rows, metric, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


def _plot(name: str, rows: list[Any], metric: str, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'dscloud[plot]'") from None
    points = [(r.version, r.metrics[metric], r.aliases) for r in rows if metric in r.metrics]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    for version, value, aliases in points:
        if aliases:
            ax.annotate(
                ", ".join(aliases),
                (version, value),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color="darkred",
            )
    ax.set_xlabel("version")
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: {metric} by version")
    ax.set_xticks([p[0] for p in points])
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# -- writing ------------------------------------------------------------------------------


def cmd_promote(args: argparse.Namespace) -> int:
    archive = open_archive(args)
    record = promote(archive, args.name, args.version, args.alias, by=current_user())
    print(
        f"{args.name}@{args.alias} -> {record['version']} (sha256 {record['sha256'][:12]}, "
        f"set by {record['set_by']} at {record['set_at']})"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    verified = verify(open_archive(args), args.ref)  # raises with the reason if not
    env = verified.envelope
    if args.json:
        goldens = [g.inputs for g in env.goldens]
        actual = verified.scorer.golden_outputs(goldens) if goldens else []
        _print_json(
            {
                "model": env.name,
                "version": env.version,
                "sha256": env.sha256,
                "golden_opt_out": env.golden_opt_out or None,
                "goldens": [
                    {"inputs": g.inputs, "expected": g.outputs, "actual": a}
                    for g, a in zip(env.goldens, actual, strict=True)
                ],
            }
        )
        return 0
    print(verified.summary())
    return 0


def cmd_import_onnx(args: argparse.Namespace) -> int:
    from dscloud.onnx_import import import_onnx
    from dscloud.schema import Schema

    model = _read(args.file)
    try:
        goldens = json.loads(_read(args.golden))
        schema = Schema.from_dict(json.loads(_read(args.schema))) if args.schema else None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from exc
    if isinstance(goldens, dict):
        goldens = goldens.get("goldens", goldens.get("golden_examples"))
    if not isinstance(goldens, list):
        raise ConfigError(f'{args.golden}: expected a JSON list of {{"inputs", "outputs"}} objects')
    artifact = import_onnx(
        model,
        goldens,
        name=check_name(args.name),
        schema=schema,
        columns=args.columns.split(",") if args.columns else None,
        description=args.description,
        created_by=current_user(),
        provenance={"file": str(args.file)},
    )
    envelope = open_archive(args).publish(artifact.envelope, artifact.model)
    print(f"published {envelope.ref} ({len(envelope.goldens)} golden examples replayed)")
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None

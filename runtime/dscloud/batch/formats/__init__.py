"""Batch input formats: one :class:`Format` subclass per format, found by name or suffix.

A new format is one class in its own module and one :func:`register` line at the end of
this module. Nothing else names a format: the listing (:func:`list_inputs`), the shard
plan, the reader, ``dsc score --format`` and the training example ask this registry.

A file's format is the registered suffix it ends with (the longest one, so ``.csv.gz`` is
not taken for something ending in ``.gz``), or ``--format`` when given.
"""

from __future__ import annotations

from dscloud.batch.formats.base import Chunk, Format, require_columns
from dscloud.batch.formats.csv import Csv
from dscloud.batch.formats.jsonl import JsonLines
from dscloud.batch.formats.parquet import Parquet
from dscloud.batch.locations import InputFile, Location
from dscloud.errors import ConfigError

__all__ = [
    "Chunk",
    "Format",
    "list_inputs",
    "named",
    "names",
    "of_path",
    "register",
    "require_columns",
    "suffixes",
]

_registry: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Make ``fmt`` known by its name and suffixes; returns it.

    Raises :class:`ValueError` when its name or one of its suffixes is already taken:
    two formats claiming one file would make the listing depend on registration order.
    """
    if fmt.name in _registry:
        raise ValueError(f"input format {fmt.name!r} is already registered")
    taken = set(suffixes()) & set(fmt.suffixes)
    if taken:
        raise ValueError(f"input format {fmt.name!r}: suffix {sorted(taken)} already registered")
    _registry[fmt.name] = fmt
    return fmt


def names() -> list[str]:
    """The registered format names, in registration order."""
    return list(_registry)


def suffixes() -> list[str]:
    """Every registered suffix, in registration order."""
    return [s for fmt in _registry.values() for s in fmt.suffixes]


def named(name: str) -> Format:
    """The format called ``name``. Raises :class:`ConfigError` listing the known names."""
    try:
        return _registry[name]
    except KeyError:
        raise ConfigError(
            f"input format {name!r}: expected one of {', '.join(_registry)}"
        ) from None


def of_path(path: str) -> Format | None:
    """The format whose suffix ``path`` ends with (the longest match), or None."""
    name = path.rsplit("/", 1)[-1].lower()
    matches = [
        (len(s), fmt) for fmt in _registry.values() for s in fmt.suffixes if name.endswith(s)
    ]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def list_inputs(location: Location, *, format: str | None = None) -> list[InputFile]:
    """The input files at ``location``: the file itself, or every data file under the prefix.

    Files and directories starting with ``_`` or ``.`` are skipped, as are files whose suffix
    is not a registered format's. A single file named by ``location`` may have any name
    when ``format`` is given. Returns files sorted by path, all of one format. Raises
    :class:`ConfigError` when ``format`` is unknown, nothing is found, or formats are mixed
    and ``format`` is None.
    """
    if format is not None:
        named(format)
    known = ", ".join(suffixes())
    info = location.info(location.path)
    if info.is_file:
        fmt = format or _name_of(info.path)
        if fmt is None:
            raise ConfigError(
                f"input {location.uri}: unknown format; expected a name ending in {known}, or pass --format"
            )
        return [InputFile(info.path, int(info.size or 0), fmt)]
    found: list[InputFile] = []
    for entry in location.files(location.path):
        relative = entry.path[len(location.path) :].lstrip("/")
        if any(part.startswith(("_", ".")) for part in relative.split("/")):
            continue
        fmt = _name_of(entry.path)
        if fmt is None or (format is not None and fmt != format):
            continue
        found.append(InputFile(entry.path, int(entry.size or 0), fmt))
    if not found:
        raise ConfigError(
            f"input {location.uri}: no data files found (looked for {known}; is the URI right?)"
        )
    formats = sorted({f.format for f in found})
    if len(formats) > 1:
        raise ConfigError(
            f"input {location.uri} mixes formats {formats}; pass --format to pick one"
        )
    return found


def _name_of(path: str) -> str | None:
    fmt = of_path(path)
    return None if fmt is None else fmt.name


register(Parquet())
register(Csv())
register(JsonLines())

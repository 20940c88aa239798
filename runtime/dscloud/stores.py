"""Where archive bytes live: a local directory or an S3 prefix, behind one small interface.

Both stores give the archive the two primitives it builds on: an *exclusive create* (a
write that fails if the key exists: ``os.link`` of a finished temp file locally,
``IfNoneMatch="*"`` on S3) and a *compare-and-swap* overwrite (a lock-protected tag check
locally, ``IfMatch=etag`` on S3). Keys are ``/``-separated and relative to the root.

A local archive's files are written with mode :data:`FILE_MODE` (0644), so a runtime that
reads it under another uid (the images run as uid 10001 with the archive mounted read-only)
gets in; who may read it at all is decided by the directories above it. A file the process
cannot read or write is an :class:`~dscloud.errors.ArchiveError` naming the path and the
uid, which every ``dsc`` command prints as one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dscloud.errors import ArchiveError, ConfigError, aws_error_code

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["FILE_MODE", "Conflict", "LocalStore", "S3Store", "Store", "open_store"]

#: Mode of every file a local archive writes (``mkstemp`` alone would leave 0600).
FILE_MODE = 0o644


class Conflict(Exception):
    """The key exists (exclusive create) or changed since it was read (compare-and-swap)."""


class Store(Protocol):
    uri: str

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; raises ``KeyError`` when absent."""
        ...

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """``(bytes, tag)`` for a later :meth:`swap`, or None when absent."""
        ...

    def create(self, key: str, data: bytes) -> None:
        """Write ``data`` only if ``key`` does not exist; raises :class:`Conflict` otherwise."""
        ...

    def swap(self, key: str, data: bytes, tag: str | None) -> None:
        """Overwrite ``key`` if its tag is still ``tag`` (None: must not exist) or raise Conflict."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        ...


class LocalStore:
    """An archive in a directory (the embedded default, ``.dsc/archive``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as exc:
            raise _local_error(exc, "read", self._path(key)) from None

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get(key)
        except KeyError:
            return None
        return data, hashlib.md5(data, usedforsecurity=False).hexdigest()

    def create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write a temp file completely, then hard-link it into place: link() fails if
            # the name exists, and a reader never sees a half-written file.
            tmp = _write_temp(path, data, sync=True)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise Conflict(key) from None
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise _local_error(exc, "write", path) from None

    def swap(self, key: str, data: bytes, tag: str | None) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock(path):
                current = self.get_tagged(key)
                if (current[1] if current else None) != tag:
                    raise Conflict(key)
                os.replace(_write_temp(path, data, sync=False), path)
        except OSError as exc:
            raise _local_error(exc, "write", path) from None

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        with open(path.with_name(path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        keys = []
        try:
            if not base.is_dir():
                return []
            # os.walk skips a directory it cannot list unless told to raise: an unreadable
            # directory must not look like an empty one ("unknown model").
            for dirpath, _dirs, files in os.walk(base, onerror=_raise):
                for name in files:
                    if name.startswith(".tmp-") or name.endswith(".lock"):
                        continue
                    keys.append(Path(dirpath, name).relative_to(self.root).as_posix())
        except OSError as exc:
            raise _local_error(exc, "list", base) from None
        return sorted(keys)


def _write_temp(path: Path, data: bytes, *, sync: bool) -> str:
    """A finished temp file beside ``path`` holding ``data`` with :data:`FILE_MODE`; returns
    its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _raise(exc: OSError) -> None:
    raise exc


def _local_error(exc: OSError, doing: str, path: Path) -> ArchiveError:
    """The one-line error for a local archive path this process cannot ``doing``."""
    reason = exc.strerror or type(exc).__name__
    hint = ""
    if isinstance(exc, PermissionError):
        hint = (
            f"; the archive must be readable by uid {os.getuid()} "
            "(files 0644 and directories 0755, as dsc writes them: chmod -R a+rX ARCHIVE)"
        )
    return ArchiveError(f"archive: cannot {doing} {path}: {reason}{hint}")


class S3Store:
    """An archive under ``s3://bucket/prefix``. The client is injected or made from the
    environment (boto3 honours ``AWS_ENDPOINT_URL``, which is how moto stands in)."""

    def __init__(self, bucket: str, prefix: str = "", *, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        got = self.get_tagged(key)
        if got is None:
            raise KeyError(key)
        return got[0]

    def get_tagged(self, key: str) -> tuple[bytes, str] | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise _s3_error(exc, self.uri, key) from exc
        return obj["Body"].read(), obj["ETag"]

    def create(self, key: str, data: bytes) -> None:
        self._put(key, data, IfNoneMatch="*")

    def swap(self, key: str, data: bytes, tag: str | None) -> None:
        if tag is None:
            self._put(key, data, IfNoneMatch="*")
        else:
            self._put(key, data, IfMatch=tag)

    def _put(self, key: str, data: bytes, **condition: Any) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except Exception as exc:
            code = aws_error_code(exc)
            if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                raise Conflict(key) from None
            raise _s3_error(exc, self.uri, key) from exc

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except Exception as exc:
            raise _s3_error(exc, self.uri, prefix) from exc
        return sorted(keys)


def _s3_error(exc: Exception, uri: str, key: str) -> ArchiveError:
    code = aws_error_code(exc) or type(exc).__name__
    return ArchiveError(f"archive {uri}: cannot access {key!r} ({code}: {exc})")


def open_store(uri: str | os.PathLike[str], *, s3_client: S3Client | None = None) -> Store:
    """A store for ``uri``: ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"archive {text!r}: expected s3://BUCKET/PREFIX")
        return S3Store(bucket, prefix, client=s3_client)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ConfigError(
            f"archive {text!r}: expected a directory, file:///PATH or s3://BUCKET/PREFIX"
        )
    return LocalStore(text)

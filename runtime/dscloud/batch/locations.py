"""Where batch data lives: a local path or an ``s3://`` prefix, through one pyarrow filesystem.

A :class:`Location` is a filesystem plus a base path. It lists input files (skipping the
``_``- and ``.``-prefixed bookkeeping files that Spark, Hive and this job write), writes
small files atomically, and *publishes* a finished temporary file under its final name:
``rename`` locally, copy-then-delete on S3, where an object only ever appears whole.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from dscloud.errors import ConfigError, DataError

__all__ = ["InputFile", "Location"]

TEMPORARY = "_temporary"


@dataclass(frozen=True)
class InputFile:
    """One input file: its path inside the filesystem, size in bytes and format name
    (see :mod:`dscloud.batch.formats`)."""

    path: str
    size: int
    format: str


class Location:
    """A base URI (``s3://bucket/prefix``, ``file:///dir`` or a path) on a pyarrow filesystem."""

    def __init__(self, uri: str, *, s3_endpoint: str | None = None) -> None:
        self.fs, self.path = _filesystem(uri, s3_endpoint)
        self.uri = _display(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def join(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under this location."""
        return posixpath.join(self.path, *parts)

    def uri_of(self, path: str) -> str:
        """A printable URI for a filesystem path under this location."""
        if self.local:
            return path
        return "s3://" + path

    def info(self, path: str) -> pafs.FileInfo:
        return self._call(path, self.fs.get_file_info, path)

    def exists(self, path: str) -> bool:
        return bool(self.info(path).type != pafs.FileType.NotFound)

    def files(self, path: str) -> list[pafs.FileInfo]:
        """Files (not directories) under ``path``, recursively, sorted by path; [] if absent."""
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        infos = self._call(path, self.fs.get_file_info, selector)
        return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)

    def read_bytes(self, path: str) -> bytes:
        """The bytes at ``path``; raises ``FileNotFoundError`` when absent."""
        if not self.exists(path):
            raise FileNotFoundError(path)
        with self._call(path, self.fs.open_input_stream, path) as stream:
            return bytes(stream.read())

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically: readers see the old file or the whole new one."""
        temp = self.temp_path(path)
        self.mkdir(posixpath.dirname(temp))
        with self._call(temp, self.fs.open_output_stream, temp) as stream:
            stream.write(data)
        self.publish(temp, path)

    def mkdir(self, path: str) -> None:
        if self.local:
            self._call(path, self.fs.create_dir, path, recursive=True)

    def temp_path(self, final: str) -> str:
        """A unique temporary path for ``final`` in this location's ``_temporary/``.

        The name starts with ``final``'s relative path (``/`` as ``--``), so a re-run can
        find and delete what a killed attempt left behind.
        """
        relative = posixpath.relpath(final, self.path).replace("/", "--")
        return self.join(TEMPORARY, f"{relative}.{uuid.uuid4().hex[:12]}.tmp")

    def temporaries(self, final: str) -> list[str]:
        """Temporary files left for ``final`` by earlier attempts."""
        prefix = posixpath.relpath(final, self.path).replace("/", "--") + "."
        return [
            i.path
            for i in self.files(self.join(TEMPORARY))
            if posixpath.basename(i.path).startswith(prefix)
        ]

    def tidy(self) -> None:
        """Remove ``_temporary/`` when nothing is in flight (on S3, pyarrow's empty marker)."""
        temporary = self.join(TEMPORARY)
        if self.files(temporary) or not self.exists(temporary):
            return
        if self.local:
            with contextlib.suppress(OSError):
                os.rmdir(temporary)
        else:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.fs.delete_dir(temporary)

    def publish(self, temp: str, final: str) -> None:
        """Move a finished ``temp`` file to ``final``, replacing any earlier ``final``."""
        self.mkdir(posixpath.dirname(final))
        self._call(final, self.fs.move, temp, final)

    def delete(self, path: str) -> None:
        """Delete the file at ``path`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self._call(path, self.fs.delete_file, path)

    def open_output(self, path: str) -> Any:
        """A writable binary stream at ``path`` (parent directories created)."""
        self.mkdir(posixpath.dirname(path))
        return self._call(path, self.fs.open_output_stream, path)

    def open_input(self, path: str) -> Any:
        """A seekable readable file at ``path``."""
        return self._call(path, self.fs.open_input_file, path)

    def _call(self, path: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{self.uri_of(path)}: {exc}") from exc


def _filesystem(uri: str, s3_endpoint: str | None) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"{uri!r}: expected s3://BUCKET/PREFIX")
        path = f"{bucket}/{key}".rstrip("/")
        if s3_endpoint:
            scheme, _, host = s3_endpoint.partition("://")
            if not host:
                scheme, host = "https", s3_endpoint
            return pafs.S3FileSystem(endpoint_override=host.rstrip("/"), scheme=scheme), path
        try:
            fs, _ = pafs.FileSystem.from_uri(uri)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{uri}: cannot open the S3 bucket ({exc})") from exc
        return fs, path
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise ConfigError(f"{uri!r}: expected a path, file:///PATH or s3://BUCKET/PREFIX")
    return pafs.LocalFileSystem(), Path(uri).expanduser().resolve().as_posix()


def _display(uri: str) -> str:
    """``uri`` as people should read it: local paths absolute, S3 URIs without a trailing /."""
    if uri.startswith("s3://"):
        return uri.rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return Path(uri).expanduser().resolve().as_posix()

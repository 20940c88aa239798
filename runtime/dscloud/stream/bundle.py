"""``dsc bundle lambda``: the scorer Lambda's code as a folder or zip, without Docker.

pip's platform targeting fetches the compiled wheels (onnxruntime, numpy, ...) built for
the Lambda runtime's Linux, so no Amazon Linux machine is needed::

    pip wheel --no-deps runtime/ -w WHEELS                     # dscloud, built from source
    pip install --target DIR --only-binary=:all: --implementation cp
        --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 ...
        -r docker/requirements-lambda.txt "dscloud[stream] @ file://WHEELS/dscloud-...whl"

The manylinux tags offered are those the runtime's glibc can load: Python 3.11 runs on
Amazon Linux 2 (glibc 2.26), 3.12 and 3.13 on Amazon Linux 2023 (glibc 2.34). That
matters: onnxruntime >= 1.17 and numpy >= 2.3 publish manylinux_2_27/2_28 wheels only, so
they cannot be bundled for (and would not load on) the python3.11 runtime; the default is
3.12. The folder is then checked: no scikit-learn (or skl2onnx, pandas; the point of ONNX)
and an unzipped size under Lambda's 250 MB limit. The zip is reproducible (sorted entries,
fixed timestamps).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dscloud.errors import ConfigError, DscError

__all__ = [
    "DEFAULT_PYTHON",
    "FORBIDDEN",
    "LAMBDA_GLIBC",
    "MAX_UNZIPPED_BYTES",
    "BundleError",
    "BundleReport",
    "build_bundle",
    "platform_tags",
]

#: glibc minor version of each Lambda Python runtime's OS (2.26: AL2; 2.34: AL2023).
LAMBDA_GLIBC = {"3.11": 26, "3.12": 34, "3.13": 34}
DEFAULT_PYTHON = "3.12"
ARCHES = {"x86_64": "x86_64", "arm64": "aarch64"}
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
#: Import names that must never be in the bundle.
FORBIDDEN = ("sklearn", "skl2onnx", "pandas", "scipy")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_PIP_TIMEOUT = 900


class BundleError(DscError):
    """The bundle could not be built, or it breaks a rule (size, forbidden packages)."""


@dataclass(frozen=True)
class BundleReport:
    """What was built: where, its unzipped size, and the distributions in it."""

    path: Path
    unzipped_bytes: int
    distributions: tuple[str, ...]
    python_version: str
    arch: str
    zip_path: Path | None = None
    zip_bytes: int | None = None


def platform_tags(python_version: str, arch: str) -> list[str]:
    """The ``--platform`` values pip may pick wheels for on that Lambda runtime."""
    if python_version not in LAMBDA_GLIBC:
        raise ConfigError(
            f"python version {python_version!r}: Lambda runtimes are {sorted(LAMBDA_GLIBC)}"
        )
    if arch not in ARCHES:
        raise ConfigError(f"architecture {arch!r}: expected one of {sorted(ARCHES)}")
    machine = ARCHES[arch]
    glibc = LAMBDA_GLIBC[python_version]
    return [f"manylinux2014_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc + 1)
    ]


def build_bundle(
    out_dir: str | os.PathLike[str],
    *,
    runtime_dir: str | os.PathLike[str],
    requirements: str | os.PathLike[str],
    python_version: str = DEFAULT_PYTHON,
    arch: str = "x86_64",
    zip_path: str | os.PathLike[str] | None = None,
    pip: list[str] | None = None,
) -> BundleReport:
    """Install ``dscloud[stream]`` (built from ``runtime_dir``) and the pinned
    ``requirements`` into ``out_dir`` (emptied first) for the Lambda runtime, check it,
    and zip it to ``zip_path`` if given. Returns the report.

    Raises :class:`ConfigError` for bad arguments and :class:`BundleError` when pip fails,
    a forbidden package got in, or the unzipped size is over the limit.
    """
    runtime = Path(runtime_dir)
    reqs = Path(requirements)
    if not (runtime / "pyproject.toml").is_file():
        raise ConfigError(f"{runtime} has no pyproject.toml: point --runtime at runtime/")
    if not reqs.is_file():
        raise ConfigError(f"requirements file {reqs} does not exist")
    platforms = platform_tags(python_version, arch)
    pip = pip or [sys.executable, "-m", "pip"]
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="dsc-bundle-") as tmp:
        _pip(
            [*pip, "wheel", "--no-deps", "--quiet", "-w", tmp, str(runtime.resolve())],
            "build dscloud",
        )
        wheel = next(Path(tmp).glob("dscloud-*.whl"), None)
        if wheel is None:
            raise BundleError(f"pip built no dscloud wheel from {runtime}")
        command = [
            *pip,
            "install",
            "--quiet",
            "--no-compile",
            "--target",
            str(out),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python_version,
            *(arg for tag in platforms for arg in ("--platform", tag)),
            "-r",
            str(reqs),
            f"dscloud[stream] @ {wheel.resolve().as_uri()}",
        ]
        _pip(command, f"install for Lambda python{python_version} {arch}")
    shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts with this host's shebang
    for cache in list(out.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    forbidden = sorted(name for name in FORBIDDEN if (out / name).exists())
    if forbidden:
        raise BundleError(
            f"the bundle contains {forbidden}: the Lambda scores ONNX and must not carry "
            f"training libraries; remove what pulls them in from {reqs}"
        )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size >= MAX_UNZIPPED_BYTES:
        raise BundleError(
            f"the bundle is {size / 1e6:.0f} MB unzipped, over Lambda's 250 MB limit; "
            "use the container image (docker/lambda.Dockerfile) or trim requirements"
        )
    dists = tuple(sorted(p.name.removesuffix(".dist-info") for p in out.glob("*.dist-info")))
    report = BundleReport(
        path=out, unzipped_bytes=size, distributions=dists, python_version=python_version, arch=arch
    )
    if zip_path is None:
        return report
    zipped = write_zip(out, Path(zip_path))
    return BundleReport(
        **{**report.__dict__, "zip_path": zipped, "zip_bytes": zipped.stat().st_size}
    )


def write_zip(directory: Path, zip_path: Path) -> Path:
    """Zip ``directory``'s contents reproducibly (sorted, fixed timestamps); returns the path."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_suffix(zip_path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(directory).as_posix(), date_time=_ZIP_TIME)
            info.external_attr = ((0o755 if os.access(path, os.X_OK) else 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    tmp.replace(zip_path)
    return zip_path


def _pip(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=_PIP_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BundleError(f"pip could not {what}: {exc}") from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BundleError(f"pip could not {what} (exit {result.returncode}):\n{tail}")

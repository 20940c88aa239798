"""`dsc bundle lambda`: the real build (slow: pip fetches manylinux wheels) and its checks."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from dscloud import cli
from dscloud.errors import ConfigError
from dscloud.stream import bundle
from dscloud.stream.bundle import BundleError, build_bundle, platform_tags

ROOT = Path(__file__).resolve().parents[3]

FAKE_PIP = """
import sys, pathlib
args = sys.argv[1:]
if args[0] == "wheel":
    out = pathlib.Path(args[args.index("-w") + 1])
    (out / "dscloud-0.1.0-py3-none-any.whl").write_bytes(b"")
else:
    target = pathlib.Path(args[args.index("--target") + 1])
    for name in ["dscloud/__init__.py", "numpy-2.4.6.dist-info/METADATA"]:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text("x" * 1000)
    if "scikit-learn" in pathlib.Path(args[args.index("-r") + 1]).read_text():
        (target / "sklearn").mkdir()
        (target / "sklearn" / "__init__.py").write_text("")
"""


@pytest.fixture
def fake_pip(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    return [sys.executable, str(script)]


def test_platform_tags_follow_the_runtime_glibc() -> None:
    assert platform_tags("3.12", "x86_64")[0] == "manylinux2014_x86_64"
    assert "manylinux_2_28_x86_64" in platform_tags("3.12", "x86_64")
    assert "manylinux_2_28_aarch64" in platform_tags("3.13", "arm64")
    # python3.11 runs on Amazon Linux 2: glibc 2.26, so no manylinux_2_27+ wheels
    assert platform_tags("3.11", "x86_64")[-1] == "manylinux_2_26_x86_64"
    with pytest.raises(ConfigError, match="Lambda runtimes"):
        platform_tags("3.10", "x86_64")
    with pytest.raises(ConfigError, match="architecture"):
        platform_tags("3.12", "ppc64le")


def test_training_libraries_are_refused(fake_pip: list[str], tmp_path: Path) -> None:
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("scikit-learn==1.7.2\n")
    with pytest.raises(BundleError, match="sklearn"):
        build_bundle(
            tmp_path / "out", runtime_dir=ROOT / "runtime", requirements=reqs, pip=fake_pip
        )


def test_a_bundle_over_the_limit_is_refused(
    fake_pip: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle, "MAX_UNZIPPED_BYTES", 1500)
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("numpy==2.4.6\n")
    with pytest.raises(BundleError, match="250 MB"):
        build_bundle(
            tmp_path / "out", runtime_dir=ROOT / "runtime", requirements=reqs, pip=fake_pip
        )


def test_the_pinned_requirements_carry_no_training_library() -> None:
    pins = (ROOT / "docker/requirements-lambda.txt").read_text().lower()
    lines = [line.split("==")[0] for line in pins.splitlines() if line and line[0] != "#"]
    assert all("==" in line for line in pins.splitlines() if line and line[0] != "#")
    assert not {"scikit-learn", "sklearn", "skl2onnx", "pandas", "scipy"} & set(lines)


@pytest.mark.slow
def test_the_real_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # when: exactly what the CDK stack runs, plus a zip
    out, zipped = tmp_path / "bundle", tmp_path / "scorer.zip"
    code = cli.main(
        ["bundle", "lambda", str(zipped), "--dir", str(out), "--python-version", "3.12"]
    )
    # then
    assert code == 0, capsys.readouterr().err
    assert (out / "dscloud/stream/handler.py").is_file()
    assert (out / "aws_lambda_powertools").is_dir()
    assert list((out / "onnxruntime/capi").glob("*cpython-312-x86_64-linux-gnu.so"))
    assert not (out / "sklearn").exists() and not (out / "pandas").exists()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 250 * 1024 * 1024
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
    assert "dscloud/stream/handler.py" in names
    assert not any(n.startswith("sklearn/") for n in names)
    assert "unzipped (limit 250 MB)" in capsys.readouterr().err

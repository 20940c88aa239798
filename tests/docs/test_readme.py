"""The README is a front door that works: short, its install lines name real extras, its
data-science quickstart runs as written, and every relative link of the manual resolves."""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.docs.pages import ROOT, all_pages, page

if TYPE_CHECKING:
    from tests.docs.conftest import Quickstart

README_LIMIT = 10 * 1024


def declared_extras() -> set[str]:
    """The extras runtime/pyproject.toml declares."""
    project = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["optional-dependencies"])


def test_the_readme_is_short() -> None:
    size = len(page("README.md").text.encode("utf-8"))
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("name", ["README.md", "runtime/README.md"])
def test_the_extras_tables_are_the_declared_extras(name: str) -> None:
    rows = page(name).table("| extra |")
    listed = {m for row in rows for m in re.findall(r"`([\w-]+)`", row[0])}
    assert listed == declared_extras()


def test_every_pip_install_names_the_runtime_and_real_extras() -> None:
    # Each `pip install` of dscloud itself (not of a requirements file) in any page.
    specs = [
        (line, arg)
        for p in all_pages()
        for line in p.snippets()
        if line.lstrip().startswith("pip install")
        for arg in shlex.split(line)[2:]
        if "runtime" in arg or "dscloud" in arg
    ]
    assert len(specs) >= 2  # from a checkout and from git
    for line, spec in specs:
        extras = re.search(r"\[([\w,-]+)\]", spec)
        assert extras and set(extras.group(1).split(",")) <= declared_extras(), line
        assert spec.startswith("./runtime[") or spec.endswith("#subdirectory=runtime"), line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, deadline: float, server: subprocess.Popen[bytes]) -> None:
    while True:
        assert server.poll() is None, "dsc serve exited"
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} not ready in time"
            time.sleep(0.2)


@pytest.mark.slow
def test_the_data_scientist_quickstart_runs_as_written(quickstart: Quickstart) -> None:
    # given the README's Python block has trained, packaged and published
    # then it printed the new reference, published into $DSC_ARCHIVE
    assert quickstart.stdout.strip() == "churn@1"
    assert (quickstart.archive / "models/churn/versions/1/envelope.json").is_file()
    # and the README's shell steps promote, serve and score its row over HTTP
    shell = [line for b in page("README.md").fenced("bash") for line in b.splitlines()]
    body = re.search(r"-d '(\{.*\})'", next(line for line in shell if "curl" in line))
    assert body is not None, "the quickstart's curl line lost its JSON body"
    dsc = str(Path(sys.executable).with_name("dsc"))
    promote = [dsc, "promote", "churn", "1", "--alias", "production"]
    subprocess.run(promote, env=quickstart.env, check=True, capture_output=True, timeout=60)
    port = _free_port()
    server = subprocess.Popen(
        [dsc, "serve", "churn@production", "--port", str(port), "--refresh-seconds", "0"],
        env=quickstart.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _get(f"http://127.0.0.1:{port}/v2/health/ready", time.monotonic() + 60, server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.group(1).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            scored = json.loads(answer.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(scored["predictions"]) == 1
    assert scored["model"]["version"] == 1
    assert set(scored["predictions"][0]) >= {"label", "probabilities"}


@pytest.mark.slow
def test_the_envelope_table_names_every_section(quickstart: Quickstart) -> None:
    envelope = json.loads(
        (quickstart.archive / "models/churn/versions/1/envelope.json").read_text()
    )
    rows = page("docs/data-scientists.md").table("| section |")
    documented = {re.findall(r"`(\w+)`", row[0])[0] for row in rows}
    assert documented == set(envelope) - {"format_version"}


def _links() -> list[tuple[str, str]]:
    return [(p.name, target) for p in all_pages() for target in p.links()]


def test_the_manual_links_its_pages() -> None:
    targets = {t for name, t in _links() if name == "README.md"}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= targets, f"pages the README does not link: {sorted(pages - targets)}"


@pytest.mark.parametrize(("name", "target"), _links(), ids=lambda v: str(v))
def test_every_relative_link_resolves(name: str, target: str) -> None:
    if re.match(r"^[a-z]+:", target):
        return  # http(s), mailto: not ours to check offline
    path, _, anchor = target.partition("#")
    source = ROOT / name
    resolved = (source.parent / path).resolve() if path else source
    assert resolved.exists(), f"{name}: {target} does not exist"
    if anchor and resolved.suffix == ".md":
        anchors = page(resolved.relative_to(ROOT).as_posix()).anchors()
        assert anchor in anchors, f"{name}: {target}: no heading #{anchor} in {sorted(anchors)}"


def test_what_each_extra_brings_is_what_it_requires() -> None:
    project = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text(encoding="utf-8"))
    requires = project["project"]["optional-dependencies"]
    core = project["project"]["dependencies"]
    for extra_cell, _, brings in page("runtime/README.md").table("| extra |"):
        extra = re.findall(r"`([\w-]+)`", extra_cell)
        wanted = requires[extra[0]] if extra else core
        names = {re.split(r"[<>=!~;\[ ]", r)[0].lower() for r in wanted}
        stated = {n.lower() for n in re.findall(r"[A-Za-z][\w.-]*", brings)}
        assert stated <= names, f"{extra_cell}: {sorted(stated - names)} not in {sorted(names)}"

"""Every repository file the manual names in code (`docker/serving.Dockerfile`,
`dscloud/errors.py`, `cdk.json`) exists, so a moved or deleted file cannot leave the manual
pointing at nothing."""

from __future__ import annotations

import re

from tests.docs.pages import ROOT, all_pages

_TOP = ("runtime", "stacks", "docker", "examples", "bench", "tests", "docs", ".ci")
# A path under a top-level folder (or under the dscloud package, as the docs often say),
# without placeholders such as `...`, `…`, `{name}` or `<bucket>`.
_PATH = re.compile(rf"^(?:\./)?((?:{'|'.join(map(re.escape, _TOP))}|dscloud)/[\w./-]*[\w/])$")
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]+\b(?<!README)")
_ROOT_FILES = {
    "Makefile",
    "app.py",
    "cdk.json",
    "cdk.context.json",
    "package.json",
    "pyproject.toml",
    "requirements-dev.txt",
}


def named_paths() -> list[tuple[str, str]]:
    """(page, path) for every repository path a page names in code."""
    found = []
    for page in all_pages():
        for snippet in page.snippets():
            for token in snippet.split():
                token = token.strip("`'\",;:()[]")
                match = _PATH.match(token)
                if match and "..." not in token:
                    found.append((page.name, match.group(1)))
                elif token in _ROOT_FILES:
                    found.append((page.name, token))
    return found


def test_the_manual_names_files() -> None:
    # A scan that found nothing would make the next test vacuous.
    assert ("docs/serving.md", "docker/serving.Dockerfile") in named_paths()


def exists(path: str) -> bool:
    """Whether ``path`` names a file or folder of the repository (or of ``runtime/``); a
    placeholder in capitals (``docker/NAME.Dockerfile``) must match at least one."""
    pattern = _PLACEHOLDER.sub("*", path)
    return any(any(base.glob(pattern)) for base in (ROOT, ROOT / "runtime"))


def test_every_file_the_manual_names_exists() -> None:
    missing = sorted({(name, path) for name, path in named_paths() if not exists(path)})
    assert not missing, f"(page, path) the repository does not have: {missing}"

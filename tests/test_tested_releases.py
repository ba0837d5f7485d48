"""The docs name exactly the livekit-agents releases CI tests: .ci/livekit-releases' table."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.once  # a fact about the repository, not the interpreter

REPO_ROOT = Path(__file__).resolve().parent.parent
RELEASE = re.compile(r"\b1\.\d+\.\d+\b")


def releases_in_the_table() -> list[str]:
    """The table, as CI reads it: the same shell functions, sourced by bash."""
    out = subprocess.run(
        ["bash", "-c", "source .ci/livekit-releases && tested_releases"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out and all(RELEASE.fullmatch(release) for release in out), out
    return out


def named_after_ci_tests(path: str) -> list[str]:
    """The releases in the sentence that begins "CI tests" (one per document)."""
    text = (REPO_ROOT / path).read_text()
    sentences = re.findall(r"CI tests (.*?)\.\s", text, re.DOTALL)
    assert len(sentences) == 1, f'{path}: expected one "CI tests ..." sentence, got {sentences}'
    return RELEASE.findall(sentences[0])


@pytest.mark.parametrize("path", ["README.md", "docs/livekit.md"])
def test_the_docs_name_the_tested_releases(path: str) -> None:
    assert named_after_ci_tests(path) == releases_in_the_table()


def test_the_per_release_table_in_docs_livekit_has_a_row_for_each() -> None:
    text = (REPO_ROOT / "docs/livekit.md").read_text()
    rows = re.findall(r"^\| (1\.\d+\.\d+) \|", text, re.MULTILINE)
    assert rows == releases_in_the_table()

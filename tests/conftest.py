"""Every in-process test must leave the test runner unguarded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import hardexit


@pytest.fixture(autouse=True)
def _no_guard_left_armed() -> Iterator[None]:
    yield
    assert hardexit.current_deadline() is None, "a test left a guard armed in the test runner"

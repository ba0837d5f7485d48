"""Child scripts that really wedge, and the bounds the tests hold them to."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hardexit.testing import IsolatedRun, run_isolated

from . import wedges

# Tests assert generous bounds only; the tight numbers live in benchmarks/.
SLACK = 1.0

#: Wedges one statement makes in any thread, by name: each blocks the thread for good.
WEDGES = {w.name: w.code for w in wedges.KINDS if not (w.setup or w.at_exit)}

#: The usual imports, and the helpers the wedges call.
PREAMBLE = wedges.PREAMBLE


def script(body: str) -> str:
    """A child script: the usual imports and wedges, then *body*."""
    return PREAMBLE + "\n" + textwrap.dedent(body)


def run(body: str, *, limit: float = 10.0, **kwargs: object) -> IsolatedRun:
    return run_isolated(script(body), limit=limit, **kwargs)  # type: ignore[arg-type]


def assert_exited_by_deadline(result: IsolatedRun, exit_code: int) -> None:
    """Exited with *exit_code*, not before its deadline, and by deadline + SLACK."""
    assert not result.timed_out, f"still alive at the run's limit: {result!r}"
    assert result.exit_code == exit_code, result
    assert result.past_deadline is not None, f"nothing was armed: {result!r}"
    assert result.past_deadline >= 0.0, f"exited before its deadline: {result!r}"
    assert result.past_deadline <= SLACK, f"exited late: {result!r}"


def modules_loaded_by(module: str, *, after: str = "") -> set[str]:
    """The modules a clean interpreter loads to import *module*, once *after* (code) ran.

    Fails if the import starts a thread.
    """
    check = f"""
import sys, threading
{after}
before, threads = set(sys.modules), threading.active_count()
import {module}
assert threading.active_count() == threads, "importing {module} started a thread"
print(" ".join(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {sys.path!r}\n{check}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return set(out.split())

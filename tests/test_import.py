"""The core is cheap to import, starts nothing until something is armed, and loads
at import everything its arm and fire paths need (ctypes for the kernel timers)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys, threading
before = threading.active_count()
import hardexit
assert threading.active_count() == before, "import started a thread"
heavy = {"typing", "logging", "subprocess", "livekit", "asyncio"} & set(sys.modules)
print(sorted(heavy), "ctypes" in sys.modules)
"""


def test_import_starts_no_thread_and_pulls_in_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {sys.path!r}\n{CHECK}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "[] True"

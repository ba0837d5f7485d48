"""The core is cheap to import, starts nothing until something is armed, and loads
at import everything its arm and fire paths need (ctypes for the kernel timers)."""

from __future__ import annotations

from .support import modules_loaded_by


def test_import_starts_no_thread_and_pulls_in_nothing_heavy() -> None:
    loaded = modules_loaded_by("hardexit")
    # typing alone costs ~20 ms: the package reads TYPE_CHECKING = False instead.
    assert not {"typing", "logging", "subprocess", "livekit", "asyncio"} & loaded
    assert "ctypes" in loaded

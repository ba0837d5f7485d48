"""Module-level functions for run_isolated: the child imports them by name."""

from __future__ import annotations

import ctypes
import sys

import hardexit


def arm_then_wedge() -> None:
    """Arm a 0.3 s guard exiting with ``sys.argv[1]``, then wedge holding the GIL."""
    print("arming", flush=True)
    hardexit.arm_hard_exit(0.3, exit_code=int(sys.argv[1]))
    ctypes.PyDLL(None).sleep(60)
